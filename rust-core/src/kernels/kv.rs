//! KV-cache element types and their row codecs: `f32`, `f16`, `q8_0` (ggml's block layout:
//! an f16 scale per 32 values) and TurboQuant at 2–4 bits (Zandieh et al., arXiv:2504.19874,
//! Algorithm 1, "TurboQuant_mse": a random orthogonal rotation, then a Lloyd-Max scalar
//! quantizer for the density of one coordinate of a rotated unit vector, with the norm kept in
//! f16). QJL (the paper's Algorithm 2) is left out, as production ports do: it adds variance
//! that softmax amplifies.
//!
//! A row is one KV head of one token (`head_dim` values). Attention reads the encoded rows
//! directly (`cpu::attention`): TurboQuant keys are scored against the query rotated once per
//! head, values are summed in the rotated domain and rotated back once per head.

use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use half::f16;

#[cfg(feature = "gpu")]
use super::gpu::kv::DeviceTables;
use crate::error::{GemmaError, Result};

/// The element type of cached keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    F32,
    F16,
    /// ggml's Q8_0: blocks of 32 signed bytes with an f16 scale (8.5 bits a value).
    Q8_0,
    /// TurboQuant with `bits` ∈ 2..=4 bits a coordinate plus an f16 norm per row.
    Tq(u8),
}

impl KvType {
    /// Every type, in the CLI's spelling order.
    pub const ALL: [KvType; 6] = [
        KvType::F32,
        KvType::F16,
        KvType::Q8_0,
        KvType::Tq(4),
        KvType::Tq(3),
        KvType::Tq(2),
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Tq(4) => "tq4",
            KvType::Tq(3) => "tq3",
            KvType::Tq(_) => "tq2",
        }
    }

    /// Bytes of one encoded row of `d` values.
    pub fn row_bytes(self, d: usize) -> usize {
        match self {
            KvType::F32 => 4 * d,
            KvType::F16 => 2 * d,
            KvType::Q8_0 => d.div_ceil(Q8_BLOCK) * (2 + Q8_BLOCK),
            KvType::Tq(bits) => 2 + (d * bits as usize).div_ceil(8),
        }
    }

    /// Whether rows of `d` values can be stored in this type (TurboQuant's Hadamard rotation
    /// needs a power of two).
    pub fn check_head_dim(self, d: usize) -> Result<()> {
        match self {
            KvType::Tq(_) if !d.is_power_of_two() => Err(GemmaError::Unsupported(format!(
                "KV type {} needs a power-of-two head dimension, the model has {d}",
                self.name()
            ))),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = GemmaError;
    fn from_str(s: &str) -> Result<Self> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                GemmaError::InvalidArgument(format!(
                    "unknown KV type `{s}` (f32, f16, q8_0, tq4, tq3, tq2)"
                ))
            })
    }
}

/// The element types of keys and of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvTypes {
    pub k: KvType,
    pub v: KvType,
}

impl KvTypes {
    pub const F32: KvTypes = KvTypes {
        k: KvType::F32,
        v: KvType::F32,
    };

    pub fn both(t: KvType) -> Self {
        KvTypes { k: t, v: t }
    }

    /// Bytes of one token's keys and values for a layer of `kv_heads` heads of `d` values.
    pub fn token_bytes(self, kv_heads: usize, d: usize) -> usize {
        kv_heads * (self.k.row_bytes(d) + self.v.row_bytes(d))
    }
}

const Q8_BLOCK: usize = 32;

/// The codec of one layer's keys or values: the type, and for TurboQuant each KV head's
/// rotation (random signs before a normalized Walsh-Hadamard transform) and the codebook.
#[derive(Debug)]
pub struct KvCodec {
    pub ty: KvType,
    pub d: usize,
    /// `[kv_heads·d]` ±1 (TurboQuant only).
    signs: Vec<f32>,
    /// The Lloyd-Max levels for one coordinate of a rotated unit vector, ascending.
    levels: Arc<[f32]>,
    /// The signs and levels on the GPU, uploaded on first use there (`gpu::kv`).
    #[cfg(feature = "gpu")]
    device: OnceLock<DeviceTables>,
}

impl KvCodec {
    /// The codec for `kv_heads` heads of `d` values; `seed` fixes the rotations (one per layer
    /// and stream: the same seed gives the same rotations).
    pub fn new(ty: KvType, kv_heads: usize, d: usize, seed: u64) -> Result<Self> {
        ty.check_head_dim(d)?;
        let (signs, levels) = match ty {
            KvType::Tq(bits) => {
                let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
                let signs = (0..kv_heads * d)
                    .map(|_| {
                        if splitmix(&mut state) >> 63 == 0 {
                            1.0
                        } else {
                            -1.0
                        }
                    })
                    .collect();
                (signs, codebook(d, bits))
            }
            _ => (Vec::new(), Arc::from(Vec::new())),
        };
        Ok(KvCodec {
            ty,
            d,
            signs,
            levels,
            #[cfg(feature = "gpu")]
            device: OnceLock::new(),
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.d)
    }

    /// The codebook (TurboQuant only; empty otherwise).
    pub fn levels(&self) -> &[f32] {
        &self.levels
    }

    /// Every KV head's rotation signs, `[kv_heads·d]` ±1 (TurboQuant only; empty otherwise).
    pub fn signs(&self) -> &[f32] {
        &self.signs
    }

    /// KV heads of a rotated codec (0 otherwise: only rotations depend on the head).
    pub fn kv_heads(&self) -> usize {
        self.signs.len() / self.d.max(1)
    }

    /// This codec's tables on the GPU `device` (uploaded once; a process opens one GPU).
    #[cfg(feature = "gpu")]
    pub fn device_tables(&self, device: &burn::tensor::Device) -> &DeviceTables {
        self.device.get_or_init(|| DeviceTables::new(self, device))
    }

    /// `x` ↦ Π·x for KV head `head`: y = H·(D∘x)/√d.
    pub fn rotate(&self, head: usize, x: &mut [f32]) {
        let signs = &self.signs[head * self.d..(head + 1) * self.d];
        x.iter_mut().zip(signs).for_each(|(x, s)| *x *= s);
        hadamard(x);
    }

    /// `y` ↦ Πᵀ·y for KV head `head` (the inverse of [`rotate`](Self::rotate)).
    pub fn unrotate(&self, head: usize, y: &mut [f32]) {
        hadamard(y);
        let signs = &self.signs[head * self.d..(head + 1) * self.d];
        y.iter_mut().zip(signs).for_each(|(y, s)| *y *= s);
    }

    /// Encodes one row `x` (`d` values) of KV head `head` into `out` (`row_bytes`).
    pub fn encode(&self, head: usize, x: &[f32], out: &mut [u8]) {
        match self.ty {
            KvType::F32 => x
                .iter()
                .zip(out.chunks_exact_mut(4))
                .for_each(|(v, o)| o.copy_from_slice(&v.to_le_bytes())),
            KvType::F16 => x
                .iter()
                .zip(out.chunks_exact_mut(2))
                .for_each(|(v, o)| o.copy_from_slice(&f16::from_f32(*v).to_le_bytes())),
            KvType::Q8_0 => {
                for (block, o) in x.chunks(Q8_BLOCK).zip(out.chunks_exact_mut(2 + Q8_BLOCK)) {
                    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let scale = amax / 127.0;
                    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                    o[..2].copy_from_slice(&f16::from_f32(scale).to_le_bytes());
                    o[2..].fill(0);
                    for (q, v) in o[2..].iter_mut().zip(block) {
                        *q = (v * inv).round().clamp(-127.0, 127.0) as i8 as u8;
                    }
                }
            }
            KvType::Tq(bits) => {
                out.fill(0);
                let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm == 0.0 || !norm.is_finite() {
                    return;
                }
                let mut y: Vec<f32> = x.iter().map(|v| v / norm).collect();
                self.rotate(head, &mut y);
                let levels = &self.levels;
                let mut energy = 0.0f32;
                for (j, &t) in y.iter().enumerate() {
                    // Nearest level: the decision boundaries are the midpoints.
                    let k = levels
                        .windows(2)
                        .take_while(|w| t > 0.5 * (w[0] + w[1]))
                        .count();
                    energy += levels[k] * levels[k];
                    put_bits(&mut out[2..], j, bits, k as u32);
                }
                // Norm correction: the stored scale makes the decoded row's norm the input's.
                let scale = norm / energy.sqrt().max(f32::MIN_POSITIVE);
                out[..2].copy_from_slice(&f16::from_f32(scale).to_le_bytes());
            }
        }
    }

    /// Decodes one row (the inverse of [`encode`](Self::encode) up to its rounding).
    pub fn decode(&self, head: usize, row: &[u8], out: &mut [f32]) {
        self.expand(row, out);
        if self.is_rotated() {
            self.unrotate(head, out);
        }
    }

    /// The row's `d` values in the domain attention works in: a TurboQuant row stays rotated
    /// (scale · level per coordinate: queries are rotated to meet it, and value sums are rotated
    /// back once per head), every other type is its values. Attention expands one row at a time
    /// and uses it for every query head of its group, so the cache itself is never decoded.
    #[inline(always)]
    pub fn expand(&self, row: &[u8], out: &mut [f32]) {
        let h = half_table();
        match self.ty {
            KvType::F32 => out
                .iter_mut()
                .zip(row.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            KvType::F16 => out
                .iter_mut()
                .zip(row.chunks_exact(2))
                .for_each(|(o, b)| *o = half(h, b[0], b[1])),
            KvType::Q8_0 => {
                for (o, b) in out.chunks_mut(Q8_BLOCK).zip(row.chunks_exact(2 + Q8_BLOCK)) {
                    let s = half(h, b[0], b[1]);
                    o.iter_mut()
                        .zip(&b[2..])
                        .for_each(|(o, &q)| *o = s * (q as i8) as f32);
                }
            }
            KvType::Tq(bits) => {
                let s = half(h, row[0], row[1]);
                let levels = &self.levels;
                let codes = &row[2..];
                match bits {
                    4 => {
                        for (pair, &byte) in out.chunks_exact_mut(2).zip(codes) {
                            pair[0] = s * levels[(byte & 15) as usize];
                            pair[1] = s * levels[(byte >> 4) as usize];
                        }
                    }
                    2 => {
                        for (quad, &byte) in out.chunks_exact_mut(4).zip(codes) {
                            for (i, o) in quad.iter_mut().enumerate() {
                                *o = s * levels[((byte >> (2 * i)) & 3) as usize];
                            }
                        }
                    }
                    _ => {
                        for (j, o) in out.iter_mut().enumerate() {
                            *o = s * levels[get_bits(codes, j, bits) as usize];
                        }
                    }
                }
            }
        }
    }

    pub fn is_rotated(&self) -> bool {
        matches!(self.ty, KvType::Tq(_))
    }
}

/// Every f16 as f32 (256 KiB): in the attention loops a look-up is faster than a conversion.
fn half_table() -> &'static [f32; 1 << 16] {
    static TABLE: OnceLock<Box<[f32; 1 << 16]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([0.0f32; 1 << 16]);
        for (h, v) in table.iter_mut().enumerate() {
            *v = f16::from_bits(h as u16).to_f32();
        }
        table
    })
}

/// The f16 in little-endian bytes `lo`, `hi`, through [`half_table`].
#[inline(always)]
fn half(table: &[f32; 1 << 16], lo: u8, hi: u8) -> f32 {
    table[usize::from(u16::from_le_bytes([lo, hi]))]
}

fn put_bits(codes: &mut [u8], j: usize, bits: u8, value: u32) {
    let at = j * bits as usize;
    for b in 0..bits as usize {
        if value >> b & 1 == 1 {
            codes[(at + b) / 8] |= 1 << ((at + b) % 8);
        }
    }
}

#[inline(always)]
fn get_bits(codes: &[u8], j: usize, bits: u8) -> u32 {
    let at = j * bits as usize;
    let (byte, shift) = (at / 8, at % 8);
    let lo = codes[byte] as u32;
    let hi = codes.get(byte + 1).copied().unwrap_or(0) as u32;
    ((lo | hi << 8) >> shift) & ((1 << bits) - 1)
}

pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// In-place normalized Walsh-Hadamard transform (orthogonal and its own inverse); `x.len()` a
/// power of two.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (a, b) in a.iter_mut().zip(b.iter_mut()) {
                let (u, v) = (*a, *b);
                *a = u + v;
                *b = u - v;
            }
        }
        h *= 2;
    }
    let norm = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= norm);
}

/// The Lloyd-Max levels (ascending) of `bits` bits for one coordinate of a uniformly random
/// unit vector in ℝ^d, whose density is ∝ (1−t²)^((d−3)/2) on [−1, 1]: Lloyd's iteration on
/// a fine grid, in f64, computed once per (d, bits).
pub fn codebook(d: usize, bits: u8) -> Arc<[f32]> {
    type Books = Mutex<Vec<((usize, u8), Arc<[f32]>)>>;
    static BOOKS: OnceLock<Books> = OnceLock::new();
    let books = BOOKS.get_or_init(|| Mutex::new(Vec::new()));
    let mut books = books.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, b)) = books.iter().find(|(key, _)| *key == (d, bits)) {
        return b.clone();
    }
    let book: Arc<[f32]> = lloyd_max(d, bits).into_iter().map(|v| v as f32).collect();
    books.push(((d, bits), book.clone()));
    book
}

fn lloyd_max(d: usize, bits: u8) -> Vec<f64> {
    // The density lives within a few 1/√d of 0: a grid over ±12/√d (clipped to [−1, 1])
    // with cumulative sums of f and t·f makes every cell's mass and centroid two look-ups.
    let sigma = 1.0 / (d as f64).sqrt();
    let half = (12.0 * sigma).min(1.0);
    let n = 1 << 16;
    let step = 2.0 * half / n as f64;
    let exponent = (d as f64 - 3.0) / 2.0;
    let t = |i: usize| -half + (i as f64 + 0.5) * step;
    let mut mass = vec![0.0f64; n + 1];
    let mut moment = vec![0.0f64; n + 1];
    for i in 0..n {
        let x = t(i);
        let f = (1.0 - x * x).max(0.0).powf(exponent);
        mass[i + 1] = mass[i] + f;
        moment[i + 1] = moment[i] + f * x;
    }
    // Cell of grid index: fractional boundary positions, interpolated linearly.
    let cum = |c: &[f64], at: f64| {
        let pos = ((at + half) / step).clamp(0.0, n as f64);
        let i = (pos.floor() as usize).min(n - 1);
        c[i] + (c[i + 1] - c[i]) * (pos - i as f64)
    };
    let count = 1usize << bits;
    // Start from uniform quantiles of N(0, 1/d) (roughly): evenly spaced over ±2σ.
    let mut levels: Vec<f64> = (0..count)
        .map(|k| sigma * (-2.0 + 4.0 * (k as f64 + 0.5) / count as f64))
        .collect();
    for _ in 0..500 {
        let mut next = Vec::with_capacity(count);
        for k in 0..count {
            let lo = if k == 0 {
                -half
            } else {
                0.5 * (levels[k - 1] + levels[k])
            };
            let hi = if k + 1 == count {
                half
            } else {
                0.5 * (levels[k] + levels[k + 1])
            };
            let m = cum(&mass, hi) - cum(&mass, lo);
            next.push(if m > 0.0 {
                (cum(&moment, hi) - cum(&moment, lo)) / m
            } else {
                levels[k]
            });
        }
        levels = next;
    }
    levels
}

/// Encoded rows of one layer's keys or values: slot-major, `[slots][kv_heads][row_bytes]`.
#[derive(Debug, Clone)]
pub struct EncodedRows {
    pub codec: Arc<KvCodec>,
    pub kv_heads: usize,
    pub data: Vec<u8>,
}

impl EncodedRows {
    pub fn new(codec: Arc<KvCodec>, kv_heads: usize) -> Self {
        EncodedRows {
            codec,
            kv_heads,
            data: Vec::new(),
        }
    }

    pub fn slot_bytes(&self) -> usize {
        self.kv_heads * self.codec.row_bytes()
    }

    pub fn slots(&self) -> usize {
        self.data.len() / self.slot_bytes().max(1)
    }

    pub fn row(&self, head: usize, slot: usize) -> &[u8] {
        let rb = self.codec.row_bytes();
        let at = slot * self.slot_bytes() + head * rb;
        &self.data[at..at + rb]
    }

    /// Encodes `x` (`[kv_heads, t, d]`, row-major) token `i` into slot `slot` (which must exist).
    pub fn write(&mut self, slot: usize, x: &[f32], t: usize, i: usize) {
        let (d, rb, sb) = (self.codec.d, self.codec.row_bytes(), self.slot_bytes());
        for h in 0..self.kv_heads {
            let src = &x[(h * t + i) * d..(h * t + i + 1) * d];
            let at = slot * sb + h * rb;
            self.codec.encode(h, src, &mut self.data[at..at + rb]);
        }
    }

    /// Appends empty slots up to `slots` in all (never shrinks).
    pub fn grow_to(&mut self, slots: usize) {
        let want = slots * self.slot_bytes();
        if self.data.len() < want {
            self.data.resize(want, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    //! References are float64 computations written here: a Lloyd-Max iteration by Simpson
    //! integration of the exact coordinate density, orthogonality of the rotation's matrix,
    //! the paper's distortion bound, and softmax attention over the decoded rows.

    use super::*;
    use crate::kernels::attention::AttentionCall;
    use crate::kernels::cpu::attention::{KvView, attend_many, attend_one};
    use crate::kernels::reference::{self, decoded, encoded_rows, gaussians};

    fn unit(x: Vec<f64>) -> Vec<f64> {
        let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        x.into_iter().map(|v| v / n).collect()
    }

    #[test]
    fn rotation_is_orthogonal_and_round_trips() {
        for d in [256usize, 512] {
            let codec = KvCodec::new(KvType::Tq(4), 2, d, 7).unwrap();
            // Columns of Π for head 1, accumulated in f64: ΠᵀΠ must be the identity.
            let mut columns = Vec::with_capacity(d);
            for j in 0..d {
                let mut e = vec![0.0f32; d];
                e[j] = 1.0;
                codec.rotate(1, &mut e);
                columns.push(e.into_iter().map(f64::from).collect::<Vec<f64>>());
            }
            let mut worst = 0.0f64;
            for a in 0..d {
                for b in a..d {
                    let dot: f64 = columns[a].iter().zip(&columns[b]).map(|(x, y)| x * y).sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    worst = worst.max((dot - want).abs());
                }
            }
            assert!(worst <= 1e-6, "d={d}: ΠᵀΠ off the identity by {worst}");
            let x: Vec<f32> = gaussians(d, 3).into_iter().map(|v| v as f32).collect();
            let mut y = x.clone();
            codec.rotate(0, &mut y);
            codec.unrotate(0, &mut y);
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err <= 1e-6, "d={d}: round trip error {err}");
        }
    }

    /// Lloyd-Max levels for the density ∝ (1−t²)^((d−3)/2), by composite Simpson integration
    /// of each cell, iterated to a fixed point (f64).
    fn reference_levels(d: usize, bits: u8) -> Vec<f64> {
        let e = (d as f64 - 3.0) / 2.0;
        let f = |t: f64| (1.0 - t * t).max(0.0).powf(e);
        let simpson = |g: &dyn Fn(f64) -> f64, a: f64, b: f64| {
            let n = 600;
            let h = (b - a) / n as f64;
            let mut s = g(a) + g(b);
            for i in 1..n {
                s += g(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            s * h / 3.0
        };
        let edge = (16.0 / (d as f64).sqrt()).min(1.0);
        let count = 1usize << bits;
        let mut levels: Vec<f64> = (0..count)
            .map(|k| edge * (-0.5 + (k as f64 + 0.5) / count as f64))
            .collect();
        for _ in 0..3000 {
            let bounds: Vec<f64> = std::iter::once(-edge)
                .chain(levels.windows(2).map(|w| 0.5 * (w[0] + w[1])))
                .chain(std::iter::once(edge))
                .collect();
            let next: Vec<f64> = bounds
                .windows(2)
                .map(|b| simpson(&|t| t * f(t), b[0], b[1]) / simpson(&|t| f(t), b[0], b[1]))
                .collect();
            let moved = next
                .iter()
                .zip(&levels)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            levels = next;
            if moved < 1e-12 {
                break;
            }
        }
        levels
    }

    #[test]
    fn codebooks_are_lloyd_max_for_the_rotated_coordinate_density() {
        for d in [256usize, 512] {
            for bits in [2u8, 3, 4] {
                let want = reference_levels(d, bits);
                let got = codebook(d, bits);
                // In units of 1/√d (the levels of N(0, 1) for large d).
                let scale = (d as f64).sqrt();
                for (g, w) in got.iter().zip(&want) {
                    let (g, w) = (*g as f64 * scale, w * scale);
                    assert!((g - w).abs() <= 1e-3, "d={d} b={bits}: {g} vs {w}");
                }
            }
        }
        // And the spec's N(0, 1) table at b=2 (d → ∞), loosely at d=512.
        let b2 = codebook(512, 2);
        let top = b2[3] as f64 * 512f64.sqrt();
        assert!((top - 1.5104).abs() < 0.01, "{top}");
    }

    #[test]
    fn mse_distortion_is_within_the_papers_bound() {
        let d = 256;
        for bits in [2u8, 3, 4] {
            let codec = KvCodec::new(KvType::Tq(bits), 1, d, 11).unwrap();
            let mut row = vec![0u8; codec.row_bytes()];
            let mut out = vec![0.0f32; d];
            let trials = 200;
            let mut total = 0.0f64;
            for t in 0..trials {
                let u = unit(gaussians(d, 100 + t));
                let x: Vec<f32> = u.iter().map(|&v| v as f32).collect();
                codec.encode(0, &x, &mut row);
                codec.decode(0, &row, &mut out);
                total += u
                    .iter()
                    .zip(&out)
                    .map(|(a, &b)| (a - b as f64).powi(2))
                    .sum::<f64>();
            }
            let mse = total / trials as f64;
            let bound = 3f64.sqrt() * std::f64::consts::PI / 2.0 * 4f64.powi(-(bits as i32));
            let floor = 4f64.powi(-(bits as i32));
            assert!(
                mse <= bound,
                "b={bits}: D_mse {mse} above the bound {bound}"
            );
            assert!(
                mse >= floor * 0.9,
                "b={bits}: D_mse {mse} below any quantizer's {floor}"
            );
        }
    }

    #[test]
    fn attention_on_encoded_rows_equals_attention_on_their_decoded_values() {
        let (d, kv_heads, groups, slots) = (64usize, 2usize, 2usize, 300usize);
        let heads = kv_heads * groups;
        // Prefill rows: a sliding window that moves (first visible slot > 0), partial tiles and
        // task blocks (37 rows), and one row that sees nothing (its output is zeros).
        let rows = 37usize;
        let as_f32 = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let q = as_f32(gaussians(rows * heads * d, 1));
        let keys = as_f32(gaussians(kv_heads * slots * d, 2));
        let values = as_f32(gaussians(kv_heads * slots * d, 3));
        let sees = |r: usize, s: usize| r != 5 && s % 7 != 3 && (3 * r..=150 + 4 * r).contains(&s);
        let visible: Vec<f32> = (0..rows * slots)
            .map(|i| if sees(i / slots, i % slots) { 1.0 } else { 0.0 })
            .collect();
        let scale = 0.125f32;
        for (kt, vt) in KvType::ALL
            .into_iter()
            .map(|t| (t, t))
            .chain([(KvType::Tq(4), KvType::Tq(3)), (KvType::F16, KvType::Tq(2))])
        {
            let k = encoded_rows(kt, kv_heads, d, 5, &keys);
            let v = encoded_rows(vt, kv_heads, d, 6, &values);
            let call = AttentionCall { groups, scale };
            let row_q = |r: usize| &q[r * heads * d..(r + 1) * heads * d];
            let row_flags = |r: usize| &visible[r * slots..(r + 1) * slots];
            // Decode (one query row, split over keys) for every row, and prefill (all rows).
            let mut one = vec![0.0f32; rows * heads * d];
            for (r, out) in one.chunks_exact_mut(heads * d).enumerate() {
                let (kv, vv) = (KvView::Encoded(&k), KvView::Encoded(&v));
                attend_one(row_q(r), d, kv, vv, row_flags(r), call, out);
            }
            let mut many = vec![0.0f32; rows * heads * d];
            let (kv, vv) = (KvView::Encoded(&k), KvView::Encoded(&v));
            attend_many(&q, rows, d, kv, vv, &visible, call, &mut many);
            // Reference: decode every row, then softmax attention in f64.
            let (dk, dv) = (decoded(&k), decoded(&v));
            for r in 0..rows {
                let want = reference::attention(
                    row_q(r),
                    &dk,
                    &dv,
                    row_flags(r),
                    heads,
                    kv_heads,
                    slots,
                    d,
                    f64::from(scale),
                );
                for (what, got) in [("decode", &one), ("prefill", &many)] {
                    let got = &got[r * heads * d..(r + 1) * heads * d];
                    for h in 0..heads {
                        let worst = want[h * d..(h + 1) * d]
                            .iter()
                            .zip(&got[h * d..(h + 1) * d])
                            .map(|(w, &g)| (w - g as f64).abs())
                            .fold(0.0, f64::max);
                        assert!(worst <= 1e-5, "{what} {kt}/{vt} row {r} head {h}: {worst}");
                    }
                }
            }
        }
    }

    #[test]
    fn kv_type_names_round_trip_and_bad_names_are_typed_errors() {
        for t in KvType::ALL {
            assert_eq!(t.name().parse::<KvType>().unwrap(), t);
        }
        assert!(matches!(
            "q4".parse::<KvType>(),
            Err(GemmaError::InvalidArgument(_))
        ));
        assert!(matches!(
            KvCodec::new(KvType::Tq(4), 1, 96, 0),
            Err(GemmaError::Unsupported(_))
        ));
    }
}
