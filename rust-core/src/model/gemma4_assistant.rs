//! Gemma 4's multi-token-prediction assistant (`Gemma4AssistantForCausalLM`, llama.cpp's
//! `gemma4-assistant`): a 4-layer decoder that drafts the tokens after the target's next one.
//! It has no KV cache of its own: every layer is KV-shared and attends, read-only, over the
//! TARGET's cache (sliding layers over the target's last sliding producer, the full layer
//! over its last full producer). The decoder layers are the target's own code
//! ([`DecoderLayer`](super::gemma)).
//!
//! One draft step (shared/spec/gemma4-mtp.md §1.3), at a position `p` that stays the same for
//! every step of a round:
//! `x = pre_projection([target.embed(tok) · sqrt(Hb), h])` → layers → final norm `n` →
//! logits (centroid-masked or dense, no softcap) and `h_next = post_projection(n)`, the next
//! step's `h`. The round's first `h` is the target's post-final-norm hidden state of the row
//! whose logits produced `tok` ([`GemmaModel::forward_with_hidden`]).
//!
//! Sliding layers see the target keys `p-W+1 … p-1` (the target's own window rule; llama.cpp's
//! choice). transformers' reference instead keeps the last W+1 supplied keys; the two agree
//! while `p < W`, where the parity fixture stays.

use burn::tensor::Tensor;

use super::config::{AssistantConfig, GemmaConfig};
use super::gemma::{DecoderLayer, GemmaModel, LayerKv, Pass};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::ops::{from_host, norm_weight, rms_norm, to_host};
use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::kernels::cpu::activation::argmax;
use crate::weights::{MappedTensor, WeightStore};

/// The centroid-masked ("ordered embeddings") head: the normed state scores the centroids,
/// and only the tokens of the `top_k` best clusters get logits.
struct CentroidHead {
    /// `[num_centroids, H]`.
    centroids: Linear,
    /// Token ids, cluster by cluster (`num_centroids × per_centroid`, a permutation of the
    /// vocabulary).
    ordering: Vec<u32>,
    per_centroid: usize,
    top_k: usize,
}

/// One draft step's outputs.
#[derive(Debug, Clone)]
pub struct AssistantStep {
    /// `[vocab]`: the centroid head's logits (tokens outside the chosen clusters get the
    /// smallest chosen logit minus 1, as transformers), or the dense head's.
    pub logits: Vec<f32>,
    /// `[H]`: the final norm's output (the heads' input).
    pub normed: Vec<f32>,
    /// `[Hb]`: the next step's hidden state.
    pub h_next: Vec<f32>,
}

pub struct AssistantModel {
    config: AssistantConfig,
    device: ComputeDevice,
    store: WeightStore,
    pre_projection: Linear,
    post_projection: Linear,
    final_norm: Tensor<2>,
    layers: Vec<DecoderLayer>,
    rope_frequencies: Vec<Vec<f32>>,
    embed_tokens: MappedTensor,
    lm_head: Linear,
    centroid_head: Option<CentroidHead>,
}

fn mismatch(what: &str, draft: impl ToString, target: impl ToString) -> GemmaError {
    GemmaError::DraftModelMismatch {
        what: what.to_string(),
        draft: draft.to_string(),
        target: target.to_string(),
    }
}

/// Fits the assistant's layers to `target`: each reads the target's last KV-producing layer of
/// its own kind, whose KV heads and head size it must have. An assistant made for another
/// model is a [`GemmaError::DraftModelMismatch`].
fn fit(config: &mut AssistantConfig, target: &GemmaConfig) -> Result<()> {
    if config.backbone_hidden_size != target.hidden_size {
        return Err(mismatch(
            "backbone hidden size",
            config.backbone_hidden_size,
            target.hidden_size,
        ));
    }
    if config.text.vocab_size != target.vocab_size {
        return Err(mismatch(
            "vocabulary size",
            config.text.vocab_size,
            target.vocab_size,
        ));
    }
    if config.text.sliding_window != target.sliding_window {
        return Err(mismatch(
            "sliding window",
            config.text.sliding_window,
            target.sliding_window,
        ));
    }
    for (i, spec) in config.text.layers.iter_mut().enumerate() {
        let producer = (0..target.layers.len())
            .rev()
            .find(|&j| target.layers[j].kv_source.is_none() && target.layers[j].kind == spec.kind);
        let Some(j) = producer else {
            return Err(mismatch(
                &format!("layer {i}'s attention kind"),
                format!("{:?}", spec.kind),
                "absent",
            ));
        };
        let p = &target.layers[j];
        if spec.num_kv_heads != p.num_kv_heads {
            return Err(mismatch(
                &format!("layer {i}'s KV head count"),
                spec.num_kv_heads,
                p.num_kv_heads,
            ));
        }
        if spec.head_dim != p.head_dim {
            return Err(mismatch(
                &format!("layer {i}'s head size"),
                spec.head_dim,
                p.head_dim,
            ));
        }
        spec.kv_source = Some(j);
    }
    Ok(())
}

impl AssistantModel {
    /// Builds the assistant of `target` from its hyper-parameters and a store holding the
    /// Hugging Face names (crate::source::load_assistant opens both from a file).
    pub fn from_store(
        mut config: AssistantConfig,
        store: WeightStore,
        target: &GemmaConfig,
        device: ComputeDevice,
    ) -> Result<Self> {
        fit(&mut config, target)?;
        let c = &config.text;
        let (h, hb, vocab) = (c.hidden_size, config.backbone_hidden_size, c.vocab_size);
        let dev = &device.device;
        let tensor = |name: &str, shape: &[usize]| store.get_shaped(name, shape);
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
            Linear::load(tensor(name, &[out, inp])?, &device)
        };
        let embed_tokens = tensor("model.embed_tokens.weight", &[vocab, h])?.clone();
        let lm_head = Linear::load(&embed_tokens, &device)?;
        let final_norm = norm_weight(tensor("model.norm.weight", &[h])?.to_f32_vec(), dev);
        let pre_projection = linear("pre_projection.weight", h, 2 * hb)?;
        let post_projection = linear("post_projection.weight", hb, h)?;
        let centroid_head = match config.centroids {
            Some(head) => {
                let per_centroid = vocab / head.num_centroids;
                let ordering = tensor("masked_embedding.token_ordering", &[vocab])?;
                Some(CentroidHead {
                    centroids: linear("masked_embedding.centroids.weight", head.num_centroids, h)?,
                    ordering: permutation(&ordering.to_i64_vec()?, vocab)?,
                    per_centroid,
                    top_k: head.top_k,
                })
            }
            None => None,
        };
        let mut rope_frequencies = Vec::new();
        let layers = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                DecoderLayer::load(c, i, spec, "model.", &store, &device, &mut rope_frequencies)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AssistantModel {
            config,
            device,
            store,
            pre_projection,
            post_projection,
            final_norm,
            layers,
            rope_frequencies,
            embed_tokens,
            lm_head,
            centroid_head,
        })
    }

    /// The hyper-parameters, its layers' KV sources naming the target layers they read.
    pub fn config(&self) -> &AssistantConfig {
        &self.config
    }

    pub fn weights(&self) -> &WeightStore {
        &self.store
    }

    /// Whether the logits come from the centroid-masked head (else the dense head).
    pub fn has_centroid_head(&self) -> bool {
        self.centroid_head.is_some()
    }

    /// One draft step for `token` at `position` (the round's constant position: that of the
    /// round's first token, which `cache` does not hold yet), from `hidden` (`[Hb]`: the
    /// target's hidden state for the round's first step, the previous step's `h_next` after).
    pub fn step(
        &self,
        target: &GemmaModel,
        cache: &KvCache,
        token: u32,
        hidden: &[f32],
        position: usize,
    ) -> Result<AssistantStep> {
        let c = &self.config.text;
        let hb = self.config.backbone_hidden_size;
        if hidden.len() != hb || target.config().hidden_size != hb {
            return Err(mismatch("hidden-state width", hidden.len(), hb));
        }
        if cache.len() != position {
            return Err(GemmaError::InvalidArgument(format!(
                "a draft at position {position} needs the target's cache to hold exactly the \
                 positions before it (it holds {})",
                cache.len()
            )));
        }
        let dev = &self.device.device;
        let mut input = target.embed(&[token])?;
        input.extend_from_slice(hidden);
        let mut x = self
            .pre_projection
            .forward(from_host(input, [1, 2 * hb], dev))?;
        let positions = [position];
        let mut pass = Pass::new(c, &positions, &self.rope_frequencies, dev);
        for layer in &self.layers {
            let source = layer.spec.kv_source.ok_or_else(|| {
                GemmaError::InvalidArgument("an assistant layer without a KV source".into())
            })?;
            let kv = LayerKv::Shared(cache.view(source)?);
            x = layer.forward(x, None, kv, None, None, &mut pass)?.0;
        }
        let n = rms_norm(x, Some(&self.final_norm), c.rms_norm_eps);
        let h_next = self.post_projection.forward_to_host(n.clone())?;
        let normed = to_host(n)?;
        let logits = match &self.centroid_head {
            Some(head) => self.masked_logits(head, &normed)?,
            None => self.dense_logits(&normed)?,
        };
        Ok(AssistantStep {
            logits,
            normed,
            h_next,
        })
    }

    /// Every token's logit from the normed state `[H]` (the tied embedding as LM head).
    pub fn dense_logits(&self, normed: &[f32]) -> Result<Vec<f32>> {
        let h = self.config.text.hidden_size;
        self.lm_head
            .forward_to_host(from_host(normed.to_vec(), [1, h], &self.device.device))
    }

    /// The centroid head's chosen clusters, best first (`None` for a dense-head assistant).
    pub fn top_centroids(&self, normed: &[f32]) -> Result<Option<Vec<usize>>> {
        match &self.centroid_head {
            Some(head) => Ok(Some(self.top_centroids_of(head, normed)?)),
            None => Ok(None),
        }
    }

    fn top_centroids_of(&self, head: &CentroidHead, normed: &[f32]) -> Result<Vec<usize>> {
        let h = self.config.text.hidden_size;
        let scores = head.centroids.forward_to_host(from_host(
            normed.to_vec(),
            [1, h],
            &self.device.device,
        ))?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order.truncate(head.top_k);
        Ok(order)
    }

    fn masked_logits(&self, head: &CentroidHead, normed: &[f32]) -> Result<Vec<f32>> {
        let ids: Vec<u32> = self
            .top_centroids_of(head, normed)?
            .into_iter()
            .flat_map(|c| {
                head.ordering[c * head.per_centroid..(c + 1) * head.per_centroid]
                    .iter()
                    .copied()
            })
            .collect();
        let rows = self.embed_tokens.gather_rows_f32(&ids, 1.0)?;
        let h = normed.len();
        let selected: Vec<f32> = rows
            .chunks_exact(h.max(1))
            .map(|row| row.iter().zip(normed).map(|(a, b)| a * b).sum())
            .collect();
        let floor = selected.iter().copied().fold(f32::INFINITY, f32::min) - 1.0;
        let mut logits = vec![floor; self.config.text.vocab_size];
        for (&id, &v) in ids.iter().zip(&selected) {
            logits[id as usize] = v;
        }
        Ok(logits)
    }

    /// Greedy drafts: up to `max` tokens after `token` (at `position`), each the argmax of a
    /// step fed the previous draft and `h_next`.
    pub fn draft(
        &self,
        target: &GemmaModel,
        cache: &KvCache,
        token: u32,
        hidden: &[f32],
        position: usize,
        max: usize,
    ) -> Result<Vec<u32>> {
        let mut drafts = Vec::with_capacity(max);
        let (mut token, mut hidden) = (token, hidden.to_vec());
        for _ in 0..max {
            let step = self.step(target, cache, token, &hidden, position)?;
            token = argmax(&step.logits);
            drafts.push(token);
            hidden = step.h_next;
        }
        Ok(drafts)
    }
}

/// `values` as token ids, if they are a permutation of `0..vocab` (a hostile file's ordering
/// is a typed error, never an out-of-range index).
fn permutation(values: &[i64], vocab: usize) -> Result<Vec<u32>> {
    let bad = |msg: String| {
        Err(GemmaError::InvalidConfig(format!(
            "masked_embedding.token_ordering {msg}"
        )))
    };
    if values.len() != vocab {
        return bad(format!("has {} entries for {vocab} tokens", values.len()));
    }
    let mut seen = vec![false; vocab];
    let mut ids = Vec::with_capacity(vocab);
    for &v in values {
        let Some(i) = usize::try_from(v).ok().filter(|&i| i < vocab) else {
            return bad(format!("holds {v}, outside the vocabulary of {vocab}"));
        };
        if std::mem::replace(&mut seen[i], true) {
            return bad(format!("holds {i} twice (not a permutation)"));
        }
        ids.push(i as u32);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordering_must_be_a_permutation_of_the_vocabulary() {
        assert_eq!(permutation(&[2, 0, 1], 3).unwrap(), vec![2, 0, 1]);
        for bad in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3], &[0, -1, 2]] {
            assert!(matches!(
                permutation(bad, 3),
                Err(GemmaError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }
}
