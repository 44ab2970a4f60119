//! Kernel tests: repacking against the CPU decoders (which are checked against gguf-py), and
//! the GPU kernels against f64 dot products of the decoded weights, on odd shapes and with a
//! small binding limit so that every weight is split into many chunks. GPU tests run on any
//! wgpu adapter (lavapipe in CI); set GEMMAKIT_SKIP_GPU_TESTS=1 to skip them.

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData, s};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::GpuLinear;
use super::pack::{self, Layout};
use crate::device::to_host;
use crate::device::{BackendKind, ComputeDevice};
use crate::weights::{GgmlType, MappedTensor, ReadLog};

mod kv;

const EXACT: [GgmlType; 9] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
    GgmlType::F32,
];
const REQUANTIZED: [GgmlType; 4] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
];

fn mapped(dtype: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> MappedTensor {
    let mut m = memmap2::MmapMut::map_anon(bytes.len()).expect("anonymous map");
    m.copy_from_slice(bytes);
    let map = Arc::new(m.make_read_only().expect("read-only"));
    let log = Arc::new(ReadLog::default());
    MappedTensor::new("w", map, 0, bytes.len(), dtype, vec![rows, cols], log).expect("valid tensor")
}

/// Random but valid encodings: random quant bits, sane f16 scale fields.
fn random_weight(dtype: GgmlType, rows: usize, cols: usize, seed: u64) -> MappedTensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rows * cols;
    let bytes: Vec<u8> = match dtype {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)).to_le_bytes())
            .collect(),
        _ => {
            let bb = dtype.block_bytes();
            let mut bytes: Vec<u8> = (0..n / dtype.block_size() * bb)
                .map(|_| rng.random())
                .collect();
            let fields: &[usize] = match dtype {
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                GgmlType::Q2_K => &[80, 82],
                GgmlType::Q3_K => &[108],
                other => panic!("no generator for {other}"),
            };
            for block in bytes.chunks_exact_mut(bb) {
                for &at in fields {
                    let v = f16::from_f32(rng.random_range(0.002f32..0.05));
                    block[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            bytes
        }
    };
    mapped(dtype, rows, cols, &bytes)
}

fn decoded(w: &MappedTensor) -> Vec<f32> {
    let mut out = vec![0.0f32; w.rows() * w.cols()];
    for (r, row) in out.chunks_exact_mut(w.cols()).enumerate() {
        w.decode_row(r, row);
    }
    out
}

#[test]
fn exact_layouts_reproduce_the_cpu_decoder() {
    for dtype in EXACT {
        let (rows, cols) = (5, 512);
        let w = random_weight(dtype, rows, cols, 7);
        let layout = pack::layout_for(dtype, cols);
        if let Layout::Quant(q) = layout {
            assert!(q.exact, "{dtype}");
        }
        let packed = pack::pack_rows(&w, layout, 0, rows);
        let reference = decoded(&w);
        for r in 0..rows {
            let got = pack::unpack_row_f64(layout, &packed, r, cols);
            for (c, (g, e)) in got.iter().zip(&reference[r * cols..]).enumerate() {
                let e = f64::from(*e);
                // Same integers and scales; only the rounding of scale·q − min may differ.
                assert!(
                    (g - e).abs() <= 1e-6 * e.abs().max(1e-3),
                    "{dtype} row {r} col {c}: packed {g} vs decoder {e}"
                );
            }
        }
    }
}

#[test]
fn requantized_layouts_stay_within_half_a_step() {
    for dtype in REQUANTIZED {
        let (rows, cols) = (4, 512);
        let w = random_weight(dtype, rows, cols, 11);
        let layout = pack::layout_for(dtype, cols);
        let Layout::Quant(q) = layout else {
            panic!("{dtype} should requantize")
        };
        assert!(!q.exact && q.bits == 8 && q.block == 32);
        let packed = pack::pack_rows(&w, layout, 0, rows);
        let reference = decoded(&w);
        let (mut err2, mut ref2) = (0.0f64, 0.0f64);
        for r in 0..rows {
            let got = pack::unpack_row_f64(layout, &packed, r, cols);
            for (block, (g, e)) in got
                .chunks_exact(32)
                .zip(reference[r * cols..(r + 1) * cols].chunks_exact(32))
                .enumerate()
            {
                let amax = e.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
                for (g, e) in g.iter().zip(e) {
                    let d = g - f64::from(*e);
                    assert!(
                        d.abs() <= amax / 254.0 * 1.0001 + 1e-12,
                        "{dtype} row {r} block {block}: error {d} over half a step of {amax}/127"
                    );
                    err2 += d * d;
                    ref2 += f64::from(*e) * f64::from(*e);
                }
            }
        }
        eprintln!(
            "{dtype} → Q8 (f32 scale per 32): relative RMS weight error {:.2e}",
            (err2 / ref2).sqrt()
        );
    }
}

pub(super) fn gpu() -> Option<ComputeDevice> {
    if std::env::var("GEMMAKIT_SKIP_GPU_TESTS").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(
        ComputeDevice::open(BackendKind::Gpu)
            .expect("a wgpu adapter (set GEMMAKIT_SKIP_GPU_TESTS=1 to skip)"),
    )
}

pub(super) fn random_x(tokens: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..tokens * cols)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

/// Checks `y` against f64 dots of `x` with `weights` (`[rows, cols]`), relative to Σ|x·w|.
fn check_product(label: &str, y: &[f32], x: &[f32], weights: &[f64], rows: usize, cols: usize) {
    let tokens = x.len() / cols;
    assert_eq!(y.len(), tokens * rows, "{label}: output size");
    let mut worst = 0.0f64;
    for t in 0..tokens {
        for r in 0..rows {
            let (mut dot, mut mag) = (0.0f64, 0.0f64);
            for c in 0..cols {
                let p = f64::from(x[t * cols + c]) * weights[r * cols + c];
                dot += p;
                mag += p.abs();
            }
            let err = (f64::from(y[t * rows + r]) - dot).abs() / mag.max(1e-12);
            worst = worst.max(err);
            assert!(
                err <= 2e-6,
                "{label}: token {t} row {r}: {} vs {dot}",
                y[t * rows + r]
            );
        }
    }
    eprintln!("{label}: worst error / Σ|x·w| = {worst:.1e}");
}

#[test]
fn gpu_products_match_f64_reference_for_every_type() {
    let Some(device) = gpu() else { return };
    // Odd row counts, several token tiles (1, a partial tile, more than one tile) and a
    // binding limit of a few rows so each weight is split into many chunks.
    let cases: Vec<(GgmlType, usize)> = EXACT
        .iter()
        .chain(&REQUANTIZED)
        .map(|&t| (t, if t.block_size() == 256 { 512 } else { 96 }))
        .chain([(GgmlType::F32, 18), (GgmlType::F16, 40)])
        .collect();
    for (dtype, cols) in cases {
        let rows = 37;
        let w = random_weight(dtype, rows, cols, 3);
        let layout = pack::layout_for(dtype, cols);
        let row_bytes = pack::word_bytes_per_row(layout, cols);
        let lin = GpuLinear::upload(&w, 5 * row_bytes + 3, &device.device).expect("upload");
        assert_eq!(lin.chunk_count(), rows.div_ceil(5), "{dtype}: chunks");
        // The kernels' weights, decoded in f64 (equal to the CPU decoder's for exact layouts,
        // checked above).
        let packed = pack::pack_rows(&w, layout, 0, rows);
        let weights: Vec<f64> = (0..rows)
            .flat_map(|r| pack::unpack_row_f64(layout, &packed, r, cols))
            .collect();
        for tokens in [1, 3, 11] {
            let x = random_x(tokens, cols, tokens as u64);
            let xt =
                Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device.device);
            let label = format!("{dtype} [{rows}x{cols}] x {tokens} tokens");
            let y = to_host(lin.forward(xt.clone())).expect("read back");
            check_product(&label, &y, &x, &weights, rows, cols);
            let y_host = lin.forward_to_host(xt).expect("read back by chunk");
            assert_eq!(y, y_host, "{label}: forward vs forward_to_host");
        }
    }
}

#[test]
fn gpu_product_reads_a_row_offset_activation() {
    let Some(device) = gpu() else { return };
    // Row 1 of a [3, 32] activation starts at byte 128, not a multiple of 256: the kernel
    // must see the view, not the start of the buffer.
    let (rows, cols) = (9, 32);
    let w = random_weight(GgmlType::Q8_0, rows, cols, 5);
    let x = random_x(3, cols, 9);
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [3, cols]), &device.device);
    let middle = xt.slice(s![1..2, ..]);
    let lin = GpuLinear::upload(&w, 1 << 20, &device.device).expect("upload");
    let y = to_host(lin.forward(middle)).expect("read back");
    let layout = pack::layout_for(GgmlType::Q8_0, cols);
    let packed = pack::pack_rows(&w, layout, 0, rows);
    let weights: Vec<f64> = (0..rows)
        .flat_map(|r| pack::unpack_row_f64(layout, &packed, r, cols))
        .collect();
    check_product(
        "offset activation",
        &y,
        &x[cols..2 * cols],
        &weights,
        rows,
        cols,
    );
}

/// Largest |got − want| / (|want| + 1e-3) over a pair of arrays.
fn worst_relative(label: &str, got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs() / (w.abs() + 1e-3))
        .fold(0.0, f64::max);
    eprintln!("{label}: worst relative error {worst:.1e}");
    worst
}

#[test]
fn gpu_rms_norm_matches_f64_on_rows_of_any_length_and_layout() {
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    // 5 rows of 200 (not a multiple of the cube size), read through a narrowed view (an
    // offset and a row stride that are not the tensor's own).
    let (rows, n, wide) = (5, 200, 203);
    let x = random_x(rows, wide, 21);
    let w = random_x(1, n, 22);
    let eps = 1e-6f32;
    let input = crate::device::from_host(x.clone(), [rows, wide], dev).narrow(1, 3, n);
    let weight = crate::device::from_host(w.clone(), [1, n], dev);
    let residual = random_x(rows, n, 26);
    let residual_t = crate::device::from_host(residual.clone(), [rows, n], dev);
    // The value norm (no weight), a weighted norm, and a sub-layer joining the residual
    // stream times a layer scalar.
    for (weighted, add, scale) in [
        (false, false, 1.0f32),
        (true, false, 1.0),
        (true, true, 0.5),
    ] {
        let got = to_host(super::ops::rms_norm(
            input.clone(),
            weighted.then_some(&weight),
            add.then(|| residual_t.clone()),
            eps,
            scale,
        ))
        .unwrap();
        let mut want = Vec::new();
        for r in 0..rows {
            let row = &x[r * wide + 3..r * wide + 3 + n];
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            for (i, &v) in row.iter().enumerate() {
                let w_i = if weighted { f64::from(w[i]) } else { 1.0 };
                let res = if add {
                    f64::from(residual[r * n + i])
                } else {
                    0.0
                };
                want.push((res + f64::from(v) * inv * w_i) * f64::from(scale));
            }
        }
        let label = format!("rms_norm weighted={weighted} residual={add} scale={scale}");
        assert!(worst_relative(&label, &got, &want) < 1e-5);
    }
}

#[test]
fn gpu_residual_sum_and_the_next_norm_in_one_kernel_match_f64_and_the_two_calls() {
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    let (rows, n, eps, scale) = (3, 1000, 1e-6f32, 0.75f32);
    let (y, residual) = (random_x(rows, n, 31), random_x(rows, n, 32));
    let (w, next) = (random_x(1, n, 33), random_x(1, n, 34));
    let t = |v: &Vec<f32>, r: usize| crate::device::from_host(v.clone(), [r, n], dev);
    let (x, normed) = super::ops::add_rms_norm_then_norm(
        t(&residual, rows),
        t(&y, rows),
        &t(&w, 1),
        eps,
        scale,
        &t(&next, 1),
    );
    let (x, normed) = (to_host(x).unwrap(), to_host(normed).unwrap());
    let rms = |row: &[f64]| {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / n as f64;
        1.0 / (ms + f64::from(eps)).sqrt()
    };
    let (mut want_x, mut want_normed) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let row: Vec<f64> = y[r * n..(r + 1) * n]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let inv = rms(&row);
        let sum: Vec<f64> = (0..n)
            .map(|i| {
                (f64::from(residual[r * n + i]) + row[i] * inv * f64::from(w[i])) * f64::from(scale)
            })
            .collect();
        let inv2 = rms(&sum);
        want_normed.extend((0..n).map(|i| sum[i] * inv2 * f64::from(next[i])));
        want_x.extend(sum);
    }
    // Relative to the larger of 1 and the value: the residual sum cancels in places (a value
    // near zero from summands near 1 keeps their absolute rounding error).
    let worst = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .map(|(&g, &w)| (f64::from(g) - w).abs() / w.abs().max(1.0))
            .fold(0.0, f64::max)
    };
    let (ex, en) = (worst(&x, &want_x), worst(&normed, &want_normed));
    eprintln!("residual sum {ex:.1e}, next norm {en:.1e}");
    assert!(ex < 1e-6 && en < 1e-6, "{ex} {en}");
    // The second plane is the separate norm call's result bit for bit (the same sums in the
    // same order), so fusing changes no logit.
    let separate = to_host(super::ops::rms_norm(
        t(&x, rows),
        Some(&t(&next, 1)),
        None,
        eps,
        1.0,
    ))
    .unwrap();
    assert_eq!(normed, separate);
}

/// f64 NeoX rotation of `x` `[tokens, heads, d]` by the angles `position · inv_freq` (the
/// product in f32, as the tables compute it).
fn rotated_f64(
    x: &[f64],
    heads: usize,
    d: usize,
    positions: &[usize],
    inv_freq: &[f32],
) -> Vec<f64> {
    let half = d / 2;
    let mut out = vec![0.0f64; x.len()];
    for (t, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let at = (t * heads + h) * d;
            for j in 0..half {
                let (s, c) = f64::from(p as f32 * inv_freq[j]).sin_cos();
                let (x1, x2) = (x[at + j], x[at + j + half]);
                out[at + j] = x1 * c - x2 * s;
                out[at + j + half] = x2 * c + x1 * s;
            }
        }
    }
    out
}

#[test]
fn gpu_rope_and_normed_rope_match_f64() {
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    let (tokens, heads, d) = (3, 4, 12);
    let x = random_x(tokens * heads, d, 23);
    let w = random_x(1, d, 27);
    let positions = [0usize, 7, 4096];
    let inv_freq: Vec<f32> = (0..d / 2)
        .map(|j| 10000f32.powf(-(2.0 * j as f32) / d as f32))
        .collect();
    // The tables as the model builds them: f32 angles, `[tokens, 1, d/2]`.
    let (cos, sin): (Vec<f32>, Vec<f32>) = positions
        .iter()
        .flat_map(|&p| {
            inv_freq
                .iter()
                .map(move |&f| ((p as f32 * f).cos(), (p as f32 * f).sin()))
        })
        .unzip();
    let cos = crate::device::from_host(cos, [tokens, 1, d / 2], dev);
    let sin = crate::device::from_host(sin, [tokens, 1, d / 2], dev);
    let input = crate::device::from_host(x.clone(), [tokens, heads, d], dev);

    let got = to_host(super::ops::rope(input.clone(), &cos, &sin)).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let want = rotated_f64(&x64, heads, d, &positions, &inv_freq);
    assert!(worst_relative("rope", &got, &want) < 1e-5);

    let eps = 1e-6;
    let weight = crate::device::from_host(w.clone(), [1, 1, d], dev);
    let got = to_host(super::ops::rms_norm_rope(input, &weight, &cos, &sin, eps)).unwrap();
    let normed: Vec<f64> = x64
        .chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            row.iter()
                .zip(&w)
                .map(move |(v, &w)| v * inv * f64::from(w))
                .collect::<Vec<_>>()
        })
        .collect();
    let want = rotated_f64(&normed, heads, d, &positions, &inv_freq);
    assert!(worst_relative("rms_norm_rope", &got, &want) < 1e-5);
}

#[test]
fn gpu_gelu_tanh_mul_matches_f64_including_large_inputs() {
    let Some(device) = gpu() else { return };
    let dev = &device.device;
    let n = 1000;
    // ±20: beyond where tanh through exp overflows in f32 on some drivers.
    let a: Vec<f32> = random_x(1, n, 24).iter().map(|v| v * 20.0).collect();
    let b = random_x(1, n, 25);
    let got = to_host(super::ops::gelu_tanh_mul(
        crate::device::from_host(a.clone(), [n], dev),
        crate::device::from_host(b.clone(), [n], dev),
    ))
    .unwrap();
    let want: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| {
            let x = f64::from(x);
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            0.5 * x * (1.0 + inner.tanh()) * f64::from(y)
        })
        .collect();
    assert!(
        got.iter().all(|v| v.is_finite()),
        "gelu produced a non-finite value"
    );
    // Relative to |a·b|, the size of the product the activation scales: where gelu is tiny
    // (a ≈ −4) its value is a difference of near-equal terms in any f32 formula.
    let worst = (0..n)
        .map(|i| (f64::from(got[i]) - want[i]).abs() / f64::from((a[i] * b[i]).abs()).max(1e-6))
        .fold(0.0, f64::max);
    eprintln!("gelu_tanh_mul: worst error / |a·b| {worst:.1e}");
    assert!(worst < 1e-5);
}

#[test]
fn gpu_argmax_rows_picks_the_f64_maximum_across_chunks_and_blocks() {
    let Some(device) = gpu() else { return };
    // 9000 rows: three argmax blocks of 4096, and chunks of 3000 rows that cut through them.
    let (rows, cols, tokens) = (9000, 32, 3);
    let w = random_weight(GgmlType::Q8_0, rows, cols, 31);
    let layout = pack::layout_for(GgmlType::Q8_0, cols);
    let row_bytes = pack::word_bytes_per_row(layout, cols);
    let lin = GpuLinear::upload(&w, 3000 * row_bytes, &device.device).expect("upload");
    assert_eq!(lin.chunk_count(), 3);
    let packed = pack::pack_rows(&w, layout, 0, rows);
    let weights: Vec<f64> = (0..rows)
        .flat_map(|r| pack::unpack_row_f64(layout, &packed, r, cols))
        .collect();
    let x = random_x(tokens, cols, 32);
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device.device);
    let picks = lin.argmax_rows(xt).expect("argmax");
    assert_eq!(picks.len(), tokens);
    for (t, &pick) in picks.iter().enumerate() {
        let dot = |r: usize| -> f64 {
            (0..cols)
                .map(|c| f64::from(x[t * cols + c]) * weights[r * cols + c])
                .sum()
        };
        let best = (0..rows).map(dot).fold(f64::MIN, f64::max);
        // The pick is the maximum up to the f32 products' rounding.
        assert!(
            (dot(pick as usize) - best).abs() <= 1e-5 * best.abs(),
            "token {t}: row {pick} scores {} against the maximum {best}",
            dot(pick as usize)
        );
    }
}

#[test]
fn gpu_argmax_rows_breaks_ties_towards_the_lower_index() {
    let Some(device) = gpu() else { return };
    // f32 rows: row 7000 (block 1, chunk 2) and row 8000 equal the largest, row 2 a little
    // less; then every row equal (every block ties: index 0 wins).
    let (rows, cols) = (9000, 4);
    let mut values = vec![0.0f32; rows * cols];
    for r in [7000, 8000] {
        values[r * cols..(r + 1) * cols].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
    }
    values[2 * cols..3 * cols].copy_from_slice(&[1.0, 2.0, 3.0, 3.5]);
    for (case, values, want) in [
        ("two equal maxima", values, 7000u32),
        ("all equal", vec![0.5f32; rows * cols], 0),
    ] {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let w = mapped(GgmlType::F32, rows, cols, &bytes);
        let lin = GpuLinear::upload(&w, 3000 * cols * 4, &device.device).expect("upload");
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32; cols], [1, cols]),
            &device.device,
        );
        assert_eq!(lin.argmax_rows(x).expect("argmax"), vec![want], "{case}");
    }
}

#[test]
fn gpu_top_k_rows_are_the_sorted_largest_finite_outputs_across_chunks_and_blocks() {
    let Some(device) = gpu() else { return };
    // One f32 column, times x = ±1: the outputs are the rows' values exactly. 9000 rows in
    // chunks of 3000 (blocks of 1024 cut by the chunks), with ties inside and across blocks
    // and chunks, NaN and ±∞ (never picked), and a merge pass over the blocks' picks.
    let rows = 9000;
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let mut values: Vec<f32> = (0..rows).map(|_| rng.random_range(-4.0f32..4.0)).collect();
    for (i, v) in [
        (10, 9.0),
        (5000, 9.0),
        (8999, 9.0),
        (1023, 8.5),
        (1024, 8.5),
        (2999, 8.5),
    ] {
        values[i] = v;
    }
    for i in [3, 4096, 7000] {
        values[i] = f32::NAN;
    }
    values[17] = f32::INFINITY;
    values[18] = f32::NEG_INFINITY;
    // 40 equal values straddling the 64th place.
    for i in 0..40 {
        values[100 + i * 211] = 7.0;
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let w = mapped(GgmlType::F32, rows, 1, &bytes);
    let lin = GpuLinear::upload(&w, 3000 * 4, &device.device).expect("upload");
    assert_eq!(lin.chunk_count(), 3);
    let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -1.0], [2, 1]), &device.device);
    for k in [1, 7, 64] {
        let picks = lin.top_k_rows(x.clone(), k).expect("top k");
        for (t, sign) in [(0, 1.0f32), (1, -1.0)] {
            // Reference: every finite output, ordered by value (largest first), then index.
            let mut want: Vec<(u32, f32)> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u32, v * sign))
                .filter(|(_, v)| v.is_finite())
                .collect();
            want.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
            want.truncate(k);
            assert_eq!(picks[t], want, "k {k} token {t}");
        }
    }
}

#[test]
fn gpu_gated_product_matches_f64_gelu_of_gate_times_up() {
    let Some(device) = gpu() else { return };
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
    };
    for (dtype, cols) in [
        (GgmlType::Q4_0, 96),
        (GgmlType::Q4_K, 512),
        (GgmlType::Q6_K, 256),
        (GgmlType::Q8_0, 64),
    ] {
        let rows = 37;
        let (gate, up) = (
            random_weight(dtype, rows, cols, 41),
            random_weight(dtype, rows, cols, 42),
        );
        let layout = pack::layout_for(dtype, cols);
        // Chunks of 5 outputs (10 interleaved rows).
        let row_bytes = pack::word_bytes_per_row(layout, cols);
        let lin = GpuLinear::upload_gated(&gate, &up, 10 * row_bytes + 3, &device.device)
            .expect("upload")
            .expect("one layout");
        assert_eq!(lin.chunk_count(), rows.div_ceil(5), "{dtype}: chunks");
        let decode = |w: &MappedTensor| -> Vec<f64> {
            let packed = pack::pack_rows(w, layout, 0, rows);
            (0..rows)
                .flat_map(|r| pack::unpack_row_f64(layout, &packed, r, cols))
                .collect()
        };
        let (g, u) = (decode(&gate), decode(&up));
        for tokens in [1, 3, 11] {
            let x = random_x(tokens, cols, 43 + tokens as u64);
            let xt =
                Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device.device);
            let y = to_host(lin.forward(xt)).expect("read back");
            let mut worst = 0.0f64;
            for t in 0..tokens {
                for r in 0..rows {
                    let dot = |w: &[f64]| -> (f64, f64) {
                        (0..cols).fold((0.0, 0.0), |(s, m), c| {
                            let p = f64::from(x[t * cols + c]) * w[r * cols + c];
                            (s + p, m + p.abs())
                        })
                    };
                    let ((gv, gm), (uv, um)) = (dot(&g), dot(&u));
                    let want = gelu(gv) * uv;
                    // The f32 sums' rounding (relative to Σ|x·w|) carried through the product.
                    let scale = (gm * uv.abs() + gelu(gv).abs().max(gm) * um).max(1e-12);
                    let err = (f64::from(y[t * rows + r]) - want).abs() / scale;
                    worst = worst.max(err);
                    assert!(
                        err <= 4e-6,
                        "{dtype} token {t} row {r}: {} vs {want}",
                        y[t * rows + r]
                    );
                }
            }
            eprintln!("{dtype} x {tokens}: worst {worst:.1e}");
        }
    }
    // Different types: no fused form.
    let (a, b) = (
        random_weight(GgmlType::Q4_0, 8, 64, 1),
        random_weight(GgmlType::Q8_0, 8, 64, 2),
    );
    assert!(
        GpuLinear::upload_gated(&a, &b, 1 << 20, &device.device)
            .unwrap()
            .is_none()
    );
}

#[test]
fn gpu_product_with_a_gelu_times_epilogue_matches_f64() {
    let Some(device) = gpu() else { return };
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
    };
    // A quantized weight (the epilogue) and a dense one (a second kernel), split into chunks.
    for (dtype, cols) in [
        (GgmlType::Q4_0, 96),
        (GgmlType::Q6_K, 256),
        (GgmlType::F32, 18),
    ] {
        let rows = 37;
        let w = random_weight(dtype, rows, cols, 51);
        let layout = pack::layout_for(dtype, cols);
        let row_bytes = pack::word_bytes_per_row(layout, cols);
        let lin = GpuLinear::upload(&w, 5 * row_bytes + 3, &device.device).expect("upload");
        let packed = pack::pack_rows(&w, layout, 0, rows);
        let weights: Vec<f64> = (0..rows)
            .flat_map(|r| pack::unpack_row_f64(layout, &packed, r, cols))
            .collect();
        for tokens in [1, 3] {
            let x = random_x(tokens, cols, 52);
            let m = random_x(tokens, rows, 53);
            let y = to_host(lin.forward_gelu_times(
                Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device.device),
                Tensor::<2>::from_data(TensorData::new(m.clone(), [tokens, rows]), &device.device),
            ))
            .expect("read back");
            for t in 0..tokens {
                for r in 0..rows {
                    let (dot, mag) = (0..cols).fold((0.0f64, 0.0f64), |(s, a), c| {
                        let p = f64::from(x[t * cols + c]) * weights[r * cols + c];
                        (s + p, a + p.abs())
                    });
                    let want = gelu(dot) * f64::from(m[t * rows + r]);
                    let err = (f64::from(y[t * rows + r]) - want).abs() / mag.max(1e-12);
                    assert!(
                        err <= 4e-6,
                        "{dtype} token {t} row {r}: {} vs {want}",
                        y[t * rows + r]
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_stacked_product_is_each_weights_product_side_by_side() {
    let Some(device) = gpu() else { return };
    let (dtype, cols) = (GgmlType::Q4_K, 256);
    let sizes = [13, 5, 5];
    let weights: Vec<MappedTensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &rows)| random_weight(dtype, rows, cols, 61 + i as u64))
        .collect();
    let refs: Vec<&MappedTensor> = weights.iter().collect();
    let layout = pack::layout_for(dtype, cols);
    let row_bytes = pack::word_bytes_per_row(layout, cols);
    // Chunks of 4 rows: boundaries inside and across the weights.
    let lin = GpuLinear::upload_stacked(&refs, 4 * row_bytes, &device.device)
        .expect("upload")
        .expect("one type");
    assert_eq!((lin.out_features(), lin.chunk_count()), (23, 6));
    let stacked: Vec<f64> = weights
        .iter()
        .flat_map(|w| {
            let packed = pack::pack_rows(w, layout, 0, w.rows());
            (0..w.rows())
                .flat_map(|r| pack::unpack_row_f64(layout, &packed, r, cols))
                .collect::<Vec<_>>()
        })
        .collect();
    for tokens in [1, 3] {
        let x = random_x(tokens, cols, 64);
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device.device);
        let y = to_host(lin.forward(xt)).expect("read back");
        check_product(&format!("stacked x {tokens}"), &y, &x, &stacked, 23, cols);
    }
    let other = random_weight(GgmlType::Q8_0, 5, cols, 65);
    assert!(
        GpuLinear::upload_stacked(&[&weights[0], &other], 1 << 20, &device.device)
            .unwrap()
            .is_none()
    );
}
