//! Repacking of weight rows (GGUF blocks, f16/bf16/f32) into the word layout the GPU kernels
//! read. Pure CPU code, run once per weight at load.
//!
//! Every quantized type becomes `w = scale · (q − offset) − min` per block of 16 or 32 elements,
//! with `q` a 4-bit (8 per u32, element `e` of a word at bits `4e`) or signed 8-bit (4 per u32,
//! element `e` at bits `8e`) integer and f32 scales (so no shaderFloat16 is needed):
//!
//! | file type | GPU words | block | scale | min | exact |
//! |---|---|---|---|---|---|
//! | Q4_0 | 4-bit, offset 8 | 32 | d | – | yes |
//! | Q4_1 | 4-bit | 32 | d | −m | yes |
//! | Q4_K | 4-bit | 32 | d·sc | dmin·m | yes |
//! | Q8_0 | 8-bit | 32 | d | – | yes |
//! | Q5_0 | 8-bit (q − 16) | 32 | d | – | yes |
//! | Q5_1 | 8-bit | 32 | d | −m | yes |
//! | Q5_K | 8-bit | 32 | d·sc | dmin·m | yes |
//! | Q6_K | 8-bit (q − 32) | 16 | d·sc | – | yes |
//! | F16, BF16, Q2_K, Q3_K | 8-bit, requantized | 32 | max\|w\|/127 | – | no |
//! | F32 (or rows not a multiple of 32) | dense f32 | – | – | – | yes |
//!
//! "Exact" means the kernel sees the same integers and scales as the CPU decoder: the products
//! differ only in f32 rounding order.

use half::f16;

use crate::weights::{GgmlType, MappedTensor};

/// How one weight's rows are stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// f32 rows, as in the file (or decoded).
    Dense,
    /// Integer words with per-block scales.
    Quant(QuantLayout),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantLayout {
    /// 4 (unsigned nibbles) or 8 (signed bytes).
    pub bits: u32,
    /// Elements sharing one scale (and min).
    pub block: usize,
    /// Subtracted from every `q` before scaling (8 for Q4_0).
    pub offset: u32,
    /// Whether a per-block min is subtracted after scaling.
    pub has_min: bool,
    /// False when the file's values had to be requantized (f16/bf16, Q2_K, Q3_K).
    pub exact: bool,
}

impl QuantLayout {
    pub fn elems_per_word(&self) -> usize {
        32 / self.bits as usize
    }
    pub fn words_per_block(&self) -> usize {
        self.block / self.elems_per_word()
    }
}

const fn quant(bits: u32, block: usize, offset: u32, has_min: bool, exact: bool) -> Layout {
    Layout::Quant(QuantLayout {
        bits,
        block,
        offset,
        has_min,
        exact,
    })
}

/// The GPU layout for a weight of `dtype` with `cols` elements per row.
pub fn layout_for(dtype: GgmlType, cols: usize) -> Layout {
    use GgmlType::*;
    match dtype {
        Q4_0 => quant(4, 32, 8, false, true),
        Q4_1 | Q4_K => quant(4, 32, 0, true, true),
        Q8_0 | Q5_0 => quant(8, 32, 0, false, true),
        Q5_1 | Q5_K => quant(8, 32, 0, true, true),
        Q6_K => quant(8, 16, 0, false, true),
        F16 | BF16 | Q2_K | Q3_K if cols.is_multiple_of(32) => quant(8, 32, 0, false, false),
        _ => Layout::Dense,
    }
}

/// Rows `start..start + rows` of a weight in GPU layout, ready to upload.
#[derive(Default)]
pub struct PackedRows {
    /// Quantized: `[rows, cols / elems_per_word]` words. Dense: `[rows, cols]` f32 bit patterns.
    pub words: Vec<u32>,
    /// `[rows, cols / block]` (empty for dense).
    pub scales: Vec<f32>,
    /// `[rows, cols / block]` when the layout has mins, else empty.
    pub mins: Vec<f32>,
}

impl PackedRows {
    /// `more`'s rows after these (same layout).
    pub fn append(&mut self, more: PackedRows) {
        self.words.extend(more.words);
        self.scales.extend(more.scales);
        self.mins.extend(more.mins);
    }

    /// `a`'s and `b`'s rows (`rows` each, same layout) interleaved: `a`'s row `r` becomes row
    /// `2r`, `b`'s row `2r + 1` (a gated MLP's gate and up rows for the fused product).
    pub fn interleave(a: &PackedRows, b: &PackedRows, rows: usize) -> PackedRows {
        let zip = |x: &[u32], y: &[u32]| -> Vec<u32> {
            let per_row = x.len() / rows.max(1);
            x.chunks(per_row.max(1))
                .zip(y.chunks(per_row.max(1)))
                .flat_map(|(x, y)| x.iter().chain(y).copied())
                .collect()
        };
        let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|f| f.to_bits()).collect() };
        let floats = |v: Vec<u32>| -> Vec<f32> { v.into_iter().map(f32::from_bits).collect() };
        PackedRows {
            words: zip(&a.words, &b.words),
            scales: floats(zip(&bits(&a.scales), &bits(&b.scales))),
            mins: floats(zip(&bits(&a.mins), &bits(&b.mins))),
        }
    }
}

/// Bytes one row takes on the GPU (words only; scales are a separate, smaller binding).
pub fn word_bytes_per_row(layout: Layout, cols: usize) -> usize {
    match layout {
        Layout::Dense => cols * 4,
        Layout::Quant(q) => cols / q.elems_per_word() * 4,
    }
}

/// Total bytes (words + scales + mins) one row takes on the GPU.
pub fn device_bytes_per_row(layout: Layout, cols: usize) -> usize {
    match layout {
        Layout::Dense => cols * 4,
        Layout::Quant(q) => {
            let blocks = cols / q.block;
            word_bytes_per_row(layout, cols) + blocks * 4 * (1 + usize::from(q.has_min))
        }
    }
}

/// Repacks rows `start..start + rows` of `weight` into `layout` (from [`layout_for`]).
pub fn pack_rows(weight: &MappedTensor, layout: Layout, start: usize, rows: usize) -> PackedRows {
    let cols = weight.cols();
    match layout {
        Layout::Dense => {
            let mut words = Vec::with_capacity(rows * cols);
            let mut row = vec![0.0f32; cols];
            for r in start..start + rows {
                weight.decode_row(r, &mut row);
                words.extend(row.iter().map(|v| v.to_bits()));
            }
            PackedRows {
                words,
                scales: Vec::new(),
                mins: Vec::new(),
            }
        }
        Layout::Quant(ql) => {
            let blocks = cols / ql.block;
            let mut out = PackedRows {
                words: Vec::with_capacity(rows * cols / ql.elems_per_word()),
                scales: Vec::with_capacity(rows * blocks),
                mins: Vec::with_capacity(if ql.has_min { rows * blocks } else { 0 }),
            };
            let mut q = vec![0i32; cols];
            let mut decoded = vec![0.0f32; if ql.exact { 0 } else { cols }];
            for r in start..start + rows {
                if ql.exact {
                    decompose_row(weight.dtype(), weight.row_bytes(r), &mut q, &mut out);
                } else {
                    weight.decode_row(r, &mut decoded);
                    requantize_q8(&decoded, &mut q, &mut out.scales);
                }
                push_words(&q, ql.bits, &mut out.words);
            }
            out
        }
    }
}

fn push_words(q: &[i32], bits: u32, words: &mut Vec<u32>) {
    let per_word = 32 / bits as usize;
    let mask = (1u32 << bits) - 1;
    for group in q.chunks_exact(per_word) {
        let mut w = 0u32;
        for (e, &v) in group.iter().enumerate() {
            w |= ((v as u32) & mask) << (bits as usize * e);
        }
        words.push(w);
    }
}

/// Q8 with an f32 scale per 32 values: s = max|w| / 127, q = round(w / s).
fn requantize_q8(values: &[f32], q: &mut [i32], scales: &mut Vec<f32>) {
    for (x, q) in values.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = amax / 127.0;
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        for (q, &v) in q.iter_mut().zip(x) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i32;
        }
        scales.push(s);
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Same as the CPU decoder's `scale_min_k4` (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Splits one row of an exactly representable type into integers `q` (one per element),
/// appending its block scales and mins to `out` (see the table in the module docs).
fn decompose_row(dtype: GgmlType, bytes: &[u8], q: &mut [i32], out: &mut PackedRows) {
    use GgmlType::*;
    let bb = dtype.block_bytes();
    let bs = dtype.block_size();
    for (b, q) in bytes.chunks_exact(bb).zip(q.chunks_exact_mut(bs)) {
        match dtype {
            Q8_0 => {
                out.scales.push(f16_at(b, 0));
                for (q, &v) in q.iter_mut().zip(&b[2..34]) {
                    *q = i32::from(v as i8);
                }
            }
            Q4_0 | Q4_1 => {
                let qs = if dtype == Q4_0 { &b[2..18] } else { &b[4..20] };
                out.scales.push(f16_at(b, 0));
                if dtype == Q4_1 {
                    out.mins.push(-f16_at(b, 2));
                }
                for j in 0..16 {
                    q[j] = i32::from(qs[j] & 0x0F);
                    q[j + 16] = i32::from(qs[j] >> 4);
                }
            }
            Q5_0 | Q5_1 => {
                let (qh_at, qs_at) = if dtype == Q5_0 { (2, 6) } else { (4, 8) };
                let qh = u32::from_le_bytes([b[qh_at], b[qh_at + 1], b[qh_at + 2], b[qh_at + 3]]);
                let qs = &b[qs_at..qs_at + 16];
                out.scales.push(f16_at(b, 0));
                let sub = if dtype == Q5_0 { 16 } else { 0 };
                if dtype == Q5_1 {
                    out.mins.push(-f16_at(b, 2));
                }
                for j in 0..16 {
                    let h0 = (((qh >> j) << 4) & 0x10) as u8;
                    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                    q[j] = i32::from((qs[j] & 0x0F) | h0) - sub;
                    q[j + 16] = i32::from((qs[j] >> 4) | h1) - sub;
                }
            }
            Q4_K | Q5_K => {
                let d = f16_at(b, 0);
                let dmin = f16_at(b, 2);
                let scales = &b[4..16];
                let (qh, qs) = if dtype == Q4_K {
                    (None, &b[16..144])
                } else {
                    (Some(&b[16..48]), &b[48..176])
                };
                for c in 0..4 {
                    let (sc1, m1) = scale_min_k4(2 * c, scales);
                    let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                    out.scales.push(d * f32::from(sc1));
                    out.mins.push(dmin * f32::from(m1));
                    out.scales.push(d * f32::from(sc2));
                    out.mins.push(dmin * f32::from(m2));
                    let chunk = &qs[32 * c..32 * c + 32];
                    for l in 0..32 {
                        let (mut lo, mut hi) = (chunk[l] & 0x0F, chunk[l] >> 4);
                        if let Some(qh) = qh {
                            lo += if qh[l] & (1 << (2 * c)) != 0 { 16 } else { 0 };
                            hi += if qh[l] & (2 << (2 * c)) != 0 { 16 } else { 0 };
                        }
                        q[64 * c + l] = i32::from(lo);
                        q[64 * c + 32 + l] = i32::from(hi);
                    }
                }
            }
            Q6_K => {
                let d = f16_at(b, 208);
                // 16 scales, one per 16 consecutive elements, in element order.
                for &sc in &b[192..208] {
                    out.scales.push(d * f32::from(sc as i8));
                }
                for half in 0..2 {
                    let ql = &b[64 * half..64 * half + 64];
                    let qh = &b[128 + 32 * half..128 + 32 * half + 32];
                    let q = &mut q[128 * half..128 * half + 128];
                    for l in 0..32 {
                        q[l] = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
                        q[l + 32] = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        q[l + 64] = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        q[l + 96] = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    }
                }
            }
            other => unreachable!("{other} has no exact GPU layout"),
        }
    }
}

/// Decodes packed rows back to f32 (the kernels' arithmetic in f64), for tests.
pub fn unpack_row_f64(layout: Layout, packed: &PackedRows, row: usize, cols: usize) -> Vec<f64> {
    match layout {
        Layout::Dense => packed.words[row * cols..(row + 1) * cols]
            .iter()
            .map(|w| f64::from(f32::from_bits(*w)))
            .collect(),
        Layout::Quant(ql) => {
            let per_word = ql.elems_per_word();
            let wpr = cols / per_word;
            let bpr = cols / ql.block;
            (0..cols)
                .map(|e| {
                    let word = packed.words[row * wpr + e / per_word];
                    let raw = (word >> (ql.bits as usize * (e % per_word))) & ((1 << ql.bits) - 1);
                    let q = if ql.bits == 8 {
                        f64::from(raw as u8 as i8)
                    } else {
                        f64::from(raw)
                    };
                    let b = row * bpr + e / ql.block;
                    let min = if ql.has_min {
                        f64::from(packed.mins[b])
                    } else {
                        0.0
                    };
                    f64::from(packed.scales[b]) * (q - f64::from(ql.offset)) - min
                })
                .collect()
        }
    }
}
