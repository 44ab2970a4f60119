//! Scoring a token sequence: the logits of every position, for parity checks from outside the
//! test suite (`gemmakit eval`).

use std::path::Path;

use crate::engine::media::MediaEncoder;
use crate::error::{GemmaError, Result};
use crate::media::Media;
use crate::media::layout::{self, PlaceholderIds, SegmentCounts};
use crate::model::audio::AttentionWindow;
use crate::model::{GemmaModel, LogitsFor, SoftTokens};
use crate::source::ModelSource;

/// Logits `[tokens.len(), vocab]` of every position, in one uncached pass.
pub fn all_logits(model: &GemmaModel, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(&mut cache, tokens, LogitsFor::All)
}

/// The media placeholder ids of the model at `path` ([`ModelSource::placeholder_ids`]).
pub fn placeholder_ids(path: &Path) -> Result<PlaceholderIds> {
    required_placeholder_ids(&ModelSource::open(path)?)
}

fn required_placeholder_ids(source: &ModelSource) -> Result<PlaceholderIds> {
    source.placeholder_ids(None)?.ok_or_else(|| {
        GemmaError::Unsupported("the model has no multimodal placeholder tokens".into())
    })
}

/// Logits of every position of `tokens`, whose placeholder runs are filled with the soft
/// tokens of `media` in order (images and video frames through the vision tower, audio
/// through the audio tower of `source`, the model's file). The runs must hold exactly the
/// media's soft tokens.
pub fn all_logits_with_media(
    model: &GemmaModel,
    source: &ModelSource,
    mmproj: Option<&Path>,
    window: AttentionWindow,
    tokens: &[u32],
    media: &[Media],
) -> Result<Vec<f32>> {
    if media.is_empty() {
        return all_logits(model, tokens);
    }
    let placeholders = required_placeholder_ids(source)?;
    let encoder = MediaEncoder::for_source(source, mmproj, model.device().clone(), window)?;
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
