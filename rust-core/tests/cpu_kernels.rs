//! The CPU matrix kernels against an independent reference: gguf-py's dequantization of random
//! blocks (tests/fixtures/quant/dequant_reference.json, from scripts/reference/gguf_dequant_ref.py)
//! followed by a float64 dot product. Every instruction-set level this CPU runs is checked, on
//! both the few-token (fused dot) and many-token (tiled) paths, with shapes that leave partial
//! panels, tiles, K chunks and token groups.
//!
//! The int8-activation products (prefill micro-kernels and decode levels) are checked the same
//! way: exactly (within the f32 tolerance) on activations that round exactly to 8 bits, and
//! within the rounding bound on arbitrary ones.
//!
//! Tolerance: |kernel − reference| ≤ 4e-6 · Σᵢ |wᵢ·xᵢ| per output (f32 accumulation of at most
//! a few thousand products in a different order than the float64 sum, plus the per-block
//! factoring of scales; observed errors are well below this bound).

use gemmakit::kernels::cpu::{Isa, QuantMatrix, int8, matmul_with};
use gemmakit::weights::GgmlType;
use half::{bf16, f16};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/quant/dequant_reference.json"
);
const TOL: f64 = 4e-6;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// gguf-py's blocks of `ty` and their dequantized values.
struct RefBlocks {
    ty: GgmlType,
    blocks: Vec<Vec<u8>>,
    values: Vec<Vec<f32>>,
}

fn fixture_blocks() -> Vec<RefBlocks> {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let mut out = Vec::new();
    for case in doc["dequant"].as_array().unwrap() {
        let name = case["type"].as_str().unwrap();
        let ty = *GgmlType::ALL.iter().find(|t| t.name() == name).unwrap();
        if ty.block_size() == 1 {
            continue; // plain types: random bit patterns incl. NaN; covered by `plain_types`
        }
        let bytes = unhex(case["blocks_hex"].as_str().unwrap());
        let vals: Vec<f32> = unhex(case["expected_f32_le_hex"].as_str().unwrap())
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect();
        let blocks = bytes.chunks(ty.block_bytes()).map(<[u8]>::to_vec).collect();
        let values = vals.chunks(ty.block_size()).map(<[f32]>::to_vec).collect();
        out.push(RefBlocks { ty, blocks, values });
    }
    out
}

/// Deterministic values in [-1, 1).
fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Row `r` of the weights `w` times token `t` of `x` in float64, and `Σ|w·x|`.
fn reference(w: &[f64], x: &[f32], cols: usize, t: usize, r: usize) -> (f64, f64) {
    let (mut want, mut mag) = (0.0f64, 0.0f64);
    for i in 0..cols {
        let p = w[r * cols + i] * f64::from(x[t * cols + i]);
        want += p;
        mag += p.abs();
    }
    (want, mag)
}

/// Checks every available ISA on `[rows, cols]` weights `bytes` whose exact values are `w`.
fn check(ty: GgmlType, bytes: &[u8], w: &[f64], rows: usize, cols: usize, what: &str) -> f64 {
    let mut worst = 0.0f64;
    // Under Miri (which checks the kernels' unsafe indexing, ~1000x slower) fewer token counts,
    // still covering one token, a partial group and more than one group.
    let token_counts: &[usize] = if cfg!(miri) {
        &[1, 3, 9]
    } else {
        &[1, 2, 3, 4, 7, 13]
    };
    for &tokens in token_counts {
        let x = activations(tokens * cols, (rows * 31 + cols * 7 + tokens) as u64);
        let m = QuantMatrix::new(bytes, ty, rows, cols).unwrap();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; tokens * rows];
            matmul_with(isa, &x, tokens, m, &mut out);
            for t in 0..tokens {
                for r in 0..rows {
                    let (want, mag) = reference(w, &x, cols, t, r);
                    let got = f64::from(out[t * rows + r]);
                    if mag > 0.0 {
                        worst = worst.max((got - want).abs() / mag);
                    }
                    assert!(
                        (got - want).abs() <= TOL * mag,
                        "{what} {ty} {isa:?} rows={rows} cols={cols} tokens={tokens} t={t} r={r}: \
                         got {got}, want {want} (Σ|wx| = {mag})"
                    );
                }
            }
        }
    }
    worst
}

#[test]
fn quantized_kernels_match_gguf_py_and_float64() {
    let fixtures = fixture_blocks();
    assert!(fixtures.len() >= 10, "fixture lost types");
    for f in &fixtures {
        let n = f.blocks.len();
        let mut worst = 0.0f64;
        let per_row: &[usize] = if cfg!(miri) {
            &[2]
        } else if f.ty.block_size() == 32 {
            &[1, 3, 9, 10]
        } else {
            &[1, 3]
        };
        for &bpr in per_row {
            let row_counts: &[usize] = if cfg!(miri) {
                &[1, 17]
            } else {
                &[1, 17, 70, 131]
            };
            for &rows in row_counts {
                let cols = bpr * f.ty.block_size();
                let (mut bytes, mut w) = (Vec::new(), Vec::new());
                for r in 0..rows {
                    for j in 0..bpr {
                        // Vary the block order per row so rows differ.
                        let b = (r * 7 + j * 3 + r / 5) % n;
                        bytes.extend_from_slice(&f.blocks[b]);
                        w.extend(f.values[b].iter().map(|&v| f64::from(v)));
                    }
                }
                worst = worst.max(check(f.ty, &bytes, &w, rows, cols, "fixture"));
            }
        }
        eprintln!("{}: worst |error| / Σ|wx| = {worst:.2e}", f.ty);
    }
}

#[test]
fn plain_types() {
    let (rows, cols) = (37, 300);
    let vals = activations(rows * cols, 99);
    let cases: [(GgmlType, Vec<u8>, Vec<f64>); 3] = [
        (
            GgmlType::F32,
            vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            vals.iter().map(|&v| f64::from(v)).collect(),
        ),
        (
            GgmlType::F16,
            vals.iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            vals.iter().map(|&v| f64::from(f16::from_f32(v))).collect(),
        ),
        (
            GgmlType::BF16,
            vals.iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
            vals.iter().map(|&v| f64::from(bf16::from_f32(v))).collect(),
        ),
    ];
    for (ty, bytes, w) in &cases {
        let worst = check(*ty, bytes, w, rows, cols, "plain");
        eprintln!("{ty}: worst |error| / Σ|wx| = {worst:.2e}");
    }
}

#[test]
fn rejects_mismatched_bytes() {
    assert!(QuantMatrix::new(&[0u8; 35], GgmlType::Q8_0, 1, 32).is_err());
    assert!(QuantMatrix::new(&[0u8; 144], GgmlType::Q4_K, 1, 32).is_err());
    assert!(QuantMatrix::new(&[0u8; 36], GgmlType::IQ2_XXS, 1, 256).is_err());
    assert!(QuantMatrix::new(&[0u8; 68], GgmlType::Q8_0, 2, 32).is_ok());
}

#[test]
fn reports_the_detected_level() {
    let levels = Isa::available();
    assert_eq!(levels[0], Isa::Portable);
    assert_eq!(Isa::detect(), *levels.last().unwrap());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(levels.contains(&Isa::Avx2));
    }
    #[cfg(target_arch = "aarch64")]
    assert!(levels.contains(&Isa::Neon));
}

/// The int8 prefill micro-kernels this CPU runs: the portable reference and, where present,
/// the fast one.
fn int8_kernels() -> Vec<(&'static str, int8::Micro)> {
    let mut k: Vec<(&'static str, int8::Micro)> = vec![("portable", int8::micro_portable)];
    if let Some(fast) = int8::fast_kernel() {
        k.push(("fast", fast));
    }
    k
}

/// An int8 product under test: its name and `f(x, tokens, w, out)`.
type Int8Product = (
    String,
    Box<dyn Fn(&[f32], usize, QuantMatrix<'_>, &mut [f32])>,
);

/// Every int8 product of `ty` this CPU runs: the prefill path with each micro-kernel and the
/// decode path at each level.
fn int8_products(ty: GgmlType) -> Vec<Int8Product> {
    let mut products: Vec<Int8Product> = Vec::new();
    if int8::supports(ty) {
        for (name, micro) in int8_kernels() {
            products.push((
                format!("prefill {name}"),
                Box::new(move |x, t, w, o| int8::matmul(micro, x, t, w, o)),
            ));
        }
    }
    if int8::supports_decode(ty) {
        for isa in int8::DotIsa::available() {
            products.push((
                format!("decode {isa:?}"),
                Box::new(move |x, t, w, o| int8::matvec_with(isa, x, t, w, o)),
            ));
        }
    }
    products
}

/// `[rows, cols]` weights of `ty` from the fixture blocks, with their gguf-py values.
fn fixture_matrix(f: &RefBlocks, rows: usize, blocks_per_row: usize) -> (Vec<u8>, Vec<f64>) {
    let (mut bytes, mut w) = (Vec::new(), Vec::new());
    for r in 0..rows {
        for j in 0..blocks_per_row {
            let b = (r * 7 + j * 3 + r / 5) % f.blocks.len();
            bytes.extend_from_slice(&f.blocks[b]);
            w.extend(f.values[b].iter().map(|&v| f64::from(v)));
        }
    }
    (bytes, w)
}

/// Activations that 8-bit rounding keeps exactly: every 32-block is k·2⁻⁷ with integer
/// |k| ≤ 127 and one |k| = 127, so its step max|x|/127 is 2⁻⁷ and x/step is k.
fn int8_exact_activations(n: usize, seed: u64) -> Vec<f32> {
    let mut x: Vec<f32> = activations(n, seed)
        .iter()
        .map(|v| (v * 127.0).round() / 128.0)
        .collect();
    for (b, block) in x.chunks_mut(32).enumerate() {
        block[b % 32] = if b % 2 == 0 {
            127.0 / 128.0
        } else {
            -127.0 / 128.0
        };
    }
    x
}

#[test]
fn int8_products_are_exact_when_the_activations_round_exactly() {
    // With activations 8-bit rounding keeps, the int8 paths compute the same products as
    // the exact one: same bound against gguf-py's weights in float64.
    let fixtures = fixture_blocks();
    let covered: Vec<GgmlType> = fixtures
        .iter()
        .filter(|f| !int8_products(f.ty).is_empty())
        .map(|f| f.ty)
        .collect();
    assert_eq!(covered.len(), 5, "fixture lost int8 types: {covered:?}");
    for f in &fixtures {
        for (name, product) in int8_products(f.ty) {
            let row_counts: &[usize] = if cfg!(miri) { &[1, 17] } else { &[1, 17, 70] };
            for &rows in row_counts {
                let bpr = match (cfg!(miri), f.ty.block_size()) {
                    (true, _) => 2,
                    (false, 32) => 24,
                    (false, _) => 3,
                };
                let cols = bpr * f.ty.block_size();
                let (bytes, w) = fixture_matrix(f, rows, bpr);
                let m = QuantMatrix::new(&bytes, f.ty, rows, cols).unwrap();
                let token_counts: &[usize] = if cfg!(miri) {
                    &[1, 9]
                } else {
                    &[1, 2, 4, 8, 9, 19]
                };
                for &tokens in token_counts {
                    let x = int8_exact_activations(tokens * cols, (rows + tokens) as u64);
                    let mut out = vec![f32::NAN; tokens * rows];
                    product(&x, tokens, m, &mut out);
                    for t in 0..tokens {
                        for r in 0..rows {
                            let (want, mag) = reference(&w, &x, cols, t, r);
                            let got = f64::from(out[t * rows + r]);
                            assert!(
                                (got - want).abs() <= TOL * mag,
                                "{} {name} rows={rows} tokens={tokens} t={t} r={r}: {got} vs {want}",
                                f.ty
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn int8_rounding_error_stays_within_half_a_step_per_activation() {
    // Arbitrary activations: each moves by at most half its block's step max|x|/127, so an
    // output moves by at most Σ|w|·step/2 (Q4_0, Q5_0, Q8_0 and Q6_K, whose weights are
    // scale·q; Q4_K's minimum term uses exact sums and is covered above).
    for f in fixture_blocks().iter().filter(|f| {
        matches!(
            f.ty,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q6_K
        )
    }) {
        for (name, product) in int8_products(f.ty) {
            let (rows, cols) = if cfg!(miri) { (17, 256) } else { (37, 1280) };
            let token_counts: &[usize] = if cfg!(miri) { &[1, 9] } else { &[1, 3, 11] };
            let (bytes, w) = fixture_matrix(f, rows, cols / f.ty.block_size());
            let m = QuantMatrix::new(&bytes, f.ty, rows, cols).unwrap();
            let mut worst = 0.0f64;
            for &tokens in token_counts {
                let x = activations(tokens * cols, 5 + tokens as u64);
                let mut out = vec![f32::NAN; tokens * rows];
                product(&x, tokens, m, &mut out);
                for t in 0..tokens {
                    for r in 0..rows {
                        let (mut want, mut mag, mut bound) = (0.0f64, 0.0f64, 0.0f64);
                        for b in 0..cols / 32 {
                            let xs = &x[t * cols + 32 * b..t * cols + 32 * b + 32];
                            let step =
                                xs.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs()))) / 127.0;
                            for i in 0..32 {
                                let wi = w[r * cols + 32 * b + i];
                                let p = wi * f64::from(xs[i]);
                                want += p;
                                mag += p.abs();
                                bound += wi.abs() * step / 2.0;
                            }
                        }
                        let err = (f64::from(out[t * rows + r]) - want).abs();
                        worst = worst.max(err / bound);
                        assert!(
                            err <= bound + TOL * mag,
                            "{} {name} tokens={tokens} t={t} r={r}: error {err} > bound {bound}",
                            f.ty
                        );
                    }
                }
            }
            eprintln!("{} {name}: worst error / bound = {worst:.3}", f.ty);
        }
    }
}

#[test]
fn int8_decode_of_several_tokens_equals_one_token_at_a_time() {
    // The speculative-verify form (up to 8 tokens per call) must give every token exactly its
    // own decode step's result.
    for f in fixture_blocks()
        .iter()
        .filter(|f| int8::supports_decode(f.ty))
    {
        let (rows, cols) = if cfg!(miri) { (17, 256) } else { (70, 768) };
        let (bytes, _) = fixture_matrix(f, rows, cols / f.ty.block_size());
        let m = QuantMatrix::new(&bytes, f.ty, rows, cols).unwrap();
        let tokens = if cfg!(miri) { 3 } else { 8 };
        let x = activations(tokens * cols, 17);
        for isa in int8::DotIsa::available() {
            let mut together = vec![f32::NAN; tokens * rows];
            int8::matvec_with(isa, &x, tokens, m, &mut together);
            for t in 0..tokens {
                let mut alone = vec![f32::NAN; rows];
                int8::matvec_with(isa, &x[t * cols..(t + 1) * cols], 1, m, &mut alone);
                let same = alone
                    .iter()
                    .zip(&together[t * rows..(t + 1) * rows])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} {isa:?} token {t}", f.ty);
            }
        }
    }
}

#[test]
fn int8_decode_levels_are_detected() {
    let levels = int8::DotIsa::available();
    assert_eq!(levels[0], int8::DotIsa::Portable);
    assert_eq!(
        int8::DotIsa::fast(),
        levels.get(1..).and_then(|l| l.last().copied())
    );
    #[cfg(target_arch = "x86_64")]
    if Isa::available().contains(&Isa::Avx2) {
        assert!(levels.contains(&int8::DotIsa::Avx2));
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert!(levels.contains(&int8::DotIsa::Neon));
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        assert_eq!(levels.contains(&int8::DotIsa::NeonDot), dotprod);
        let i8mm = std::arch::is_aarch64_feature_detected!("i8mm");
        assert_eq!(int8::fast_kernel().is_some(), i8mm);
    }
    // What an int8 request runs (`Engine::activations()` reports this): int8 in each phase
    // that has a fast kernel on this CPU (on aarch64: decode always, prefill with i8mm).
    let (exact, int8_) = (
        int8::ActivationPrecision::Exact,
        int8::ActivationPrecision::Int8,
    );
    let runs = int8::effective(int8::Activations {
        prefill: int8_,
        decode: int8_,
    });
    let expect = |fast: bool| if fast { int8_ } else { exact };
    assert_eq!(runs.prefill, expect(int8::fast_kernel().is_some()));
    assert_eq!(runs.decode, expect(int8::DotIsa::fast().is_some()));
    #[cfg(target_arch = "aarch64")]
    assert_eq!(runs.decode, int8_);
    // Which levels this run covers (every test here iterates over them).
    eprintln!(
        "int8 decode levels {levels:?}; prefill fast kernel: {}",
        int8::fast_kernel().is_some()
    );
}
