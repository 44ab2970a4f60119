//! The CubeCL kernels. Each cube (workgroup) of `cube_size` units computes a few output rows
//! (four for one token, one for a tile of tokens): units stride over the rows' words, keep
//! per-row, per-token partial sums in registers, and reduce them through shared memory (no
//! subgroup operations, which CPU adapters and many Android drivers lack). Activation loads
//! are vectors of 4 f32 (wgpu's widest).
//!
//! No unit leaves early: every unit of a cube reaches every barrier (out-of-range rows and
//! tokens only skip their loads and stores).

use cubecl::prelude::*;

/// Sums `tile` partial values per unit (`partial[t · cube_size + unit]`) over the cube; the
/// result for token `t` ends in `partial[t · cube_size]`.
#[cube]
pub fn reduce_tiles(
    partial: &mut Shared<[f32]>,
    #[comptime] tile: usize,
    #[comptime] cube_size: usize,
) {
    sync_cube();
    let unit = UNIT_POS as usize;
    // CUBE_DIM == cube_size; a builtin keeps the loop a runtime (uniform) loop.
    let mut stride = CUBE_DIM / 2;
    while stride > 0 {
        let half = stride as usize;
        if unit < half {
            #[unroll]
            for t in 0..tile {
                let other = partial[t * cube_size + unit + half];
                partial[t * cube_size + unit] += other;
            }
        }
        sync_cube();
        stride /= 2;
    }
}

/// `out[tok, out_col + row] = Σ_k x[tok, k] · W[row, k]` with `W` in integer words (see
/// `pack.rs`): `w = scale · (q − offset) − min` per block of `words_per_block` words.
///
/// Each cube computes `rows_per_cube` consecutive output rows (each unit striding over the
/// words of every one of them, so an activation vector loaded for one word serves them all,
/// and one tree reduction sums them all) for a tile of tokens. Every row is summed exactly as
/// with one row a cube: the same words per unit in the same order, the same tree.
///
/// With `glu`, `W` holds a gated MLP's gate and up rows interleaved (weight row `2·row` is the
/// gate's row `row`, `2·row + 1` the up's) and the output is `gelu_tanh(gate) · up`: both
/// products in one dispatch that reads `x` once, each summed exactly as alone. With
/// `gelu_times`, the output is `gelu_tanh(y) · mul` with `mul` laid out as `out` (Gemma 4's
/// per-layer input gate times the layer's per-layer embedding).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn packed_matmul<N: Size>(
    x: &[Vector<f32, N>],
    words: &[u32],
    scales: &[f32],
    mins: &[f32],
    mul: &[f32],
    out: &mut [f32],
    rows: u32,
    tokens: u32,
    words_per_row: u32,
    out_stride: u32,
    out_col: u32,
    #[comptime] bits: u32,
    #[comptime] words_per_block: u32,
    #[comptime] offset: u32,
    #[comptime] has_min: bool,
    #[comptime] glu: bool,
    #[comptime] gelu_times: bool,
    #[comptime] tile: usize,
    #[comptime] rows_per_cube: usize,
    #[comptime] cube_size: usize,
) {
    let row0 = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) * rows_per_cube as u32;
    let tok0 = CUBE_POS_Z * tile as u32;
    let elems = comptime!((32 / bits) as usize);
    let vecs = comptime!(elems / 4);
    let mask = comptime!((1u32 << bits) - 1);
    let x_row_vecs = words_per_row * vecs as u32;
    // Weight rows per output: the gate's and the up's with `glu`.
    let per_out = comptime!(if glu { 2usize } else { 1usize });
    // Accumulators: [row of the cube][gate/up][token of the tile].
    let sums = comptime!(rows_per_cube * per_out * tile);

    let mut acc = Array::<f32>::new(sums);
    #[unroll]
    for i in 0..sums {
        acc[i] = f32::new(0.0_f32);
    }
    let mut q = Array::<f32>::new(elems);
    let mut w = UNIT_POS;
    while w < words_per_row {
        #[unroll]
        for r in 0..rows_per_cube {
            let row = row0 + r as u32;
            // Rows past the end (the grid is rounded up) add nothing.
            if row < rows {
                #[unroll]
                for p in 0..per_out {
                    let idx = (row * per_out as u32 + p as u32) * words_per_row + w;
                    let word = words[idx as usize];
                    let block = idx / words_per_block;
                    let scale = scales[block as usize];
                    let mut shift = scale * f32::new(comptime!(offset as f32));
                    if comptime!(has_min) {
                        shift += mins[block as usize];
                    }
                    #[unroll]
                    for e in 0..elems {
                        let raw = (word >> (e as u32 * bits)) & mask;
                        if comptime!(bits == 8) {
                            // Sign-extend the byte.
                            q[e] = f32::cast_from(raw) - f32::cast_from((raw >> 7) * 256u32);
                        } else {
                            q[e] = f32::cast_from(raw);
                        }
                    }
                    #[unroll]
                    for t in 0..tile {
                        let tok = tok0 + t as u32;
                        if tok < tokens {
                            let mut dot = f32::new(0.0_f32);
                            let mut sum = f32::new(0.0_f32);
                            #[unroll]
                            for v in 0..vecs {
                                let xv =
                                    x[(tok * x_row_vecs + w * vecs as u32 + v as u32) as usize];
                                #[unroll]
                                for l in 0..4usize {
                                    let xl = xv.extract(l);
                                    dot += q[v * 4 + l] * xl;
                                    sum += xl;
                                }
                            }
                            acc[(r * per_out + p) * tile + t] += scale * dot - shift * sum;
                        }
                    }
                }
            }
        }
        w += CUBE_DIM;
    }

    let mut partial = Shared::<[f32]>::new_slice(sums * cube_size);
    #[unroll]
    for i in 0..sums {
        partial[i * cube_size + UNIT_POS as usize] = acc[i];
    }
    reduce_tiles(&mut partial, sums, cube_size);
    // Unit `r · tile + t` writes row `r`'s output for token `t`.
    if (UNIT_POS as usize) < rows_per_cube * tile {
        let r = UNIT_POS / tile as u32;
        let t = UNIT_POS % tile as u32;
        let row = row0 + r;
        let tok = tok0 + t;
        if tok < tokens && row < rows {
            let first = (r * per_out as u32) * tile as u32 + t;
            let mut y = partial[(first * cube_size as u32) as usize];
            let at = (tok * out_stride + out_col + row) as usize;
            if comptime!(glu) {
                y = gelu_tanh(y) * partial[((first + tile as u32) * cube_size as u32) as usize];
            }
            if comptime!(gelu_times) {
                y = gelu_tanh(y) * mul[at];
            }
            out[at] = y;
        }
    }
}

/// `out[tok, out_col + row] = Σ_k x[tok, k] · W[row, k]` with `W` dense f32 `[rows, k]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dense_matmul<N: Size>(
    x: &[Vector<f32, N>],
    weight: &[Vector<f32, N>],
    out: &mut [f32],
    rows: u32,
    tokens: u32,
    vecs_per_row: u32,
    out_stride: u32,
    out_col: u32,
    #[comptime] tile: usize,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let tok0 = CUBE_POS_Z * tile as u32;
    let mut acc = Array::<f32>::new(tile);
    let limit = select(row < rows, vecs_per_row, 0u32);
    let mut v = UNIT_POS;
    while v < limit {
        let wv = weight[(row * vecs_per_row + v) as usize];
        #[unroll]
        for t in 0..tile {
            let tok = tok0 + t as u32;
            if tok < tokens {
                let prod = wv * x[(tok * vecs_per_row + v) as usize];
                let mut dot = f32::new(0.0_f32);
                #[unroll]
                for l in 0..N::value() {
                    dot += prod.extract(l);
                }
                acc[t] += dot;
            }
        }
        v += CUBE_DIM;
    }

    let mut partial = Shared::<[f32]>::new_slice(tile * cube_size);
    #[unroll]
    for t in 0..tile {
        partial[t * cube_size + UNIT_POS as usize] = acc[t];
    }
    reduce_tiles(&mut partial, tile, cube_size);
    if (UNIT_POS as usize) < tile {
        let tok = tok0 + UNIT_POS;
        if tok < tokens && row < rows {
            out[(tok * out_stride + out_col + row) as usize] =
                partial[UNIT_POS as usize * cube_size];
        }
    }
}

/// Max (`is_max`) or sum over the cube of one value per unit; every unit gets the result.
#[cube]
pub fn cube_reduce(scratch: &mut Shared<[f32]>, value: f32, #[comptime] is_max: bool) -> f32 {
    let unit = UNIT_POS as usize;
    scratch[unit] = value;
    sync_cube();
    let mut stride = CUBE_DIM / 2;
    while stride > 0 {
        let half = stride as usize;
        if unit < half {
            let a = scratch[unit];
            let b = scratch[unit + half];
            if comptime!(is_max) {
                scratch[unit] = select(b > a, b, a);
            } else {
                scratch[unit] = a + b;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let result = scratch[0];
    sync_cube();
    result
}

/// `1 / √(mean(x[base..base + n]²) + eps)`, the cube's units striding over the row and their
/// sums reduced through shared memory; every unit of the cube gets it (and reaches every
/// barrier, `live` or not).
#[cube]
pub fn inverse_rms(
    x: &[f32],
    base: u32,
    n: u32,
    eps: f32,
    live: bool,
    #[comptime] cube_size: usize,
) -> f32 {
    let unit = UNIT_POS;
    let mut partial = Shared::<[f32]>::new_slice(cube_size);
    let mut sum = f32::new(0.0_f32);
    if live {
        let mut i = unit;
        while i < n {
            let v = x[(base + i) as usize];
            sum += v * v;
            i += CUBE_DIM;
        }
    }
    partial[unit as usize] = sum;
    reduce_tiles(&mut partial, 1usize, cube_size);
    f32::new(1.0_f32) / (partial[0] / f32::cast_from(n) + eps).sqrt()
}

/// `out[r, i] = (residual[r, i] + x[r, i] / √(mean_i(x[r, i]²) + eps) · w[i]) · scale`, where
/// `w` applies when `weighted` and `residual` when `add_residual` (else `out` is the normed row,
/// times `scale`): one cube a row, units striding over it, the sum of squares reduced through
/// shared memory. One dispatch where burn's ops take six (square, mean, add, power, two
/// products), and the residual stream's sum and the layer scalar ride along.
///
/// With `then_norm`, `out` holds two planes `[2, rows, n]`: the first as above, the second that
/// row RMS-normed again with weight `w2` (the next sub-layer's input norm), summed exactly as a
/// second call would sum it (each unit squares the values it wrote, the same tree reduction).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rows(
    x: &[f32],
    w: &[f32],
    residual: &[f32],
    w2: &[f32],
    out: &mut [f32],
    rows: u32,
    n: u32,
    eps: f32,
    scale: f32,
    #[comptime] weighted: bool,
    #[comptime] add_residual: bool,
    #[comptime] then_norm: bool,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    // Out-of-range cubes (the grid is rounded up) still reach every barrier.
    let live = row < rows;
    let base = row * n;
    let inv = inverse_rms(x, base, n, eps, live, cube_size);
    let mut squares = f32::new(0.0_f32);
    if live {
        let mut i = UNIT_POS;
        while i < n {
            let at = (base + i) as usize;
            let mut v = x[at] * inv;
            if comptime!(weighted) {
                v *= w[i as usize];
            }
            if comptime!(add_residual) {
                v += residual[at];
            }
            let r = v * scale;
            out[at] = r;
            squares += r * r;
            i += CUBE_DIM;
        }
    }
    if comptime!(then_norm) {
        let mut partial = Shared::<[f32]>::new_slice(cube_size);
        partial[UNIT_POS as usize] = squares;
        reduce_tiles(&mut partial, 1usize, cube_size);
        let inv2 = f32::new(1.0_f32) / (partial[0] / f32::cast_from(n) + eps).sqrt();
        if live {
            let plane = rows * n;
            let mut i = UNIT_POS;
            while i < n {
                let at = base + i;
                // The unit reads back only what it wrote above.
                out[(plane + at) as usize] = out[at as usize] * inv2 * w2[i as usize];
                i += CUBE_DIM;
            }
        }
    }
}

/// Rotary embedding (as [`rope_rows`]) of the RMS-normed rows of `x` `[tokens, heads, 2·half]`
/// (as [`rms_norm_rows`] with a weight `[2·half]`): a query or key head's norm and rotation in
/// one dispatch, one cube a head.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rope_rows(
    x: &[f32],
    w: &[f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [f32],
    rows: u32,
    heads: u32,
    half: u32,
    eps: f32,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let live = row < rows;
    let base = row * 2u32 * half;
    let inv = inverse_rms(x, base, 2u32 * half, eps, live, cube_size);
    if live {
        let token = row / heads;
        let mut j = UNIT_POS;
        while j < half {
            let x1 = x[(base + j) as usize] * inv * w[j as usize];
            let x2 = x[(base + j + half) as usize] * inv * w[(j + half) as usize];
            let c = cos[(token * half + j) as usize];
            let s = sin[(token * half + j) as usize];
            out[(base + j) as usize] = x1 * c - x2 * s;
            out[(base + j + half) as usize] = x2 * c + x1 * s;
            j += CUBE_DIM;
        }
    }
}

/// Rotary embedding, NeoX layout, of `x` `[tokens, heads, 2·half]` with tables `[tokens, half]`:
/// `(x₁, x₂) → (x₁·cos − x₂·sin, x₂·cos + x₁·sin)`, one unit a pair (burn's ops take eight
/// dispatches: four products, a difference, a sum and the concatenation).
#[cube(launch)]
pub fn rope_rows(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [f32],
    pairs: u32,
    heads: u32,
    half: u32,
) {
    let idx = ABSOLUTE_POS_Y * (CUBE_COUNT_X * CUBE_DIM_X) + ABSOLUTE_POS_X;
    if idx < pairs {
        let j = idx % half;
        let row = idx / half;
        let token = row / heads;
        let at = row * 2u32 * half + j;
        let x1 = x[at as usize];
        let x2 = x[(at + half) as usize];
        let c = cos[(token * half + j) as usize];
        let s = sin[(token * half + j) as usize];
        out[at as usize] = x1 * c - x2 * s;
        out[(at + half) as usize] = x2 * c + x1 * s;
    }
}

/// `out = gelu_tanh(a) · b`, element-wise (`model::ops::gelu_tanh`'s formula): one dispatch
/// where burn's ops take eleven. tanh's argument is clamped to ±15, where tanh is 1 to f32
/// precision, because some drivers compute tanh through exp and overflow to NaN beyond.
#[cube(launch)]
pub fn gelu_tanh_mul(a: &[f32], b: &[f32], out: &mut [f32], n: u32) {
    let idx = ABSOLUTE_POS_Y * (CUBE_COUNT_X * CUBE_DIM_X) + ABSOLUTE_POS_X;
    if idx < n {
        out[idx as usize] = gelu_tanh(a[idx as usize]) * b[idx as usize];
    }
}

/// `model::ops::gelu_tanh`'s formula, tanh's argument clamped to ±15 (see [`gelu_tanh_mul`]).
#[cube]
fn gelu_tanh(x: f32) -> f32 {
    let cube = x * x * x;
    let mut inner = (x + cube * f32::new(0.044715_f32)) * f32::new(0.7978846_f32);
    inner = select(inner > f32::new(15.0_f32), f32::new(15.0_f32), inner);
    inner = select(inner < f32::new(-15.0_f32), f32::new(-15.0_f32), inner);
    x * (inner.tanh() + f32::new(1.0_f32)) * f32::new(0.5_f32)
}

/// The best of the cube's (value, index) pairs into slot 0: the larger value, on a tie the
/// lower index; index `0xffff_ffff` is none and never wins.
#[cube]
fn reduce_best(values: &mut Shared<[f32]>, indices: &mut Shared<[u32]>) {
    let unit = UNIT_POS;
    let none = 0xffff_ffffu32;
    sync_cube();
    let mut stride = CUBE_DIM / 2;
    while stride > 0 {
        if unit < stride {
            let pv = values[(unit + stride) as usize];
            let pi = indices[(unit + stride) as usize];
            let ov = values[unit as usize];
            let oi = indices[unit as usize];
            if pi != none && (oi == none || pv > ov || (pv == ov && pi < oi)) {
                values[unit as usize] = pv;
                indices[unit as usize] = pi;
            }
        }
        sync_cube();
        stride /= 2;
    }
}

/// The `k` largest finite candidates of each block of `per_unit · cube_size` (block
/// `CUBE_POS_X` of token `CUBE_POS_Y`'s `n` candidates), largest first, as (value, id) pairs
/// to `best[token, (block_offset + block) · k + r]` (`total_blocks · k` pairs a token; the
/// id as f32, exact below 2²⁴). Ties go to the lower id; NaN and ±∞ are never picked; a
/// block with fewer than `k` finite candidates pads with id −1. Candidates are `input`'s
/// values with ids `first_id` + their index, or with `pairs` an earlier call's (value, id)
/// pairs (id −1: none), so a second call merges the blocks' picks. Each unit keeps its
/// `per_unit` candidates in registers; each of the `k` rounds reduces the units' best
/// remaining one through shared memory and takes it out of its unit.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn top_k_blocks(
    input: &[f32],
    best: &mut [f32],
    n: u32,
    first_id: u32,
    block_offset: u32,
    total_blocks: u32,
    k: u32,
    #[comptime] pairs: bool,
    #[comptime] per_unit: usize,
    #[comptime] cube_size: usize,
) {
    let b = CUBE_POS_X;
    let token = CUBE_POS_Y;
    let unit = UNIT_POS;
    let none = 0xffff_ffffu32;
    let start = b * comptime!((per_unit * cube_size) as u32);
    let mut mine_v = Array::<f32>::new(per_unit);
    let mut mine_id = Array::<u32>::new(per_unit);
    #[unroll]
    for e in 0..per_unit {
        let i = start + (e * cube_size) as u32 + unit;
        let mut v = f32::new(0.0_f32);
        let mut id = u32::new(0xffff_ffff_i64);
        if i < n {
            let mut at = token * n + i;
            if comptime!(pairs) {
                at *= 2u32;
            }
            let x = input[at as usize];
            // Finite: not NaN (x == x) and not ±∞.
            if x == x && x.abs() <= f32::reinterpret(0x7f7f_ffffu32) {
                if comptime!(pairs) {
                    let given = input[(at + 1u32) as usize];
                    if given >= f32::new(0.0_f32) {
                        id = u32::cast_from(given);
                        v = x;
                    }
                } else {
                    id = first_id + i;
                    v = x;
                }
            }
        }
        mine_v[e] = v;
        mine_id[e] = id;
    }
    let mut values = Shared::<[f32]>::new_slice(cube_size);
    let mut indices = Shared::<[u32]>::new_slice(cube_size);
    let out = (token * total_blocks + block_offset + b) * k;
    for r in 0..k {
        let mut bv = f32::new(0.0_f32);
        let mut bi = u32::new(0xffff_ffff_i64);
        #[unroll]
        for e in 0..per_unit {
            let id = mine_id[e];
            let v = mine_v[e];
            if id != none && (bi == none || v > bv || (v == bv && id < bi)) {
                bv = v;
                bi = id;
            }
        }
        values[unit as usize] = bv;
        indices[unit as usize] = bi;
        reduce_best(&mut values, &mut indices);
        let wv = values[0];
        let wi = indices[0];
        // Ids are unique: the winner leaves the unit that held it.
        #[unroll]
        for e in 0..per_unit {
            if wi != none && mine_id[e] == wi {
                mine_id[e] = none;
            }
        }
        if unit == 0u32 {
            let at = ((out + r) * 2u32) as usize;
            best[at] = wv;
            best[at + 1] = select(wi == none, f32::new(-1.0_f32), f32::cast_from(wi));
        }
        // Slot 0 is read by every unit before the next round writes it.
        sync_cube();
    }
}

/// Each cube finds the largest of `block` logits of one token (`logits` `[tokens, rows]`, block
/// `CUBE_POS_X` of row `CUBE_POS_Y`) and writes it with its index (`first_row` added, as f32:
/// exact below 2²⁴) to `best[token, block_offset + block]` (pairs, `total_blocks` per token);
/// ties go to the lower index, NaN never wins, and a block with nothing but NaN writes
/// index −1. The host reads these few pairs instead of the logits.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn argmax_blocks(
    logits: &[f32],
    best: &mut [f32],
    rows: u32,
    first_row: u32,
    block_offset: u32,
    total_blocks: u32,
    block: u32,
    #[comptime] cube_size: usize,
) {
    let b = CUBE_POS_X;
    let token = CUBE_POS_Y;
    let unit = UNIT_POS;
    let none = 0xffff_ffffu32;
    let mut values = Shared::<[f32]>::new_slice(cube_size);
    let mut indices = Shared::<[u32]>::new_slice(cube_size);
    let start = b * block;
    let end = select(start + block < rows, start + block, rows);
    let mut bv = f32::new(0.0_f32);
    let mut bi = u32::new(0xffff_ffff_i64);
    let mut i = start + unit;
    while i < end {
        let v = logits[(token * rows + i) as usize];
        // `v == v`: not NaN. Units scan upwards, so a tie keeps the earlier index.
        if v == v && (bi == none || v > bv) {
            bv = v;
            bi = i;
        }
        i += CUBE_DIM;
    }
    values[unit as usize] = bv;
    indices[unit as usize] = bi;
    reduce_best(&mut values, &mut indices);
    if unit == 0u32 {
        let at = ((token * total_blocks + block_offset + b) * 2u32) as usize;
        let index = indices[0];
        best[at] = values[0];
        best[at + 1] = select(
            index == none,
            f32::new(-1.0_f32),
            f32::cast_from(first_row + index),
        );
    }
}
