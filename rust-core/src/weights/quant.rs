//! Decoders for ggml's tensor block encodings, and the two reference encoders (Q8_0, Q4_0) that
//! tests and `gemmakit convert` need to write files.
//!
//! Each decoder mirrors the scalar reference `dequantize_row_*` of ggml's `ggml-quants.c`: the same
//! block layout (`ggml-common.h`), the same f32 operations in the same order, and no fused
//! multiply-add (Rust never contracts `a * b - c`). The results are therefore bit-identical to
//! ggml's reference code compiled without FP contraction and to gguf-py's numpy decoders; the
//! fixture test at the bottom checks the latter on random blocks for every supported type.
//!
//! Block layouts (little-endian; `d`, `m`, `dmin` are f16 unless noted):
//! ```text
//! Q4_0  (32 el, 18 B)  d | qs[16]: element j in the low nibble of qs[j], j+16 in the high one
//! Q4_1  (32 el, 20 B)  d | m | qs[16]
//! Q5_0  (32 el, 22 B)  d | qh u32 (5th bit of element j is bit j) | qs[16]
//! Q5_1  (32 el, 24 B)  d | m | qh u32 | qs[16]
//! Q8_0  (32 el, 34 B)  d | qs[32] i8
//! Q2_K (256 el, 84 B)  scales[16] (4-bit scale | 4-bit min) | qs[64] | d | dmin
//! Q3_K (256 el, 110 B) hmask[32] | qs[64] | scales[12] (16 × 6 bit) | d
//! Q4_K (256 el, 144 B) d | dmin | scales[12] (8 × 6-bit scale + 8 × 6-bit min) | qs[128]
//! Q5_K (256 el, 176 B) d | dmin | scales[12] | qh[32] | qs[128]
//! Q6_K (256 el, 210 B) ql[128] | qh[64] | scales[16] i8 | d          (d comes last)
//! ```

use half::f16;

use super::gguf::GgmlType;

/// Errors from decoding or encoding blocks.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("no decoder for ggml type {0}")]
    Unsupported(GgmlType),
    #[error("{ty}: {n_elements} elements is not a whole number of {block_size}-element blocks")]
    PartialBlock {
        ty: GgmlType,
        n_elements: usize,
        block_size: usize,
    },
    #[error("{ty}: {n_elements} elements take {expected} bytes, but {got} bytes were given")]
    LengthMismatch {
        ty: GgmlType,
        n_elements: usize,
        expected: usize,
        got: usize,
    },
    #[error("{ty}: {n_elements} elements would take more bytes than a usize can count")]
    TooLarge { ty: GgmlType, n_elements: usize },
    #[error("{ty}: {got} bytes is not a whole number of {block_bytes}-byte blocks")]
    PartialBlockBytes {
        ty: GgmlType,
        got: usize,
        block_bytes: usize,
    },
}

type Result<T> = std::result::Result<T, QuantError>;

/// Whether [`dequantize_row`] can decode `ty` (a float or quantized type).
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
    )
}

/// Integer element types (the MTP assistant's token ordering): mapped and read as integers
/// (`MappedTensor::to_i64_vec`); [`dequantize_row`] also widens them to f32, so a float
/// reader given one by a hostile file gets numbers, never a panic.
pub fn is_integer(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::I32 | GgmlType::I64)
}

/// Bytes taken by `n_elements` elements of `ty`.
pub fn encoded_len(ty: GgmlType, n_elements: usize) -> Result<usize> {
    let block_size = ty.block_size();
    if !n_elements.is_multiple_of(block_size) {
        return Err(QuantError::PartialBlock {
            ty,
            n_elements,
            block_size,
        });
    }
    // Only reachable with absurd element counts (e.g. 2^62 F32 values), but never wrap.
    (n_elements / block_size)
        .checked_mul(ty.block_bytes())
        .ok_or(QuantError::TooLarge { ty, n_elements })
}

/// Decodes `dst.len()` elements of type `ty` from `src`, which must be exactly the bytes of those
/// blocks (normally one tensor row, or a run of whole rows).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !is_supported(ty) && !is_integer(ty) {
        return Err(QuantError::Unsupported(ty));
    }
    let expected = encoded_len(ty, dst.len())?;
    if src.len() != expected {
        return Err(QuantError::LengthMismatch {
            ty,
            n_elements: dst.len(),
            expected,
            got: src.len(),
        });
    }
    match ty {
        GgmlType::F32 => each_block(src, dst, |b: &[u8; 4], y: &mut [f32; 1]| {
            y[0] = f32::from_le_bytes(*b)
        }),
        // A signalling NaN comes out quiet (as from every ggml conversion path); numpy keeps it
        // signalling. No other value differs.
        GgmlType::F16 => each_block(src, dst, |b: &[u8; 2], y: &mut [f32; 1]| {
            y[0] = f16::from_le_bytes(*b).to_f32()
        }),
        // bf16 is the top half of an f32; ggml converts by shifting, which keeps NaN payloads.
        GgmlType::BF16 => each_block(src, dst, |b: &[u8; 2], y: &mut [f32; 1]| {
            y[0] = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16)
        }),
        // Integer tensors (the assistant's token ordering) decode to f32 (exact below 2^24);
        // their loaders read them as integers with MappedTensor::to_i64_vec.
        GgmlType::I32 => each_block(src, dst, |b: &[u8; 4], y: &mut [f32; 1]| {
            y[0] = i32::from_le_bytes(*b) as f32
        }),
        GgmlType::I64 => each_block(src, dst, |b: &[u8; 8], y: &mut [f32; 1]| {
            y[0] = i64::from_le_bytes(*b) as f32
        }),
        GgmlType::Q4_0 => each_block(src, dst, block_q4_0),
        GgmlType::Q4_1 => each_block(src, dst, block_q4_1),
        GgmlType::Q5_0 => each_block(src, dst, block_q5_0),
        GgmlType::Q5_1 => each_block(src, dst, block_q5_1),
        GgmlType::Q8_0 => each_block(src, dst, block_q8_0),
        GgmlType::Q2_K => each_block(src, dst, block_q2_k),
        GgmlType::Q3_K => each_block(src, dst, block_q3_k),
        GgmlType::Q4_K => each_block(src, dst, block_q4_k),
        GgmlType::Q5_K => each_block(src, dst, block_q5_k),
        GgmlType::Q6_K => each_block(src, dst, block_q6_k),
        _ => return Err(QuantError::Unsupported(ty)),
    }
    Ok(())
}

/// Decodes a whole buffer of blocks into a new vector.
pub fn dequantize(ty: GgmlType, src: &[u8]) -> Result<Vec<f32>> {
    let block_bytes = ty.block_bytes();
    if !src.len().is_multiple_of(block_bytes) {
        return Err(QuantError::PartialBlockBytes {
            ty,
            got: src.len(),
            block_bytes,
        });
    }
    let mut out = vec![0.0; src.len() / block_bytes * ty.block_size()];
    dequantize_row(ty, src, &mut out)?;
    Ok(out)
}

/// Runs `f` over matching (block bytes, block output) pairs. Lengths were checked by the caller,
/// so both sides split into the same number of whole blocks.
fn each_block<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: impl Fn(&[u8; B], &mut [f32; N]),
) {
    let (blocks, _) = src.as_chunks::<B>();
    let (outs, _) = dst.as_chunks_mut::<N>();
    for (b, y) in blocks.iter().zip(outs) {
        f(b, y);
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..]) {
        *y = f32::from(q as i8) * d;
    }
}

fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..].iter().enumerate() {
        y[j] = f32::from((q & 0x0F) as i8 - 8) * d;
        y[j + 16] = f32::from((q >> 4) as i8 - 8) * d;
    }
}

fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (j, &q) in b[4..].iter().enumerate() {
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: low nibbles from `qs`, fifth bits from `qh`.
fn q5_values(qh: u32, qs: &[u8], j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    ((qs[j] & 0x0F) | h0, (qs[j] >> 4) | h1)
}

fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..];
    for j in 0..16 {
        let (x0, x1) = q5_values(qh, qs, j);
        y[j] = f32::from(x0 as i8 - 16) * d;
        y[j + 16] = f32::from(x1 as i8 - 16) * d;
    }
}

fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..];
    for j in 0..16 {
        let (x0, x1) = q5_values(qh, qs, j);
        y[j] = f32::from(x0) * d + m;
        y[j + 16] = f32::from(x1) * d + m;
    }
}

/// Q2_K: 16 sub-blocks of 16 elements, each with a 4-bit scale and a 4-bit min. The 2-bit
/// quants of 128 elements share 32 bytes: byte l holds elements l, l+32, l+64, l+96 (low bits
/// first), with sub-blocks of 16 running through bytes 0..16 and 16..32 alternately.
fn block_q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut out = 0;
    let mut is = 0;
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for half in q.chunks_exact(16) {
                let sc = scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0F);
                let ml = dmin * f32::from(sc >> 4);
                for &byte in half {
                    y[out] = dl * f32::from((byte >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// Q3_K: 2-bit quants laid out as in Q2_K plus a high bit in `hmask` (bit k of hmask[l] for the
/// k-th group of 32 elements); a *clear* high bit means subtract 4. Sixteen signed 6-bit scales
/// (stored +32) are packed into 12 bytes: low nibbles in bytes 0..8, top two bits in bytes 8..12.
fn block_q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let packed = &b[96..108];
    let d_all = f16_at(b, 108);

    let mut scales = [0i8; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *s = (low | (high << 4)) as i8 - 32;
    }

    let mut out = 0;
    let mut is = 0;
    let mut m: u8 = 1;
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (qhalf, hhalf) in q.chunks_exact(16).zip(hmask.chunks_exact(16)) {
                let dl = d_all * f32::from(scales[is]);
                is += 1;
                for (&byte, &hbits) in qhalf.iter().zip(hhalf) {
                    let low = ((byte >> shift) & 3) as i8;
                    let sub = if hbits & m != 0 { 0 } else { 4 };
                    y[out] = dl * f32::from(low - sub);
                    out += 1;
                }
            }
            // Wraps to 0 after the eighth group, like ggml's uint8_t; not used after that.
            m = m.wrapping_shl(1);
        }
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block (ggml's `get_scale_min_k4`):
/// sub-blocks 0..4 keep 6 bits in bytes 0..4 (scale) and 4..8 (min); sub-blocks 4..8 keep their
/// low 4 bits in bytes 8..12 and their top 2 bits in the spare top bits of bytes 0..8.
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

/// Q4_K: 8 sub-blocks of 32 elements; y = d·scale·q − dmin·min. Each 32 bytes of `qs` hold two
/// sub-blocks: the low nibbles are the first, the high nibbles the second.
fn block_q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for ((&byte, lo), hi) in q.iter().zip(lo).zip(hi) {
            *lo = d1 * f32::from(byte & 0x0F) - min1;
            *hi = d2 * f32::from(byte >> 4) - min2;
        }
    }
}

/// Q5_K: Q4_K plus a fifth bit per element in `qh` (bit 2c of qh[l] for the low-nibble
/// sub-block of chunk c, bit 2c+1 for the high-nibble one).
fn block_q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        let (lo, hi) = y.split_at_mut(32);
        for (l, (lo, hi)) in lo.iter_mut().zip(hi).enumerate() {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            *lo = d1 * f32::from((q[l] & 0x0F) + h1) - min1;
            *hi = d2 * f32::from((q[l] >> 4) + h2) - min2;
        }
    }
}

/// Q6_K: 16 sub-blocks of 16 elements with signed 8-bit scales; 6-bit quants stored −32 as a
/// low nibble in `ql` and two high bits in `qh`. Per 128 elements: ql[0..32] low nibbles are
/// elements 0..32, ql[32..64] low nibbles 32..64, ql[0..32] high nibbles 64..96, ql[32..64] high
/// nibbles 96..128; qh[l] holds the high bits of elements l, l+32, l+64, l+96 (low bits first).
fn block_q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            // ggml evaluates d * scale first, then multiplies by the quant.
            y[l] = d * f32::from(sc[is] as i8) * f32::from(q1);
            y[l + 32] = d * f32::from(sc[is + 2] as i8) * f32::from(q2);
            y[l + 64] = d * f32::from(sc[is + 4] as i8) * f32::from(q3);
            y[l + 96] = d * f32::from(sc[is + 6] as i8) * f32::from(q4);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Reference encoders (ggml's quantize_row_*_ref), for writing test and converted files
// ------------------------------------------------------------------------------------------------

fn check_whole_blocks(ty: GgmlType, n_elements: usize) -> Result<()> {
    encoded_len(ty, n_elements).map(|_| ())
}

/// Encodes `src` (a multiple of 32 values) as Q8_0 exactly like ggml's `quantize_row_q8_0_ref`:
/// d = max|x| / 127, q = round-half-away-from-zero(x / d), computed with the f32 reciprocal of
/// the unrounded d; d is then stored as f16 (round to nearest even).
pub fn quantize_row_q8_0(src: &[f32]) -> Result<Vec<u8>> {
    check_whole_blocks(GgmlType::Q8_0, src.len())?;
    let mut out = Vec::with_capacity(src.len() / 32 * 34);
    for x in src.as_chunks::<32>().0 {
        // ggml's MAX(amax, fabsf(v)); written out so NaN inputs behave the same way.
        let amax = x.iter().fold(
            0.0f32,
            |amax, v| if amax > v.abs() { amax } else { v.abs() },
        );
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    Ok(out)
}

/// Encodes `src` (a multiple of 32 values) as Q4_0 exactly like ggml's `quantize_row_q4_0_ref`:
/// d = (the value of largest magnitude) / −8, q = min(15, trunc(x / d + 8.5)). Using the signed
/// extreme (not max|x|) lets that value map to −8, the end of the asymmetric [−8, 7] range.
pub fn quantize_row_q4_0(src: &[f32]) -> Result<Vec<u8>> {
    check_whole_blocks(GgmlType::Q4_0, src.len())?;
    let mut out = Vec::with_capacity(src.len() / 32 * 18);
    for x in src.as_chunks::<32>().0 {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // (int8_t) truncates toward zero; the min(15) catches x == max landing on 16.
        let nibble = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..16 {
            out.push(nibble(x[j]) | (nibble(x[j + 16]) << 4));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    fn decode(ty: GgmlType, block: &[u8]) -> Vec<f32> {
        dequantize(ty, block).unwrap()
    }

    #[test]
    fn plain_types() {
        let src: Vec<u8> = [1.5f32, -2.0, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(decode(GgmlType::F32, &src), vec![1.5, -2.0, f32::INFINITY]);

        let halves: [u16; 6] = [0x3C00, 0xC000, 0x7C00, 0x0001, 0x7BFF, 0x8000];
        let src: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let got = decode(GgmlType::F16, &src);
        assert_eq!(
            got[..5],
            // 2⁻²⁴ (the smallest f16 subnormal) from its bits: `powi` is not exact everywhere
            // (Miri gives it the imprecision the standard library allows).
            [
                1.0,
                -2.0,
                f32::INFINITY,
                f32::from_bits(0x3380_0000),
                65504.0
            ]
        );
        assert_eq!(got[5].to_bits(), 0x8000_0000, "-0.0 keeps its sign");

        let bf: [u16; 4] = [0x3F80, 0xC040, 0x7F80, 0x0001];
        let src: Vec<u8> = bf.iter().flat_map(|h| h.to_le_bytes()).collect();
        let got = decode(GgmlType::BF16, &src);
        assert_eq!(got[..3], [1.0, -3.0, f32::INFINITY]);
        assert_eq!(got[3].to_bits(), 0x0001_0000);
    }

    #[test]
    fn q8_0_block() {
        let mut b = [0u8; 34];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        for (i, q) in [-128i8, -1, 0, 1, 127].iter().enumerate() {
            b[2 + i] = *q as u8;
        }
        let y = decode(GgmlType::Q8_0, &b);
        assert_eq!(y[..5], [-64.0, -0.5, 0.0, 0.5, 63.5]);
        assert!(y[5..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q4_0_and_q4_1_blocks() {
        let mut b = [0x88u8; 18]; // nibble 8 decodes to 0
        b[..2].copy_from_slice(&f16_bytes(2.0));
        b[2] = 0xF0;
        b[4] = 0x19;
        let y = decode(GgmlType::Q4_0, &b);
        assert_eq!((y[0], y[16]), (-16.0, 14.0));
        assert_eq!((y[1], y[17]), (0.0, 0.0));
        assert_eq!((y[2], y[18]), (2.0, -14.0));

        let mut b = [0u8; 20];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(-3.0));
        b[4] = 0x5A;
        let y = decode(GgmlType::Q4_1, &b);
        assert_eq!((y[0], y[16]), (7.0, 2.0));
        assert_eq!((y[1], y[17]), (-3.0, -3.0));
    }

    #[test]
    fn q5_0_and_q5_1_blocks() {
        let mut b = [0u8; 22];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        // Fifth bits of elements 0, 16 and 31.
        b[2..6].copy_from_slice(&(1u32 | 1 << 16 | 1 << 31).to_le_bytes());
        b[6] = 0x21;
        b[6 + 15] = 0xF0;
        let y = decode(GgmlType::Q5_0, &b);
        assert_eq!((y[0], y[16]), (1.0, 2.0));
        assert_eq!((y[15], y[31]), (-16.0, 15.0));
        assert_eq!(y[1], -16.0);

        let mut b = [0xFFu8; 24];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        b[2..4].copy_from_slice(&f16_bytes(1.0));
        let y = decode(GgmlType::Q5_1, &b);
        assert!(y.iter().all(|&v| v == 31.0 * 0.5 + 1.0));
    }

    /// Packs 6-bit scales and mins the way ggml's quantize_row_q4_K_ref does.
    fn pack_k4_scales(sc: [u8; 8], mn: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = sc[j];
                s[j + 4] = mn[j];
            } else {
                s[j + 4] = (sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4);
                s[j - 4] |= (sc[j] >> 4) << 6;
                s[j] |= (mn[j] >> 4) << 6;
            }
        }
        s
    }

    const K4_SC: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 63];
    const K4_MN: [u8; 8] = [0, 1, 2, 3, 10, 20, 30, 63];
    /// Per sub-block, d = 1, dmin = 0.5, nibbles 10 (low) and 3 (high): sc·q − min/2.
    const K4_EXPECTED: [f32; 8] = [10.0, 5.5, 29.0, 10.5, 45.0, 8.0, 55.0, 157.5];

    #[test]
    fn q4_k_block() {
        let mut b = [0x3Au8; 144];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(0.5));
        b[4..16].copy_from_slice(&pack_k4_scales(K4_SC, K4_MN));
        let y = decode(GgmlType::Q4_K, &b);
        for (e, &v) in y.iter().enumerate() {
            assert_eq!(v, K4_EXPECTED[e / 32], "element {e}");
        }
    }

    #[test]
    fn q5_k_block() {
        let mut b = [0x3Au8; 176];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(0.5));
        b[4..16].copy_from_slice(&pack_k4_scales(K4_SC, K4_MN));
        // Fifth bit set only for sub-block 0 (bit 0 of every qh byte): 10 + 16 = 26.
        b[16..48].fill(0x01);
        let y = decode(GgmlType::Q5_K, &b);
        for (e, &v) in y.iter().enumerate() {
            let want = if e < 32 { 26.0 } else { K4_EXPECTED[e / 32] };
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q6_k_block() {
        let mut b = [0u8; 210];
        b[..128].fill(0x21); // low nibble 1, high nibble 2
        b[128..192].fill(0xE4); // high-bit pairs 0, 1, 2, 3 for the four 32-element groups
        for i in 0..16 {
            b[192 + i] = (i as i8 - 8) as u8;
        }
        b[208..210].copy_from_slice(&f16_bytes(0.25));
        let y = decode(GgmlType::Q6_K, &b);
        // Group g of each 128: quant (nibble | pair << 4) − 32; sub-block e/16 has scale e/16 − 8.
        let quant = [1 - 32, 17 - 32, 34 - 32, 50 - 32];
        for (e, &v) in y.iter().enumerate() {
            let scale = (e / 16) as f32 - 8.0;
            let want = 0.25 * scale * quant[(e % 128) / 32] as f32;
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q2_k_block() {
        let mut b = [0u8; 84];
        for j in 0..16u8 {
            b[j as usize] = j | ((15 - j) << 4); // scale j, min 15 − j
        }
        b[16..80].fill(0xE4); // quant value = group index within each 128
        b[80..82].copy_from_slice(&f16_bytes(1.0));
        b[82..84].copy_from_slice(&f16_bytes(0.5));
        let y = decode(GgmlType::Q2_K, &b);
        for (e, &v) in y.iter().enumerate() {
            let sub = (e / 16) as f32;
            let q = ((e % 128) / 32) as f32;
            assert_eq!(v, sub * q - 0.5 * (15.0 - sub), "element {e}");
        }
    }

    #[test]
    fn q3_k_block() {
        let mut b = [0u8; 110];
        b[..32].fill(0x0F); // high bit set for groups 0..4 (first 128 elements) only
        b[32..96].fill(0xE4);
        // Scales j + 24, i.e. j − 8 after the −32 bias, packed as quantize_row_q3_K_ref does.
        for j in 0..16 {
            let l = (j + 24) as u8;
            if j < 8 {
                b[96 + j] = l & 0x0F;
            } else {
                b[96 + j - 8] |= (l & 0x0F) << 4;
            }
            b[96 + 8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        b[108..110].copy_from_slice(&f16_bytes(1.0));
        let y = decode(GgmlType::Q3_K, &b);
        for (e, &v) in y.iter().enumerate() {
            let scale = (e / 16) as f32 - 8.0;
            let q = ((e % 128) / 32) as f32 - if e < 128 { 0.0 } else { 4.0 };
            assert_eq!(v, scale * q, "element {e}");
        }
    }

    #[test]
    fn length_and_type_errors() {
        let mut out = [0.0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q8_0, &[0u8; 33], &mut out),
            Err(QuantError::LengthMismatch {
                expected: 34,
                got: 33,
                ..
            })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut out),
            Err(QuantError::PartialBlock {
                block_size: 256,
                ..
            })
        ));
        for ty in [
            GgmlType::Q8_K,
            GgmlType::Q8_1,
            GgmlType::IQ2_XXS,
            GgmlType::I8,
            GgmlType::MXFP4,
        ] {
            assert!(
                matches!(dequantize_row(ty, &[], &mut []), Err(QuantError::Unsupported(t)) if t == ty)
            );
        }
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0u8; 19]),
            Err(QuantError::PartialBlockBytes { .. })
        ));
        assert!(matches!(
            quantize_row_q8_0(&[0.0; 31]),
            Err(QuantError::PartialBlock { .. })
        ));
        assert!(dequantize(GgmlType::Q6_K, &[]).unwrap().is_empty());
    }

    #[test]
    fn quantizers_round_trip() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) * 0.013)
            .collect();
        let q8 = quantize_row_q8_0(&x).unwrap();
        assert_eq!(q8.len(), 2 * 34);
        let y = dequantize(GgmlType::Q8_0, &q8).unwrap();
        // Error bound: half a step from rounding q, plus |q| times the f16 rounding of d (the
        // quants are chosen with the unrounded d): d/2 + 127·d·2^-11.
        for (blk, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = f16_at(&q8, 34 * blk);
            for (a, b) in xs.iter().zip(ys) {
                assert!(
                    (a - b).abs() <= d * (0.5 + 127.0 / 2048.0),
                    "q8_0: {a} vs {b}"
                );
            }
        }
        let q4 = quantize_row_q4_0(&x).unwrap();
        assert_eq!(q4.len(), 2 * 18);
        let y = dequantize(GgmlType::Q4_0, &q4).unwrap();
        for (blk, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = f16_at(&q4, 18 * blk).abs();
            // Q4_0's range is [-8, 7] steps with the extreme at -8, so a value of the opposite
            // sign near the same magnitude clips at +7: up to one full step of error there.
            for (a, b) in xs.iter().zip(ys) {
                assert!(
                    (a - b).abs() <= d * (1.0 + 8.0 / 2048.0),
                    "q4_0: {a} vs {b}"
                );
            }
        }
        // The extreme value maps to −8 exactly.
        let mut x = [0.0f32; 32];
        x[3] = -4.0;
        x[9] = 2.0;
        let y = dequantize(GgmlType::Q4_0, &quantize_row_q4_0(&x).unwrap()).unwrap();
        assert_eq!((y[3], y[9]), (-4.0, 2.0));
    }

    // --------------------------------------------------------------------------------------------
    // Reference fixture from gguf-py (scripts/reference/gguf_dequant_ref.py)
    // --------------------------------------------------------------------------------------------

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/quant/dequant_reference.json"
    );

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect()
    }

    fn type_named(name: &str) -> GgmlType {
        *GgmlType::ALL
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("unknown type {name}"))
    }

    fn load_fixture() -> serde_json::Value {
        let text = std::fs::read_to_string(FIXTURE).unwrap_or_else(|e| {
            panic!("{FIXTURE}: {e} (regenerate with scripts/reference/gguf_dequant_ref.py)")
        });
        serde_json::from_str(&text).unwrap()
    }

    const QUIET_BIT: u32 = 0x0040_0000;

    /// Every supported type must decode gguf-py's random blocks to the same f32 bit patterns:
    /// exact equality, including signed zeros, subnormals, infinities and NaN payloads (with the
    /// one signalling-NaN exception noted below).
    #[test]
    fn matches_gguf_py_dequantize_bitwise() {
        let doc = load_fixture();
        let mut seen = Vec::new();
        for case in doc["dequant"].as_array().unwrap() {
            let ty = type_named(case["type"].as_str().unwrap());
            assert_eq!(u64::from(ty.id()), case["type_id"].as_u64().unwrap());
            let src = unhex(case["blocks_hex"].as_str().unwrap());
            let want = f32s(&unhex(case["expected_f32_le_hex"].as_str().unwrap()));
            assert_eq!(want.len() as u64, case["n_elements"].as_u64().unwrap());
            let mut got = vec![0.0f32; want.len()];
            dequantize_row(ty, &src, &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // One known, deliberate difference: numpy widens a *signalling* f16 NaN keeping
                // it signalling, while half (like every ggml path: F16C, ARM FCVT, and the
                // software fallback, which multiplies) sets the quiet bit. Same payload otherwise.
                let quieted =
                    ty == GgmlType::F16 && w.is_nan() && g.to_bits() == w.to_bits() | QUIET_BIT;
                assert!(
                    g.to_bits() == w.to_bits() || quieted,
                    "{ty} element {i}: got {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
                    g.to_bits(),
                    w.to_bits()
                );
            }
            seen.push(ty);
        }
        for ty in GgmlType::ALL.iter().copied().filter(|&t| is_supported(t)) {
            assert!(seen.contains(&ty), "fixture has no {ty} case");
        }
    }

    /// The encoders must produce gguf-py's bytes (which match ggml's reference encoders).
    #[test]
    fn matches_gguf_py_quantize_bytes() {
        let doc = load_fixture();
        let cases = doc["quantize"].as_array().unwrap();
        assert!(!cases.is_empty());
        for (n, case) in cases.iter().enumerate() {
            let x = f32s(&unhex(case["input_f32_le_hex"].as_str().unwrap()));
            let want = unhex(case["expected_blocks_hex"].as_str().unwrap());
            let got = match case["type"].as_str().unwrap() {
                "Q8_0" => quantize_row_q8_0(&x).unwrap(),
                "Q4_0" => quantize_row_q4_0(&x).unwrap(),
                other => panic!("unexpected quantize case {other}"),
            };
            assert_eq!(got, want, "quantize case {n} ({})", case["type"]);
        }
    }

    /// GgmlType's id/name/block table must agree with gguf-py's GGML_QUANT_SIZES, both ways.
    #[test]
    fn type_table_matches_gguf_py() {
        let doc = load_fixture();
        let table = doc["type_sizes"].as_array().unwrap();
        for row in table {
            let id = row["id"].as_u64().unwrap() as u32;
            let ty = GgmlType::from_id(id)
                .unwrap_or_else(|| panic!("gguf-py type id {id} unknown here"));
            assert_eq!(ty.name(), row["name"].as_str().unwrap());
            assert_eq!(
                ty.block_size() as u64,
                row["block_size"].as_u64().unwrap(),
                "{ty}"
            );
            let py_bytes = row["type_size"].as_u64().unwrap();
            if ty == GgmlType::Q8_1 {
                // gguf-py 0.19 still lists Q8_1 as 4 + 4 + 32 = 40 bytes (its d and s were once
                // f32). ggml's block_q8_1 is two f16 + 32 i8, static_assert'ed to 36 bytes in
                // ggml-common.h, and ggml defines the file layout. gguf-py never uses this entry
                // (it has no Q8_1 codec). If gguf-py is fixed, this branch fails: remove it.
                assert_eq!((ty.block_bytes(), py_bytes), (36, 40));
                continue;
            }
            assert_eq!(ty.block_bytes() as u64, py_bytes, "{ty}");
        }
        assert_eq!(
            table.len(),
            GgmlType::ALL.len(),
            "types known here but not to gguf-py"
        );
    }
}
