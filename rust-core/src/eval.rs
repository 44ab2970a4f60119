//! Scoring a token sequence: the logits of every position, for parity checks from outside the
//! test suite (`gemmakit eval`).

use std::path::Path;

use crate::backend::{BackendKind, ComputeDevice};
use crate::error::{GemmaError, Result};
use crate::media::Media;
use crate::media::encoder::MediaEncoder;
use crate::media::layout::{self, PlaceholderIds, SegmentCounts};
use crate::model::audio::AttentionWindow;
use crate::model::gguf::GgufModelFile;
use crate::model::{GemmaModel, LogitsFor, SoftTokens};

/// Opens a model: a `.gguf` file, or a Hugging Face checkpoint directory (or a file in one).
pub fn load_model(path: &Path, backend: BackendKind) -> Result<GemmaModel> {
    let meta = std::fs::metadata(path).map_err(|e| GemmaError::io(path, e))?;
    let device = ComputeDevice::open(backend)?;
    if meta.is_dir() {
        GemmaModel::load_hf_dir(path, device)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        crate::model::gguf::load(path, device)
    } else {
        GemmaModel::load_hf_dir(path.parent().unwrap_or(Path::new(".")), device)
    }
}

/// Logits `[tokens.len(), vocab]` of every position, in one uncached pass.
pub fn all_logits(model: &GemmaModel, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(&mut cache, tokens, LogitsFor::All)
}

/// The placeholder ids of the model at `path`: `config.json`'s `*_token_id` for a checkpoint
/// directory, the vocabulary's `<|image|>`/`<|audio|>`/`<|video|>` for a GGUF.
pub fn placeholder_ids(path: &Path) -> Result<PlaceholderIds> {
    if path.is_dir() {
        let config = path.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| GemmaError::io(&config, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| GemmaError::InvalidConfig(format!("config.json: {e}")))?;
        // transformers writes `eoa_token_index` in some releases and `eoa_token_id` in others.
        let id = |key: &str| -> Result<u32> {
            let alias = key.replace("_id", "_index");
            v.get(key)
                .or_else(|| v.get(&alias))
                .and_then(serde_json::Value::as_u64)
                .map(|x| x as u32)
                .ok_or_else(|| GemmaError::Unsupported(format!("config.json has no {key}")))
        };
        Ok(PlaceholderIds {
            image: id("image_token_id")?,
            audio: id("audio_token_id")?,
            video: id("video_token_id")?,
            boi: id("boi_token_id")?,
            eoi: id("eoi_token_id")?,
            boa: id("boa_token_id")?,
            eoa: id("eoa_token_id")?,
        })
    } else {
        let file = GgufModelFile::open(path)?;
        let tokenizer = crate::tokenizer::gguf::from_gguf(&file.gguf)?;
        PlaceholderIds::from_tokenizer(&tokenizer).ok_or_else(|| {
            GemmaError::Unsupported("the vocabulary has no multimodal placeholder tokens".into())
        })
    }
}

/// Logits of every position of `tokens`, whose placeholder runs are filled with the soft
/// tokens of `media` in order (images and video frames through the vision tower, audio
/// through the audio tower). The runs must hold exactly the media's soft tokens.
pub fn all_logits_with_media(
    model: &GemmaModel,
    model_path: &Path,
    mmproj: Option<&Path>,
    window: AttentionWindow,
    tokens: &[u32],
    media: &[Media],
) -> Result<Vec<f32>> {
    if media.is_empty() {
        return all_logits(model, tokens);
    }
    let placeholders = placeholder_ids(model_path)?;
    let encoder = MediaEncoder::for_model(model_path, mmproj, model.device().clone(), window)?;
    let counts: Vec<SegmentCounts> = media
        .iter()
        .map(|m| encoder.segment_counts(m))
        .collect::<Result<_>>()?;
    layout::check_placeholders(tokens, &placeholders, media, &counts)?;
    let slots = layout::assign_slots(tokens, &placeholders, media, &counts);
    let (positions, values) = encoder.soft_tokens(media, &slots, 0, model.config().hidden_size)?;
    let mut cache = model.new_cache(tokens.len());
    model.forward_with_soft_tokens(
        &mut cache,
        tokens,
        SoftTokens {
            positions: &positions,
            values: &values,
        },
        LogitsFor::All,
    )
}
