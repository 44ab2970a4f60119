//! Scoring a token sequence: the logits of every position, for parity checks from outside the
//! test suite (`gemmakit eval`).

use std::path::Path;

use crate::device::{BackendKind, ComputeDevice};
use crate::engine::media::MediaEncoder;
use crate::error::{GemmaError, Result};
use crate::media::Media;
use crate::media::layout::{self, PlaceholderIds, SegmentCounts};
use crate::model::audio::AttentionWindow;
use crate::model::{GemmaModel, LogitsFor, SoftTokens};
use crate::source::ModelSource;

/// Opens a model (see [`ModelSource`] for what `path` may be) on `backend`.
pub fn load_model(path: &Path, backend: BackendKind) -> Result<GemmaModel> {
    ModelSource::open(path)?.load_model(ComputeDevice::open(backend)?)
}

/// Logits `[tokens.len(), vocab]` of every position, in one uncached pass.
pub fn all_logits(model: &GemmaModel, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(&mut cache, tokens, LogitsFor::All)
}

/// The media placeholder ids of the model at `path` ([`ModelSource::placeholder_ids`]).
pub fn placeholder_ids(path: &Path) -> Result<PlaceholderIds> {
    ModelSource::open(path)?
        .placeholder_ids(None)?
        .ok_or_else(|| {
            GemmaError::Unsupported("the model has no multimodal placeholder tokens".into())
        })
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
    let source = ModelSource::open(model_path)?;
    let placeholders = source.placeholder_ids(None)?.ok_or_else(|| {
        GemmaError::Unsupported("the model has no multimodal placeholder tokens".into())
    })?;
    let encoder = MediaEncoder::for_source(&source, mmproj, model.device().clone(), window)?;
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
