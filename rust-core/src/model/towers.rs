//! The vision and audio towers of one model, loaded on first use so that text-only work never
//! maps or uploads them. Which files hold them is decided by the model's source
//! ([`crate::source::ModelSource::towers`]); this holds the towers once loaded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::audio::AudioTower;
use super::vision::VisionTower;
use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};

/// Where a model's towers are stored.
#[derive(Debug, Clone)]
pub enum TowerFiles {
    /// A Hugging Face checkpoint directory holds them next to the text model.
    Checkpoint(PathBuf),
    /// llama.cpp's `mmproj` GGUF.
    Mmproj(PathBuf),
    /// Why there are none (said in the error a media request gets).
    Missing(String),
}

/// The towers of one model on one device, each loaded when first asked for.
pub struct Towers {
    files: TowerFiles,
    device: ComputeDevice,
    vision: Mutex<Option<Arc<VisionTower>>>,
    audio: Mutex<Option<Arc<AudioTower>>>,
}

impl Towers {
    pub fn new(files: TowerFiles, device: ComputeDevice) -> Self {
        Towers {
            files,
            device,
            vision: Mutex::new(None),
            audio: Mutex::new(None),
        }
    }

    /// Where the towers come from, for reports.
    pub fn describe(&self) -> String {
        match &self.files {
            TowerFiles::Checkpoint(d) => format!("checkpoint {}", d.display()),
            TowerFiles::Mmproj(p) => format!("mmproj {}", p.display()),
            TowerFiles::Missing(why) => format!("none ({why})"),
        }
    }

    fn missing(&self, what: &str) -> GemmaError {
        match &self.files {
            TowerFiles::Missing(why) => GemmaError::Unsupported(format!(
                "{what} input needs the model's {what} tower: {why}"
            )),
            _ => GemmaError::Unsupported(format!("this model has no {what} tower")),
        }
    }

    /// The vision tower, loaded on the first call.
    pub fn vision(&self) -> Result<Arc<VisionTower>> {
        let mut slot = self.vision.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let tower = Arc::new(match &self.files {
            TowerFiles::Checkpoint(dir) => VisionTower::load_hf_dir(dir, &self.device)?,
            TowerFiles::Mmproj(path) => VisionTower::load_mmproj(path, &self.device)?,
            TowerFiles::Missing(_) => return Err(self.missing("image")),
        });
        log::info!("vision tower loaded ({})", self.describe());
        *slot = Some(tower.clone());
        Ok(tower)
    }

    /// The audio tower, loaded on the first call.
    pub fn audio(&self) -> Result<Arc<AudioTower>> {
        let mut slot = self.audio.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let tower = Arc::new(match &self.files {
            TowerFiles::Checkpoint(dir) => AudioTower::load_hf_dir(dir, self.device.clone())?,
            TowerFiles::Mmproj(path) => AudioTower::load_mmproj(path, self.device.clone())?,
            TowerFiles::Missing(_) => return Err(self.missing("audio")),
        });
        log::info!("audio tower loaded ({})", self.describe());
        *slot = Some(tower.clone());
        Ok(tower)
    }
}
