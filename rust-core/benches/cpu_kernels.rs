//! CPU matrix kernels on Gemma 4 E2B shapes, reported as GB/s of weight bytes (criterion's
//! "thrpt"). Decode is one token (the weight stream is the whole cost, so GB/s is the figure to
//! compare with memory bandwidth); prefill runs 128 tokens through one dequantized tile pass.
//!
//!     RAYON_NUM_THREADS=2 CARGO_TARGET_DIR=/work/main/target \
//!         cargo bench --workspace --bench cpu_kernels -- [filter]
//!
//! Set GEMMAKIT_BENCH_ISA=portable to time the fallback instead of the detected level.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemmakit::kernels::cpu::{Isa, QuantMatrix, matmul_with};
use gemmakit::weights::GgmlType;
use half::f16;

/// Random blocks of `ty` with a sane f16 scale in the first two bytes (all types benched here
/// keep `d` there, except Q6_K, whose `d` is last).
fn random_weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols / ty.block_size() * ty.block_bytes();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut bytes: Vec<u8> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let d = f16::from_f32(0.01).to_le_bytes();
    let at = if ty == GgmlType::Q6_K { 208 } else { 0 };
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        block[at..at + 2].copy_from_slice(&d);
        if ty == GgmlType::Q4_K {
            block[2..4].copy_from_slice(&d);
        }
    }
    bytes
}

fn isa() -> Isa {
    match std::env::var("GEMMAKIT_BENCH_ISA").as_deref() {
        Ok("portable") => Isa::Portable,
        _ => Isa::detect(),
    }
}

fn bench_shape(c: &mut Criterion, ty: GgmlType, rows: usize, cols: usize, tokens: usize) {
    let bytes = random_weights(ty, rows, cols);
    let w = QuantMatrix::new(&bytes, ty, rows, cols).unwrap();
    let x: Vec<f32> = (0..tokens * cols)
        .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
        .collect();
    let mut out = vec![0.0f32; tokens * rows];
    let kind = if tokens == 1 { "decode" } else { "prefill" };
    let mut group = c.benchmark_group(format!("{kind}/{ty}"));
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(if tokens == 1 { 2 } else { 4 }));
    let isa = isa();
    group.bench_function(format!("{cols}->{rows} x{tokens} {isa:?}"), |b| {
        b.iter(|| matmul_with(isa, black_box(&x), tokens, w, &mut out))
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        bench_shape(c, ty, 6144, 1536, 1); // MLP gate / up
        bench_shape(c, ty, 1536, 6144, 1); // MLP down
    }
    bench_shape(c, GgmlType::Q4_0, 1536, 12288, 1); // double-wide MLP down
    bench_shape(c, GgmlType::Q4_0, 2048, 1536, 1); // attention q
    bench_shape(c, GgmlType::Q5_0, 2048, 640, 1); // Gemma 3 270M gate / up
    bench_shape(c, GgmlType::Q4_0, 262_144, 1536, 1); // LM head
}

fn prefill(c: &mut Criterion) {
    // Four tokens: the tiled path's fixed cost (dequantizing every weight once) dominates.
    bench_shape(c, GgmlType::Q4_0, 6144, 1536, 4);
    bench_shape(c, GgmlType::Q4_0, 6144, 1536, 512);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K] {
        bench_shape(c, ty, 6144, 1536, 128);
        bench_shape(c, ty, 1536, 6144, 128);
    }
    bench_shape(c, GgmlType::Q4_0, 2048, 1536, 128);
}

criterion_group!(benches, decode, prefill);
criterion_main!(benches);
