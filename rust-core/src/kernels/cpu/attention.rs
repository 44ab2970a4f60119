//! One query token's attention over the KV cache on the host, split over keys.
//!
//! Each task takes a run of key slots of one KV head and serves every query head of its group
//! from it (each key and value row is read once per group, not once per head), keeping a
//! running maximum, the sum of exponentials and the weighted value sum; the partial results
//! are then combined exactly (flash-decoding). No `[heads, slots]` score tensor is built, and a
//! long cache spreads over every thread even with one KV head.

use super::{OutPtr, dot, pool};
use crate::kernels::attention::AttentionCall;

/// Keys (or values) of one layer: element `j` of slot `s` of KV head `h` is
/// `data[h·head_stride + s·slot_stride + j]`.
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    pub data: &'a [f32],
    pub head_stride: usize,
    pub slot_stride: usize,
}

impl KvView<'_> {
    fn row(&self, head: usize, slot: usize, d: usize) -> &[f32] {
        let at = head * self.head_stride + slot * self.slot_stride;
        &self.data[at..at + d]
    }
}

/// Key slots per task: enough work to amortise a task, few enough that a 512-slot ring still
/// splits over two threads.
const SLOTS_PER_TASK: usize = 128;

/// `out[h] = Σ_s softmax_s(scale · q_h·k_s) v_s` over the visible slots (`visible[s] > 0`), for
/// `q` `[heads, d]`; head `h` reads KV head `h / groups`. A head that sees no slot gets zeros.
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
    // Per (kv head, chunk, head in group): running max, sum of exponentials, then d sums.
    let part_len = d + 2;
    let mut parts = vec![0.0f32; kv_heads * chunks * groups * part_len];
    let dst = OutPtr(parts.as_mut_ptr());
    pool::for_each_task(kv_heads * chunks, &|task| {
        let (g, c) = (task / chunks, task % chunks);
        let dst = dst;
        // SAFETY: task (g, c) owns parts[(g·chunks + c)·groups·part_len ..][.. groups·part_len].
        let mine = unsafe {
            std::slice::from_raw_parts_mut(dst.0.add(task * groups * part_len), groups * part_len)
        };
        let mut max = vec![f32::NEG_INFINITY; groups];
        let mut sum = vec![0.0f32; groups];
        for s in c * SLOTS_PER_TASK..((c + 1) * SLOTS_PER_TASK).min(slots) {
            if visible[s] <= 0.0 {
                continue;
            }
            let key = k.row(g, s, d);
            let value = v.row(g, s, d);
            for j in 0..groups {
                let h = g * groups + j;
                let score = dot(&q[h * d..(h + 1) * d], key) * call.scale;
                let acc = &mut mine[j * part_len + 2..(j + 1) * part_len];
                // Online softmax: rescale what was summed so far when the maximum moves.
                let w = if score > max[j] {
                    let shrink = (max[j] - score).exp();
                    sum[j] *= shrink;
                    acc.iter_mut().for_each(|a| *a *= shrink);
                    max[j] = score;
                    1.0
                } else {
                    (score - max[j]).exp()
                };
                sum[j] += w;
                acc.iter_mut().zip(value).for_each(|(a, &x)| *a += w * x);
            }
        }
        for j in 0..groups {
            mine[j * part_len] = max[j];
            mine[j * part_len + 1] = sum[j];
        }
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
    }
}
