//! Image decoding and preprocessing (placeholder until the vision work lands).
use crate::error::{GemmaError, Result};
pub fn decode_image(_bytes: &[u8]) -> Result<image::RgbImage> {
    Err(GemmaError::Unsupported("image input".into()))
}
