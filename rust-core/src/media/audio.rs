//! Audio before it meets the model: WAV decoding, down-mixing, resampling to 16 kHz, splitting
//! into 30-second clips, and the log-mel front end of transformers'
//! `Gemma4AudioFeatureExtractor`.
//!
//! Every input is untrusted: formats, sample rates, channel counts and durations are checked
//! before anything is allocated from them, and every failure is a
//! [`GemmaError::InvalidAudio`].

use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
    calculate_cutoff,
};
use serde::Deserialize;

use crate::error::{GemmaError, Result};

/// The rate the audio tower was trained on; everything else is resampled to it.
pub const SAMPLE_RATE: u32 = 16_000;
/// Longest clip the feature extractor takes (30 s); longer audio is split into clips.
pub const CLIP_SAMPLES: usize = 480_000;
/// Soft tokens per second of audio (one per 40 ms, after the 4× subsampling of 10 ms frames).
pub const SOFT_TOKENS_PER_SECOND: usize = 25;
/// Longest audio accepted, in seconds: 20 clips, 15 000 soft tokens. Bounds the memory a
/// caller (or a WAV header) can make us allocate.
pub const MAX_DURATION_SECS: u32 = 600;
/// Sample rates accepted at the input.
pub const SAMPLE_RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=384_000;
/// Most interleaved channels accepted.
pub const MAX_CHANNELS: u16 = 64;
/// Audio whose peak absolute amplitude (after down-mixing, full scale = 1.0) stays below this
/// is rejected as silent: below −120 dBFS, far under the 16-bit quantisation step (3e-5), so
/// the model would only see the mel floor.
pub const SILENCE_PEAK: f32 = 1e-6;

fn invalid(msg: impl Into<String>) -> GemmaError {
    GemmaError::InvalidAudio(msg.into())
}

// ------------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------------

/// Mono audio at 16 kHz, full scale ±1.0, checked to be non-empty, finite, not silent and not
/// longer than [`MAX_DURATION_SECS`].
#[derive(Debug, Clone)]
pub struct Audio {
    samples: Vec<f32>,
    /// Rate of the input before resampling.
    source_rate: u32,
    source_channels: u16,
}

impl Audio {
    /// Decodes a WAV file held in memory: 16-, 24- or 32-bit integer PCM, or 32-bit float PCM
    /// (also in `WAVE_FORMAT_EXTENSIBLE` files), any channel count up to [`MAX_CHANNELS`]
    /// (mixed down by averaging), any rate in [`SAMPLE_RATE_RANGE`] (resampled to 16 kHz).
    /// 8-bit PCM is rejected: it is a legacy telephony format and a sign of a wrong file.
    pub fn from_wav_bytes(bytes: &[u8]) -> Result<Audio> {
        let mut reader = hound::WavReader::new(Cursor::new(bytes))
            .map_err(|e| invalid(format!("not a readable WAV file: {e}")))?;
        let spec = reader.spec();
        check_layout(spec.sample_rate, spec.channels)?;
        let channels = spec.channels as usize;
        // The header's length is untrusted: check the duration it claims, and never reserve
        // more than the bytes present could hold.
        let frames = reader.duration() as usize;
        check_duration(frames, spec.sample_rate)?;
        let bytes_per_sample = (spec.bits_per_sample as usize).div_ceil(8).max(1);
        let capacity = frames.min(bytes.len() / (bytes_per_sample * channels));
        let mut mono = Vec::with_capacity(capacity);
        let mut frame = vec![0.0f32; channels];
        let read_err = |e: hound::Error| invalid(format!("corrupt WAV sample data: {e}"));
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, bits @ (16 | 24 | 32)) => {
                let scale = 1.0 / (1u64 << (bits - 1)) as f64;
                let mut samples = reader.samples::<i32>();
                'frames: loop {
                    for (c, slot) in frame.iter_mut().enumerate() {
                        match samples.next() {
                            Some(s) => *slot = (s.map_err(read_err)? as f64 * scale) as f32,
                            None if c == 0 => break 'frames,
                            None => return Err(invalid("the WAV data ends inside a frame")),
                        }
                    }
                    mono.push(mix(&frame));
                }
            }
            (hound::SampleFormat::Float, 32) => {
                let mut samples = reader.samples::<f32>();
                'frames: loop {
                    for (c, slot) in frame.iter_mut().enumerate() {
                        match samples.next() {
                            Some(s) => *slot = s.map_err(read_err)?,
                            None if c == 0 => break 'frames,
                            None => return Err(invalid("the WAV data ends inside a frame")),
                        }
                    }
                    mono.push(mix(&frame));
                }
            }
            (format, bits) => {
                return Err(invalid(format!(
                    "unsupported WAV sample format: {bits}-bit {} (supported: 16/24/32-bit integer, \
                     32-bit float)",
                    match format {
                        hound::SampleFormat::Int => "integer",
                        hound::SampleFormat::Float => "float",
                    }
                )));
            }
        }
        Audio::from_mono(mono, spec.sample_rate, spec.channels)
    }

    /// Interleaved float PCM (full scale ±1.0) at any rate in [`SAMPLE_RATE_RANGE`].
    pub fn from_pcm_f32(samples: &[f32], sample_rate: u32, channels: u16) -> Result<Audio> {
        check_layout(sample_rate, channels)?;
        let c = channels as usize;
        if samples.len() % c != 0 {
            return Err(invalid(format!(
                "{} samples do not fill whole frames of {channels} channels",
                samples.len()
            )));
        }
        check_duration(samples.len() / c, sample_rate)?;
        let mono = samples.chunks_exact(c).map(mix).collect();
        Audio::from_mono(mono, sample_rate, channels)
    }

    /// Interleaved 16-bit PCM at any rate in [`SAMPLE_RATE_RANGE`].
    pub fn from_pcm_i16(samples: &[i16], sample_rate: u32, channels: u16) -> Result<Audio> {
        check_layout(sample_rate, channels)?;
        let c = channels as usize;
        if samples.len() % c != 0 {
            return Err(invalid(format!(
                "{} samples do not fill whole frames of {channels} channels",
                samples.len()
            )));
        }
        check_duration(samples.len() / c, sample_rate)?;
        let mut frame = vec![0.0f32; c];
        let mono = samples
            .chunks_exact(c)
            .map(|f| {
                for (slot, &s) in frame.iter_mut().zip(f) {
                    *slot = s as f32 / 32768.0;
                }
                mix(&frame)
            })
            .collect();
        Audio::from_mono(mono, sample_rate, channels)
    }

    fn from_mono(mono: Vec<f32>, rate: u32, channels: u16) -> Result<Audio> {
        if mono.is_empty() {
            return Err(invalid("the audio is empty"));
        }
        let mut peak = 0.0f32;
        for &s in &mono {
            if !s.is_finite() {
                return Err(invalid("the audio holds a NaN or infinite sample"));
            }
            peak = peak.max(s.abs());
        }
        if peak < SILENCE_PEAK {
            return Err(invalid(format!(
                "the audio is silent (peak amplitude {peak:.1e} < {SILENCE_PEAK:.0e})"
            )));
        }
        let samples = resample_to_16k(mono, rate)?;
        // Finite samples far outside full scale (±3e38) can sum past f32's range in the filter.
        if !samples.iter().all(|s| s.is_finite()) {
            return Err(invalid(format!(
                "the audio overflows when resampled (peak amplitude {peak:.1e}; full scale is 1.0)"
            )));
        }
        if samples.len() < MIN_CLIP_SAMPLES {
            return Err(invalid(format!(
                "the audio is too short: {} samples at 16 kHz, at least {MIN_CLIP_SAMPLES} \
                 (about 10 ms) are needed for one soft token",
                samples.len()
            )));
        }
        Ok(Audio {
            samples,
            source_rate: rate,
            source_channels: channels,
        })
    }

    /// The mono 16 kHz signal.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / SAMPLE_RATE as f64
    }

    /// Sample rate and channel count of the input, before down-mixing and resampling.
    pub fn source_format(&self) -> (u32, u16) {
        (self.source_rate, self.source_channels)
    }

    /// How the audio is cut into clips for the tower (see [`AudioClips`]).
    pub fn clips(&self) -> AudioClips {
        AudioClips::plan(self.samples.len())
    }

    /// The samples of one clip.
    pub fn clip_samples(&self, clip: &AudioClip) -> &[f32] {
        &self.samples[clip.samples.clone()]
    }
}

fn mix(frame: &[f32]) -> f32 {
    if frame.len() == 1 {
        frame[0]
    } else {
        frame.iter().sum::<f32>() / frame.len() as f32
    }
}

fn check_layout(rate: u32, channels: u16) -> Result<()> {
    if !SAMPLE_RATE_RANGE.contains(&rate) {
        return Err(invalid(format!(
            "sample rate {rate} Hz is outside {}..={} Hz",
            SAMPLE_RATE_RANGE.start(),
            SAMPLE_RATE_RANGE.end()
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(invalid(format!(
            "{channels} channels (supported: 1..={MAX_CHANNELS})"
        )));
    }
    Ok(())
}

fn check_duration(frames: usize, rate: u32) -> Result<()> {
    if frames as u64 > MAX_DURATION_SECS as u64 * rate as u64 {
        return Err(invalid(format!(
            "the audio lasts {:.0} s, longer than the limit of {MAX_DURATION_SECS} s",
            frames as f64 / rate as f64
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Resampling
// ------------------------------------------------------------------------------------------------

/// Length of the windowed-sinc filter (Blackman-Harris² window, cutoff from rubato's
/// `calculate_cutoff`, ≈0.92 of the lower Nyquist rate). Accuracy measured on tones of 440 Hz
/// and 3 kHz against the analytic signal (`tests/audio_parity.rs`): max error 1.1e-4 of full
/// scale from 44.1/48/96 kHz, 2.2e-4 from 22.05 kHz, 5.9e-4 from 8 kHz; a 12 kHz tone (0.15) in
/// 44.1 kHz input leaves a 4 kHz alias of 2e-7. The error is a fixed timing offset of about half
/// an interpolation phase (hence the oversampling of 1024 rather than rubato's suggested 256,
/// which gave 4× the error), so it grows with frequency relative to the input rate.
const SINC_LEN: usize = 256;
const SINC_OVERSAMPLING: usize = 1024;
const RESAMPLER_CHUNK: usize = 4096;

/// Resamples mono audio to 16 kHz with rubato's asynchronous sinc resampler (cubic
/// interpolation between 256 precomputed sub-sample filter phases), aligned so that output
/// sample `n` is the signal at time `n / 16000` s. Output length: `round(len · 16000 / rate)`.
///
/// Alignment: rubato 0.16's `SincFixedIn` puts output `n` at input time `(n + 1)·r − 1` input
/// samples (`r = rate / 16000`; its `output_delay()` does not describe this resampler), which
/// is off the output grid by a fraction of a sample. Prepending `rate/g − 1` zeros
/// (`g = gcd(rate, 16000)`) moves output `n` to exactly `n + 1 − 16000/g` output samples, so
/// dropping the first `16000/g − 1` outputs leaves output `n` at time `n`. The cost is at most
/// one second of extra input (for rates coprime with 16000). The analytic-sine test in
/// `tests/audio_parity.rs` checks the alignment and the accuracy.
pub fn resample_to_16k(mono: Vec<f32>, rate: u32) -> Result<Vec<f32>> {
    if rate == SAMPLE_RATE {
        return Ok(mono);
    }
    let resample_err = |e: &dyn std::fmt::Display| invalid(format!("resampling failed: {e}"));
    let ratio = SAMPLE_RATE as f64 / rate as f64;
    let window = WindowFunction::BlackmanHarris2;
    let params = SincInterpolationParameters {
        sinc_len: SINC_LEN,
        f_cutoff: calculate_cutoff(SINC_LEN, window),
        interpolation: SincInterpolationType::Cubic,
        oversampling_factor: SINC_OVERSAMPLING,
        window,
    };
    let mut resampler = SincFixedIn::<f32>::new(ratio, 1.0, params, RESAMPLER_CHUNK, 1)
        .map_err(|e| resample_err(&e))?;
    let g = gcd(rate as u64, SAMPLE_RATE as u64);
    let lead_in = (rate as u64 / g - 1) as usize;
    let skip = (SAMPLE_RATE as u64 / g - 1) as usize;
    let wanted =
        ((mono.len() as u64 * SAMPLE_RATE as u64 + rate as u64 / 2) / rate as u64) as usize;
    let mut input = Vec::with_capacity(lead_in + mono.len());
    input.resize(lead_in, 0.0f32);
    input.extend_from_slice(&mono);
    drop(mono);
    let mut out: Vec<f32> = Vec::with_capacity(wanted + skip + 2 * RESAMPLER_CHUNK);
    let mut pos = 0;
    while input.len() - pos >= resampler.input_frames_next() {
        let n = resampler.input_frames_next();
        let chunk = resampler
            .process(&[&input[pos..pos + n]], None)
            .map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    if pos < input.len() {
        let chunk = resampler
            .process_partial(Some(&[&input[pos..]]), None)
            .map_err(|e| resample_err(&e))?;
        out.extend_from_slice(&chunk[0]);
    }
    while out.len() < wanted + skip {
        let chunk = resampler
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| resample_err(&e))?;
        if chunk[0].is_empty() {
            break;
        }
        out.extend_from_slice(&chunk[0]);
    }
    out.truncate(wanted + skip);
    out.drain(..skip.min(out.len()));
    out.resize(wanted, 0.0);
    Ok(out)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// ------------------------------------------------------------------------------------------------
// Clips and soft-token counts
// ------------------------------------------------------------------------------------------------

/// Fewest 16 kHz samples that give one valid mel frame, hence one soft token: frame `i` is valid
/// when samples `i·160 − 160 ..= i·160 + 160` of the clip exist (see [`valid_frames`]).
pub const MIN_CLIP_SAMPLES: usize = 161;

/// Mel frames the feature extractor produces for `n` samples (after padding to a multiple of
/// 128 and prepending 160 zeros; frames of 321 samples, hop 160).
pub fn num_frames(n: usize) -> usize {
    let padded = n.div_ceil(128) * 128 + 160;
    if padded < 321 {
        0
    } else {
        (padded - 321) / 160 + 1
    }
}

/// Mel frames whose whole window lies in real audio (the rest is masked).
pub fn valid_frames(n: usize) -> usize {
    if n < MIN_CLIP_SAMPLES {
        0
    } else {
        ((n - MIN_CLIP_SAMPLES) / 160 + 1).min(num_frames(n))
    }
}

/// Soft tokens a clip of `n` 16 kHz samples (at most [`CLIP_SAMPLES`]) turns into: the frame
/// mask subsampled twice by 2, i.e. `ceil(valid_frames / 4)`. 1 s → 25, 30 s → 750. Equals
/// transformers' `Gemma4Processor` count (`mask.sum()` after two stride-2 convolutions).
pub fn soft_token_count(n: usize) -> usize {
    valid_frames(n.min(CLIP_SAMPLES)).div_ceil(4)
}

/// One clip of at most 30 s, as the tower sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioClip {
    pub index: usize,
    /// Range of 16 kHz samples of the whole audio.
    pub samples: Range<usize>,
    /// Soft tokens this clip yields (the number of `<|audio|>` placeholders it needs).
    pub soft_tokens: usize,
}

/// How an audio input is cut into clips of [`CLIP_SAMPLES`]: each clip runs through the tower
/// on its own and becomes its own `<|audio> … <audio|>` span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioClips {
    pub clips: Vec<AudioClip>,
    /// Trailing samples too short for one soft token (under 10 ms), left out.
    pub dropped_tail_samples: usize,
}

impl AudioClips {
    pub fn plan(total_samples: usize) -> AudioClips {
        let mut clips = Vec::new();
        let mut start = 0;
        while start < total_samples {
            let end = (start + CLIP_SAMPLES).min(total_samples);
            let soft_tokens = soft_token_count(end - start);
            if soft_tokens == 0 {
                break;
            }
            clips.push(AudioClip {
                index: clips.len(),
                samples: start..end,
                soft_tokens,
            });
            start = end;
        }
        AudioClips {
            clips,
            dropped_tail_samples: total_samples - start,
        }
    }

    /// Whether the audio was longer than one clip.
    pub fn was_split(&self) -> bool {
        self.clips.len() > 1
    }

    pub fn total_soft_tokens(&self) -> usize {
        self.clips.iter().map(|c| c.soft_tokens).sum()
    }
}

// ------------------------------------------------------------------------------------------------
// Log-mel features
// ------------------------------------------------------------------------------------------------

/// Parameters of transformers' `Gemma4AudioFeatureExtractor` (its `preprocessor_config.json` /
/// `processor_config.json` "feature_extractor" entry). Defaults are Gemma 4's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FeatureExtractorConfig {
    pub feature_size: usize,
    pub sampling_rate: u32,
    /// Samples; derived from `frame_length_ms` when only that is given.
    pub frame_length: Option<usize>,
    pub hop_length: Option<usize>,
    pub frame_length_ms: f64,
    pub hop_length_ms: f64,
    pub min_frequency: f64,
    pub max_frequency: f64,
    pub preemphasis: f64,
    pub preemphasis_htk_flavor: bool,
    pub fft_overdrive: bool,
    pub dither: f64,
    pub input_scale_factor: f64,
    /// transformers writes it as a string ("0.001") or a number.
    #[serde(deserialize_with = "number_or_string")]
    pub mel_floor: f64,
    pub per_bin_mean: Option<Vec<f64>>,
    pub per_bin_stddev: Option<Vec<f64>>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(v) => Ok(v),
        NumOrStr::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

impl Default for FeatureExtractorConfig {
    fn default() -> Self {
        FeatureExtractorConfig {
            feature_size: 128,
            sampling_rate: SAMPLE_RATE,
            frame_length: None,
            hop_length: None,
            frame_length_ms: 20.0,
            hop_length_ms: 10.0,
            min_frequency: 0.0,
            max_frequency: 8000.0,
            preemphasis: 0.0,
            preemphasis_htk_flavor: true,
            fft_overdrive: false,
            dither: 0.0,
            input_scale_factor: 1.0,
            mel_floor: 1e-3,
            per_bin_mean: None,
            per_bin_stddev: None,
        }
    }
}

impl FeatureExtractorConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| GemmaError::InvalidConfig(format!("audio feature extractor: {e}")))
    }
}

/// The front end's output is the audio tower's input type.
pub use crate::model::audio::AudioFeatures;

/// The front end of `Gemma4AudioFeatureExtractor` for a single clip (batch of one):
/// pad to a multiple of 128, prepend `frame/2` zeros, frames of `frame+1` samples every `hop`
/// (the last sample only feeds pre-emphasis), periodic Hann window, `|rfft|` over `fft` points,
/// HTK mel filter bank without area normalisation, `ln(mel + mel_floor)`.
///
/// Precision follows numpy's: the (pre-emphasised) windowed frame is computed in f32 (the
/// reference multiplies f32 samples by an f32 window), the FFT and everything after it run in f64 (numpy runs its
/// f32 FFT in f32, so ours is the more exact of the two; they agree to ~1e-6 in the log-mel),
/// the result is rounded to f32.
pub struct FeatureExtractor {
    config: FeatureExtractorConfig,
    frame_length: usize,
    hop_length: usize,
    fft_length: usize,
    window: Vec<f32>,
    /// `[fft_length/2 + 1, feature_size]`.
    mel_filters: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor")
            .field("config", &self.config)
            .finish()
    }
}

impl Default for FeatureExtractor {
    fn default() -> Self {
        FeatureExtractor::new(FeatureExtractorConfig::default())
            .expect("the default configuration is valid")
    }
}

impl FeatureExtractor {
    pub fn new(config: FeatureExtractorConfig) -> Result<Self> {
        let bad = |m: String| GemmaError::InvalidConfig(format!("audio feature extractor: {m}"));
        if config.sampling_rate != SAMPLE_RATE {
            return Err(bad(format!(
                "sampling_rate {} (the audio pipeline resamples to {SAMPLE_RATE})",
                config.sampling_rate
            )));
        }
        if config.dither != 0.0 {
            // Dither adds random noise: outputs would not be reproducible.
            return Err(GemmaError::Unsupported(
                "audio feature extraction with dither".into(),
            ));
        }
        let sr = config.sampling_rate as f64;
        let frame_length = config
            .frame_length
            .unwrap_or((sr * config.frame_length_ms / 1000.0).round() as usize);
        let hop_length = config
            .hop_length
            .unwrap_or((sr * config.hop_length_ms / 1000.0).round() as usize);
        if !(2..=8192).contains(&frame_length) || hop_length == 0 || hop_length > frame_length {
            return Err(bad(format!(
                "frame {frame_length} / hop {hop_length} samples"
            )));
        }
        let n_mels = config.feature_size;
        if !(1..=1024).contains(&n_mels) {
            return Err(bad(format!("feature_size {n_mels}")));
        }
        if !(0.0 <= config.min_frequency && config.min_frequency <= config.max_frequency)
            || !(config.mel_floor > 0.0)
        {
            return Err(bad("frequency range or mel floor".into()));
        }
        for (name, v) in [
            ("per_bin_mean", &config.per_bin_mean),
            ("per_bin_stddev", &config.per_bin_stddev),
        ] {
            if v.as_ref().is_some_and(|v| v.len() != n_mels) {
                return Err(bad(format!("{name} must have {n_mels} entries")));
            }
        }
        let mut fft_length = frame_length.next_power_of_two();
        if config.fft_overdrive {
            fft_length *= 2;
        }
        // numpy: np.hanning(N + 1)[:-1] (periodic Hann), cast to f32.
        let window = (0..frame_length)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / frame_length as f64).cos())
                    as f32
            })
            .collect();
        let mel_filters = mel_filter_bank(
            fft_length / 2 + 1,
            n_mels,
            config.min_frequency,
            config.max_frequency,
            sr,
        );
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(fft_length);
        Ok(FeatureExtractor {
            config,
            frame_length,
            hop_length,
            fft_length,
            window,
            mel_filters,
            fft,
        })
    }

    pub fn config(&self) -> &FeatureExtractorConfig {
        &self.config
    }

    pub fn num_mel_bins(&self) -> usize {
        self.config.feature_size
    }

    /// Features of one clip of at most [`CLIP_SAMPLES`] samples at 16 kHz.
    pub fn extract(&self, clip: &[f32]) -> Result<AudioFeatures> {
        if clip.is_empty() {
            return Err(invalid("the audio clip is empty"));
        }
        if clip.len() > CLIP_SAMPLES {
            return Err(invalid(format!(
                "a clip holds at most {CLIP_SAMPLES} samples (30 s), got {}; split it with \
                 Audio::clips",
                clip.len()
            )));
        }
        let (frame, hop) = (self.frame_length, self.hop_length);
        let pad_left = frame / 2;
        let padded_len = clip.len().div_ceil(128) * 128;
        let total = pad_left + padded_len;
        let unfold = frame + 1;
        let num_frames = if total < unfold {
            0
        } else {
            (total - unfold) / hop + 1
        };
        if num_frames == 0 {
            return Err(invalid(format!(
                "the audio clip is too short ({} samples)",
                clip.len()
            )));
        }
        let scale = self.config.input_scale_factor;
        // Left-padded signal; positions past the clip are the zero padding.
        let sample = |i: usize| -> f32 {
            if i < pad_left || i - pad_left >= clip.len() {
                0.0
            } else if scale != 1.0 {
                clip[i - pad_left] * scale as f32
            } else {
                clip[i - pad_left]
            }
        };
        let n_mels = self.config.feature_size;
        let n_bins = self.fft_length / 2 + 1;
        let pre = self.config.preemphasis;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut magnitude = vec![0.0f64; n_bins];
        let mut features = vec![0.0f32; num_frames * n_mels];
        let mut mask = vec![false; num_frames];
        for f in 0..num_frames {
            let start = f * hop;
            // A frame is valid when the last sample of its (frame+1)-sample window is real audio.
            let last = start + unfold - 1;
            mask[f] = last >= pad_left && last - pad_left < clip.len();
            if !mask[f] {
                continue; // zeroed in the output anyway
            }
            input.iter_mut().for_each(|v| *v = 0.0);
            for n in 0..frame {
                // In f32, as numpy computes it (f32 frames times a Python float).
                let at = |i: usize| sample(start + i);
                let x = if pre == 0.0 {
                    sample(start + n)
                } else if self.config.preemphasis_htk_flavor {
                    // [x0·(1−p), x1 − p·x0, …]: the window's first `frame` samples.
                    if n == 0 {
                        at(0) * (1.0 - pre) as f32
                    } else {
                        at(n) - pre as f32 * at(n - 1)
                    }
                } else {
                    // x[n+1] − p·x[n]: the window's last `frame` samples.
                    at(n + 1) - pre as f32 * at(n)
                };
                input[n] = (x * self.window[n]) as f64;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .map_err(|e| invalid(format!("FFT failed: {e}")))?;
            for (m, c) in magnitude.iter_mut().zip(&spectrum) {
                *m = c.norm();
            }
            let row = &mut features[f * n_mels..(f + 1) * n_mels];
            for (j, out) in row.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for (k, &m) in magnitude.iter().enumerate() {
                    acc += m * self.mel_filters[k * n_mels + j];
                }
                let mut v = (acc + self.config.mel_floor).ln();
                if let Some(mean) = &self.config.per_bin_mean {
                    v -= mean[j];
                }
                if let Some(std) = &self.config.per_bin_stddev {
                    v /= std[j];
                }
                *out = v as f32;
            }
        }
        Ok(AudioFeatures {
            features,
            mask,
            num_frames,
            num_mel_bins: n_mels,
        })
    }
}

/// transformers' `mel_filter_bank(norm=None, mel_scale="htk")`: `[n_bins, n_mels]` triangular
/// filters with edges evenly spaced in HTK mel, FFT bin frequencies `linspace(0, sr/2, n_bins)`.
fn mel_filter_bank(n_bins: usize, n_mels: usize, f_min: f64, f_max: f64, sr: f64) -> Vec<f64> {
    let hz_to_mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let mel_to_hz = |m: f64| 700.0 * (10f64.powf(m / 2595.0) - 1.0);
    let (m_min, m_max) = (hz_to_mel(f_min), hz_to_mel(f_max));
    let n_edges = n_mels + 2;
    // np.linspace: start + i·step, with the last point exactly `stop`.
    let step = (m_max - m_min) / (n_edges - 1) as f64;
    let edges: Vec<f64> = (0..n_edges)
        .map(|i| {
            let m = if i == n_edges - 1 {
                m_max
            } else {
                m_min + i as f64 * step
            };
            mel_to_hz(m)
        })
        .collect();
    let nyquist = (sr as u64 / 2) as f64;
    let bin_step = nyquist / (n_bins - 1) as f64;
    let mut filters = vec![0.0f64; n_bins * n_mels];
    for k in 0..n_bins {
        let f = if k == n_bins - 1 {
            nyquist
        } else {
            k as f64 * bin_step
        };
        for j in 0..n_mels {
            let down = -(edges[j] - f) / (edges[j + 1] - edges[j]);
            let up = (edges[j + 2] - f) / (edges[j + 2] - edges[j + 1]);
            filters[k * n_mels + j] = down.min(up).max(0.0);
        }
    }
    filters
}
