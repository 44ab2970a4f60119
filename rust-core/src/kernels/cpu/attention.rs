//! One query token's attention over the KV cache on the host, split over keys.
//!
//! Each task takes a run of key slots of one KV head and serves every query head of its group
//! from it (each key and value row is read once per group, not once per head): the run's
//! scores, their maximum, the sum of exponentials and the weighted value sum. The partial
//! results are then combined exactly (flash-decoding), so a long cache spreads over every
//! thread even with one KV head, and no `[heads, slots]` score tensor is built.

use super::{Isa, OutPtr, activation, dot, pool};
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
    /// `q·k` for slot `slot` of KV head `head` (TurboQuant: `q` already rotated).
    #[inline(always)]
    fn score(&self, q: &[f32], head: usize, slot: usize) -> f32 {
        match self {
            KvView::F32 {
                data,
                head_stride,
                slot_stride,
            } => {
                let at = head * head_stride + slot * slot_stride;
                dot(q, &data[at..at + q.len()])
            }
            KvView::Encoded(rows) => rows.codec.dot(q, rows.row(head, slot)),
        }
    }

    /// `acc += w·v` for slot `slot` of KV head `head` (TurboQuant: in the rotated domain).
    #[inline(always)]
    fn accumulate(&self, w: f32, head: usize, slot: usize, acc: &mut [f32]) {
        match self {
            KvView::F32 {
                data,
                head_stride,
                slot_stride,
            } => {
                let (at, d) = (head * head_stride + slot * slot_stride, acc.len());
                acc.iter_mut()
                    .zip(&data[at..at + d])
                    .for_each(|(a, &x)| *a += w * x);
            }
            KvView::Encoded(rows) => rows.codec.accumulate(rows.row(head, slot), w, acc),
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
/// are computed first (each key row read once), exponentiated together, then the value rows are
/// read once.
#[inline(always)]
fn chunk_body(c: Chunk<'_>, out: &mut [f32]) {
    let (d, n) = (c.d, c.slots.len());
    let groups = c.q.len() / d;
    let mut scores = vec![f32::NEG_INFINITY; groups * n];
    for (i, s) in c.slots.clone().enumerate() {
        if c.visible[s] <= 0.0 {
            continue;
        }
        for j in 0..groups {
            let qj = &c.q[j * d..(j + 1) * d];
            scores[j * n + i] = c.k.score(qj, c.g, s) * c.scale;
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
        for j in 0..groups {
            let p = scores[j * n + i];
            let acc = &mut out[j * (d + 2) + 2..(j + 1) * (d + 2)];
            c.v.accumulate(p, c.g, s, acc);
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

/// [`attend_one`] for `rows` query tokens at once (`q` `[rows, heads, d]`, `visible`
/// `[rows, slots]`, `out` `[rows, heads, d]`): one task per (row, KV head), each over every
/// slot, so a prefill chunk over encoded rows spreads over the threads in one dispatch.
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
    let part_len = d + 2;
    let mut parts = vec![0.0f32; rows * kv_heads * groups * part_len];
    let dst = OutPtr(parts.as_mut_ptr());
    let task_body = chunk_task();
    pool::for_each_task(rows * kv_heads, &|task| {
        let (r, g) = (task / kv_heads, task % kv_heads);
        let dst = dst;
        // SAFETY: task (r, g) owns parts[task·groups·part_len ..][.. groups·part_len].
        let mine = unsafe {
            std::slice::from_raw_parts_mut(dst.0.add(task * groups * part_len), groups * part_len)
        };
        let at = (r * heads + g * groups) * d;
        // Only the slots between the row's first and last visible one (causal: half).
        let flags = &visible[r * slots..(r + 1) * slots];
        let lo = flags.iter().position(|&f| f > 0.0).unwrap_or(0);
        let hi = flags
            .iter()
            .rposition(|&f| f > 0.0)
            .map_or(lo, |last| last + 1);
        // SAFETY: `chunk_task` returned a body this CPU runs.
        unsafe {
            task_body(
                Chunk {
                    q: &q[at..at + groups * d],
                    d,
                    g,
                    slots: lo..hi,
                    k,
                    v,
                    visible: flags,
                    scale: call.scale,
                },
                mine,
            )
        };
    });
    // Part (r, g, j) is query head g·groups + j of row r: the same order as `out`'s heads.
    for (o, part) in out.chunks_exact_mut(d).zip(parts.chunks_exact(part_len)) {
        o.fill(0.0);
        if part[0] == f32::NEG_INFINITY {
            continue;
        }
        let inv = 1.0 / part[1];
        o.iter_mut()
            .zip(&part[2..])
            .for_each(|(o, &a)| *o = a * inv);
    }
    if let Some(codec) = v.rotation() {
        for (i, o) in out.chunks_exact_mut(d).enumerate() {
            codec.unrotate((i % heads) / groups, o);
        }
    }
}
