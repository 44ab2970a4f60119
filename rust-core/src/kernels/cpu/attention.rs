//! One query token's attention over the KV cache on the host, split over keys.
//!
//! Each task takes a run of key slots of one KV head and serves every query head of its group
//! from it (each key and value row is read once per group, not once per head): the run's
//! scores, their maximum, the sum of exponentials and the weighted value sum. The partial
//! results are then combined exactly (flash-decoding), so a long cache spreads over every
//! thread even with one KV head, and no `[heads, slots]` score tensor is built.

#[cfg(target_arch = "x86_64")]
use super::Isa;
use super::{OutPtr, activation, dot, pool};
use crate::kernels::attention::AttentionCall;
use crate::kernels::kv::{EncodedRows, KvCodec};

/// Keys (or values) of one layer.
#[derive(Clone, Copy)]
pub enum KvView<'a> {
    /// Element `j` of slot `s` of KV head `h` is `data[h·head_stride + s·slot_stride + j]`.
    F32 {
        data: &'a [f32],
        head_stride: usize,
        slot_stride: usize,
    },
    /// Rows in a KV type ([`crate::kernels::kv`]), read without decoding the cache.
    Encoded(&'a EncodedRows),
}

impl KvView<'_> {
    /// Slot `slot` of KV head `head` as `buf.len()` f32 values in the domain attention works
    /// in (TurboQuant: rotated): borrowed from an f32 cache, or one encoded row expanded into
    /// `buf` — a row at a time, never the cache.
    #[inline(always)]
    fn row<'b>(&'b self, head: usize, slot: usize, buf: &'b mut [f32]) -> &'b [f32] {
        match self {
            KvView::F32 {
                data,
                head_stride,
                slot_stride,
            } => {
                let at = head * head_stride + slot * slot_stride;
                &data[at..at + buf.len()]
            }
            KvView::Encoded(_) => {
                self.row_into(head, slot, buf);
                buf
            }
        }
    }

    /// [`row`](Self::row), always written into `out`.
    #[inline(always)]
    fn row_into(&self, head: usize, slot: usize, out: &mut [f32]) {
        match self {
            KvView::F32 {
                data,
                head_stride,
                slot_stride,
            } => {
                let at = head * head_stride + slot * slot_stride;
                out.copy_from_slice(&data[at..at + out.len()]);
            }
            KvView::Encoded(rows) => rows.codec.expand(rows.row(head, slot), out),
        }
    }

    /// The codec whose rotation this view's rows live in, if any.
    fn rotation(&self) -> Option<&KvCodec> {
        match self {
            KvView::Encoded(rows) if rows.codec.is_rotated() => Some(&rows.codec),
            _ => None,
        }
    }
}

/// Key slots per task: enough work to amortise a task, few enough that a 512-slot ring still
/// splits over two threads.
const SLOTS_PER_TASK: usize = 128;

/// One task's work: a run of slots of KV head `g` for the group's query heads `q`.
struct Chunk<'a> {
    q: &'a [f32],
    d: usize,
    g: usize,
    slots: std::ops::Range<usize>,
    k: KvView<'a>,
    v: KvView<'a>,
    visible: &'a [f32],
    scale: f32,
}

/// Writes, per query head of the group, the chunk's maximum score, the sum of
/// `e^(score − max)` and the `d` sums of `e^(score − max)·v` (`part_len = d + 2` each). Scores
/// are computed first (each key row read and expanded once for the whole group), exponentiated
/// together, then the value rows are read once.
#[inline(always)]
fn chunk_body(c: Chunk<'_>, out: &mut [f32]) {
    let (d, n) = (c.d, c.slots.len());
    let groups = c.q.len() / d;
    let mut scores = vec![f32::NEG_INFINITY; groups * n];
    let mut buf = vec![0.0f32; d];
    for (i, s) in c.slots.clone().enumerate() {
        if c.visible[s] <= 0.0 {
            continue;
        }
        let k = c.k.row(c.g, s, &mut buf);
        for j in 0..groups {
            scores[j * n + i] = dot(&c.q[j * d..(j + 1) * d], k) * c.scale;
        }
    }
    for j in 0..groups {
        let row = &mut scores[j * n..(j + 1) * n];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let part = &mut out[j * (d + 2)..(j + 1) * (d + 2)];
        part.fill(0.0);
        part[0] = max;
        if max == f32::NEG_INFINITY {
            continue;
        }
        let mut total = 0.0f32;
        for p in row.iter_mut() {
            *p = activation::exp(*p - max);
            total += *p;
        }
        part[1] = total;
    }
    for (i, s) in c.slots.clone().enumerate() {
        if c.visible[s] <= 0.0 {
            continue;
        }
        let v = c.v.row(c.g, s, &mut buf);
        for j in 0..groups {
            let p = scores[j * n + i];
            let acc = &mut out[j * (d + 2) + 2..(j + 1) * (d + 2)];
            acc.iter_mut().zip(v).for_each(|(a, &x)| *a += p * x);
        }
    }
}

type ChunkFn = unsafe fn(Chunk<'_>, &mut [f32]);

/// [`chunk_body`] compiled for the widest vector unit this CPU has (the crate's baseline is
/// SSE2 on x86_64).
fn chunk_task() -> ChunkFn {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,avx512f")]
        unsafe fn avx512(c: Chunk<'_>, out: &mut [f32]) {
            chunk_body(c, out)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(c: Chunk<'_>, out: &mut [f32]) {
            chunk_body(c, out)
        }
        match Isa::detect() {
            Isa::Avx512 => return avx512,
            Isa::Avx2 => return avx2,
            _ => {}
        }
    }
    fn baseline(c: Chunk<'_>, out: &mut [f32]) {
        chunk_body(c, out)
    }
    baseline
}

/// `out[h] = Σ_s softmax_s(scale · q_h·k_s) v_s` over the visible slots (`visible[s] > 0`), for
/// `q` `[heads, d]`; head `h` reads KV head `h / groups`. A head that sees no slot gets zeros.
/// TurboQuant keys are scored against the query rotated once per head; TurboQuant values are
/// summed in the rotated domain and rotated back once per head.
pub fn attend_one(
    q: &[f32],
    d: usize,
    k: KvView<'_>,
    v: KvView<'_>,
    visible: &[f32],
    call: AttentionCall,
    out: &mut [f32],
) {
    let heads = q.len() / d.max(1);
    let groups = call.groups.max(1);
    let kv_heads = heads / groups;
    let slots = visible.len();
    let chunks = slots.div_ceil(SLOTS_PER_TASK).max(1);
    let rotated_q = rotated_queries(q, d, groups, heads, k);
    let q = &rotated_q[..];
    // Per (kv head, chunk, head in group): running max, sum of exponentials, then d sums.
    let part_len = d + 2;
    let mut parts = vec![0.0f32; kv_heads * chunks * groups * part_len];
    let dst = OutPtr(parts.as_mut_ptr());
    let task_body = chunk_task();
    pool::for_each_task(kv_heads * chunks, &|task| {
        let (g, c) = (task / chunks, task % chunks);
        let dst = dst;
        // SAFETY: task (g, c) owns parts[(g·chunks + c)·groups·part_len ..][.. groups·part_len].
        let mine = unsafe {
            std::slice::from_raw_parts_mut(dst.0.add(task * groups * part_len), groups * part_len)
        };
        let slots = c * SLOTS_PER_TASK..((c + 1) * SLOTS_PER_TASK).min(slots);
        let q = &q[g * groups * d..(g + 1) * groups * d];
        // SAFETY: `chunk_task` returned a body this CPU runs.
        unsafe {
            task_body(
                Chunk {
                    q,
                    d,
                    g,
                    slots,
                    k,
                    v,
                    visible,
                    scale: call.scale,
                },
                mine,
            )
        };
    });
    for (h, o) in out.chunks_exact_mut(d).enumerate().take(heads) {
        let (g, j) = (h / groups, h % groups);
        let part = |c: usize| {
            let at = ((g * chunks + c) * groups + j) * part_len;
            &parts[at..at + part_len]
        };
        let top = (0..chunks)
            .map(|c| part(c)[0])
            .fold(f32::NEG_INFINITY, f32::max);
        o.fill(0.0);
        if top == f32::NEG_INFINITY {
            continue;
        }
        let mut total = 0.0f32;
        for c in 0..chunks {
            let p = part(c);
            if p[0] == f32::NEG_INFINITY {
                continue;
            }
            let w = (p[0] - top).exp();
            total += w * p[1];
            o.iter_mut().zip(&p[2..]).for_each(|(o, &a)| *o += w * a);
        }
        let inv = 1.0 / total;
        o.iter_mut().for_each(|o| *o *= inv);
        if let Some(codec) = v.rotation() {
            codec.unrotate(g, o);
        }
    }
}

/// `q` (rows of `heads` query heads) rotated by their KV heads' rotations when the keys are
/// TurboQuant rows; `q` itself when the keys need no rotated query.
fn rotated_queries<'q>(
    q: &'q [f32],
    d: usize,
    groups: usize,
    heads: usize,
    k: KvView<'_>,
) -> std::borrow::Cow<'q, [f32]> {
    let Some(codec) = k.rotation() else {
        return std::borrow::Cow::Borrowed(q);
    };
    let mut r = q.to_vec();
    for (i, row) in r.chunks_exact_mut(d).enumerate() {
        codec.rotate((i % heads) / groups, row);
    }
    std::borrow::Cow::Owned(r)
}

/// Query rows per prefill task: every key and value row a task expands serves
/// `ROWS_PER_TASK × groups` queries, and a 128-row block still splits into 8 tasks.
const ROWS_PER_TASK: usize = 16;

/// Slots a prefill task expands together before scoring them (K and V tiles of
/// `TILE_SLOTS × d` f32: 32 KiB each at d = 256).
const TILE_SLOTS: usize = 32;

/// [`attend_one`] for `rows` query tokens at once (`q` `[rows, heads, d]`, `visible`
/// `[rows, slots]`, `out` `[rows, heads, d]`), for a prefill chunk. One task per (block of
/// [`ROWS_PER_TASK`] rows, KV head) walks the slots the block can see in tiles: it expands a
/// tile of key and value rows once, then every row and head of the group scores it and folds
/// it into a running softmax (flash attention: running maximum, sum of exponentials and value
/// sums, rescaled when the maximum grows). So an encoded cache costs one expansion per tile
/// and block, not one per query, and no `[rows, slots]` score matrix is built.
#[allow(clippy::too_many_arguments)]
pub fn attend_many(
    q: &[f32],
    rows: usize,
    d: usize,
    k: KvView<'_>,
    v: KvView<'_>,
    visible: &[f32],
    call: AttentionCall,
    out: &mut [f32],
) {
    let heads = q.len() / (rows * d).max(1);
    let groups = call.groups.max(1);
    let kv_heads = heads / groups;
    let slots = visible.len() / rows.max(1);
    let rotated_q = rotated_queries(q, d, groups, heads, k);
    let q = &rotated_q[..];
    let blocks = rows.div_ceil(ROWS_PER_TASK);
    let dst = OutPtr(out.as_mut_ptr());
    let task_body = block_task();
    pool::for_each_task(blocks * kv_heads, &|task| {
        let (b, g) = (task / kv_heads, task % kv_heads);
        let block = b * ROWS_PER_TASK..((b + 1) * ROWS_PER_TASK).min(rows);
        let dst = dst;
        // SAFETY: task (b, g) alone writes heads g·groups..(g+1)·groups of the block's rows,
        // `out[(r·heads + g·groups)·d ..][.. groups·d]` for r in the block.
        let write = |r: usize, values: &[f32]| unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr(),
                dst.0.add((r * heads + g * groups) * d),
                groups * d,
            )
        };
        // SAFETY: `block_task` returned a body this CPU runs.
        unsafe {
            task_body(
                Block {
                    q,
                    heads,
                    d,
                    g,
                    groups,
                    rows: block,
                    slots,
                    k,
                    v,
                    visible,
                    scale: call.scale,
                },
                &write,
            )
        };
    });
    if let Some(codec) = v.rotation() {
        for (i, o) in out.chunks_exact_mut(d).enumerate() {
            codec.unrotate((i % heads) / groups, o);
        }
    }
}

/// One prefill task's work: query rows `rows` of KV head `g`'s group.
struct Block<'a> {
    q: &'a [f32],
    heads: usize,
    d: usize,
    g: usize,
    groups: usize,
    rows: std::ops::Range<usize>,
    slots: usize,
    k: KvView<'a>,
    v: KvView<'a>,
    visible: &'a [f32],
    scale: f32,
}

/// Runs a [`Block`] and hands each row's `groups·d` outputs to `write(row, values)`.
#[inline(always)]
fn block_body(c: Block<'_>, write: &dyn Fn(usize, &[f32])) {
    let (d, groups, n) = (c.d, c.groups, c.rows.len());
    // The slots each row sees lie between its first and last visible one (causal: half).
    let spans: Vec<(usize, usize)> = c
        .rows
        .clone()
        .map(|r| {
            let flags = &c.visible[r * c.slots..(r + 1) * c.slots];
            let lo = flags.iter().position(|&f| f > 0.0).unwrap_or(0);
            let hi = flags.iter().rposition(|&f| f > 0.0).map_or(lo, |l| l + 1);
            (lo, hi)
        })
        .collect();
    let lo = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let hi = spans.iter().map(|s| s.1).max().unwrap_or(0);
    // Per (row, head in group): running maximum, sum of exponentials, then d value sums.
    let part_len = d + 2;
    let mut parts = vec![0.0f32; n * groups * part_len];
    parts
        .chunks_exact_mut(part_len)
        .for_each(|p| p[0] = f32::NEG_INFINITY);
    let mut k_tile = vec![0.0f32; TILE_SLOTS * d];
    let mut v_tile = vec![0.0f32; TILE_SLOTS * d];
    let mut scores = [0.0f32; TILE_SLOTS];
    for start in (lo..hi).step_by(TILE_SLOTS) {
        let tile = start..(start + TILE_SLOTS).min(hi);
        for (t, s) in tile.clone().enumerate() {
            c.k.row_into(c.g, s, &mut k_tile[t * d..(t + 1) * d]);
            c.v.row_into(c.g, s, &mut v_tile[t * d..(t + 1) * d]);
        }
        for (i, r) in c.rows.clone().enumerate() {
            let (row_lo, row_hi) = spans[i];
            if row_hi <= tile.start || row_lo >= tile.end {
                continue;
            }
            let flags = &c.visible[r * c.slots..(r + 1) * c.slots];
            for j in 0..groups {
                let at = (r * c.heads + c.g * groups + j) * d;
                let qj = &c.q[at..at + d];
                let mut top = f32::NEG_INFINITY;
                for (t, s) in tile.clone().enumerate() {
                    scores[t] = if flags[s] > 0.0 {
                        dot(qj, &k_tile[t * d..(t + 1) * d]) * c.scale
                    } else {
                        f32::NEG_INFINITY
                    };
                    top = top.max(scores[t]);
                }
                if top == f32::NEG_INFINITY {
                    continue;
                }
                let part = &mut parts[(i * groups + j) * part_len..(i * groups + j + 1) * part_len];
                let max = part[0].max(top);
                if part[0] != max {
                    // The running maximum grew: rescale what was summed under the old one.
                    let shrink = activation::exp(part[0] - max);
                    part[1..].iter_mut().for_each(|a| *a *= shrink);
                    part[0] = max;
                }
                let (total, acc) = part[1..].split_at_mut(1);
                for t in 0..tile.len() {
                    if scores[t] == f32::NEG_INFINITY {
                        continue;
                    }
                    let p = activation::exp(scores[t] - max);
                    total[0] += p;
                    acc.iter_mut()
                        .zip(&v_tile[t * d..(t + 1) * d])
                        .for_each(|(a, &x)| *a += p * x);
                }
            }
        }
    }
    let mut values = vec![0.0f32; groups * d];
    for (i, r) in c.rows.clone().enumerate() {
        for (j, o) in values.chunks_exact_mut(d).enumerate() {
            let part = &parts[(i * groups + j) * part_len..(i * groups + j + 1) * part_len];
            if part[0] == f32::NEG_INFINITY {
                o.fill(0.0);
            } else {
                let inv = 1.0 / part[1];
                o.iter_mut()
                    .zip(&part[2..])
                    .for_each(|(o, &a)| *o = a * inv);
            }
        }
        write(r, &values);
    }
}

type BlockFn = unsafe fn(Block<'_>, &dyn Fn(usize, &[f32]));

/// [`block_body`] compiled for the widest vector unit this CPU has.
fn block_task() -> BlockFn {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,avx512f")]
        unsafe fn avx512(c: Block<'_>, write: &dyn Fn(usize, &[f32])) {
            block_body(c, write)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(c: Block<'_>, write: &dyn Fn(usize, &[f32])) {
            block_body(c, write)
        }
        match Isa::detect() {
            Isa::Avx512 => return avx512,
            Isa::Avx2 => return avx2,
            _ => {}
        }
    }
    fn baseline(c: Block<'_>, write: &dyn Fn(usize, &[f32])) {
        block_body(c, write)
    }
    baseline
}
