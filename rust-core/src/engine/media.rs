//! Media → soft tokens: preprocessing (media) feeds the towers (model). The towers are
//! loaded on first use (model::towers), so text-only work never maps or uploads them.

use std::path::Path;

use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::media::audio::FeatureExtractor;
use crate::media::image::{ImageParams, preprocess, soft_token_count};
use crate::media::input::{ImageInput, Media};
use crate::media::layout::SegmentCounts;
use crate::model::audio::AttentionWindow;
use crate::model::towers::Towers;
use crate::source::ModelSource;

/// Turns media into the soft tokens of one model's towers.
pub struct MediaEncoder {
    towers: Towers,
    window: AttentionWindow,
    features: FeatureExtractor,
}

impl MediaEncoder {
    /// Encodes with `towers`, audio through `features`, the audio tower's local attention
    /// seeing `window`.
    pub fn new(towers: Towers, features: FeatureExtractor, window: AttentionWindow) -> Self {
        MediaEncoder {
            towers,
            window,
            features,
        }
    }

    /// The towers of the model at `source` (`mmproj`: llama.cpp's tower file for a GGUF).
    pub fn for_source(
        source: &ModelSource,
        mmproj: Option<&Path>,
        device: ComputeDevice,
        window: AttentionWindow,
    ) -> Result<Self> {
        let files = source.tower_files(mmproj)?;
        let features = source.feature_extractor(&files)?;
        Ok(Self::new(Towers::new(files, device), features, window))
    }

    /// Where the towers come from, for reports.
    pub fn describe(&self) -> String {
        self.towers.describe()
    }

    fn image_params(&self, max_soft_tokens: usize) -> Result<ImageParams> {
        let tower = self.towers.vision()?;
        let c = tower.config();
        Ok(ImageParams {
            patch_size: c.patch_size,
            pooling_kernel: c.pooling_kernel,
            max_soft_tokens,
        })
    }

    /// Soft tokens per segment of `media` (image: one; audio: one per 30 s clip; video: one
    /// per frame), known before any tower runs so the prompt can be laid out.
    pub fn segment_counts(&self, media: &Media) -> Result<SegmentCounts> {
        match media {
            Media::Image(img) => Ok(vec![self.image_count(img, img.max_soft_tokens)?]),
            Media::Video(v) => v
                .frames()
                .iter()
                .map(|f| self.image_count(&f.image, v.max_soft_tokens_per_frame))
                .collect(),
            Media::Audio(a) => {
                // The tower must exist before the prompt promises its tokens.
                self.towers.audio()?;
                let clips = a.clips();
                if clips.clips.is_empty() {
                    return Err(GemmaError::InvalidAudio(
                        "the audio is too short to yield one soft token".into(),
                    ));
                }
                Ok(clips.clips.iter().map(|c| c.soft_tokens).collect())
            }
        }
    }

    fn image_count(&self, img: &ImageInput, budget: usize) -> Result<usize> {
        let p = self.image_params(budget)?;
        soft_token_count(img.width() as usize, img.height() as usize, &p)
    }

    /// Every soft token of `media` in placeholder order, `[n, text hidden]` row-major.
    pub fn encode(&self, media: &Media) -> Result<Vec<f32>> {
        match media {
            Media::Image(img) => self.encode_image(img, img.max_soft_tokens),
            Media::Video(v) => {
                let mut out = Vec::new();
                for frame in v.frames() {
                    out.extend(self.encode_image(&frame.image, v.max_soft_tokens_per_frame)?);
                }
                Ok(out)
            }
            Media::Audio(a) => {
                let tower = self.towers.audio()?;
                let mut out = Vec::new();
                for clip in &a.clips().clips {
                    let features = self.features.extract(a.audio.clip_samples(clip))?;
                    let tokens = tower.encode(&features, self.window)?;
                    let expected = clip.soft_tokens * tower.text_hidden();
                    if tokens.len() != expected {
                        return Err(GemmaError::MediaMismatch(format!(
                            "audio clip {} gave {} soft tokens, the prompt holds {}",
                            clip.index,
                            tokens.len() / tower.text_hidden().max(1),
                            clip.soft_tokens
                        )));
                    }
                    out.extend(tokens);
                }
                Ok(out)
            }
        }
    }

    /// The soft tokens of the placeholder `slots` (position, media index, row) at positions
    /// `from` and later, with positions made relative to `from`. Only media with a slot there
    /// are encoded.
    pub fn soft_tokens(
        &self,
        media: &[Media],
        slots: &[(usize, usize, usize)],
        from: usize,
        hidden: usize,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let mut encoded: Vec<Option<Vec<f32>>> = vec![None; media.len()];
        let mut positions = Vec::new();
        let mut values = Vec::new();
        for &(pos, m, row) in slots.iter().filter(|(pos, _, _)| *pos >= from) {
            if encoded[m].is_none() {
                encoded[m] = Some(self.encode(&media[m])?);
            }
            let rows = encoded[m].as_deref().unwrap_or_default();
            let value = rows.get(row * hidden..(row + 1) * hidden).ok_or_else(|| {
                GemmaError::MediaMismatch(format!(
                    "media item {m} gave {} soft tokens, the prompt needs more",
                    rows.len() / hidden.max(1)
                ))
            })?;
            positions.push(pos - from);
            values.extend_from_slice(value);
        }
        Ok((positions, values))
    }

    fn encode_image(&self, img: &ImageInput, budget: usize) -> Result<Vec<f32>> {
        let tower = self.towers.vision()?;
        let pre = preprocess(&img.image, &self.image_params(budget)?)?;
        tower.encode(pre.patches())
    }
}
