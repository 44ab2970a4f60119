//! Arbitrary bytes as audio, through the path the engine takes: a WAV file (input starting with
//! `RIFF`) or raw interleaved PCM (otherwise: u32 rate, u16 channels, a format byte — odd: f32,
//! even: i16 — then little-endian samples), the public `AudioInput` constructors, down-mixing and
//! resampling to 16 kHz, the clip plan, and the log-mel features of every clip.

use std::sync::LazyLock;

use gemmakit::GemmaError;
use gemmakit::media::AudioInput;
use gemmakit::media::audio::{Audio, CLIP_SAMPLES, FeatureExtractor};

use super::Outcome;

static FEATURES: LazyLock<FeatureExtractor> = LazyLock::new(FeatureExtractor::default);

pub fn run(data: &[u8]) -> Outcome {
    let (public, audio) = if data.starts_with(b"RIFF") {
        (
            AudioInput::from_wav_bytes(data),
            Audio::from_wav_bytes(data),
        )
    } else {
        let Some((head, body)) = data.split_first_chunk::<7>() else {
            return Outcome::NotApplicable;
        };
        let rate = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let channels = u16::from_le_bytes([head[4], head[5]]);
        if head[6] & 1 == 1 {
            let samples: Vec<f32> = body
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (
                AudioInput::from_pcm_f32(&samples, rate, channels),
                Audio::from_pcm_f32(&samples, rate, channels),
            )
        } else {
            let samples: Vec<i16> = body
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (
                AudioInput::from_pcm_i16(&samples, rate, channels),
                Audio::from_pcm_i16(&samples, rate, channels),
            )
        }
    };
    let (input, audio) = match (public, audio) {
        (Ok(input), Ok(audio)) => (input, audio),
        (Err(GemmaError::InvalidAudio(_)), Err(e @ GemmaError::InvalidAudio(_))) => {
            return Outcome::Rejected(e.to_string());
        }
        (a, b) => panic!(
            "both constructors agree and reject with InvalidAudio: {:?} / {:?}",
            a.err(),
            b.err()
        ),
    };
    assert!(audio.samples().iter().all(|s| s.is_finite()));
    assert_eq!(input.duration_secs(), audio.duration_secs());
    let clips = audio.clips();
    assert_eq!(clips, input.clips());
    let mut covered = 0;
    for clip in &clips.clips {
        assert_eq!(clip.samples.start, covered);
        covered = clip.samples.end;
        assert!(clip.samples.len() <= CLIP_SAMPLES && clip.soft_tokens > 0);
        let features = FEATURES
            .extract(audio.clip_samples(clip))
            .expect("every planned clip has features");
        assert_eq!(
            features.features.len(),
            features.num_frames * features.num_mel_bins
        );
        assert_eq!(features.mask.len(), features.num_frames);
        assert!(features.features.iter().all(|v| v.is_finite()));
    }
    assert_eq!(covered + clips.dropped_tail_samples, audio.samples().len());
    match input.clip_inputs() {
        Ok(parts) => assert!(!parts.is_empty()),
        Err(GemmaError::InvalidAudio(_)) => {}
        Err(e) => panic!("clip_inputs: {e:?}"),
    }
    Outcome::Accepted
}
