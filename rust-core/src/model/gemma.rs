//! The Gemma 4 text decoder (E2B / E4B), which with its Gemma 4 additions switched
//! off by the config (no per-layer embeddings, no value norm, no layer scalars, scaled
//! attention, no KV sharing) is also the Gemma 3 text decoder. One forward pass per call.
//!
//! Data flow: token ids → embeddings gathered from the mapped file → per-layer embeddings →
//! decoder layers (sandwich norms, q/k/v norms, RoPE per layer type, KV sharing, GeGLU MLP,
//! per-layer input gate, layer scalar) → final norm → tied LM head → softcap → host logits.

use std::sync::Arc;

use burn::tensor::Tensor;

use super::attention::{MaskCache, Visibility, attend};
use super::config::{AttentionKind, GemmaConfig, LayerSpec};
use super::kv_cache::{KvCache, LayerCache, RowPrep, StepKv};
use super::linear::{GatedLinear, Linear, SplitLinear};
use super::names::TEXT_PREFIXES;
use super::ops::{add_rms_norm, add_rms_norm_then_norm, from_host, norm_weight, rms_norm, to_host};
use super::rope::{RopeTables, inverse_frequencies};
use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::kernels::kv::{KvCodec, KvTypes};
use crate::weights::{MappedTensor, WeightStore};

/// Most tokens a [`GemmaModel::verify`] pass runs at decode cost (the CPU kernels' few-token
/// path; more take the prefill path).
pub const MAX_VERIFY_TOKENS: usize = crate::kernels::cpu::TILED_MIN_TOKENS - 1;

/// Which positions of a forward pass produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last position (generation). KV-shared layers then run for that row alone:
    /// they write no cache, so the result is exact.
    Last,
    /// Every position (scoring, parity checks).
    All,
}

/// Projected image/audio/video features that replace the embeddings of placeholder positions
/// in one forward call: the placeholders are looked up as the pad token (for
/// the embedding and the per-layer-embedding token part) and their embedding rows are then
/// overwritten by these values, which are not scaled by sqrt(H).
#[derive(Debug, Clone, Copy)]
pub struct SoftTokens<'a> {
    /// Offsets into the call's `tokens`, strictly ascending.
    pub positions: &'a [usize],
    /// `[positions.len(), H]` row-major.
    pub values: &'a [f32],
}

impl SoftTokens<'_> {
    pub const NONE: SoftTokens<'static> = SoftTokens {
        positions: &[],
        values: &[],
    };
}

/// Intermediate activations of one forward pass, row-major on the host.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// `[T, H]`, scaled by sqrt(H).
    pub embeddings: Vec<f32>,
    /// `[T, L, P]`: the per-layer input each layer receives.
    pub per_layer_inputs: Vec<f32>,
    /// One `[rows, H]` residual stream per layer (rows shrink to 1 at the first KV-shared
    /// layer when only the last logits are requested).
    pub layer_outputs: Vec<Vec<f32>>,
    /// `[rows, H]` after the final norm.
    pub final_norm: Vec<f32>,
}

/// What a layer with its own cache has besides the query's: the key norm (the key and value
/// products are in the layer's `qkv`).
struct KvProjection {
    k_norm: Tensor<3>,
}

pub(super) struct DecoderLayer {
    pub(super) spec: LayerSpec,
    rope: usize,
    input_norm: Tensor<2>,
    /// The query product, then (a layer with its own cache) the key and value products.
    qkv: SplitLinear,
    q_norm: Tensor<3>,
    kv: Option<KvProjection>,
    o: Linear,
    post_attention_norm: Tensor<2>,
    pre_feedforward_norm: Tensor<2>,
    /// `gelu_tanh(gate) ⊙ up`.
    gate_up: GatedLinear,
    down: Linear,
    post_feedforward_norm: Tensor<2>,
    per_layer_input: Option<PerLayerInput>,
    layer_scalar: f32,
}

/// Gemma 4's per-layer-embedding input to one layer: gate, project, norm, add.
struct PerLayerInput {
    gate: Linear,
    projection: Linear,
    post_norm: Tensor<2>,
}

/// Gemma 4's per-layer-embedding tables: a token part gathered from the mapped table and a
/// context part projected from the embeddings.
struct PerLayerEmbedding {
    table: MappedTensor,
    model_projection: Linear,
    projection_norm: Tensor<3>,
}

pub struct GemmaModel {
    config: GemmaConfig,
    device: ComputeDevice,
    store: WeightStore,
    embed_tokens: MappedTensor,
    per_layer_embedding: Option<PerLayerEmbedding>,
    lm_head: Linear,
    final_norm: Tensor<2>,
    layers: Vec<DecoderLayer>,
    /// Distinct inverse-frequency vectors; layers refer to them by index.
    rope_frequencies: Vec<Vec<f32>>,
    /// The KV cache's element types, and per layer owning a cache the key and value codecs
    /// (`None` for f32 keys and values: tensors).
    kv_types: KvTypes,
    kv_codecs: Vec<Option<(Arc<KvCodec>, Arc<KvCodec>)>>,
}

impl GemmaModel {
    /// Builds the model from its hyper-parameters and a store holding the Hugging Face
    /// tensor names (crate::source::ModelSource opens both from a file).
    pub fn from_store(
        config: GemmaConfig,
        store: WeightStore,
        device: ComputeDevice,
    ) -> Result<Self> {
        let prefix = TEXT_PREFIXES
            .iter()
            .find(|p| store.contains(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| {
                GemmaError::MissingTensor("model.language_model.embed_tokens.weight".into())
            })?;
        let c = &config;
        let (h, p, n_layers) = (c.hidden_size, c.hidden_size_per_layer_input, c.num_layers());
        let dev = &device.device;
        let name = |suffix: &str| format!("{prefix}{suffix}");
        let tensor = |suffix: &str, shape: &[usize]| store.get_shaped(&name(suffix), shape);
        let vector = |suffix: &str, len: usize| -> Result<Vec<f32>> {
            Ok(tensor(suffix, &[len])?.to_f32_vec())
        };
        let linear = |suffix: &str, out: usize, inp: usize| -> Result<Linear> {
            Linear::load(tensor(suffix, &[out, inp])?, &device)
        };

        let embed_tokens = tensor("embed_tokens.weight", &[c.vocab_size, h])?.clone();
        let per_layer_embedding = if p > 0 {
            Some(PerLayerEmbedding {
                table: tensor(
                    "embed_tokens_per_layer.weight",
                    &[c.vocab_size_per_layer_input, n_layers * p],
                )?
                .clone(),
                model_projection: linear("per_layer_model_projection.weight", n_layers * p, h)?,
                projection_norm: norm_weight(vector("per_layer_projection_norm.weight", p)?, dev),
            })
        } else {
            None
        };
        let lm_head = Linear::load(&embed_tokens, &device)?;
        let final_norm = norm_weight(vector("norm.weight", h)?, dev);

        let mut rope_frequencies: Vec<Vec<f32>> = Vec::new();
        let layers = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                DecoderLayer::load(c, i, spec, prefix, &store, &device, &mut rope_frequencies)
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(GemmaModel {
            config,
            device,
            store,
            embed_tokens,
            per_layer_embedding,
            lm_head,
            final_norm,
            layers,
            rope_frequencies,
            kv_types: KvTypes::F32,
            kv_codecs: Vec::new(),
        })
    }

    /// The KV cache's element types of caches made from now on (f32 until set). Types other
    /// than f32 are encoded rows: on the host for a CPU model, in device memory for a GPU
    /// model (kernels::gpu::kv).
    pub fn set_kv_types(&mut self, types: KvTypes) -> Result<()> {
        if types == KvTypes::F32 {
            self.kv_types = types;
            self.kv_codecs.clear();
            return Ok(());
        }
        let codecs = self.kv_codecs_for(types)?;
        self.kv_types = types;
        self.kv_codecs = codecs;
        Ok(())
    }

    pub fn kv_types(&self) -> KvTypes {
        self.kv_types
    }

    /// Per layer owning a cache, its key and value codecs for `types`: the rotations are
    /// seeded by the layer index, so every cache of these types encodes alike.
    fn kv_codecs_for(&self, types: KvTypes) -> Result<Vec<Option<(Arc<KvCodec>, Arc<KvCodec>)>>> {
        let mut codecs = Vec::with_capacity(self.config.layers.len());
        for (i, spec) in self.config.layers.iter().enumerate() {
            codecs.push(if spec.kv_source.is_some() {
                None
            } else {
                let (h, d, seed) = (spec.num_kv_heads, spec.head_dim, 2 * i as u64);
                Some((
                    Arc::new(KvCodec::new(types.k, h, d, seed)?),
                    Arc::new(KvCodec::new(types.v, h, d, seed + 1)?),
                ))
            });
        }
        Ok(codecs)
    }

    /// A fresh cache as [`new_cache_with_slack`](Self::new_cache_with_slack) but of `types`
    /// instead of the model's (comparisons of KV types on one loaded model).
    pub fn new_cache_typed(&self, max_len: usize, slack: usize, types: KvTypes) -> Result<KvCache> {
        let codecs = match types {
            KvTypes::F32 => Vec::new(),
            _ => self.kv_codecs_for(types)?,
        };
        Ok(self.cache_with(max_len, slack, &codecs))
    }

    pub fn config(&self) -> &GemmaConfig {
        &self.config
    }

    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    pub fn weights(&self) -> &WeightStore {
        &self.store
    }

    /// A fresh cache for a sequence of at most `max_len` positions, able to roll back by
    /// [`ROLLBACK_SLACK`](super::kv_cache::ROLLBACK_SLACK) tokens.
    pub fn new_cache(&self, max_len: usize) -> KvCache {
        self.new_cache_with_slack(max_len, super::kv_cache::ROLLBACK_SLACK)
    }

    /// A fresh cache whose sliding rings keep `slack` positions beyond the window (0: the
    /// smallest cache, which wraps soonest).
    pub fn new_cache_with_slack(&self, max_len: usize, slack: usize) -> KvCache {
        self.cache_with(max_len, slack, &self.kv_codecs)
    }

    fn cache_with(
        &self,
        max_len: usize,
        slack: usize,
        codecs: &[Option<(Arc<KvCodec>, Arc<KvCodec>)>],
    ) -> KvCache {
        let on_host = super::ops::is_host(&self.device.device);
        let layers = self
            .config
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let cache = match (spec.kv_source, spec.kind) {
                    (Some(_), _) => return None,
                    (None, AttentionKind::Full) => LayerCache::growing(spec.num_kv_heads, max_len),
                    (None, AttentionKind::Sliding) => {
                        LayerCache::ring(self.config.sliding_window, slack, spec.num_kv_heads)
                    }
                };
                Some(cache.encoded_with(codecs.get(i).and_then(Option::as_ref), on_host))
            })
            .collect();
        KvCache::new(layers, max_len.min(self.config.max_position_embeddings))
    }

    /// Runs `tokens` at the positions following the cache's, appends their keys and values,
    /// and returns logits `[rows, vocab]` (row-major) for the positions `which` selects.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        which: LogitsFor,
    ) -> Result<Vec<f32>> {
        self.run(cache, tokens, SoftTokens::NONE, which, None, None)
    }

    /// Speculative decoding's verify pass: runs `tokens` (the token just sampled, then the
    /// drafted ones) in one pass and returns logits `[tokens.len(), vocab]`, row `i` scoring the
    /// position after `tokens[i]`. Up to [`MAX_VERIFY_TOKENS`] tokens the weight products take
    /// the decode kernels (each weight read once, each row's product that of its own decode
    /// step). The caller rolls rejected positions back with
    /// [`KvCache::truncate`](super::kv_cache::KvCache::truncate).
    pub fn verify(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>> {
        self.run(cache, tokens, SoftTokens::NONE, LogitsFor::All, None, None)
    }

    /// [`forward_with_soft_tokens`](Self::forward_with_soft_tokens) that also returns the
    /// hidden states `[rows, H]` of the same rows: the final norm's output, the LM head's
    /// input (what Gemma 4's MTP assistant starts a draft from).
    pub fn forward_with_hidden(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        soft: SoftTokens<'_>,
        which: LogitsFor,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut hidden = Vec::new();
        let logits = self.run(cache, tokens, soft, which, None, Some(&mut hidden))?;
        Ok((logits, hidden))
    }

    /// [`verify`](Self::verify) that also returns the hidden states `[tokens.len(), H]`
    /// (as [`forward_with_hidden`](Self::forward_with_hidden)).
    pub fn verify_with_hidden(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.forward_with_hidden(cache, tokens, SoftTokens::NONE, LogitsFor::All)
    }

    /// The embeddings of `tokens` `[T, H]`, scaled by sqrt(H) as the first layer gets them.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        self.embed_tokens
            .gather_rows_f32(tokens, (h as f64).sqrt() as f32)
    }

    /// [`forward`](Self::forward) with image/audio/video soft tokens in placeholder positions.
    pub fn forward_with_soft_tokens(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        soft: SoftTokens<'_>,
        which: LogitsFor,
    ) -> Result<Vec<f32>> {
        self.run(cache, tokens, soft, which, None, None)
    }

    /// [`forward`](Self::forward) that also returns intermediate activations, for parity
    /// tests that must say which stage diverged.
    pub fn forward_traced(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        which: LogitsFor,
    ) -> Result<(Vec<f32>, Trace)> {
        let mut trace = Trace::default();
        let logits = self.run(
            cache,
            tokens,
            SoftTokens::NONE,
            which,
            Some(&mut trace),
            None,
        )?;
        Ok((logits, trace))
    }

    fn check_soft_tokens(&self, t: usize, soft: &SoftTokens<'_>) -> Result<()> {
        let h = self.config.hidden_size;
        if soft.values.len() != soft.positions.len() * h {
            return Err(GemmaError::MediaMismatch(format!(
                "{} soft-token values for {} positions of width {h}",
                soft.values.len(),
                soft.positions.len()
            )));
        }
        if soft.positions.windows(2).any(|w| w[0] >= w[1])
            || soft.positions.last().is_some_and(|&p| p >= t)
        {
            return Err(GemmaError::MediaMismatch(
                "soft-token positions must be ascending offsets into the tokens".into(),
            ));
        }
        Ok(())
    }

    fn run(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        soft: SoftTokens<'_>,
        which: LogitsFor,
        trace: Option<&mut Trace>,
        hidden_out: Option<&mut Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let hidden = self.final_hidden(cache, tokens, soft, which, trace, hidden_out)?;
        let mut logits = self.lm_head.forward_to_host(hidden)?;
        if let Some(cap) = self.config.final_logit_softcapping {
            crate::kernels::cpu::activation::softcap(&mut logits, cap);
        }
        Ok(logits)
    }

    /// The greedy next token after `tokens`: [`forward`](Self::forward)'s pass and the argmax
    /// of its last logits (`kernels::cpu::activation::argmax`), picked where the logits are:
    /// on a GPU only the maxima of blocks of the vocabulary come back (512 bytes for 262144
    /// ids instead of 1 MiB), in the step's one read.
    pub fn forward_greedy(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        soft: SoftTokens<'_>,
    ) -> Result<u32> {
        let hidden = self.final_hidden(cache, tokens, soft, LogitsFor::Last, None, None)?;
        let picks = self
            .lm_head
            .argmax_rows(hidden, self.config.final_logit_softcapping)?;
        picks
            .last()
            .copied()
            .ok_or_else(|| GemmaError::Device("the LM head returned no row".into()))
    }

    /// The `k` most likely next tokens after `tokens` with their (soft-capped) logits, largest
    /// first: [`forward`](Self::forward)'s pass and `kernels::cpu::activation::top_k` of its
    /// last logits, found where the logits are: on a GPU only the picks come back (512 bytes
    /// for `k` = 64 instead of 1 MiB), in the step's one read, for a sampler whose top-k
    /// bounds its candidates (`Sampler::sample_top`).
    pub fn forward_top_k(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        soft: SoftTokens<'_>,
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        let hidden = self.final_hidden(cache, tokens, soft, LogitsFor::Last, None, None)?;
        let mut rows = self
            .lm_head
            .top_k_rows(hidden, k, self.config.final_logit_softcapping)?;
        rows.pop()
            .ok_or_else(|| GemmaError::Device("the LM head returned no row".into()))
    }

    /// The pass up to the final norm: its output rows `[rows, H]` (all, or the last), the LM
    /// head's input.
    fn final_hidden(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        soft: SoftTokens<'_>,
        which: LogitsFor,
        mut trace: Option<&mut Trace>,
        hidden_out: Option<&mut Vec<f32>>,
    ) -> Result<Tensor<2>> {
        let c = &self.config;
        let t = tokens.len();
        self.check_soft_tokens(t, &soft)?;
        let pad_ids: Vec<u32>;
        let tokens = if soft.positions.is_empty() {
            tokens
        } else {
            let mut ids = tokens.to_vec();
            for &p in soft.positions {
                ids[p] = c.pad_token_id;
            }
            pad_ids = ids;
            &pad_ids
        };
        if t == 0 {
            return Err(GemmaError::InvalidArgument("no tokens to process".into()));
        }
        if cache.len() + t > cache.max_len() {
            return Err(GemmaError::ContextOverflow {
                requested: cache.len() + t,
                context_len: cache.max_len(),
            });
        }
        let dev = &self.device.device;
        let (h, p, n_layers) = (c.hidden_size, c.hidden_size_per_layer_input, c.num_layers());
        let positions: Vec<usize> = (cache.len()..cache.len() + t).collect();

        // Embeddings: gathered from the mapped file, scaled by sqrt(H) as f32 (HF does the
        // same for f32 weights; for bf16 weights it rounds the scale to bf16 first).
        let mut embeds_host = self.embed(tokens)?;
        for (row, &p) in soft.values.chunks_exact(h).zip(soft.positions) {
            embeds_host[p * h..(p + 1) * h].copy_from_slice(row);
        }
        let embeds = from_host(embeds_host, [t, h], dev);

        // Per-layer embeddings: token part (gathered) + context part (projected), each [T, L, P].
        let mut ple = match &self.per_layer_embedding {
            Some(pe) => {
                let tok = pe.table.gather_rows_f32(tokens, (p as f64).sqrt() as f32)?;
                let tok = from_host(tok, [t, n_layers, p], dev);
                let ctx = (pe.model_projection.forward(embeds.clone())?
                    * (h as f64).powf(-0.5) as f32)
                    .reshape([t * n_layers, p]);
                // (norm(ctx) + tok) · 2^-½ as one sum into the normed rows (one kernel on a
                // GPU); the sum's operands commute exactly.
                let rows = add_rms_norm(
                    tok.reshape([t * n_layers, p]),
                    ctx,
                    &pe.projection_norm.clone().reshape([1, p]),
                    c.rms_norm_eps,
                    2f64.powf(-0.5) as f32,
                );
                Some(rows.reshape([t, n_layers, p]))
            }
            None => None,
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.embeddings = to_host(embeds.clone())?;
            if let Some(ple) = &ple {
                trace.per_layer_inputs = to_host(ple.clone())?;
            }
        }

        let mut pass = Pass::new(c, &positions, &self.rope_frequencies, dev);
        let first_shared = c.first_kv_shared_layer();
        let mut x = embeds;
        // `x` under the next stage's input norm, from the layer that summed `x`.
        let mut normed: Option<Tensor<2>> = None;
        let mut step_kv: Vec<Option<StepKv>> = vec![None; n_layers];
        for (i, layer) in self.layers.iter().enumerate() {
            let rows = pass.query_positions.len();
            if i == first_shared && which == LogitsFor::Last && rows > 1 {
                // Shared layers write no cache: only the rows whose logits we keep matter.
                x = x.narrow(0, rows - 1, 1);
                normed = normed.map(|n| n.narrow(0, rows - 1, 1));
                ple = ple.map(|ple| ple.narrow(0, rows - 1, 1));
                pass.query_positions = &positions[positions.len() - 1..];
                pass.ropes = pass.ropes.iter().map(|r| r.last(1)).collect();
            }
            let kv = match layer.spec.kv_source {
                None => LayerKv::Own(cache.layers[i].as_mut().ok_or_else(|| {
                    GemmaError::InvalidArgument("cache does not match the model".into())
                })?),
                Some(src) => LayerKv::Shared(step_kv[src].clone().ok_or_else(|| {
                    GemmaError::InvalidArgument(format!("layer {src} produced no KV"))
                })?),
            };
            let rows = pass.query_positions.len();
            let per_layer_input = ple
                .as_ref()
                .map(|ple| ple.clone().narrow(1, i, 1).reshape([rows, p]));
            let next_norm = match self.layers.get(i + 1) {
                Some(next) => &next.input_norm,
                None => &self.final_norm,
            };
            let (out, out_normed, kv) = layer.forward(
                x,
                normed.take(),
                kv,
                per_layer_input,
                Some(next_norm),
                &mut pass,
            )?;
            x = out;
            normed = out_normed;
            if layer.spec.kv_source.is_none() {
                step_kv[i] = Some(kv);
            }
            if let Some(trace) = trace.as_deref_mut() {
                trace.layer_outputs.push(to_host(x.clone())?);
            }
        }
        cache.advance(t);

        let hidden = normed.unwrap_or_else(|| rms_norm(x, Some(&self.final_norm), c.rms_norm_eps));
        let hidden = match which {
            LogitsFor::All => hidden,
            LogitsFor::Last => {
                let rows = hidden.dims()[0];
                hidden.narrow(0, rows - 1, 1)
            }
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.final_norm = to_host(hidden.clone())?;
        }
        if let Some(out) = hidden_out {
            *out = to_host(hidden.clone())?;
        }
        Ok(hidden)
    }
}

/// What the layers of one forward pass share.
pub(super) struct Pass<'a> {
    pub config: &'a GemmaConfig,
    /// Positions of the rows the layers run on (the last one alone from the first KV-shared
    /// layer on, when only the last logits are wanted).
    pub query_positions: &'a [usize],
    /// Rotary tables for those positions, one per distinct frequency vector.
    pub ropes: Vec<RopeTables>,
    pub masks: MaskCache,
}

impl<'a> Pass<'a> {
    /// A pass over rows at `query_positions`: the rotary tables of each frequency vector for
    /// those positions, no masks built yet.
    pub(super) fn new(
        config: &'a GemmaConfig,
        query_positions: &'a [usize],
        rope_frequencies: &[Vec<f32>],
        dev: &burn::tensor::Device,
    ) -> Self {
        Pass {
            config,
            query_positions,
            ropes: rope_frequencies
                .iter()
                .map(|f| RopeTables::new(f, query_positions, dev))
                .collect(),
            masks: MaskCache::default(),
        }
    }
}

/// Where a layer's keys and values come from.
pub(super) enum LayerKv<'a> {
    /// Its own projections, appended to its cache.
    Own(&'a mut LayerCache),
    /// An earlier layer's, this step (KV sharing).
    Shared(StepKv),
}

impl DecoderLayer {
    /// Loads layer `i` (`{prefix}layers.{i}.…`) of a decoder described by `c`; its rotary
    /// frequencies join `rope_frequencies` (layers refer to them by index). Shared by the
    /// target and the MTP assistant (model::gemma4_assistant), whose layers are all KV-shared.
    pub(super) fn load(
        c: &GemmaConfig,
        i: usize,
        spec: &LayerSpec,
        prefix: &str,
        store: &WeightStore,
        device: &ComputeDevice,
        rope_frequencies: &mut Vec<Vec<f32>>,
    ) -> Result<Self> {
        let (h, p) = (c.hidden_size, c.hidden_size_per_layer_input);
        let dev = &device.device;
        let name = |s: &str| format!("{prefix}layers.{i}.{s}");
        let tensor = |s: &str, shape: &[usize]| store.get_shaped(&name(s), shape);
        let vector =
            |s: &str, len: usize| -> Result<Vec<f32>> { Ok(tensor(s, &[len])?.to_f32_vec()) };
        let linear = |s: &str, out: usize, inp: usize| -> Result<Linear> {
            Linear::load(tensor(s, &[out, inp])?, device)
        };
        let norm =
            |s: &str, len: usize| -> Result<Tensor<2>> { Ok(norm_weight(vector(s, len)?, dev)) };
        let d = spec.head_dim;
        let q_out = c.num_heads * d;
        let kv_out = spec.num_kv_heads * d;
        let mut projections = vec![tensor("self_attn.q_proj.weight", &[q_out, h])?];
        let kv = if spec.kv_source.is_none() {
            projections.push(tensor("self_attn.k_proj.weight", &[kv_out, h])?);
            projections.push(tensor("self_attn.v_proj.weight", &[kv_out, h])?);
            Some(KvProjection {
                k_norm: norm_weight(vector("self_attn.k_norm.weight", d)?, dev),
            })
        } else {
            // Released checkpoints still carry unused k/v projections here; ignore them.
            None
        };
        let qkv = SplitLinear::load(&projections, device)?;
        let freqs = inverse_frequencies(c.rope(spec.kind), d);
        let rope = match rope_frequencies.iter().position(|f| *f == freqs) {
            Some(idx) => idx,
            None => {
                rope_frequencies.push(freqs);
                rope_frequencies.len() - 1
            }
        };
        let layer_scalar = if c.layer_scalars {
            tensor("layer_scalar", &[1])?.to_f32_vec()[0]
        } else {
            1.0
        };
        let per_layer_input = if p > 0 {
            Some(PerLayerInput {
                gate: linear("per_layer_input_gate.weight", p, h)?,
                projection: linear("per_layer_projection.weight", h, p)?,
                post_norm: norm("post_per_layer_input_norm.weight", h)?,
            })
        } else {
            None
        };
        let inter = spec.intermediate_size;
        Ok(DecoderLayer {
            spec: spec.clone(),
            rope,
            input_norm: norm("input_layernorm.weight", h)?,
            qkv,
            q_norm: norm_weight(vector("self_attn.q_norm.weight", d)?, dev),
            kv,
            o: linear("self_attn.o_proj.weight", h, q_out)?,
            post_attention_norm: norm("post_attention_layernorm.weight", h)?,
            pre_feedforward_norm: norm("pre_feedforward_layernorm.weight", h)?,
            gate_up: GatedLinear::load(
                tensor("mlp.gate_proj.weight", &[inter, h])?,
                tensor("mlp.up_proj.weight", &[inter, h])?,
                device,
            )?,
            down: linear("mlp.down_proj.weight", h, inter)?,
            post_feedforward_norm: norm("post_feedforward_layernorm.weight", h)?,
            per_layer_input,
            layer_scalar,
        })
    }

    /// One decoder layer on the residual stream `x` `[rows, H]`: sandwich-normed attention,
    /// GeGLU MLP, Gemma 4's per-layer input and layer scalar. `normed_input` is `x` under this
    /// layer's input norm where the layer before computed it; with `next_norm` (the next
    /// layer's input norm, or the final norm) the layer returns its output under that norm
    /// too, from the kernel that sums it (on the GPU, one dispatch less each). Returns the new
    /// stream, that normed stream, and the keys and values the layer attended over (later
    /// KV-shared layers reuse them).
    pub(super) fn forward(
        &self,
        x: Tensor<2>,
        normed_input: Option<Tensor<2>>,
        kv: LayerKv<'_>,
        per_layer_input: Option<Tensor<2>>,
        next_norm: Option<&Tensor<2>>,
        pass: &mut Pass<'_>,
    ) -> Result<(Tensor<2>, Option<Tensor<2>>, StepKv)> {
        let c = pass.config;
        let rows = pass.query_positions.len();
        let rope = &pass.ropes[self.rope];
        let (d, eps) = (self.spec.head_dim, c.rms_norm_eps);

        let a = match normed_input {
            Some(a) => a,
            None => rms_norm(x.clone(), Some(&self.input_norm), eps),
        };
        let mut qkv = self.qkv.forward(a)?.into_iter();
        let mut next = || {
            qkv.next().ok_or_else(|| {
                GemmaError::InvalidArgument("a KV-shared layer was given a cache of its own".into())
            })
        };
        let q = next()?.reshape([rows, c.num_heads, d]);
        let q_prep = RowPrep {
            norm: Some(eps),
            weight: Some(&self.q_norm),
            rope: Some(rope),
        };
        let kv = match (kv, &self.kv) {
            (LayerKv::Shared(kv), _) => kv,
            (LayerKv::Own(cache), Some(proj)) => {
                let kvh = self.spec.num_kv_heads;
                let k = next()?.reshape([rows, kvh, d]);
                let v = next()?.reshape([rows, kvh, d]);
                let k_prep = RowPrep {
                    norm: Some(eps),
                    weight: Some(&proj.k_norm),
                    rope: Some(rope),
                };
                let v_prep = RowPrep {
                    norm: c.value_norm.then_some(eps),
                    ..RowPrep::default()
                };
                cache.append_prepared(k, v, (k_prep, v_prep), pass.query_positions)?
            }
            (LayerKv::Own(_), None) => {
                return Err(GemmaError::InvalidArgument(
                    "a KV-shared layer was given a cache of its own".into(),
                ));
            }
        };
        let visibility = Visibility {
            kind: self.spec.kind,
            window: c.sliding_window,
            query_positions: pass.query_positions,
        };
        let attn = attend(
            q,
            q_prep,
            &kv,
            visibility,
            c.attention_scale,
            &mut pass.masks,
        )?;
        let o = self.o.forward(attn)?;
        let (x, f) = add_rms_norm_then_norm(
            x,
            o,
            &self.post_attention_norm,
            eps,
            1.0,
            &self.pre_feedforward_norm,
        );
        let f = self.gate_up.forward(f)?;
        let f = self.down.forward(f)?;
        // Gemma 4's layer scalar multiplies the layer's last sum, which also gives the next
        // stage its normed input.
        let per_layer = self.per_layer_input.as_ref().zip(per_layer_input);
        let last_sum = |x: Tensor<2>, y: Tensor<2>, weight: &Tensor<2>| match next_norm {
            Some(next) => {
                let (x, normed) =
                    add_rms_norm_then_norm(x, y, weight, eps, self.layer_scalar, next);
                (x, Some(normed))
            }
            None => (add_rms_norm(x, y, weight, eps, self.layer_scalar), None),
        };
        let (x, normed) = match per_layer {
            None => last_sum(x, f, &self.post_feedforward_norm),
            Some((pli, ple)) => {
                let x = add_rms_norm(x, f, &self.post_feedforward_norm, eps, 1.0);
                let g = pli.gate.forward_gelu_times(x.clone(), ple)?;
                let g = pli.projection.forward(g)?;
                last_sum(x, g, &pli.post_norm)
            }
        };
        Ok((x, normed, kv))
    }
}
