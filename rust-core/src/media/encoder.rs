//! Media → soft tokens: runs the vision and audio towers, which are loaded on first use so
//! text-only work never maps or uploads them.
//!
//! Where the towers live: a Hugging Face checkpoint directory holds them next to the text
//! model; a GGUF text model needs llama.cpp's separate `mmproj` GGUF (given explicitly, or
//! found as `mmproj*.gguf` next to the model file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::audio::FeatureExtractor;
use super::image::{ImageParams, preprocess, soft_token_count};
use super::input::{ImageInput, Media};
use super::layout::SegmentCounts;
use crate::backend::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::model::audio::{AttentionWindow, AudioTower};
use crate::model::vision::VisionTower;

#[derive(Debug, Clone)]
enum TowerSource {
    HfDir(PathBuf),
    Mmproj(PathBuf),
    /// Why there are no towers (said in the error a media request gets).
    Missing(String),
}

pub struct MediaEncoder {
    source: TowerSource,
    device: ComputeDevice,
    window: AttentionWindow,
    features: FeatureExtractor,
    vision: Mutex<Option<Arc<VisionTower>>>,
    audio: Mutex<Option<Arc<AudioTower>>>,
}

impl MediaEncoder {
    /// The towers belonging to the model at `model_path` (a checkpoint directory or a GGUF file).
    pub fn for_model(
        model_path: &Path,
        mmproj: Option<&Path>,
        device: ComputeDevice,
        window: AttentionWindow,
    ) -> Result<Self> {
        let source = match mmproj {
            Some(p) => {
                std::fs::metadata(p).map_err(|e| GemmaError::io(p, e))?;
                TowerSource::Mmproj(p.to_path_buf())
            }
            None if model_path.is_dir() => TowerSource::HfDir(model_path.to_path_buf()),
            None => match find_mmproj(model_path) {
                Some(p) => TowerSource::Mmproj(p),
                None => TowerSource::Missing(format!(
                    "no mmproj GGUF next to {} (pass one with --mmproj / EngineOptions::mmproj)",
                    model_path.display()
                )),
            },
        };
        let features = match &source {
            TowerSource::HfDir(dir) => feature_extractor_from_dir(dir)?,
            _ => FeatureExtractor::default(),
        };
        Ok(MediaEncoder {
            source,
            device,
            window,
            features,
            vision: Mutex::new(None),
            audio: Mutex::new(None),
        })
    }

    /// Where the towers come from, for reports.
    pub fn describe(&self) -> String {
        match &self.source {
            TowerSource::HfDir(d) => format!("checkpoint {}", d.display()),
            TowerSource::Mmproj(p) => format!("mmproj {}", p.display()),
            TowerSource::Missing(why) => format!("none ({why})"),
        }
    }

    fn missing(&self, what: &str) -> GemmaError {
        match &self.source {
            TowerSource::Missing(why) => GemmaError::Unsupported(format!(
                "{what} input needs the model's {what} tower: {why}"
            )),
            _ => GemmaError::Unsupported(format!("this model has no {what} tower")),
        }
    }

    fn vision(&self) -> Result<Arc<VisionTower>> {
        let mut slot = self.vision.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let tower = Arc::new(match &self.source {
            TowerSource::HfDir(dir) => VisionTower::load_hf_dir(dir, &self.device)?,
            TowerSource::Mmproj(path) => VisionTower::load_mmproj(path, &self.device)?,
            TowerSource::Missing(_) => return Err(self.missing("image")),
        });
        log::info!("vision tower loaded ({})", self.describe());
        *slot = Some(tower.clone());
        Ok(tower)
    }

    fn audio(&self) -> Result<Arc<AudioTower>> {
        let mut slot = self.audio.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let tower = Arc::new(match &self.source {
            TowerSource::HfDir(dir) => AudioTower::load_hf_dir(dir, self.device.clone())?,
            TowerSource::Mmproj(path) => AudioTower::load_mmproj(path, self.device.clone())?,
            TowerSource::Missing(_) => return Err(self.missing("audio")),
        });
        log::info!("audio tower loaded ({})", self.describe());
        *slot = Some(tower.clone());
        Ok(tower)
    }

    fn image_params(&self, max_soft_tokens: usize) -> Result<ImageParams> {
        let tower = self.vision()?;
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
                self.audio()?;
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
                let tower = self.audio()?;
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
        let tower = self.vision()?;
        let pre = preprocess(&img.image, &self.image_params(budget)?)?;
        tower.encode(&pre)
    }
}

/// `mmproj*.gguf` in the model file's directory (llama.cpp's naming), if exactly one is there.
fn find_mmproj(model_file: &Path) -> Option<PathBuf> {
    let dir = model_file.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "gguf")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.to_lowercase().contains("mmproj"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => found.pop(),
        0 => None,
        n => {
            log::warn!(
                "{n} mmproj files next to {}: pass one explicitly",
                model_file.display()
            );
            None
        }
    }
}

/// The checkpoint's audio front-end settings (`processor_config.json` or
/// `preprocessor_config.json`), or transformers' defaults when it has none.
fn feature_extractor_from_dir(dir: &Path) -> Result<FeatureExtractor> {
    for name in ["processor_config.json", "preprocessor_config.json"] {
        let path = dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| GemmaError::InvalidConfig(format!("{name}: {e}")))?;
            let section = value.get("feature_extractor").unwrap_or(&value);
            if section.get("feature_size").is_some() {
                let config = super::audio::FeatureExtractorConfig::from_json(&section.to_string())?;
                return FeatureExtractor::new(config);
            }
        }
    }
    Ok(FeatureExtractor::default())
}
