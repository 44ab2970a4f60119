//! CPU matrix products over weights that stay in the mapped file.
//!
//! `y[t, o] = Σ_i x[t, i] · W[o, i]` with `W` stored `[out, in]` in its file encoding and `x` in
//! f32. Unless 8-bit activations are asked for ([`int8`], per phase), activations are never
//! quantized: every weight is dequantized exactly (the same values as ggml's and gguf-py's
//! reference decoders) and multiplied in f32, so the only difference from a float64 reference
//! is f32 rounding of the sums. Two shapes of work:
//!
//! - **few tokens** (decode): each worker ([`pool`]) streams its output rows once and dots every row's
//!   blocks with the activation straight from the packed bytes ([`Isa`]-specific fused kernels
//!   for Q4_0, Q5_0, Q8_0, Q4_K and Q6_K; other encodings decode a row into scratch and dot it).
//!   A row's block scale is factored out of its block sum (`d·Σ q·x`); Q4_K's minimum term
//!   and (on x86) Q4_0's −8 offset use per-32 sums of `x` computed once per call.
//! - **many tokens** (prefill): each worker dequantizes a tile of [`TILE_ROWS`] × [`KC`] weights
//!   once into f32 scratch, packed for a register-blocked micro-kernel (up to [`MR_MAX`] tokens ×
//!   [`NR`] rows per step), and reuses it for every token, so the weights cost one decode per
//!   call and the products run at FMA throughput.
//!
//! The instruction set is detected once ([`Isa::detect`]); every level is also callable
//! explicitly ([`matmul_with`]) so tests can check each one against the same reference.

pub mod activation;
pub mod attention;
pub mod int8;
#[cfg(target_arch = "aarch64")]
mod neon;
pub(crate) mod pool;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{GemmaError, Result};
use crate::weights::{GgmlType, MappedTensor, quant};
pub use int8::{ActivationPrecision, Activations};

/// Output rows of one packed panel (the micro-kernel's width).
pub const NR: usize = 16;
/// Most tokens one micro-kernel call covers (each ISA says how many it takes: `Kernels::mr`).
pub const MR_MAX: usize = 12;
/// Output rows one prefill task dequantizes per K chunk (a multiple of [`NR`]).
pub const TILE_ROWS: usize = 64;
/// Inner-dimension chunk of a prefill tile: a multiple of every block size (≤ 256), small
/// enough that a tile (128 KiB of f32) stays in L2 and a micro-kernel call amortises its
/// read-add-write of the outputs.
pub const KC: usize = 512;
/// From this many tokens on, the tiled (prefill) path runs; below it, the fused dot path runs
/// once per token over the same rows (which then come from cache). A speculative-decoding
/// verify pass (the sampled token and up to 7 drafted ones) stays on the fused path: it reads
/// each weight from memory once, like a decode step, and each token's product is
/// bit-identical to that token's decode step.
pub const TILED_MIN_TOKENS: usize = 9;

/// Output rows the few-token path dots with every token before moving on, so those rows' bytes
/// stay in L1 while they are reused.
const ROWS_BLOCK: usize = 16;

/// Instruction-set level of the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, every target.
    Portable,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX2 level plus AVX-512 F/BW/VL (512-bit accumulators).
    Avx512,
    /// aarch64 Advanced SIMD (baseline on every aarch64 target).
    Neon,
}

impl Isa {
    /// The fastest level this CPU supports; detected on first use, then cached.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Isa::available().into_iter().last().unwrap_or(Isa::Portable);
            log::debug!("CPU kernels: {best:?}");
            best
        })
    }

    /// Every level this CPU can run, slowest first.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut levels = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            levels.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                levels.push(Isa::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            levels.push(Isa::Neon);
        }
        levels
    }

    /// Whether this CPU runs `self` (cached; no allocation).
    pub fn is_supported(self) -> bool {
        static AVAILABLE: OnceLock<Vec<Isa>> = OnceLock::new();
        AVAILABLE.get_or_init(Isa::available).contains(&self)
    }

    fn kernels(self) -> &'static Kernels {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &x86::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &x86::KERNELS_512,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => &neon::KERNELS,
            _ => &portable::KERNELS,
        }
    }
}

/// `out[r] = Σ_i row_r[i] · x[i]` for the rows packed back to back in `rows` (`stride` bytes
/// each, `x.len()` elements each). `sums32` holds the sums of `x` over each 32-element block
/// (Q4_K reads them; Q4_0 gets them halved, which the x86 kernels read). Safety: the caller
/// guarantees the ISA is supported and the lengths.
type RowsDot = unsafe fn(rows: &[u8], stride: usize, x: &[f32], sums32: &[f32], out: &mut [f32]);

/// `c[t][j] = Σ_k x[t·x_stride + k] · w[k·NR + j]` for `t < mr`, `k < kc`.
type MicroKernel = unsafe fn(
    kc: usize,
    x: &[f32],
    x_stride: usize,
    mr: usize,
    w: &[f32],
    c: &mut [[f32; NR]; MR_MAX],
);

/// One ISA's kernels.
pub(crate) struct Kernels {
    q4_0: RowsDot,
    q5_0: RowsDot,
    q8_0: RowsDot,
    q4_k: RowsDot,
    q6_k: RowsDot,
    dot_f32: unsafe fn(&[f32], &[f32]) -> f32,
    micro: MicroKernel,
    /// Tokens per micro-kernel call (≤ [`MR_MAX`]).
    mr: usize,
    /// Whether `q4_0` reads the halved block sums of `x` (the AVX2 kernel's −8 offset).
    q4_0_reads_sums: bool,
}

impl Kernels {
    fn fused(&self, dtype: GgmlType) -> Option<RowsDot> {
        Some(match dtype {
            GgmlType::Q4_0 => self.q4_0,
            GgmlType::Q5_0 => self.q5_0,
            GgmlType::Q8_0 => self.q8_0,
            GgmlType::Q4_K => self.q4_k,
            GgmlType::Q6_K => self.q6_k,
            _ => return None,
        })
    }
}

/// A `[rows, cols]` weight matrix in a ggml encoding, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct QuantMatrix<'a> {
    bytes: &'a [u8],
    dtype: GgmlType,
    rows: usize,
    cols: usize,
}

impl<'a> QuantMatrix<'a> {
    /// Checks that `bytes` is exactly `rows` rows of `cols` elements of `dtype`.
    pub fn new(bytes: &'a [u8], dtype: GgmlType, rows: usize, cols: usize) -> Result<Self> {
        if !quant::is_supported(dtype) {
            return Err(GemmaError::Unsupported(format!("CPU matmul over {dtype}")));
        }
        let row = quant::encoded_len(dtype, cols)
            .map_err(|e| GemmaError::InvalidArgument(e.to_string()))?;
        if row.checked_mul(rows) != Some(bytes.len()) {
            return Err(GemmaError::InvalidArgument(format!(
                "{} bytes are not {rows} rows of {cols} {dtype} elements",
                bytes.len()
            )));
        }
        Ok(Self {
            bytes,
            dtype,
            rows,
            cols,
        })
    }

    pub fn from_mapped(w: &'a MappedTensor) -> Self {
        // MappedTensor::new validated the same invariants.
        Self {
            bytes: w.bytes(),
            dtype: w.dtype(),
            rows: w.rows(),
            cols: w.cols(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    fn stride(&self) -> usize {
        self.bytes.len() / self.rows.max(1)
    }
}

/// `x` is `[tokens, in]` row-major; returns `[tokens, out]`. Where `activations` asks for
/// [`ActivationPrecision::Int8`] in the phase this call belongs to (prefill from
/// [`TILED_MIN_TOKENS`] tokens on, decode below) and this CPU and the weight format allow it,
/// activations are rounded to 8 bits ([`int8`]); otherwise the product is exact.
pub fn matmul_mapped(
    x: &[f32],
    tokens: usize,
    weight: &MappedTensor,
    activations: Activations,
) -> Vec<f32> {
    let w = QuantMatrix::from_mapped(weight);
    let mut out = vec![0.0f32; tokens * w.rows];
    let int8 = ActivationPrecision::Int8;
    if tokens >= TILED_MIN_TOKENS {
        let micro = (activations.prefill == int8 && int8::supports(w.dtype))
            .then(int8::fast_kernel)
            .flatten();
        if let Some(micro) = micro {
            int8::matmul(micro, x, tokens, w, &mut out);
            return out;
        }
    } else if activations.decode == int8
        && int8::supports_decode(w.dtype)
        && let Some(isa) = int8::DotIsa::fast()
    {
        int8::matvec_with(isa, x, tokens, w, &mut out);
        return out;
    }
    matmul_with(Isa::detect(), x, tokens, w, &mut out);
    out
}

/// `out = x · Wᵀ` with `x` `[tokens, cols]` and `out` `[tokens, rows]`, on instruction set `isa`
/// (which must be one of [`Isa::available`]; panics otherwise). Overwrites `out`.
pub fn matmul_with(isa: Isa, x: &[f32], tokens: usize, w: QuantMatrix<'_>, out: &mut [f32]) {
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    if is_empty_product(x, tokens, w, out) {
        return;
    }
    let k = isa.kernels();
    if tokens >= TILED_MIN_TOKENS {
        matmul_tiled(k, x, tokens, w, out);
    } else {
        matmul_rows(k, x, tokens, w, out);
    }
}

/// Panics unless `x` is `[tokens, w.cols]` and `out` `[tokens, w.rows]`; whether there is
/// nothing to compute.
pub(crate) fn is_empty_product(x: &[f32], tokens: usize, w: QuantMatrix<'_>, out: &[f32]) -> bool {
    assert_eq!(
        x.len(),
        tokens * w.cols,
        "activation shape does not match the weight"
    );
    assert_eq!(
        out.len(),
        tokens * w.rows,
        "output shape does not match the weight"
    );
    tokens == 0 || w.rows == 0
}

/// Raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every task writes a disjoint set of output elements (its own rows' columns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Stores (or with `accumulate`, adds) a micro-kernel's results `c[t][..width]` at
/// `out[(t0 + t)·rows + r0..]`. Safety: those elements lie in `out` and no other task writes
/// them.
pub(crate) unsafe fn write_tile(
    dst: OutPtr,
    rows: usize,
    t0: usize,
    r0: usize,
    width: usize,
    c: &[[f32; NR]],
    accumulate: bool,
) {
    for (t, ct) in c.iter().enumerate() {
        // SAFETY: guaranteed by the caller.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.0.add((t0 + t) * rows + r0), width) };
        if accumulate {
            o.iter_mut().zip(ct).for_each(|(o, v)| *o += v);
        } else {
            o.copy_from_slice(&ct[..width]);
        }
    }
}

/// Output rows per task: about eight tasks per thread for load balance, at least one tile.
fn rows_per_task(rows: usize, granule: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let want = rows.div_ceil(threads * 8);
    want.div_ceil(granule).clamp(1, 512 / granule) * granule
}

thread_local! {
    /// Per-thread scratch (taken while in use, so a nested call just allocates its own).
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The calling thread's per-call activation sums.
    static SUMS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

fn with_scratch<R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = slot.with(|s| s.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    slot.with(|s| s.set(buf));
    r
}

/// The few-token work split, shared by the exact and int8 decode kernels: parallel tasks
/// ([`pool`]) of whole rows, each walked in blocks of [`ROWS_BLOCK`] rows; `f(bytes, r0, n)`
/// gets the bytes of rows `r0..r0 + n`, which it dots with every token while they are in L1,
/// so the weights are read from memory once however many tokens there are.
pub(crate) fn for_row_blocks(w: QuantMatrix<'_>, f: &(dyn Fn(&[u8], usize, usize) + Sync)) {
    let (rows, stride) = (w.rows, w.stride());
    let per_task = rows_per_task(rows, 16);
    pool::for_each_task(rows.div_ceil(per_task), &|task| {
        let r0 = task * per_task;
        let n = per_task.min(rows - r0);
        for b0 in (0..n).step_by(ROWS_BLOCK) {
            let bn = ROWS_BLOCK.min(n - b0);
            let rb = r0 + b0;
            f(&w.bytes[rb * stride..(rb + bn) * stride], rb, bn);
        }
    });
}

/// The few-token path: fused dot kernels over each row's packed blocks.
fn matmul_rows(k: &Kernels, x: &[f32], tokens: usize, w: QuantMatrix<'_>, out: &mut [f32]) {
    let (rows, cols, stride) = (w.rows, w.cols, w.stride());
    let fused = k.fused(w.dtype);
    // Q4_K subtracts its minimum with `Σx` per 32-block; the AVX2 Q4_0 kernel folds its −8
    // offset out the same way, with `Σx / 2` (exact: a power of two).
    let (sums_len, sums_scale) = match w.dtype {
        GgmlType::Q4_K => (tokens * (cols / 32), 1.0),
        GgmlType::Q4_0 if k.q4_0_reads_sums => (tokens * (cols / 32), 0.5),
        _ => (0, 1.0),
    };
    with_scratch(&SUMS, sums_len, |sums| {
        if sums_len > 0 {
            for (s, xs) in sums.iter_mut().zip(x.as_chunks::<32>().0) {
                *s = xs.iter().sum::<f32>() * sums_scale;
            }
        }
        let sums: &[f32] = sums;
        let dst = OutPtr(out.as_mut_ptr());
        for_row_blocks(w, &|bytes, rb, bn| {
            let dst = dst;
            match fused {
                Some(f) => {
                    for t in 0..tokens {
                        let xt = &x[t * cols..(t + 1) * cols];
                        // SAFETY: rows rb..rb+bn of token t belong to this block alone and
                        // lie inside `out` (checked by the caller).
                        let o =
                            unsafe { std::slice::from_raw_parts_mut(dst.0.add(t * rows + rb), bn) };
                        let st = &sums[(t * cols / 32).min(sums.len())..];
                        // SAFETY: the ISA was checked by the caller; `bytes` holds bn rows
                        // of `stride` bytes encoding `cols` elements.
                        unsafe { f(bytes, stride, xt, st, o) }
                    }
                }
                None => with_scratch(&SCRATCH, cols, |row| {
                    for r in 0..bn {
                        quant::dequantize_row(w.dtype, &bytes[r * stride..(r + 1) * stride], row)
                            .expect("row layout validated");
                        for t in 0..tokens {
                            let xt = &x[t * cols..(t + 1) * cols];
                            // SAFETY: ISA checked by the caller; element (t, rb + r) belongs
                            // to this block alone and lies inside `out`.
                            unsafe { *dst.0.add(t * rows + rb + r) = (k.dot_f32)(row, xt) };
                        }
                    }
                }),
            }
        });
    });
}

/// The many-token path: dequantize a tile once, run the micro-kernel over every token.
fn matmul_tiled(k: &Kernels, x: &[f32], tokens: usize, w: QuantMatrix<'_>, out: &mut [f32]) {
    let (rows, cols, stride) = (w.rows, w.cols, w.stride());
    let (bs, bb) = (w.dtype.block_size(), w.dtype.block_bytes());
    let per_task = rows_per_task(rows, TILE_ROWS).min(TILE_ROWS);
    let dst = OutPtr(out.as_mut_ptr());
    (0..rows.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let dst = dst;
            let r0 = task * per_task;
            let n = per_task.min(rows - r0);
            let panels = n.div_ceil(NR);
            // Packed tile: panel p, inner index kk, row j at [p][kk][j]; then one row of scratch.
            with_scratch(&SCRATCH, panels * KC * NR + KC, |buf| {
                let (tile, row) = buf.split_at_mut(panels * KC * NR);
                let mut k0 = 0;
                while k0 < cols {
                    let kc = KC.min(cols - k0);
                    let byte0 = k0 / bs * bb;
                    let byte_len = kc / bs * bb;
                    for r in 0..panels * NR {
                        let (p, j) = (r / NR, r % NR);
                        let panel = &mut tile[p * KC * NR..(p + 1) * KC * NR];
                        if r < n {
                            let at = (r0 + r) * stride + byte0;
                            quant::dequantize_row(
                                w.dtype,
                                &w.bytes[at..at + byte_len],
                                &mut row[..kc],
                            )
                            .expect("row layout validated");
                            for (kk, &v) in row[..kc].iter().enumerate() {
                                panel[kk * NR + j] = v;
                            }
                        } else {
                            for kk in 0..kc {
                                panel[kk * NR + j] = 0.0;
                            }
                        }
                    }
                    let mut c = [[0.0f32; NR]; MR_MAX];
                    let mut t0 = 0;
                    while t0 < tokens {
                        let mr = k.mr.min(tokens - t0);
                        let xt = &x[t0 * cols + k0..];
                        for p in 0..panels {
                            let panel = &tile[p * KC * NR..p * KC * NR + kc * NR];
                            // SAFETY: ISA checked by the caller; `xt` holds mr rows of stride
                            // `cols` with kc elements each from k0, `panel` kc·NR values.
                            unsafe { (k.micro)(kc, xt, cols, mr, panel, &mut c) };
                            // SAFETY: rows r0+p·NR.. of tokens t0.. belong to this task alone.
                            // The first K chunk overwrites whatever `out` held.
                            unsafe {
                                write_tile(
                                    dst,
                                    rows,
                                    t0,
                                    r0 + p * NR,
                                    NR.min(n - p * NR),
                                    &c[..mr],
                                    k0 > 0,
                                )
                            };
                        }
                        t0 += mr;
                    }
                    k0 += kc;
                }
            });
        });
}

/// Dot product with eight independent accumulators (vectorises without `unsafe`).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    portable::dot_f32(a, b)
}

/// `[rows, cols]` → `[cols, rows]`.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_for_odd_lengths() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            for isa in Isa::available() {
                // SAFETY: the ISA is available.
                let got = unsafe { (isa.kernels().dot_f32)(&a, &b) };
                assert!((got as f64 - naive).abs() < 1e-5, "{isa:?} n = {n}");
            }
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5, "n = {n}");
        }
    }

    #[test]
    fn transpose_moves_every_element() {
        let src: Vec<f32> = (0..6).map(|v| v as f32).collect(); // [[0,1,2],[3,4,5]]
        assert_eq!(transpose(&src, 2, 3), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
