//! Scaled-dot-product attention over a step's keys with grouped KV heads and position masks.

use burn::tensor::{Device, Tensor};

use super::config::AttentionKind;
use super::kv_cache::{KvRows, RowPrep, StepKv};
use crate::kernels::attention::AttentionCall;
use crate::kernels::cpu::attention::KvView;
use crate::kernels::kv::EncodedRows;
use burn::tensor::activation::softmax;

use super::ops::{from_host, is_host, to_host};
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
fn build_mask(
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

/// Which keys the queries of one step may see.
#[derive(Debug, Clone, Copy)]
pub struct Visibility<'a> {
    pub kind: AttentionKind,
    /// Sliding layers' window (ignored by full layers).
    pub window: usize,
    /// The position of each query row.
    pub query_positions: &'a [usize],
}

/// The additive masks of the GPU's many-query path, built once per forward pass for each
/// (kind, queries, keys) and shared by the layers that match.
#[derive(Default)]
pub struct MaskCache(Vec<(AttentionKind, usize, usize, Tensor<3>)>);

impl MaskCache {
    fn get(&mut self, v: Visibility<'_>, kv: &StepKv, groups: usize, device: &Device) -> Tensor<3> {
        let (rows, keys) = (v.query_positions.len(), kv.key_pos.len());
        if let Some((.., mask)) = self
            .0
            .iter()
            .find(|(k, r, n, _)| *k == v.kind && *r == rows && *n == keys)
        {
            return mask.clone();
        }
        let mask = build_mask(
            v.kind,
            v.window,
            v.query_positions,
            &kv.key_pos,
            groups,
            device,
        );
        self.0.push((v.kind, rows, keys, mask.clone()));
        mask
    }
}

/// Attention of the raw queries `q` `[Tq, heads, d]`, prepared by `q_prep` (norm, RoPE), over
/// `kv`, returning `[Tq, heads·d]`. Query head `h` reads KV head `h / (heads / kv_heads)`;
/// scores are multiplied by `scale`. The one entry point for the decoder: one query token
/// goes through the fused decode kernel (kernels::attention, both devices); several go
/// through the host kernel on the CPU and through burn's masked softmax on a GPU. A GPU
/// cache of encoded rows prepares the queries in the attention kernel (unless its keys are
/// rotated); elsewhere they are prepared first.
pub fn attend(
    q: Tensor<3>,
    q_prep: RowPrep<'_>,
    kv: &StepKv,
    visibility: Visibility<'_>,
    scale: f32,
    masks: &mut MaskCache,
) -> Result<Tensor<2>> {
    let Visibility {
        kind,
        window,
        query_positions,
    } = visibility;
    let device = q.device();
    #[cfg(feature = "gpu")]
    if let KvRows::Device { k, v } = &kv.rows {
        use crate::kernels::gpu::kv::{Queries, attend};
        let fused = !k.codec.is_rotated() && q_prep.is_norm_and_rope();
        let prep = fused.then(|| q_prep.on_device());
        let q = if fused { q } else { q_prep.apply(q) };
        let queries = Queries {
            key_pos: &kv.key_pos,
            q_pos: query_positions,
            window: (kind == AttentionKind::Sliding).then_some(window),
            scale,
            prep: prep.as_ref(),
        };
        return Ok(attend(q, (k, v), queries));
    }
    let q = q_prep.apply(q);
    if let KvRows::Encoded { k, v } = &kv.rows {
        return attend_encoded(q, (k, v), &kv.key_pos, visibility, scale);
    }
    if query_positions.len() == 1 {
        let visible = build_visibility(kind, window, query_positions[0], &kv.key_pos, &device);
        return Ok(attend_one(q, kv, &visible, scale));
    }
    if is_host(&device) {
        return attend_on_host(q, kv, kind, window, query_positions, scale);
    }
    let groups = q.dims()[1] / kv.kv_heads();
    let mask = masks.get(visibility, kv, groups, &device);
    Ok(attend_masked(q, kv, &mask, scale))
}

/// Attention over encoded rows (any KV type but all-f32), on the host: each query row through
/// the decode kernel, which reads the rows without decoding the cache.
fn attend_encoded(
    q: Tensor<3>,
    (k, v): (&EncodedRows, &EncodedRows),
    key_pos: &[Option<usize>],
    visibility: Visibility<'_>,
    scale: f32,
) -> Result<Tensor<2>> {
    let [tq, heads, d] = q.dims();
    let device = q.device();
    let q = to_host(q)?;
    let call = AttentionCall {
        groups: heads / k.kv_heads.max(1),
        scale,
    };
    let mut out = vec![0.0f32; tq * heads * d];
    if let [at] = visibility.query_positions {
        // One token (decode): split over the keys instead, so a long cache uses every thread.
        let flags = visibility_flags(visibility.kind, visibility.window, *at, key_pos);
        let (k, v) = (KvView::Encoded(k), KvView::Encoded(v));
        crate::kernels::cpu::attention::attend_one(&q, d, k, v, &flags, call, &mut out);
        return Ok(from_host(out, [tq, heads * d], &device));
    }
    // Query blocks bound the visibility flags to [block, keys].
    for (start, rows) in (0..tq)
        .step_by(HOST_QUERY_BLOCK)
        .map(|s| (s, HOST_QUERY_BLOCK.min(tq - s)))
    {
        let mut flags = Vec::with_capacity(rows * key_pos.len());
        for &at in &visibility.query_positions[start..start + rows] {
            flags.extend(visibility_flags(
                visibility.kind,
                visibility.window,
                at,
                key_pos,
            ));
        }
        let span = start * heads * d..(start + rows) * heads * d;
        crate::kernels::cpu::attention::attend_many(
            &q[span.clone()],
            rows,
            d,
            KvView::Encoded(k),
            KvView::Encoded(v),
            &flags,
            call,
            &mut out[span],
        );
    }
    Ok(from_host(out, [tq, heads * d], &device))
}

/// Many queries through burn's ops with an additive `mask` from [`build_mask`].
fn attend_masked(q: Tensor<3>, kv: &StepKv, mask: &Tensor<3>, scale: f32) -> Tensor<2> {
    let (scores, [tq, heads, d]) = grouped_scores(q, kv, scale);
    mix_values(softmax(scores + mask.clone(), 2), kv, [tq, heads, d])
}

/// [`attend_masked`] on the CPU: the softmax applies the visibility itself (kernels::cpu::activation),
/// so neither a `[groups·Tq, keys]` mask tensor (64 MiB for E2B's 512-token chunk at a 4k
/// cache) nor the masked copy of the scores is built.
fn attend_on_host(
    q: Tensor<3>,
    kv: &StepKv,
    kind: AttentionKind,
    window: usize,
    q_pos: &[usize],
    scale: f32,
) -> Result<Tensor<2>> {
    let tq = q.dims()[0];
    if tq > HOST_QUERY_BLOCK {
        // Query blocks bound the scores to [heads, block, keys]: 19 MiB instead of 75 MiB for
        // E2B's 512-token chunk over a 4.6k cache.
        let mut outs = Vec::with_capacity(tq.div_ceil(HOST_QUERY_BLOCK));
        for start in (0..tq).step_by(HOST_QUERY_BLOCK) {
            let len = HOST_QUERY_BLOCK.min(tq - start);
            outs.push(attend_on_host(
                q.clone().narrow(0, start, len),
                kv,
                kind,
                window,
                &q_pos[start..start + len],
                scale,
            )?);
        }
        return Ok(Tensor::cat(outs, 0));
    }
    // Only the slots between the first and the last one any of these queries sees take part
    // (causal prefill from an empty cache: half the scores on average).
    let seen = |slot: &Option<usize>| {
        slot.is_some_and(|k| q_pos.iter().any(|&q| visible(kind, window, q, k)))
    };
    let first = kv.key_pos.iter().position(seen).unwrap_or(0);
    let end = kv
        .key_pos
        .iter()
        .rposition(seen)
        .map_or(first, |last| last + 1);
    let keys = (end - first).max(1);
    let narrowed;
    let kv = if first == 0 && keys == kv.key_pos.len() {
        kv
    } else {
        let (k, v) = dense(kv);
        narrowed = StepKv {
            rows: KvRows::Dense {
                k: k.clone().narrow(1, first, keys),
                v: v.clone().narrow(1, first, keys),
            },
            key_pos: kv.key_pos[first..first + keys].to_vec(),
        };
        &narrowed
    };
    let (scores, dims) = grouped_scores(q, kv, scale);
    let shape = scores.dims();
    let device = scores.device();
    let mut mask = Vec::with_capacity(q_pos.len() * keys);
    for &q in q_pos {
        mask.extend(
            kv.key_pos
                .iter()
                .map(|k| k.is_some_and(|k| visible(kind, window, q, k))),
        );
    }
    let mut probs = to_host(scores)?;
    crate::kernels::cpu::activation::softmax_rows_visible(&mut probs, keys, &mask);
    Ok(mix_values(from_host(probs, shape, &device), kv, dims))
}

/// Queries [`attend_on_host`] scores at once.
const HOST_QUERY_BLOCK: usize = 128;

/// Scores `[kv_heads, groups·Tq, keys]`: heads kv·G..kv·G+G share KV head kv.
fn grouped_scores(q: Tensor<3>, kv: &StepKv, scale: f32) -> (Tensor<3>, [usize; 3]) {
    let [tq, heads, d] = q.dims();
    let kv_heads = kv.kv_heads();
    let groups = heads / kv_heads;
    // [Tq, H, d] → [H, Tq, d] → [Hkv, G·Tq, d].
    let q = q.swap_dims(0, 1).reshape([kv_heads, groups * tq, d]);
    let mut scores = q.matmul(dense(kv).0.clone().swap_dims(1, 2));
    if scale != 1.0 {
        scores = scores * scale;
    }
    (scores, [tq, heads, d])
}

/// `probs · V`, back to `[Tq, heads·d]`.
fn mix_values(probs: Tensor<3>, kv: &StepKv, [tq, heads, d]: [usize; 3]) -> Tensor<2> {
    probs
        .matmul(dense(kv).1.clone())
        .reshape([heads, tq, d])
        .swap_dims(0, 1)
        .reshape([tq, heads * d])
}

/// The tensors of a dense step (the callers dispatch encoded steps to [`attend_encoded`] first).
fn dense(kv: &StepKv) -> (&Tensor<3>, &Tensor<3>) {
    match &kv.rows {
        KvRows::Dense { k, v } => Some((k, v)),
        KvRows::Encoded { .. } => None,
        #[cfg(feature = "gpu")]
        KvRows::Device { .. } => None,
    }
    .expect("encoded steps go through attend_encoded or the GPU's encoded attention")
}

/// `[keys]`: 1 where a query at `q` may see the key slot, 0 elsewhere (empty slots included).
fn build_visibility(
    kind: AttentionKind,
    window: usize,
    q: usize,
    key_pos: &[Option<usize>],
    device: &Device,
) -> Tensor<1> {
    from_host(
        visibility_flags(kind, window, q, key_pos),
        [key_pos.len()],
        device,
    )
}

/// 1.0 where a query at `q` may see the key slot, 0.0 elsewhere (empty slots included).
fn visibility_flags(
    kind: AttentionKind,
    window: usize,
    q: usize,
    key_pos: &[Option<usize>],
) -> Vec<f32> {
    key_pos
        .iter()
        .map(|k| match k {
            Some(k) if visible(kind, window, q, *k) => 1.0,
            _ => 0.0,
        })
        .collect()
}

/// One query token with our fused kernel (kernels::attention: CubeCL on the
/// GPU, split-over-keys SIMD on the CPU): `q` `[1, heads, d]` → `[1, heads·d]`.
fn attend_one(q: Tensor<3>, kv: &StepKv, visible: &Tensor<1>, scale: f32) -> Tensor<2> {
    let [_, heads, d] = q.dims();
    let groups = heads / kv.kv_heads();
    let (k, v) = dense(kv);
    let out = crate::kernels::attention::decode_attention(
        q.reshape([heads, d]),
        k.clone(),
        v.clone(),
        visible.clone(),
        AttentionCall { groups, scale },
    );
    out.reshape([1, heads * d])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::*;
    use crate::device::{BackendKind, ComputeDevice};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn host_attention_in_query_blocks_matches_the_masked_burn_path() {
        // 300 queries (three blocks, the last partial) after 50 cached keys, grouped heads,
        // both kinds of visibility; the reference is burn's matmul + additive mask + softmax.
        let dev = ComputeDevice::open(BackendKind::Cpu).unwrap().device;
        let (tq, cached, heads, kv_heads, d) = (300usize, 50usize, 4usize, 2usize, 16usize);
        let keys = cached + tq;
        let q = Tensor::<3>::from_data(
            TensorData::new(values(tq * heads * d, 1), [tq, heads, d]),
            &dev,
        );
        let kv = StepKv {
            rows: KvRows::Dense {
                k: Tensor::from_data(
                    TensorData::new(values(kv_heads * keys * d, 2), [kv_heads, keys, d]),
                    &dev,
                ),
                v: Tensor::from_data(
                    TensorData::new(values(kv_heads * keys * d, 3), [kv_heads, keys, d]),
                    &dev,
                ),
            },
            key_pos: (0..keys).map(Some).collect(),
        };
        let q_pos: Vec<usize> = (cached..keys).collect();
        for (kind, window) in [(AttentionKind::Full, 0), (AttentionKind::Sliding, 37)] {
            let mask = build_mask(kind, window, &q_pos, &kv.key_pos, heads / kv_heads, &dev);
            let want = to_host(attend_masked(q.clone(), &kv, &mask, 0.5)).unwrap();
            let got = to_host(attend_on_host(q.clone(), &kv, kind, window, &q_pos, 0.5).unwrap())
                .unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{kind:?}: {worst}");
        }
    }
}
