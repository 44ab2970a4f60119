//! What callers hand the engine: images, audio and video frames. Each is decoded and
//! validated when it is created, so a bad file fails at the call that supplied it, and carries
//! a content key so a conversation can tell whether the media behind cached positions changed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use image::RgbImage;

use super::audio::{Audio, AudioClips};

use crate::error::{GemmaError, Result};

use super::image::{ImageParams, SUPPORTED_SOFT_TOKEN_BUDGETS};
/// At most this many frames per video: 32 frames × 70 tokens already fill 2,240 positions.
pub const MAX_VIDEO_FRAMES: usize = 256;

fn check_budget(n: usize) -> Result<()> {
    if SUPPORTED_SOFT_TOKEN_BUDGETS.contains(&n) {
        Ok(())
    } else {
        Err(GemmaError::InvalidArgument(format!(
            "soft-token budget {n} is not one of {SUPPORTED_SOFT_TOKEN_BUDGETS:?}"
        )))
    }
}

/// A decoded RGB image and the soft-token budget it is encoded with.
#[derive(Clone)]
pub struct ImageInput {
    pub(crate) image: Arc<RgbImage>,
    pub(crate) max_soft_tokens: usize,
    key: u64,
}

impl ImageInput {
    /// Decodes JPEG, PNG or WebP bytes, applying the EXIF orientation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self::from_image(super::image::decode_image(bytes)?))
    }

    /// Raw RGB8 pixels, row-major.
    pub fn from_rgb8(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(GemmaError::InvalidImage(format!(
                "the image is {width}×{height} pixels"
            )));
        }
        let image = RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
            GemmaError::InvalidImage(format!(
                "{width}×{height} RGB needs {} bytes of pixels",
                width as u64 * height as u64 * 3
            ))
        })?;
        Ok(Self::from_image(image))
    }

    fn from_image(image: RgbImage) -> Self {
        let mut h = DefaultHasher::new();
        (image.width(), image.height(), image.as_raw()).hash(&mut h);
        ImageInput {
            image: Arc::new(image),
            max_soft_tokens: ImageParams::default().max_soft_tokens,
            key: h.finish(),
        }
    }

    /// Encodes the image with at most `n` soft tokens: one of 70, 140, 280 (default), 560, 1120.
    /// More tokens see finer detail and cost more prefill.
    pub fn with_max_soft_tokens(mut self, n: usize) -> Result<Self> {
        check_budget(n)?;
        self.max_soft_tokens = n;
        Ok(self)
    }

    pub fn width(&self) -> u32 {
        self.image.width()
    }

    pub fn height(&self) -> u32 {
        self.image.height()
    }

    pub fn max_soft_tokens(&self) -> usize {
        self.max_soft_tokens
    }

    fn key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (self.key, self.max_soft_tokens).hash(&mut h);
        h.finish()
    }
}

/// Audio converted to what the audio tower hears: mono, 16 kHz.
#[derive(Clone)]
pub struct AudioInput {
    pub(crate) audio: Arc<Audio>,
    key: u64,
}

impl AudioInput {
    /// A WAV file (16/24/32-bit integer or 32-bit float PCM, any rate, any channel count).
    pub fn from_wav_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self::new(Audio::from_wav_bytes(bytes)?))
    }

    /// Interleaved float samples in [-1, 1].
    pub fn from_pcm_f32(samples: &[f32], sample_rate: u32, channels: u16) -> Result<Self> {
        Ok(Self::new(Audio::from_pcm_f32(
            samples,
            sample_rate,
            channels,
        )?))
    }

    /// Interleaved 16-bit samples.
    pub fn from_pcm_i16(samples: &[i16], sample_rate: u32, channels: u16) -> Result<Self> {
        Ok(Self::new(Audio::from_pcm_i16(
            samples,
            sample_rate,
            channels,
        )?))
    }

    fn new(audio: Audio) -> Self {
        let mut h = DefaultHasher::new();
        for s in audio.samples() {
            s.to_bits().hash(&mut h);
        }
        AudioInput {
            audio: Arc::new(audio),
            key: h.finish(),
        }
    }

    pub fn duration_secs(&self) -> f64 {
        self.audio.duration_secs()
    }

    /// The audio tower hears at most 30 s at a time: longer audio is encoded as consecutive
    /// clips, each its own `<|audio>…<audio|>` block in the prompt.
    pub fn clips(&self) -> AudioClips {
        self.audio.clips()
    }

    /// One input per 30-second clip (silent clips left out), for tasks that handle clips
    /// separately, such as transcription.
    pub fn clip_inputs(&self) -> Result<Vec<AudioInput>> {
        let clips = self.clips();
        if clips.clips.len() <= 1 {
            return Ok(vec![self.clone()]);
        }
        let mut out = Vec::new();
        for clip in &clips.clips {
            match Audio::from_pcm_f32(self.audio.clip_samples(clip), super::audio::SAMPLE_RATE, 1) {
                Ok(a) => out.push(Self::new(a)),
                Err(GemmaError::InvalidAudio(why)) => {
                    log::info!("audio clip {} left out: {why}", clip.index)
                }
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Err(GemmaError::InvalidAudio("every clip is silent".into()));
        }
        Ok(out)
    }
}

/// One video frame and when it was shown.
#[derive(Clone)]
pub struct VideoFrame {
    pub image: ImageInput,
    pub timestamp_secs: f64,
}

/// Frames sampled from a clip (decoding video containers is left to the platform: Android's
/// MediaMetadataRetriever, AVFoundation's AVAssetImageGenerator).
#[derive(Clone)]
pub struct VideoInput {
    pub(crate) frames: Vec<VideoFrame>,
    pub(crate) max_soft_tokens_per_frame: usize,
}

impl VideoInput {
    /// Frames with their timestamps, in order.
    pub fn from_frames(frames: Vec<VideoFrame>) -> Result<Self> {
        if frames.is_empty() {
            return Err(GemmaError::InvalidArgument(
                "a video needs at least one frame".into(),
            ));
        }
        if frames.len() > MAX_VIDEO_FRAMES {
            return Err(GemmaError::InvalidArgument(format!(
                "{} video frames (at most {MAX_VIDEO_FRAMES}; sample the clip more sparsely)",
                frames.len()
            )));
        }
        if frames
            .windows(2)
            .any(|w| !(w[0].timestamp_secs <= w[1].timestamp_secs))
            || frames
                .iter()
                .any(|f| !f.timestamp_secs.is_finite() || f.timestamp_secs < 0.0)
        {
            return Err(GemmaError::InvalidArgument(
                "video frame timestamps must be finite, non-negative and ascending".into(),
            ));
        }
        Ok(VideoInput {
            frames,
            max_soft_tokens_per_frame: ImageParams::video_frame().max_soft_tokens,
        })
    }

    /// Frames taken at a constant rate (frame `i` at `i / fps` seconds).
    pub fn from_frames_at_fps(images: Vec<ImageInput>, fps: f64) -> Result<Self> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(GemmaError::InvalidArgument(format!(
                "invalid frame rate {fps}"
            )));
        }
        Self::from_frames(
            images
                .into_iter()
                .enumerate()
                .map(|(i, image)| VideoFrame {
                    image,
                    timestamp_secs: i as f64 / fps,
                })
                .collect(),
        )
    }

    /// Soft tokens per frame: one of 70 (default), 140, 280, 560, 1120.
    pub fn with_max_soft_tokens_per_frame(mut self, n: usize) -> Result<Self> {
        check_budget(n)?;
        self.max_soft_tokens_per_frame = n;
        Ok(self)
    }

    pub fn frames(&self) -> &[VideoFrame] {
        &self.frames
    }
}

/// One piece of media in a message.
#[derive(Clone)]
pub enum Media {
    Image(ImageInput),
    Audio(AudioInput),
    Video(VideoInput),
}

impl Media {
    pub fn kind(&self) -> MediaKind {
        match self {
            Media::Image(_) => MediaKind::Image,
            Media::Audio(_) => MediaKind::Audio,
            Media::Video(_) => MediaKind::Video,
        }
    }

    /// Identifies the content (and encoding budget): equal keys encode to equal soft tokens.
    pub fn key(&self) -> u64 {
        match self {
            Media::Image(i) => i.key(),
            Media::Audio(a) => a.key,
            Media::Video(v) => {
                let mut h = DefaultHasher::new();
                v.max_soft_tokens_per_frame.hash(&mut h);
                for f in &v.frames {
                    (f.image.key, f.timestamp_secs.to_bits()).hash(&mut h);
                }
                h.finish()
            }
        }
    }
}

impl PartialEq for Media {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.key() == other.key()
    }
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Media::Image(i) => write!(
                f,
                "Image({}×{}, ≤{} tokens)",
                i.width(),
                i.height(),
                i.max_soft_tokens
            ),
            Media::Audio(a) => write!(f, "Audio({:.2} s)", a.duration_secs()),
            Media::Video(v) => write!(f, "Video({} frames)", v.frames.len()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Image,
    Audio,
    Video,
}

impl MediaKind {
    /// The marker a chat template writes where this media goes (the placeholder token that
    /// the prompt layout then expands to the media's soft-token positions).
    pub fn marker(self) -> &'static str {
        match self {
            MediaKind::Image => "<|image|>",
            MediaKind::Audio => "<|audio|>",
            MediaKind::Video => "<|video|>",
        }
    }
}
