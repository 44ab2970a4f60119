//! Scaled-dot-product attention over a step's keys with grouped KV heads and position masks.

use burn::tensor::{Device, Tensor};

use super::config::AttentionKind;
use super::kv_cache::StepKv;
use super::ops::{from_host, softmax_last};
use crate::error::Result;

/// Additive mask value for a hidden key: finite, since WGSL may assume no infinities.
const MASKED: f32 = -1e30;

/// Whether a query at `q` may see a key at `k`.
pub fn visible(kind: AttentionKind, window: usize, q: usize, k: usize) -> bool {
    k <= q
        && match kind {
            AttentionKind::Full => true,
            AttentionKind::Sliding => k + window > q,
        }
}

/// Additive mask `[1, groups·Tq, Tk]` matching the grouped query layout of [`attend`].
pub fn build_mask(
    kind: AttentionKind,
    window: usize,
    q_pos: &[usize],
    key_pos: &[Option<usize>],
    groups: usize,
    device: &Device,
) -> Tensor<3> {
    let mut rows = Vec::with_capacity(q_pos.len() * key_pos.len());
    for &q in q_pos {
        rows.extend(key_pos.iter().map(|k| match k {
            Some(k) if visible(kind, window, q, *k) => 0.0,
            _ => MASKED,
        }));
    }
    let mut mask = Vec::with_capacity(rows.len() * groups);
    for _ in 0..groups {
        mask.extend_from_slice(&rows);
    }
    from_host(mask, [1, groups * q_pos.len(), key_pos.len()], device)
}

/// `q`: `[Tq, heads, d]` (normed, roped); returns `[Tq, heads·d]`. Query head `h` reads KV head
/// `h / (heads / kv_heads)`. Scores are not scaled (Gemma 4 norms q and k instead). `on_host`:
/// see [`softmax_last`].
pub fn attend(
    q: Tensor<3>,
    kv: &StepKv,
    mask: &Tensor<3>,
    scale: f32,
    on_host: bool,
) -> Result<Tensor<2>> {
    let [tq, heads, d] = q.dims();
    let kv_heads = kv.k.dims()[0];
    let groups = heads / kv_heads;
    // [Tq, H, d] → [H, Tq, d] → [Hkv, G·Tq, d]: heads kv·G..kv·G+G share KV head kv.
    let q = q.swap_dims(0, 1).reshape([kv_heads, groups * tq, d]);
    let mut scores = q.matmul(kv.k.clone().swap_dims(1, 2));
    if scale != 1.0 {
        scores = scores * scale;
    }
    let probs = softmax_last(scores + mask.clone(), on_host)?;
    Ok(probs
        .matmul(kv.v.clone())
        .reshape([heads, tq, d])
        .swap_dims(0, 1)
        .reshape([tq, heads * d]))
}

/// `[keys]`: 1 where a query at `q` may see the key slot, 0 elsewhere (empty slots included).
pub fn build_visibility(
    kind: AttentionKind,
    window: usize,
    q: usize,
    key_pos: &[Option<usize>],
    device: &Device,
) -> Tensor<1> {
    let flags = key_pos
        .iter()
        .map(|k| match k {
            Some(k) if visible(kind, window, q, *k) => 1.0,
            _ => 0.0,
        })
        .collect::<Vec<f32>>();
    from_host(flags, [key_pos.len()], device)
}

/// [`attend`] for one query token with our fused kernel (kernels::attention: CubeCL on the
/// GPU, split-over-keys SIMD on the CPU): `q` `[1, heads, d]` → `[1, heads·d]`.
pub fn attend_one(q: Tensor<3>, kv: &StepKv, visible: &Tensor<1>, scale: f32) -> Tensor<2> {
    let [_, heads, d] = q.dims();
    let groups = heads / kv.k.dims()[0];
    let out = crate::kernels::attention::decode_attention(
        q.reshape([heads, d]),
        kv.k.clone(),
        kv.v.clone(),
        visible.clone(),
        crate::kernels::attention::AttentionCall { groups, scale },
    );
    out.reshape([1, heads * d])
}
