//! Hugging Face Gemma 4 checkpoint (text model) → `gemma4` GGUF.
//!
//! Mirrors `Gemma4Model` in llama.cpp's converter: the hyper-parameter keys of
//! `set_gguf_parameters` (with their GGUF value types), the tensor names of gguf-py's
//! mapping, unshifted norms, `rope_freqs` for the proportional RoPE of full layers. The
//! vision and audio towers (llama.cpp's separate mmproj file) are not converted.

use std::path::Path;

use serde_json::Value;

use super::vocab::GgufVocab;
use super::writer::{StreamingGgufWriter, TensorPlan};
use super::{ConvertSummary, PIECE_ELEMENTS, QuantPlan, encode};
use crate::error::{GemmaError, Result};
use crate::model::config::GemmaConfig;
use crate::model::names::{TEXT, TEXT_PREFIXES, TOWER_MODULES};
use crate::weights::gguf::{GgmlType, GgufWriter, MetaArray, MetaValue};
use crate::weights::{WeightStore, decode_f32, safetensors};

/// Where checkpoints keep the text decoder.

fn cfg_error(msg: impl Into<String>) -> GemmaError {
    GemmaError::InvalidConfig(msg.into())
}

/// The text part of a `config.json` (`text_config` of a `gemma4` config, or the root).
pub fn text_config(root: &Value) -> Result<&Value> {
    match root.get("model_type").and_then(Value::as_str) {
        Some("gemma4") => root
            .get("text_config")
            .ok_or_else(|| cfg_error("gemma4 config has no text_config")),
        Some("gemma4_text") => Ok(root),
        other => Err(GemmaError::UnknownArchitecture(
            other.unwrap_or("").to_string(),
        )),
    }
}

/// A full-attention layer's override of `key` in the newer `per_layer_config` layout.
fn full_layer_override(text: &Value, key: &str) -> Option<u64> {
    let types = text.get("layer_types")?.as_array()?;
    let per_layer = text.get("per_layer_config")?.as_object()?;
    per_layer.iter().find_map(|(idx, cfg)| {
        let idx: usize = idx.parse().ok()?;
        (types.get(idx)?.as_str()? == "full_attention")
            .then(|| cfg.get(key)?.as_u64())
            .flatten()
    })
}

fn uint(text: &Value, key: &str) -> Result<u64> {
    text.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| cfg_error(format!("`{key}` is missing or not an integer")))
}

/// Head width of the full-attention layers.
fn head_dim_full(text: &Value) -> Result<u64> {
    text.get("global_head_dim")
        .and_then(Value::as_u64)
        .or_else(|| full_layer_override(text, "head_dim"))
        .ok_or_else(|| cfg_error("no global_head_dim nor a full-layer head_dim"))
}

fn rope_theta(text: &Value, kind: &str) -> Option<f64> {
    text.get("rope_parameters")?
        .get(kind)?
        .get("rope_theta")?
        .as_f64()
}

/// Writes the architecture keys exactly as `Gemma4Model.set_gguf_parameters` does.
pub fn write_text_metadata(
    meta: &mut GgufWriter,
    text: &Value,
    name: &str,
    file_type: u32,
) -> Result<()> {
    write_decoder_metadata(meta, text, name, file_type, "gemma4")
}

/// The decoder's keys under architecture `arch` (`gemma4`, or the MTP assistant's
/// `gemma4-assistant`, whose converter adds its own keys).
pub(crate) fn write_decoder_metadata(
    meta: &mut GgufWriter,
    text: &Value,
    name: &str,
    file_type: u32,
    arch: &str,
) -> Result<()> {
    let mut kv: Vec<(String, MetaValue)> = Vec::new();
    let mut put = |k: &str, v: MetaValue| kv.push((k.to_string(), v));
    let a = |k: &str| format!("{arch}.{k}");
    put("general.architecture", MetaValue::String(arch.into()));
    put("general.type", MetaValue::String("model".into()));
    put("general.name", MetaValue::String(name.into()));

    let n_layers = uint(text, "num_hidden_layers")?;
    let layer_types: Vec<bool> = text
        .get("layer_types")
        .and_then(Value::as_array)
        .ok_or_else(|| cfg_error("no layer_types"))?
        .iter()
        .map(|t| t.as_str() == Some("sliding_attention"))
        .collect();
    let shared = text
        .get("num_kv_shared_layers")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    put(&a("block_count"), MetaValue::U32(n_layers as u32));
    put(
        &a("context_length"),
        MetaValue::U32(
            text.get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(131072) as u32,
        ),
    );
    put(
        &a("embedding_length"),
        MetaValue::U32(uint(text, "hidden_size")? as u32),
    );
    let n_ff = uint(text, "intermediate_size")?;
    let double_wide = text
        .get("use_double_wide_mlp")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let first_shared = n_layers - shared.min(n_layers);
    put(
        &a("feed_forward_length"),
        if double_wide {
            MetaValue::Array(MetaArray::I32(
                (0..n_layers)
                    .map(|i| (if i < first_shared { n_ff } else { 2 * n_ff }) as i32)
                    .collect(),
            ))
        } else {
            MetaValue::U32(n_ff as u32)
        },
    );
    put(
        &a("attention.head_count"),
        MetaValue::U32(
            text.get("num_attention_heads")
                .and_then(Value::as_u64)
                .unwrap_or(8) as u32,
        ),
    );
    let kv_swa = text
        .get("num_key_value_heads")
        .and_then(Value::as_u64)
        .unwrap_or(4);
    let kv_full = text
        .get("num_global_key_value_heads")
        .and_then(Value::as_u64)
        .or_else(|| full_layer_override(text, "num_key_value_heads"));
    put(
        &a("attention.head_count_kv"),
        match kv_full {
            Some(full) => MetaValue::Array(MetaArray::I32(
                layer_types
                    .iter()
                    .map(|&swa| (if swa { kv_swa } else { full }) as i32)
                    .collect(),
            )),
            None => MetaValue::U32(kv_swa as u32),
        },
    );
    if let Some(theta) = rope_theta(text, "full_attention") {
        put(&a("rope.freq_base"), MetaValue::F32(theta as f32));
    }
    if let Some(theta) = rope_theta(text, "sliding_attention") {
        put(&a("rope.freq_base_swa"), MetaValue::F32(theta as f32));
    }
    put(
        &a("attention.layer_norm_rms_epsilon"),
        MetaValue::F32(
            text.get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6) as f32,
        ),
    );
    let hd_full = head_dim_full(text)?;
    let hd_swa = uint(text, "head_dim")?;
    put(&a("attention.key_length"), MetaValue::U32(hd_full as u32));
    put(&a("attention.value_length"), MetaValue::U32(hd_full as u32));
    put("general.file_type", MetaValue::U32(file_type));
    if let Some(cap) = text
        .get("final_logit_softcapping")
        .and_then(Value::as_f64)
        .filter(|&c| c != 0.0)
    {
        put(&a("final_logit_softcapping"), MetaValue::F32(cap as f32));
    }
    if text.get("sliding_window_pattern").and_then(Value::as_u64) != Some(1) {
        put(
            &a("attention.sliding_window"),
            MetaValue::U32(uint(text, "sliding_window")? as u32),
        );
    }
    put(
        &a("attention.shared_kv_layers"),
        MetaValue::U32(shared as u32),
    );
    put(
        &a("embedding_length_per_layer_input"),
        MetaValue::U32(
            text.get("hidden_size_per_layer_input")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32,
        ),
    );
    put(
        &a("attention.sliding_window_pattern"),
        MetaValue::Array(MetaArray::Bool(layer_types.clone())),
    );
    put(
        &a("attention.key_length_swa"),
        MetaValue::U32(hd_swa as u32),
    );
    put(
        &a("attention.value_length_swa"),
        MetaValue::U32(hd_swa as u32),
    );
    put(&a("rope.dimension_count"), MetaValue::U32(hd_full as u32));
    put(
        &a("rope.dimension_count_swa"),
        MetaValue::U32(hd_swa as u32),
    );
    put("general.quantization_version", MetaValue::U32(2));
    for (k, v) in kv {
        meta.add_metadata(k, v)
            .map_err(|e| GemmaError::InvalidArgument(e.to_string()))?;
    }
    Ok(())
}

/// `rope_freqs`: frequency divisors of the full layers' proportional RoPE (1 for the rotated
/// pairs, 1e30 for the rest, which ggml's NeoX RoPE then leaves unrotated).
pub fn rope_freqs(text: &Value) -> Result<Vec<f32>> {
    let params = text
        .get("rope_parameters")
        .and_then(|r| r.get("full_attention"))
        .ok_or_else(|| cfg_error("rope_parameters has no full_attention"))?;
    if params.get("rope_type").and_then(Value::as_str) != Some("proportional") {
        return Err(GemmaError::Unsupported(
            "full-attention RoPE other than `proportional`".into(),
        ));
    }
    let factor = params
        .get("partial_rotary_factor")
        .and_then(Value::as_f64)
        .ok_or_else(|| cfg_error("proportional RoPE without partial_rotary_factor"))?;
    let hd = head_dim_full(text)? as usize;
    let rotated = (hd as f64 * factor / 2.0) as usize;
    let mut v = vec![1.0f32; rotated.min(hd / 2)];
    v.resize(hd / 2, 1e30);
    Ok(v)
}

/// The checkpoint's text tensors under whichever prefix it uses, as (HF name without the
/// prefix, full name).
fn text_tensors(store: &WeightStore) -> Result<Vec<(String, String)>> {
    for prefix in TEXT_PREFIXES {
        let names: Vec<(String, String)> = store
            .tensors()
            .filter_map(|t| {
                let short = t.name().strip_prefix(prefix)?;
                // Under the bare `model.` prefix the towers live too; they are not text.
                let tower = TOWER_MODULES.iter().any(|p| short.starts_with(p));
                (!tower && !short.starts_with("language_model."))
                    .then(|| (short.to_string(), t.name().to_string()))
            })
            .collect();
        if names.iter().any(|(s, _)| s == "embed_tokens.weight") {
            return Ok(names);
        }
    }
    Err(GemmaError::MissingTensor(
        "model.language_model.embed_tokens.weight".into(),
    ))
}

/// Converts the text model of the checkpoint in `dir` to a `gemma4` GGUF at `out` (or an MTP
/// assistant checkpoint to a `gemma4-assistant` GGUF: [`super::assistant`]).
pub fn convert_hf(dir: &Path, plan: &QuantPlan, out: &Path) -> Result<ConvertSummary> {
    let config_path = dir.join("config.json");
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| GemmaError::io(&config_path, e))?;
    let model_type = serde_json::from_str::<Value>(&config_text)
        .ok()
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_string));
    if model_type.as_deref() == Some("gemma4_assistant") {
        return super::assistant::convert_assistant(dir, &config_text, plan, out);
    }
    // Rejects what the engine cannot run (MoE, k_eq_v, untied head, …) before any work.
    GemmaConfig::from_json(&config_text)?;
    let root: Value =
        serde_json::from_str(&config_text).map_err(|e| cfg_error(format!("config.json: {e}")))?;
    let text = text_config(&root)?;

    let mut notes = Vec::new();
    let vocab = GgufVocab::from_hf_dir(dir)?;
    if vocab.is_none() {
        notes.push(
            "no tokenizer.json: the file has no tokenizer; neither gemmakit nor llama.cpp can run it"
                .to_string(),
        );
    }
    notes.push("text model only: the vision and audio towers are not converted".to_string());

    let store = safetensors::open(&safetensors::shard_paths(dir)?, &["model."])?;
    let mut plan_list = Vec::new();
    let mut sources: Vec<Option<(String, usize)>> = Vec::new();
    let freqs = rope_freqs(text)?;
    plan_list.push(TensorPlan {
        name: "rope_freqs.weight".into(),
        shape: vec![freqs.len() as u64],
        ty: GgmlType::F32,
    });
    sources.push(None);
    // Gemma3Model.modify_tensors drops embedding rows beyond the tokenizer's vocabulary.
    let vocab_rows = vocab.as_ref().map(|v| v.tokens.len());
    for (short, full) in text_tensors(&store)? {
        let Some(name) = TEXT.to_gguf(&short) else {
            return Err(GemmaError::Unsupported(format!(
                "checkpoint tensor `{full}` has no GGUF name"
            )));
        };
        let t = store.get(&full)?;
        let mut shape: Vec<u64> = t.shape().iter().rev().map(|&d| d as u64).collect();
        let mut rows = t.rows();
        if name == "token_embd.weight"
            && let Some(n) = vocab_rows
            && n < rows
        {
            rows = n;
            *shape.last_mut().expect("2-D") = n as u64;
        }
        let ty = plan.tensor_type(&name, &shape);
        plan_list.push(TensorPlan { name, shape, ty });
        sources.push(Some((full, rows)));
    }

    let mut meta = GgufWriter::new();
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gemma4".into());
    write_text_metadata(&mut meta, text, &name, plan.file_type())?;
    if let Some(v) = &vocab {
        v.write(&mut meta)?;
    }

    let parameters = plan_list.iter().map(TensorPlan::n_elements).sum();
    let n_tensors = plan_list.len();
    let mut writer = StreamingGgufWriter::create(out, &meta, plan_list.clone())?;
    for (tp, source) in plan_list.iter().zip(&sources) {
        match source {
            None => writer.write(&encode(tp.ty, &freqs)?)?,
            Some((full, rows)) => {
                let t = store.get(full)?;
                let used = rows * (t.num_elements() / t.rows().max(1));
                let bytes = &t.bytes()[..used * t.dtype().block_bytes()];
                write_encoded(&mut writer, tp, bytes, t.dtype())?;
            }
        }
    }
    let file_bytes = writer.finish()?;
    Ok(ConvertSummary {
        tensors: n_tensors,
        file_bytes,
        parameters,
        tokenizer: vocab.is_some(),
        notes,
    })
}

/// Writes the tensor `tp` from `bytes` (its source rows, of type `dtype`) in pieces of about
/// [`PIECE_ELEMENTS`] elements, each decoded to f32 and encoded as `tp.ty`, so a large
/// tensor never exists whole in f32.
pub(super) fn write_encoded(
    writer: &mut StreamingGgufWriter,
    tp: &TensorPlan,
    bytes: &[u8],
    dtype: GgmlType,
) -> Result<()> {
    let row_len = tp.shape[0] as usize;
    let elem_bytes = dtype.block_bytes();
    let rows_per_piece = (PIECE_ELEMENTS / row_len.max(1)).max(1);
    let mut values = Vec::new();
    for piece in bytes.chunks(rows_per_piece * row_len * elem_bytes) {
        values.resize(piece.len() / elem_bytes, 0.0);
        decode_f32(piece, dtype, &mut values);
        writer.write(&encode(tp.ty, &values)?)?;
    }
    Ok(())
}
