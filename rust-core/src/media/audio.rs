//! Audio decoding (placeholder until the audio work lands).
use crate::error::{GemmaError, Result};
#[derive(Debug, Clone)]
pub struct Audio {
    samples: Vec<f32>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioClips;
impl Audio {
    pub fn from_wav_bytes(_: &[u8]) -> Result<Audio> {
        Err(GemmaError::Unsupported("audio input".into()))
    }
    pub fn from_pcm_f32(_: &[f32], _: u32, _: u16) -> Result<Audio> {
        Err(GemmaError::Unsupported("audio input".into()))
    }
    pub fn from_pcm_i16(_: &[i16], _: u32, _: u16) -> Result<Audio> {
        Err(GemmaError::Unsupported("audio input".into()))
    }
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }
    pub fn duration_secs(&self) -> f64 {
        0.0
    }
    pub fn clips(&self) -> AudioClips {
        AudioClips
    }
}
