//! Gemma 4 audio input against independent references:
//! * the log-mel front end and the audio tower vs transformers 5.24 (f32, eager) on the tiny
//!   fixtures (`audio.*` keys) and on `tests/fixtures/audio/` (scripts/reference/audio_ref.py);
//!   tolerances: CPU 1e-4, wgpu (lavapipe) 1e-3, max-abs;
//! * the same towers loaded from llama.cpp's converter output (`mmproj-f32.gguf`);
//! * WAV decoding and resampling vs the analytic signal written into the file;
//! * bad input → `GemmaError::InvalidAudio`.

mod common;

use std::collections::HashMap;
use std::io::Cursor;

use common::*;
use gemmakit::media::audio::{
    self, Audio, AudioClips, AudioFeatures, CLIP_SAMPLES, FeatureExtractor, FeatureExtractorConfig,
    soft_token_count,
};
use gemmakit::model::audio::{AttentionWindow, AudioTower};
use gemmakit::{BackendKind, ComputeDevice, GemmaError};

const CPU_TOL: f32 = 1e-4;
const GPU_TOL: f32 = 1e-3;

/// Reference tensors of one safetensors file (f32 values, u8 masks).
struct Reference {
    tensors: HashMap<String, (Vec<usize>, Vec<u8>, safetensors::Dtype)>,
}

impl Reference {
    fn load(fixture: &str) -> Self {
        Self::load_file(&fixture_dir(fixture).join("reference_outputs.safetensors"))
    }

    fn load_file(path: &std::path::Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference file parses");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, v)| (name, (v.shape().to_vec(), v.data().to_vec(), v.dtype())))
            .collect();
        Reference { tensors }
    }

    fn get(
        &self,
        name: &str,
        dtype: safetensors::Dtype,
    ) -> &(Vec<usize>, Vec<u8>, safetensors::Dtype) {
        let t = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no reference `{name}`"));
        assert_eq!(t.2, dtype, "{name}");
        t
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors[name].0.clone()
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        self.get(name, safetensors::Dtype::F32)
            .1
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn u8(&self, name: &str) -> Vec<u8> {
        self.get(name, safetensors::Dtype::U8).1.clone()
    }
}

fn features_from_reference(reference: &Reference, prefix: &str) -> AudioFeatures {
    let shape = reference.shape(&format!("{prefix}input_features"));
    let mask = reference.u8(&format!("{prefix}input_features_mask"));
    AudioFeatures {
        features: reference.f32(&format!("{prefix}input_features")),
        mask: mask.iter().map(|&m| m != 0).collect(),
        num_frames: shape[1],
        num_mel_bins: shape[2],
    }
}

fn extractor_for(fixture: &str) -> FeatureExtractor {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir(fixture).join("reference_meta.json")).unwrap(),
    )
    .unwrap();
    let config = FeatureExtractorConfig::from_json(&meta["feature_extractor"].to_string())
        .expect("feature extractor config parses");
    FeatureExtractor::new(config).expect("valid config")
}

fn check_features(fixture: &str) {
    let reference = Reference::load(fixture);
    let fe = extractor_for(fixture);
    let wave = reference.f32("audio.waveform");
    let ours = fe.extract(&wave).expect("features");
    let expected = features_from_reference(&reference, "audio.");
    assert_eq!(ours.num_frames, expected.num_frames);
    assert_eq!(ours.mask, expected.mask, "frame mask");
    assert_close(
        "log-mel features",
        &ours.features,
        &expected.features,
        CPU_TOL,
    );
    assert_eq!(
        expected.mask.iter().filter(|&&m| m).count().div_ceil(4),
        soft_token_count(wave.len())
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Source {
    Safetensors,
    Mmproj,
}

fn load_tower(fixture: &str, source: Source, backend: BackendKind) -> AudioTower {
    let device = ComputeDevice::open(backend).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let dir = fixture_dir(fixture);
    match source {
        Source::Safetensors => AudioTower::load_hf_dir(&dir, device),
        Source::Mmproj => AudioTower::load_mmproj(&dir.join("mmproj-f32.gguf"), device),
    }
    .expect("audio tower loads")
}

fn check_tower(fixture: &str, source: Source, backend: BackendKind, tol: f32) {
    let reference = Reference::load(fixture);
    let tower = load_tower(fixture, source, backend);
    let features = features_from_reference(&reference, "audio.");
    let trace = tower
        .encode_traced(&features, AttentionWindow::Transformers)
        .expect("encode");
    let expected_mask: Vec<bool> = reference
        .u8("audio.tower_mask")
        .iter()
        .map(|&m| m != 0)
        .collect();
    assert_eq!(trace.mask, expected_mask, "tower mask");
    assert_close(
        "sscp_out",
        &trace.sscp_out,
        &reference.f32("audio.sscp_out"),
        tol,
    );
    assert_close(
        "tower_out (transformers window)",
        &trace.tower_out,
        &reference.f32("audio.tower_out"),
        tol,
    );
    assert_close(
        "soft tokens",
        &trace.soft_tokens,
        &reference.f32("audio.soft_tokens"),
        tol,
    );
    let jax = tower
        .encode_traced(&features, AttentionWindow::Jax)
        .expect("encode");
    assert_close(
        "tower_out (JAX window)",
        &jax.tower_out,
        &reference.f32("audio.tower_out_jax_window"),
        tol,
    );
    // encode() = the traced soft tokens.
    let soft = tower
        .encode(&features, AttentionWindow::Transformers)
        .unwrap();
    assert_eq!(soft.len(), trace.soft_tokens.len());
    assert_eq!(soft.len(), 31 * tower.text_hidden());

    // End to end from the waveform through our own front end.
    let wave = reference.f32("audio.waveform");
    let ours = extractor_for(fixture).extract(&wave).unwrap();
    let soft = tower.encode(&ours, AttentionWindow::Transformers).unwrap();
    assert_close(
        "soft tokens from the waveform",
        &soft,
        &reference.f32("audio.soft_tokens"),
        tol,
    );
}

/// A clip whose last frame is padding: the masked frame must not leak into valid rows, and the
/// masked tower row must come out as transformers computes it.
fn check_padded_clip(backend: BackendKind, tol: f32) {
    let reference = audio_reference();
    let fe = FeatureExtractor::default();
    let ours = fe.extract(&reference.f32("waveform")).unwrap();
    let expected = features_from_reference(&reference, "");
    assert_eq!(ours.mask, expected.mask);
    assert_eq!(ours.mask.iter().filter(|&&m| !m).count(), 1);
    assert_close(
        "log-mel features (padded clip)",
        &ours.features,
        &expected.features,
        CPU_TOL,
    );

    if backend == BackendKind::Cpu {
        for (key, htk) in [("preemphasis_htk", true), ("preemphasis_plain", false)] {
            let fe = FeatureExtractor::new(FeatureExtractorConfig {
                preemphasis: 0.97,
                preemphasis_htk_flavor: htk,
                ..FeatureExtractorConfig::default()
            })
            .unwrap();
            let pre = fe.extract(&reference.f32("waveform")).unwrap();
            let expected = reference.f32(&format!("{key}.input_features"));
            assert_close(
                &format!("log-mel features ({key})"),
                &pre.features,
                &expected,
                CPU_TOL,
            );
        }
    }

    let tower = load_tower("tiny_gemma4_e2b", Source::Safetensors, backend);
    let trace = tower
        .encode_traced(&ours, AttentionWindow::Transformers)
        .unwrap();
    let expected_mask: Vec<bool> = reference
        .u8("e2b.tower_mask")
        .iter()
        .map(|&m| m != 0)
        .collect();
    assert_eq!(trace.mask, expected_mask);
    assert_close(
        "tower_out (padded clip, all rows)",
        &trace.tower_out,
        &reference.f32("e2b.tower_out"),
        tol,
    );
    assert_close(
        "soft tokens (padded clip)",
        &trace.soft_tokens,
        &reference.f32("e2b.soft_tokens"),
        tol,
    );
}

fn audio_reference() -> Reference {
    Reference::load_file(&fixture_dir("audio").join("feature_ref.safetensors"))
}

macro_rules! tower_suite {
    ($module:ident, $fixture:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn features_match_transformers() {
                check_features($fixture);
            }
            #[test]
            fn cpu_tower_from_safetensors() {
                check_tower($fixture, Source::Safetensors, BackendKind::Cpu, CPU_TOL);
            }
            #[test]
            fn cpu_tower_from_mmproj_gguf() {
                check_tower($fixture, Source::Mmproj, BackendKind::Cpu, CPU_TOL);
            }
            #[test]
            fn gpu_tower_from_safetensors() {
                if gpu_expected() {
                    check_tower($fixture, Source::Safetensors, BackendKind::Gpu, GPU_TOL);
                }
            }
            #[test]
            fn gpu_tower_from_mmproj_gguf() {
                if gpu_expected() {
                    check_tower($fixture, Source::Mmproj, BackendKind::Gpu, GPU_TOL);
                }
            }
        }
    };
}

tower_suite!(e2b, "tiny_gemma4_e2b");
tower_suite!(e4b, "tiny_gemma4_e4b");

#[test]
fn cpu_padded_clip_matches_transformers() {
    check_padded_clip(BackendKind::Cpu, CPU_TOL);
}

#[test]
fn gpu_padded_clip_matches_transformers() {
    if gpu_expected() {
        check_padded_clip(BackendKind::Gpu, GPU_TOL);
    }
}

/// Frame and token counts for many lengths vs transformers' extractor mask and both of the
/// processor's token formulas.
#[test]
fn soft_token_counts_match_the_processor() {
    let text = std::fs::read_to_string(fixture_dir("audio").join("token_counts.json")).unwrap();
    let counts: HashMap<String, HashMap<String, usize>> = serde_json::from_str(&text).unwrap();
    assert!(counts.len() >= 10);
    for (n, c) in &counts {
        let n: usize = n.parse().unwrap();
        assert_eq!(
            audio::num_frames(n),
            c["num_frames"],
            "frames for {n} samples"
        );
        assert_eq!(
            audio::valid_frames(n),
            c["valid_frames"],
            "valid frames for {n} samples"
        );
        assert_eq!(
            soft_token_count(n),
            c["soft_tokens"],
            "tokens for {n} samples"
        );
        assert_eq!(
            soft_token_count(n),
            c["soft_tokens_by_length"],
            "tokens for {n} samples"
        );
    }
    // transformers' feature extractor: 25 tokens per second, 750 for a full clip.
    assert_eq!(soft_token_count(16_000), 25);
    assert_eq!(soft_token_count(160_000), 250);
    assert_eq!(soft_token_count(CLIP_SAMPLES), 750);
}

#[test]
fn long_audio_is_split_into_30_second_clips() {
    let plan = AudioClips::plan(75 * 16_000 + 100);
    assert!(plan.was_split());
    let ranges: Vec<_> = plan.clips.iter().map(|c| c.samples.clone()).collect();
    assert_eq!(
        ranges,
        vec![0..480_000, 480_000..960_000, 960_000..1_200_100]
    );
    let tokens: Vec<_> = plan.clips.iter().map(|c| c.soft_tokens).collect();
    assert_eq!(tokens, vec![750, 750, 375]);
    assert_eq!(plan.total_soft_tokens(), 1875);
    assert_eq!(plan.dropped_tail_samples, 0);

    // A tail under one token's worth (160 samples = 10 ms) is dropped and reported.
    let plan = AudioClips::plan(CLIP_SAMPLES + 100);
    assert_eq!(plan.clips.len(), 1);
    assert!(!plan.was_split());
    assert_eq!(plan.dropped_tail_samples, 100);

    let one = AudioClips::plan(16_000);
    assert!(!one.was_split());
    assert_eq!(one.total_soft_tokens(), 25);
}

// ------------------------------------------------------------------------------------------------
// WAV decoding and resampling
// ------------------------------------------------------------------------------------------------

fn wav_bytes<S: hound::Sample + Copy>(spec: hound::WavSpec, samples: &[S]) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    buf.into_inner()
}

fn tone(t: f64) -> f64 {
    0.4 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
        + 0.2 * (2.0 * std::f64::consts::PI * 3000.0 * t + 0.3).sin()
}

/// 44.1 kHz stereo 16-bit: left = tone(t), right = tone(t) + a 12 kHz tone (above 16 kHz's
/// Nyquist rate). The mixdown is tone(t) + half the 12 kHz tone; after resampling to 16 kHz the
/// 12 kHz part must be filtered out (it would alias to 4 kHz) and the tone reproduced.
/// Measured: max error 1.2e-4 away from the edges (i16 quantisation alone is 1.5e-5); the
/// tolerance is 1e-3 (−60 dB of full scale).
#[test]
fn wav_44k1_stereo_i16_resamples_to_the_analytic_sine() {
    let rate = 44_100u32;
    let n = rate as usize; // 1 s
    let mut samples = Vec::with_capacity(2 * n);
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let hf = 0.3 * (2.0 * std::f64::consts::PI * 12_000.0 * t).sin();
        samples.push((tone(t) * 32767.0).round() as i16);
        samples.push(((tone(t) + hf) * 32767.0).round() as i16);
    }
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let audio = Audio::from_wav_bytes(&wav_bytes(spec, &samples)).expect("decodes");
    assert_eq!(audio.source_format(), (44_100, 2));
    let out = audio.samples();
    assert_eq!(out.len(), 16_000);
    // Skip 20 ms at each end, where the filter sees the signal switch on and off.
    let margin = 320;
    let mut max_err = 0.0f64;
    for (i, &s) in out.iter().enumerate().take(out.len() - margin).skip(margin) {
        let expected = tone(i as f64 / 16_000.0) * 32767.0 / 32768.0;
        max_err = max_err.max((s as f64 - expected).abs());
    }
    eprintln!("44.1 kHz stereo → 16 kHz: max abs error {max_err:.2e} (tolerance 1e-3)");
    assert!(max_err < 1e-3, "resampled signal off by {max_err}");
    // The 12 kHz tone would alias to 16 − 12 = 4 kHz: its amplitude there must be < 1e-5, i.e.
    // attenuated by more than 83 dB from 0.15. The projection spans 0.95 s, whole periods of
    // 440 Hz, 3 kHz and 4 kHz, so the tones themselves do not leak into it.
    let span = 15_200;
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (i, &s) in out.iter().enumerate().skip(400).take(span) {
        let phase = 2.0 * std::f64::consts::PI * 4000.0 * i as f64 / 16_000.0;
        re += s as f64 * phase.cos();
        im += s as f64 * phase.sin();
    }
    let alias = 2.0 * re.hypot(im) / span as f64;
    eprintln!("4 kHz alias amplitude {alias:.2e} (limit 1e-5)");
    assert!(alias < 1e-5, "aliasing: {alias}");
}

/// Raw float PCM at other rates (up- and downsampling, rates sharing small and large factors
/// with 16 kHz) lands on the 16 kHz grid with the same accuracy.
#[test]
fn pcm_at_many_rates_resamples_to_the_analytic_sine() {
    for rate in [8_000u32, 11_025, 22_050, 32_000, 48_000, 96_000] {
        let n = rate as usize / 2; // 0.5 s
        let wave: Vec<f32> = (0..n)
            .map(|i| tone(i as f64 / rate as f64) as f32)
            .collect();
        let audio = Audio::from_pcm_f32(&wave, rate, 1).unwrap();
        let out = audio.samples();
        let expected_len = (n as f64 * 16_000.0 / rate as f64).round() as usize;
        assert_eq!(out.len(), expected_len, "{rate} Hz");
        let margin = 320;
        let max_err = out[margin..out.len() - margin]
            .iter()
            .enumerate()
            .map(|(i, &s)| (s as f64 - tone((i + margin) as f64 / 16_000.0)).abs())
            .fold(0.0, f64::max);
        eprintln!("{rate} Hz → 16 kHz: max abs error {max_err:.2e} (tolerance 1e-3)");
        assert!(
            max_err < 1e-3,
            "{rate} Hz: resampled signal off by {max_err}"
        );
    }
}

/// 16 kHz mono 32-bit float passes through bit for bit; 24-bit integers scale by 2^-23.
#[test]
fn wav_16k_f32_and_24_bit_decode_exactly() {
    let n = 8000;
    let wave: Vec<f32> = (0..n).map(|i| tone(i as f64 / 16_000.0) as f32).collect();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let audio = Audio::from_wav_bytes(&wav_bytes(spec, &wave)).unwrap();
    assert_eq!(audio.samples(), wave.as_slice());

    let ints: Vec<i32> = wave
        .iter()
        .map(|&v| (v as f64 * 8_388_607.0).round() as i32)
        .collect();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let audio = Audio::from_wav_bytes(&wav_bytes(spec, &ints)).unwrap();
    for (&ours, &i) in audio.samples().iter().zip(&ints) {
        assert_eq!(ours, (i as f64 / 8_388_608.0) as f32);
    }

    // Raw PCM: interleaved stereo i16 averages the channels.
    let pcm: Vec<i16> = vec![1000, 3000, -2000, 0, 32767, -32768];
    let audio = Audio::from_pcm_i16(&pcm, 16_000, 2);
    // 3 frames are under one token's worth: too short.
    assert!(matches!(audio, Err(GemmaError::InvalidAudio(_))));
    let pcm: Vec<i16> = (0..400)
        .flat_map(|i| [i as i16 * 10, i as i16 * 30])
        .collect();
    let audio = Audio::from_pcm_i16(&pcm, 16_000, 2).unwrap();
    assert_eq!(audio.samples()[7], (70.0 / 32768.0 + 210.0 / 32768.0) / 2.0);
}

fn expect_invalid<T: std::fmt::Debug>(what: &str, result: gemmakit::Result<T>, needle: &str) {
    match result {
        Err(GemmaError::InvalidAudio(msg)) => {
            assert!(
                msg.contains(needle),
                "{what}: message `{msg}` lacks `{needle}`"
            )
        }
        other => panic!("{what}: expected InvalidAudio, got {other:?}"),
    }
}

#[test]
fn bad_audio_is_a_typed_error() {
    let mono16 = |bits: u16, format: hound::SampleFormat| hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: bits,
        sample_format: format,
    };
    expect_invalid("empty bytes", Audio::from_wav_bytes(&[]), "WAV");
    expect_invalid(
        "garbage",
        Audio::from_wav_bytes(b"this is not a wav file at all, sorry"),
        "WAV",
    );
    let empty = wav_bytes::<i16>(mono16(16, hound::SampleFormat::Int), &[]);
    expect_invalid("no samples", Audio::from_wav_bytes(&empty), "empty");
    let silent = wav_bytes(mono16(16, hound::SampleFormat::Int), &vec![0i16; 16_000]);
    expect_invalid("silent", Audio::from_wav_bytes(&silent), "silent");
    let eight_bit = wav_bytes(mono16(8, hound::SampleFormat::Int), &vec![10i8; 1000]);
    expect_invalid("8-bit", Audio::from_wav_bytes(&eight_bit), "8-bit");
    // A valid header whose data chunk is cut off halfway through.
    let full = wav_bytes(mono16(16, hound::SampleFormat::Int), &vec![1000i16; 4000]);
    let truncated = &full[..full.len() - 3001];
    expect_invalid("truncated", Audio::from_wav_bytes(truncated), "WAV");

    expect_invalid(
        "NaN",
        Audio::from_pcm_f32(&[0.1, f32::NAN, 0.2], 16_000, 1),
        "NaN",
    );
    expect_invalid("empty pcm", Audio::from_pcm_f32(&[], 16_000, 1), "empty");
    expect_invalid(
        "silent pcm",
        Audio::from_pcm_f32(&vec![1e-8; 2000], 16_000, 1),
        "silent",
    );
    expect_invalid(
        "odd frames",
        Audio::from_pcm_f32(&[0.1; 3], 16_000, 2),
        "frames",
    );
    expect_invalid(
        "zero channels",
        Audio::from_pcm_f32(&[0.1; 4], 16_000, 0),
        "channels",
    );
    expect_invalid("rate", Audio::from_pcm_f32(&[0.1; 4], 10, 1), "sample rate");
    // Longer than the limit, checked before any work (1 kHz keeps the buffer small).
    let too_long = vec![0.1f32; (audio::MAX_DURATION_SECS as usize + 1) * 1000];
    expect_invalid(
        "too long",
        Audio::from_pcm_f32(&too_long, 1000, 1),
        "longer",
    );
    expect_invalid(
        "too short",
        Audio::from_pcm_f32(&[0.5; 100], 16_000, 1),
        "short",
    );

    // The feature extractor and the tower check their inputs too.
    let fe = FeatureExtractor::default();
    expect_invalid(
        "clip too long",
        fe.extract(&vec![0.1; CLIP_SAMPLES + 1]),
        "30 s",
    );
    let tower = load_tower("tiny_gemma4_e2b", Source::Safetensors, BackendKind::Cpu);
    let wrong_bins = AudioFeatures {
        features: vec![0.0; 10 * 64],
        mask: vec![true; 10],
        num_frames: 10,
        num_mel_bins: 64,
    };
    expect_invalid(
        "mel bins",
        tower.encode(&wrong_bins, AttentionWindow::Transformers),
        "mel bins",
    );
    let wrong_len = AudioFeatures {
        features: vec![0.0; 5],
        mask: vec![true; 10],
        num_frames: 10,
        num_mel_bins: 128,
    };
    expect_invalid(
        "lengths",
        tower.encode(&wrong_len, AttentionWindow::Transformers),
        "lengths",
    );
}
