//! Media input before it meets a model: decoding and preprocessing of images (and video
//! frames) and audio into the exact tensors the vision and audio towers expect.

pub mod audio;
pub mod image;
