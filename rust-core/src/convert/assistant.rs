//! Gemma 4's MTP assistant checkpoint (`gemma4_assistant`) → `gemma4-assistant` GGUF.
//!
//! llama.cpp's keys and names (`Gemma4AssistantModel` in its converter: the decoder's keys,
//! `embedding_length_out` = the target's hidden size, `nextn_predict_layers` = the layer
//! count, `nextn.pre_projection` / `nextn.post_projection`, `rope_freqs`), plus what
//! llama.cpp's converter drops: the centroid head, as `masked_embd_centroids.weight` and
//! `masked_embd_ordering` (I32, the names llama.cpp reserves) with its top-k under
//! [`CENTROID_TOP_K_KEY`]. llama.cpp ignores all three and drafts with the dense head.

use std::path::Path;

use serde_json::Value;

use super::hf::{rope_freqs, write_decoder_metadata, write_encoded};
use super::vocab::GgufVocab;
use super::writer::{StreamingGgufWriter, TensorPlan};
use super::{ConvertSummary, QuantPlan, encode};
use crate::error::{GemmaError, Result};
use crate::model::config::AssistantConfig;
use crate::model::gguf::{ASSISTANT_ARCH, CENTROID_TOP_K_KEY};
use crate::model::names::ASSISTANT;
use crate::weights::gguf::{GgmlType, GgufWriter, MetaValue};
use crate::weights::safetensors;

const ORDERING: &str = "masked_embd_ordering";

/// The keys a `gemma4-assistant` GGUF has beyond the decoder's: llama.cpp's
/// `embedding_length_out` and `nextn_predict_layers`, and GemmaKit's centroid top-k.
pub(crate) fn write_assistant_keys(meta: &mut GgufWriter, config: &AssistantConfig) -> Result<()> {
    let a = |k: &str| format!("{ASSISTANT_ARCH}.{k}");
    let mut extra = vec![
        (
            a("embedding_length_out"),
            MetaValue::U32(config.backbone_hidden_size as u32),
        ),
        (
            a("nextn_predict_layers"),
            MetaValue::U32(config.text.num_layers() as u32),
        ),
    ];
    if let Some(head) = config.centroids {
        extra.push((
            CENTROID_TOP_K_KEY.to_string(),
            MetaValue::U32(head.top_k as u32),
        ));
    }
    for (k, v) in extra {
        meta.add_metadata(k, v)
            .map_err(|e| GemmaError::InvalidArgument(e.to_string()))?;
    }
    Ok(())
}

/// Converts the assistant checkpoint in `dir` (its `config.json` text given) to `out`.
pub fn convert_assistant(
    dir: &Path,
    config_text: &str,
    plan: &QuantPlan,
    out: &Path,
) -> Result<ConvertSummary> {
    // Rejects what the engine cannot run before any work.
    let config = AssistantConfig::from_json(config_text)?;
    let root: Value = serde_json::from_str(config_text)
        .map_err(|e| GemmaError::InvalidConfig(format!("config.json: {e}")))?;
    let text = root
        .get("text_config")
        .ok_or_else(|| GemmaError::InvalidConfig("no text_config".into()))?;
    let vocab = GgufVocab::from_hf_dir(dir)?;
    let mut notes = Vec::new();
    if vocab.is_none() {
        notes.push(
            "no tokenizer.json: the file has no tokenizer (the engine uses the model's)".into(),
        );
    }
    match config.centroids {
        Some(_) => notes.push(format!(
            "kept the centroid head (masked_embd_centroids.weight, {ORDERING}, {CENTROID_TOP_K_KEY}); llama.cpp ignores it"
        )),
        None => notes.push("no centroid head in the checkpoint: the dense head drafts".into()),
    }

    let store = safetensors::open(
        &safetensors::shard_paths(dir)?,
        &crate::model::names::ASSISTANT_PREFIXES,
    )?;
    let freqs = rope_freqs(text)?;
    let mut tensors = vec![TensorPlan {
        name: "rope_freqs.weight".into(),
        shape: vec![freqs.len() as u64],
        ty: GgmlType::F32,
    }];
    let mut sources: Vec<Option<String>> = vec![None];
    for t in store.tensors() {
        let Some(name) = ASSISTANT.to_gguf(t.name()) else {
            return Err(GemmaError::Unsupported(format!(
                "checkpoint tensor `{}` has no GGUF name",
                t.name()
            )));
        };
        let shape: Vec<u64> = t.shape().iter().rev().map(|&d| d as u64).collect();
        let ty = if name == ORDERING {
            GgmlType::I32
        } else {
            plan.tensor_type(&name, &shape)
        };
        tensors.push(TensorPlan { name, shape, ty });
        sources.push(Some(t.name().to_string()));
    }

    let mut meta = GgufWriter::new();
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| ASSISTANT_ARCH.into());
    write_decoder_metadata(&mut meta, text, &name, plan.file_type(), ASSISTANT_ARCH)?;
    write_assistant_keys(&mut meta, &config)?;
    if let Some(v) = &vocab {
        v.write(&mut meta)?;
    }

    let parameters = tensors.iter().map(TensorPlan::n_elements).sum();
    let n_tensors = tensors.len();
    let mut writer = StreamingGgufWriter::create(out, &meta, tensors.clone())?;
    for (tp, source) in tensors.iter().zip(&sources) {
        let Some(full) = source else {
            writer.write(&encode(tp.ty, &freqs)?)?;
            continue;
        };
        let t = store.get(full)?;
        if tp.ty == GgmlType::I32 {
            let mut bytes = Vec::with_capacity(t.num_elements() * 4);
            for v in t.to_i64_vec()? {
                let v = i32::try_from(v).map_err(|_| {
                    GemmaError::InvalidConfig(format!("{full} holds {v}, beyond i32"))
                })?;
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            writer.write(&bytes)?;
            continue;
        }
        write_encoded(&mut writer, tp, t.bytes(), t.dtype())?;
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
