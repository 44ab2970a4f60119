//! Gemma 4 hyper-parameters: parsed from a Hugging Face `config.json` (both the release layout
//! with `global_head_dim` and the newer `per_layer_config` layout) and resolved into one
//! explicit description per layer, so the graph never re-derives them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{GemmaError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// Causal attention over the last `sliding_window` positions, default RoPE.
    Sliding,
    /// Causal attention over the whole context, proportional partial RoPE.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Gemma3,
    Gemma4,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    pub theta: f64,
    /// Fraction of the head's frequency pairs that rotate; the rest pass through.
    pub partial_rotary_factor: f64,
    /// Linear position scaling (positions are divided by it); 1.0 = none.
    pub scaling_factor: f64,
}

/// Everything one decoder layer needs to know about its own shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub kind: AttentionKind,
    pub head_dim: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    /// `Some(p)`: this layer has no K/V projection and attends over layer `p`'s cache.
    pub kv_source: Option<usize>,
}

/// The text decoder's resolved hyper-parameters (Gemma 3 and Gemma 4 share one graph; the
/// Gemma 4 additions are switched off for Gemma 3 here, not special-cased in the graph).
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub layers: Vec<LayerSpec>,
    /// Per-layer-embedding width (Gemma 4); 0 = no per-layer embeddings.
    pub hidden_size_per_layer_input: usize,
    pub vocab_size_per_layer_input: usize,
    /// Multiplies q·kᵀ (Gemma 4: 1.0, q and k are normed; Gemma 3: 1/sqrt(head_dim)).
    pub attention_scale: f32,
    /// RMS-normalise values without a weight (Gemma 4).
    pub value_norm: bool,
    /// A learned scalar multiplies the residual stream after each layer (Gemma 4).
    pub layer_scalars: bool,
    pub sliding_window: usize,
    pub final_logit_softcapping: Option<f32>,
    pub rms_norm_eps: f32,
    pub rope_sliding: RopeParams,
    pub rope_full: RopeParams,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
}

impl GemmaConfig {
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Index of the first KV-shared layer (= number of layers if none share).
    pub fn first_kv_shared_layer(&self) -> usize {
        self.layers
            .iter()
            .position(|l| l.kv_source.is_some())
            .unwrap_or(self.layers.len())
    }

    pub fn rope(&self, kind: AttentionKind) -> RopeParams {
        match kind {
            AttentionKind::Sliding => self.rope_sliding,
            AttentionKind::Full => self.rope_full,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_config_text(path)?)
    }

    /// Parses a `config.json` of `Gemma4ForConditionalGeneration` (text under `text_config`)
    /// or of a text-only `gemma4_text` model.
    pub fn from_json(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text).map_err(|e| {
            GemmaError::InvalidConfig(format!("config.json is not valid JSON: {e}"))
        })?;
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        let text_value = match model_type {
            "gemma4" => root.get("text_config").cloned().ok_or_else(|| {
                GemmaError::InvalidConfig("gemma4 config has no text_config".into())
            })?,
            "gemma4_text" => root.clone(),
            other => return Err(GemmaError::UnknownArchitecture(other.to_string())),
        };
        text_config(text_value, &root)
    }
}

fn text_config(value: Value, root: &Value) -> Result<GemmaConfig> {
    let raw: RawTextConfig = serde_json::from_value(value)
        .map_err(|e| GemmaError::InvalidConfig(format!("text_config: {e}")))?;
    raw.resolve(root)
}

/// Gemma 4's MTP assistant's centroid-masked ("ordered embeddings") LM head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentroidHead {
    /// Token clusters; the vocabulary divides evenly among them.
    pub num_centroids: usize,
    /// Clusters whose tokens get logits at each step.
    pub top_k: usize,
}

/// Hyper-parameters of Gemma 4's multi-token-prediction assistant (`gemma4_assistant`,
/// `Gemma4AssistantForCausalLM`): a small decoder whose layers all attend over the TARGET's
/// KV cache. `text.layers` come without KV sources: the assistant is fitted to a target at
/// load (`model::gemma4_assistant`), which names the target layers they read.
#[derive(Debug, Clone, PartialEq)]
pub struct AssistantConfig {
    /// The target's hidden size: the assistant takes `[embedding, hidden]` of twice this width
    /// and hands back a hidden state of this width.
    pub backbone_hidden_size: usize,
    /// `None`: the dense head (every token's logit).
    pub centroids: Option<CentroidHead>,
    pub text: GemmaConfig,
}

impl AssistantConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_config_text(path)?)
    }

    /// Parses the `config.json` of a `gemma4_assistant` checkpoint.
    pub fn from_json(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text).map_err(|e| {
            GemmaError::InvalidConfig(format!("config.json is not valid JSON: {e}"))
        })?;
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "gemma4_assistant" {
            return Err(GemmaError::UnknownArchitecture(format!(
                "{model_type} (an MTP assistant checkpoint is gemma4_assistant)"
            )));
        }
        let mut text_value = root.get("text_config").cloned().ok_or_else(|| {
            GemmaError::InvalidConfig("gemma4_assistant config has no text_config".into())
        })?;
        let uint = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).map(|v| v as usize);
        let layers = uint(&text_value, "num_hidden_layers").unwrap_or(0);
        // Every layer reads the target's cache (transformers defaults the count to all).
        let shared = uint(&text_value, "num_kv_shared_layers").unwrap_or(layers);
        if shared != layers {
            return Err(GemmaError::Unsupported(format!(
                "an assistant with {shared} of {layers} layers KV-shared (all must be)"
            )));
        }
        if let Some(obj) = text_value.as_object_mut() {
            obj.insert("num_kv_shared_layers".into(), Value::from(0));
        }
        let text = text_config(text_value, &root)?;
        if text.hidden_size_per_layer_input != 0 {
            return Err(GemmaError::Unsupported(
                "per-layer embeddings in an assistant".into(),
            ));
        }
        let backbone_hidden_size = uint(&root, "backbone_hidden_size").unwrap_or(1536);
        let ordered = root
            .get("use_ordered_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let centroids = if ordered {
            Some(CentroidHead {
                num_centroids: uint(&root, "num_centroids").unwrap_or(2048),
                top_k: uint(&root, "centroid_intermediate_top_k").unwrap_or(32),
            })
        } else {
            None
        };
        let config = AssistantConfig {
            backbone_hidden_size,
            centroids,
            text,
        };
        config.check()?;
        Ok(config)
    }

    /// The shape rules both config readers apply.
    pub(crate) fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(GemmaError::InvalidConfig(msg));
        if self.backbone_hidden_size == 0 || self.backbone_hidden_size > 1 << 16 {
            return bad(format!(
                "assistant backbone_hidden_size = {}",
                self.backbone_hidden_size
            ));
        }
        if let Some(head) = self.centroids {
            let vocab = self.text.vocab_size;
            if head.num_centroids == 0
                || !vocab.is_multiple_of(head.num_centroids)
                || head.top_k == 0
                || head.top_k > head.num_centroids
            {
                return bad(format!(
                    "assistant centroid head: {} centroids (top {}) over {vocab} tokens",
                    head.num_centroids, head.top_k
                ));
            }
        }
        Ok(())
    }
}

/// One layer as a config reader states it, before the rules that relate layers to each other.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    pub kind: AttentionKind,
    pub head_dim: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
}

/// The one layer resolver, fed by both config readers (`config.json` here, GGUF metadata in
/// model::gguf): the last `num_kv_shared` layers attend over the cache of the last earlier
/// layer of their own attention kind (not `i - k`), and get a doubled MLP when
/// `double_wide_mlp`; every layer's heads are checked.
pub(crate) fn resolve_layers(
    plans: Vec<LayerPlan>,
    num_heads: usize,
    num_kv_shared: usize,
    double_wide_mlp: bool,
) -> Result<Vec<LayerSpec>> {
    let bad = |msg: String| Err(GemmaError::InvalidConfig(msg));
    let n = plans.len();
    if num_kv_shared >= n {
        return bad(format!(
            "{num_kv_shared} KV-shared layers of {n} leave no layer to produce a KV cache"
        ));
    }
    let first_shared = n - num_kv_shared;
    let mut layers = Vec::with_capacity(n);
    for (i, plan) in plans.iter().enumerate() {
        let shared = i >= first_shared;
        let kv_source = if shared {
            match (0..first_shared)
                .rev()
                .find(|&j| plans[j].kind == plan.kind)
            {
                Some(j) => Some(j),
                None => return bad(format!("KV-shared layer {i} has no producer of its type")),
            }
        } else {
            None
        };
        let (head_dim, num_kv_heads) = (plan.head_dim, plan.num_kv_heads);
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > 4096 {
            return bad(format!("layer {i}: head_dim {head_dim}"));
        }
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return bad(format!(
                "layer {i}: {num_heads} attention heads cannot share {num_kv_heads} KV heads"
            ));
        }
        layers.push(LayerSpec {
            kind: plan.kind,
            head_dim,
            num_kv_heads,
            intermediate_size: if double_wide_mlp && shared {
                plan.intermediate_size * 2
            } else {
                plan.intermediate_size
            },
            kv_source,
        });
    }
    Ok(layers)
}

#[derive(Debug, Deserialize)]
struct RawRope {
    rope_theta: f64,
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLayerOverride {
    head_dim: Option<usize>,
    num_key_value_heads: Option<usize>,
    intermediate_size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IntOrList {
    One(usize),
    PerLayer(Vec<usize>),
}

#[derive(Debug, Deserialize)]
struct RawTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: IntOrList,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    #[serde(default)]
    global_head_dim: Option<usize>,
    #[serde(default)]
    num_global_key_value_heads: Option<usize>,
    #[serde(default)]
    per_layer_config: Option<BTreeMap<String, RawLayerOverride>>,
    layer_types: Vec<String>,
    #[serde(default)]
    num_kv_shared_layers: usize,
    hidden_size_per_layer_input: usize,
    #[serde(default)]
    vocab_size_per_layer_input: Option<usize>,
    sliding_window: usize,
    #[serde(default)]
    final_logit_softcapping: Option<f32>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f32,
    rope_parameters: BTreeMap<String, RawRope>,
    #[serde(default)]
    use_double_wide_mlp: bool,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_k_eq_v: bool,
    #[serde(default)]
    enable_moe_block: bool,
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<Value>,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

fn default_eps() -> f32 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_max_pos() -> usize {
    131072
}

fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl RawTextConfig {
    fn resolve(self, root: &Value) -> Result<GemmaConfig> {
        let bad = |msg: String| Err(GemmaError::InvalidConfig(msg));
        let n = self.num_hidden_layers;
        if n == 0 || n > 1024 {
            return bad(format!("num_hidden_layers = {n}"));
        }
        if self.layer_types.len() != n {
            return bad(format!(
                "layer_types has {} entries for {n} layers",
                self.layer_types.len()
            ));
        }
        if self.attention_k_eq_v {
            return Err(GemmaError::Unsupported("attention_k_eq_v = true".into()));
        }
        if self.enable_moe_block {
            return Err(GemmaError::Unsupported("mixture-of-experts blocks".into()));
        }
        if let Some(act) = &self.hidden_activation
            && act != "gelu_pytorch_tanh"
        {
            return Err(GemmaError::Unsupported(format!(
                "hidden_activation = {act}"
            )));
        }
        if !self.tie_word_embeddings {
            return Err(GemmaError::Unsupported("untied LM head".into()));
        }
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || self.num_attention_heads % self.num_key_value_heads != 0
        {
            return bad(format!(
                "{} attention heads cannot share {} KV heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }

        let kinds = self
            .layer_types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(AttentionKind::Sliding),
                "full_attention" => Ok(AttentionKind::Full),
                other => Err(GemmaError::Unsupported(format!("layer type {other}"))),
            })
            .collect::<Result<Vec<_>>>()?;

        let mut overrides: BTreeMap<usize, RawLayerOverride> = BTreeMap::new();
        if let Some(per_layer) = self.per_layer_config {
            for (key, value) in per_layer {
                let idx: usize = key.parse().map_err(|_| {
                    GemmaError::InvalidConfig(format!("per_layer_config key `{key}`"))
                })?;
                if idx >= n {
                    return bad(format!("per_layer_config names layer {idx} of {n}"));
                }
                overrides.insert(idx, value);
            }
        }

        let intermediate = |i: usize| -> Result<usize> {
            match &self.intermediate_size {
                IntOrList::One(v) => Ok(*v),
                IntOrList::PerLayer(v) => v.get(i).copied().ok_or_else(|| {
                    GemmaError::InvalidConfig(
                        "intermediate_size list is shorter than the layers".into(),
                    )
                }),
            }
        };

        let mut plans = Vec::with_capacity(n);
        for (i, &kind) in kinds.iter().enumerate() {
            let ov = overrides.remove(&i).unwrap_or_default();
            plans.push(LayerPlan {
                kind,
                head_dim: ov.head_dim.unwrap_or(match kind {
                    AttentionKind::Full => self.global_head_dim.unwrap_or(self.head_dim),
                    AttentionKind::Sliding => self.head_dim,
                }),
                num_kv_heads: ov.num_key_value_heads.unwrap_or(match kind {
                    AttentionKind::Full => self
                        .num_global_key_value_heads
                        .unwrap_or(self.num_key_value_heads),
                    AttentionKind::Sliding => self.num_key_value_heads,
                }),
                intermediate_size: ov
                    .intermediate_size
                    .map(Ok)
                    .unwrap_or_else(|| intermediate(i))?,
            });
        }
        let layers = resolve_layers(
            plans,
            self.num_attention_heads,
            self.num_kv_shared_layers,
            self.use_double_wide_mlp,
        )?;

        let rope = |key: &str| -> Result<RopeParams> {
            let r = self.rope_parameters.get(key).ok_or_else(|| {
                GemmaError::InvalidConfig(format!("rope_parameters has no `{key}`"))
            })?;
            let partial = match r.rope_type.as_deref() {
                Some("default") | None => 1.0,
                Some("proportional") => r.partial_rotary_factor.unwrap_or(1.0),
                Some(other) => {
                    return Err(GemmaError::Unsupported(format!("rope_type {other}")));
                }
            };
            Ok(RopeParams {
                theta: r.rope_theta,
                partial_rotary_factor: partial,
                scaling_factor: 1.0,
            })
        };

        let mut eos = token_ids(self.eos_token_id.as_ref());
        for id in token_ids(root.get("eos_token_id")) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }

        Ok(GemmaConfig {
            architecture: Architecture::Gemma4,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_heads: self.num_attention_heads,
            layers,
            hidden_size_per_layer_input: self.hidden_size_per_layer_input,
            vocab_size_per_layer_input: self.vocab_size_per_layer_input.unwrap_or(self.vocab_size),
            attention_scale: 1.0,
            value_norm: true,
            layer_scalars: true,
            sliding_window: self.sliding_window,
            final_logit_softcapping: self.final_logit_softcapping,
            rms_norm_eps: self.rms_norm_eps,
            rope_sliding: rope("sliding_attention")?,
            rope_full: rope("full_attention")?,
            max_position_embeddings: self.max_position_embeddings,
            bos_token_id: self.bos_token_id.unwrap_or(2),
            eos_token_ids: eos,
            pad_token_id: self.pad_token_id.unwrap_or(0),
        })
    }
}

/// A `config.json`'s text: I/O errors name the path, non-UTF-8 is an invalid config.
fn read_config_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|e| GemmaError::InvalidConfig(format!("{}: not UTF-8: {e}", path.display())))
}
