//! Full-size random-weight Gemma 4 E2B / E4B GGUFs, for benchmarks without the real weights.
//!
//! Shapes come from the released E2B/E4B `config.json`s run through the same metadata and type rules as
//! a conversion, so llama.cpp and gemmakit load the file like a real one. Values: matrices
//! approximately normal with std 0.02 (an Irwin–Hall sum of four uniforms, bounded at ±3.5σ),
//! norms 1 ± 0.02, layer scalars 1, so activations stay finite. Every piece of every tensor
//! is seeded from (seed, tensor, piece): the file is reproducible and pieces are generated in
//! parallel and streamed to disk, so peak memory is a few pieces, not the model.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;
use serde_json::{Value, json};

use super::assistant::write_assistant_keys;
use super::hf::{rope_freqs, write_decoder_metadata, write_text_metadata};
use super::vocab::GgufVocab;
use super::writer::{StreamingGgufWriter, TensorPlan};
use super::{ConvertSummary, PIECE_ELEMENTS, QuantPlan, encode};
use crate::error::{GemmaError, Result};
use crate::model::config::{AssistantConfig, GemmaConfig};
use crate::model::gguf::ASSISTANT_ARCH;
use crate::model::names::{ASSISTANT, TEXT};
use crate::weights::gguf::{GgmlType, GgufWriter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomVariant {
    E2b,
    E4b,
    /// Gemma 4's MTP assistants for E2B / E4B (`gemma4-assistant`, centroid head kept).
    E2bAssistant,
    E4bAssistant,
}

impl FromStr for RandomVariant {
    type Err = GemmaError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "e2b" => Ok(RandomVariant::E2b),
            "e4b" => Ok(RandomVariant::E4b),
            "e2b-assistant" => Ok(RandomVariant::E2bAssistant),
            "e4b-assistant" => Ok(RandomVariant::E4bAssistant),
            other => Err(GemmaError::InvalidArgument(format!(
                "unknown model size `{other}` (e2b, e4b, e2b-assistant, e4b-assistant)"
            ))),
        }
    }
}

impl fmt::Display for RandomVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RandomVariant::E2b => "e2b",
            RandomVariant::E4b => "e4b",
            RandomVariant::E2bAssistant => "e2b-assistant",
            RandomVariant::E4bAssistant => "e4b-assistant",
        })
    }
}

impl RandomVariant {
    /// The target model an assistant variant drafts for (itself for a target).
    pub fn target(self) -> Self {
        match self {
            RandomVariant::E2b | RandomVariant::E2bAssistant => RandomVariant::E2b,
            RandomVariant::E4b | RandomVariant::E4bAssistant => RandomVariant::E4b,
        }
    }

    fn is_assistant(self) -> bool {
        self.target() != self
    }

    /// The release `config.json` of an assistant variant (`None` for a target): shapes of
    /// shared/spec/gemma4-mtp.md §1.1.
    pub fn assistant_config(self) -> Option<Value> {
        if !self.is_assistant() {
            return None;
        }
        let target = self.target().text_config();
        let mut text = target.clone();
        let kv_heads = target["num_key_value_heads"].clone();
        for (k, v) in [
            ("hidden_size", json!(256)),
            ("intermediate_size", json!(2048)),
            ("num_hidden_layers", json!(4)),
            (
                "layer_types",
                json!([
                    "sliding_attention",
                    "sliding_attention",
                    "sliding_attention",
                    "full_attention"
                ]),
            ),
            ("num_attention_heads", json!(4)),
            ("num_key_value_heads", kv_heads),
            ("num_kv_shared_layers", json!(4)),
            ("use_double_wide_mlp", json!(false)),
            ("hidden_size_per_layer_input", json!(0)),
            ("vocab_size_per_layer_input", json!(0)),
            ("final_logit_softcapping", Value::Null),
        ] {
            text[k] = v;
        }
        Some(json!({
            "model_type": "gemma4_assistant",
            "architectures": ["Gemma4AssistantForCausalLM"],
            "backbone_hidden_size": target["hidden_size"],
            "use_ordered_embeddings": true,
            "num_centroids": 2048,
            "centroid_intermediate_top_k": 32,
            "tie_word_embeddings": true,
            "text_config": text,
        }))
    }

    /// The text part of the release `config.json` (of the target, for an assistant variant).
    pub fn text_config(self) -> Value {
        let (layers, hidden, ffn, kv_heads, period, shared, double_wide) = match self.target() {
            RandomVariant::E4b => (42, 2560, 10240, 2, 6, 18, false),
            _ => (35, 1536, 6144, 1, 5, 20, true),
        };
        let layer_types: Vec<&str> = (0..layers)
            .map(|i| {
                if i % period == period - 1 {
                    "full_attention"
                } else {
                    "sliding_attention"
                }
            })
            .collect();
        json!({
            "model_type": "gemma4_text",
            "vocab_size": 262144,
            "vocab_size_per_layer_input": 262144,
            "hidden_size": hidden,
            "intermediate_size": ffn,
            "num_hidden_layers": layers,
            "num_attention_heads": 8,
            "num_key_value_heads": kv_heads,
            "num_global_key_value_heads": null,
            "head_dim": 256,
            "global_head_dim": 512,
            "layer_types": layer_types,
            "num_kv_shared_layers": shared,
            "use_double_wide_mlp": double_wide,
            "hidden_size_per_layer_input": 256,
            "sliding_window": 512,
            "final_logit_softcapping": 30.0,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 131072,
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": true,
            "attention_k_eq_v": false,
            "enable_moe_block": false,
            "rope_parameters": {
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}
            },
            "bos_token_id": 2,
            "eos_token_id": [1, 106],
            "pad_token_id": 0
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Normal(f32),
    AroundOne,
    One,
    /// A random permutation of the rows' indices, written as I32 (the assistant's token
    /// ordering); not a parameter.
    Permutation,
}

/// The MTP assistant's tensors (full HF names; model::names::ASSISTANT).
fn assistant_tensors(config: &AssistantConfig) -> Vec<(String, Vec<usize>, Init)> {
    let c = &config.text;
    let (h, hb, v) = (c.hidden_size, config.backbone_hidden_size, c.vocab_size);
    let w = Init::Normal(0.02);
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, h], w),
        ("model.norm.weight".into(), vec![h], Init::AroundOne),
        ("pre_projection.weight".into(), vec![h, 2 * hb], w),
        ("post_projection.weight".into(), vec![hb, h], w),
    ];
    if let Some(head) = config.centroids {
        out.push((
            "masked_embedding.centroids.weight".into(),
            vec![head.num_centroids, h],
            w,
        ));
        out.push((
            "masked_embedding.token_ordering".into(),
            vec![v],
            Init::Permutation,
        ));
    }
    for (i, spec) in c.layers.iter().enumerate() {
        let q = c.num_heads * spec.head_dim;
        let ff = spec.intermediate_size;
        let mut add = |name: &str, shape: Vec<usize>, init: Init| {
            out.push((format!("model.layers.{i}.{name}"), shape, init))
        };
        add("input_layernorm.weight", vec![h], Init::AroundOne);
        add("self_attn.q_proj.weight", vec![q, h], w);
        add(
            "self_attn.q_norm.weight",
            vec![spec.head_dim],
            Init::AroundOne,
        );
        add("self_attn.o_proj.weight", vec![h, q], w);
        add("post_attention_layernorm.weight", vec![h], Init::AroundOne);
        add("pre_feedforward_layernorm.weight", vec![h], Init::AroundOne);
        add(
            "post_feedforward_layernorm.weight",
            vec![h],
            Init::AroundOne,
        );
        add("mlp.gate_proj.weight", vec![ff, h], w);
        add("mlp.up_proj.weight", vec![ff, h], w);
        add("mlp.down_proj.weight", vec![h, ff], w);
        add("layer_scalar", vec![1], Init::One);
    }
    out
}

/// The text tensors of `config` in checkpoint order: (HF name, row-major shape, init).
/// KV-shared layers get no K/V projections (as in re-saved checkpoints).
fn text_tensors(config: &GemmaConfig) -> Vec<(String, Vec<usize>, Init)> {
    let h = config.hidden_size;
    let p = config.hidden_size_per_layer_input;
    let l = config.num_layers();
    let v = config.vocab_size;
    let w = Init::Normal(0.02);
    let mut out = vec![
        ("embed_tokens.weight".to_string(), vec![v, h], w),
        ("embed_tokens_per_layer.weight".into(), vec![v, l * p], w),
        (
            "per_layer_model_projection.weight".into(),
            vec![l * p, h],
            w,
        ),
        (
            "per_layer_projection_norm.weight".into(),
            vec![p],
            Init::AroundOne,
        ),
        ("norm.weight".into(), vec![h], Init::AroundOne),
    ];
    for (i, spec) in config.layers.iter().enumerate() {
        let q = config.num_heads * spec.head_dim;
        let kv = spec.num_kv_heads * spec.head_dim;
        let ff = spec.intermediate_size;
        let mut add = |name: &str, shape: Vec<usize>, init: Init| {
            out.push((format!("layers.{i}.{name}"), shape, init))
        };
        add("input_layernorm.weight", vec![h], Init::AroundOne);
        add("self_attn.q_proj.weight", vec![q, h], w);
        add(
            "self_attn.q_norm.weight",
            vec![spec.head_dim],
            Init::AroundOne,
        );
        if spec.kv_source.is_none() {
            add("self_attn.k_proj.weight", vec![kv, h], w);
            add("self_attn.v_proj.weight", vec![kv, h], w);
            add(
                "self_attn.k_norm.weight",
                vec![spec.head_dim],
                Init::AroundOne,
            );
        }
        add("self_attn.o_proj.weight", vec![h, q], w);
        add("post_attention_layernorm.weight", vec![h], Init::AroundOne);
        add("pre_feedforward_layernorm.weight", vec![h], Init::AroundOne);
        add(
            "post_feedforward_layernorm.weight",
            vec![h],
            Init::AroundOne,
        );
        add("mlp.gate_proj.weight", vec![ff, h], w);
        add("mlp.up_proj.weight", vec![ff, h], w);
        add("mlp.down_proj.weight", vec![h, ff], w);
        add("per_layer_input_gate.weight", vec![p, h], w);
        add("per_layer_projection.weight", vec![h, p], w);
        add("post_per_layer_input_norm.weight", vec![h], Init::AroundOne);
        add("layer_scalar", vec![1], Init::One);
    }
    out
}

/// SplitMix64: a tiny, well-mixed generator; one per piece, seeded from its coordinates.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64, tensor: u64, piece: u64) -> Self {
        let mut s = SplitMix(seed ^ 0x9E37_79B9_7F4A_7C15);
        s.0 ^= s
            .next()
            .wrapping_add(tensor.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        s.0 ^= s
            .next()
            .wrapping_add(piece.wrapping_mul(0xA076_1D64_78BD_642F));
        s
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Approximately standard normal: four 16-bit uniforms summed (mean 2, variance 1/3).
    fn normal(&mut self) -> f32 {
        let r = self.next();
        let sum = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
        ((sum as f32 + 2.0) / 65536.0 - 2.0) * 3.0f32.sqrt()
    }
}

fn fill(init: Init, rng: &mut SplitMix, out: &mut [f32]) {
    match init {
        Init::Normal(std) => out.iter_mut().for_each(|v| *v = rng.normal() * std),
        Init::AroundOne => out.iter_mut().for_each(|v| *v = 1.0 + 0.02 * rng.normal()),
        Init::One => out.fill(1.0),
        Init::Permutation => {
            // Fisher–Yates over the indices (exact in f32 below 2^24).
            let mut ids: Vec<u32> = (0..out.len() as u32).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            out.iter_mut().zip(ids).for_each(|(v, id)| *v = id as f32);
        }
    }
}

/// Writes a random-weight `variant` GGUF to `out`, streaming.
pub fn write_random(
    variant: RandomVariant,
    plan: &QuantPlan,
    seed: u64,
    out: &Path,
) -> Result<ConvertSummary> {
    let assistant = match variant.assistant_config() {
        Some(root) => Some(AssistantConfig::from_json(&root.to_string())?),
        None => None,
    };
    let text = match variant.assistant_config() {
        Some(root) => root["text_config"].clone(),
        None => variant.text_config(),
    };
    let mut tensors: Vec<(TensorPlan, Option<Init>)> = Vec::new();
    let freqs = rope_freqs(&text)?;
    tensors.push((
        TensorPlan {
            name: "rope_freqs.weight".into(),
            shape: vec![freqs.len() as u64],
            ty: GgmlType::F32,
        },
        None,
    ));
    let (generated, table, vocab) = match &assistant {
        Some(config) => (
            assistant_tensors(config),
            &ASSISTANT,
            config.text.vocab_size,
        ),
        None => {
            let config = GemmaConfig::from_json(&text.to_string())?;
            (text_tensors(&config), &TEXT, config.vocab_size)
        }
    };
    for (hf, shape, init) in generated {
        let name = table.to_gguf(&hf).ok_or_else(|| {
            GemmaError::Unsupported(format!("generated tensor `{hf}` has no GGUF name"))
        })?;
        let shape: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let ty = if init == Init::Permutation {
            GgmlType::I32
        } else {
            plan.tensor_type(&name, &shape)
        };
        tensors.push((TensorPlan { name, shape, ty }, Some(init)));
    }

    let mut meta = GgufWriter::new();
    let name = format!("gemma4-{variant}-random-{}", plan.weights);
    match &assistant {
        Some(config) => {
            write_decoder_metadata(&mut meta, &text, &name, plan.file_type(), ASSISTANT_ARCH)?;
            write_assistant_keys(&mut meta, config)?;
        }
        None => write_text_metadata(&mut meta, &text, &name, plan.file_type())?,
    }
    GgufVocab::synthetic(vocab).write(&mut meta)?;

    let plans: Vec<TensorPlan> = tensors.iter().map(|(t, _)| t.clone()).collect();
    // Parameters: the token ordering is a buffer, not one.
    let parameters = tensors
        .iter()
        .filter(|(_, init)| *init != Some(Init::Permutation))
        .map(|(t, _)| t.n_elements())
        .sum();
    let mut writer = StreamingGgufWriter::create(out, &meta, plans)?;
    let batch = rayon::current_num_threads().max(1) * 2;
    for (index, (tp, init)) in tensors.iter().enumerate() {
        let Some(init) = *init else {
            writer.write(&encode(tp.ty, &freqs)?)?;
            continue;
        };
        let row_len = tp.shape[0] as usize;
        let rows = (tp.n_elements() as usize) / row_len.max(1);
        // A permutation is one piece (its rows are its elements).
        let rows_per_piece = if init == Init::Permutation {
            rows.max(1)
        } else {
            (PIECE_ELEMENTS / row_len.max(1)).max(1)
        };
        let pieces = rows.div_ceil(rows_per_piece);
        for first in (0..pieces).step_by(batch) {
            let encoded: Vec<Result<Vec<u8>>> = (first..(first + batch).min(pieces))
                .into_par_iter()
                .map(|piece| {
                    let n_rows = rows_per_piece.min(rows - piece * rows_per_piece);
                    let mut values = vec![0.0f32; n_rows * row_len];
                    let mut rng = SplitMix::new(seed, index as u64, piece as u64);
                    fill(init, &mut rng, &mut values);
                    if tp.ty == GgmlType::I32 {
                        return Ok(values
                            .iter()
                            .flat_map(|&v| (v as i32).to_le_bytes())
                            .collect());
                    }
                    encode(tp.ty, &values)
                })
                .collect();
            for bytes in encoded {
                writer.write(&bytes?)?;
            }
        }
    }
    let file_bytes = writer.finish()?;
    Ok(ConvertSummary {
        tensors: tensors.len(),
        file_bytes,
        parameters,
        tokenizer: true,
        notes: vec![format!(
            "random weights (seed {seed}); synthetic {vocab}-token vocabulary, character-level"
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_has_the_intended_moments() {
        let mut rng = SplitMix::new(7, 1, 2);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal() as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(xs.iter().all(|x| x.abs() < 3.5));
    }

    #[test]
    fn assistant_parameter_counts_match_the_spec() {
        // shared/spec/gemma4-mtp.md §1.1: E2B 77.73 M, E4B 78.52 M (the ordering buffer aside).
        for (variant, millions) in [
            (RandomVariant::E2bAssistant, 77.73),
            (RandomVariant::E4bAssistant, 78.52),
        ] {
            let root = variant.assistant_config().unwrap();
            let config = AssistantConfig::from_json(&root.to_string()).unwrap();
            let params: usize = assistant_tensors(&config)
                .iter()
                .filter(|(_, _, init)| *init != Init::Permutation)
                .map(|(_, s, _)| s.iter().product::<usize>())
                .sum();
            assert!(
                (params as f64 / 1e6 - millions).abs() < 0.005,
                "{variant}: {params}"
            );
        }
    }

    #[test]
    fn e2b_shapes_match_the_spec() {
        let config = GemmaConfig::from_json(&RandomVariant::E2b.text_config().to_string()).unwrap();
        assert_eq!(config.num_layers(), 35);
        assert_eq!(config.first_kv_shared_layer(), 15);
        assert_eq!(config.layers[15].intermediate_size, 12288);
        assert_eq!(config.layers[4].head_dim, 512);
        let params: usize = text_tensors(&config)
            .iter()
            .filter(|(n, _, _)| {
                !n.starts_with("embed_tokens") && !n.starts_with("per_layer_model_projection")
            })
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum();
        // The released E2B: 1.863 B in the decoder layers (without KV-shared K/V and the PLE projection).
        assert!((1_862_500_000..1_864_000_000).contains(&params), "{params}");
    }
}
