//! References shared by the kernel tests (CPU and GPU): softmax attention in f64, and KV rows
//! encoded by the CPU codec with their decoded values.

use std::sync::Arc;

use super::kv::{EncodedRows, KvCodec, KvType, splitmix};

/// Standard normal samples (splitmix64 + Box-Muller), in f64.
pub fn gaussians(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = || (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (u, v) = (uniform().max(1e-300), uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

/// f64 attention of one query per head (`q` `[heads, d]`) over the visible slots of `k`, `v`
/// (`[kv_heads, slots, d]`); query head `h` reads KV head `h / (heads / kv_heads)`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    visible: &[f32],
    heads: usize,
    kv_heads: usize,
    slots: usize,
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let groups = heads / kv_heads;
    let mut out = vec![0.0f64; heads * d];
    for h in 0..heads {
        let kvh = h / groups;
        let scores: Vec<Option<f64>> = (0..slots)
            .map(|s| {
                (visible[s] > 0.5).then(|| {
                    (0..d)
                        .map(|i| f64::from(q[h * d + i]) * f64::from(k[(kvh * slots + s) * d + i]))
                        .sum::<f64>()
                        * scale
                })
            })
            .collect();
        let max = scores.iter().flatten().fold(f64::MIN, |m, &s| m.max(s));
        let total: f64 = scores.iter().flatten().map(|s| (s - max).exp()).sum();
        for (s, score) in scores.iter().enumerate() {
            if let Some(score) = score {
                let p = (score - max).exp() / total;
                for i in 0..d {
                    out[h * d + i] += p * f64::from(v[(kvh * slots + s) * d + i]);
                }
            }
        }
    }
    out
}

/// `x` (`[kv_heads, slots, d]`) encoded by the CPU codec of `ty` (rotations seeded by `seed`).
pub fn encoded_rows(ty: KvType, kv_heads: usize, d: usize, seed: u64, x: &[f32]) -> EncodedRows {
    let slots = x.len() / (kv_heads * d);
    let codec = Arc::new(KvCodec::new(ty, kv_heads, d, seed).expect("codec"));
    let mut rows = EncodedRows::new(codec, kv_heads);
    rows.grow_to(slots);
    for s in 0..slots {
        rows.write(s, x, slots, s);
    }
    rows
}

/// Every row of `rows` decoded by its codec, `[kv_heads, slots, d]`.
pub fn decoded(rows: &EncodedRows) -> Vec<f32> {
    let (d, slots) = (rows.codec.d, rows.slots());
    let mut out = vec![0.0f32; rows.kv_heads * slots * d];
    for (r, dst) in out.chunks_exact_mut(d).enumerate() {
        let (h, s) = (r / slots, r % slots);
        rows.codec.decode(h, rows.row(h, s), dst);
    }
    out
}
