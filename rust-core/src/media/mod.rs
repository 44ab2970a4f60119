//! Media input: what callers hand the engine ([`input`]), decoding and preprocessing of images
//! and video frames ([`image`]) and audio ([`audio`]) into the exact tensors the towers expect,
//! and where the resulting soft tokens go in a prompt ([`layout`]).

pub mod audio;
pub mod image;
pub mod input;
pub mod layout;

pub use input::{AudioInput, ImageInput, Media, MediaKind, VideoFrame, VideoInput};
