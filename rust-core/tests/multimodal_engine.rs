//! Media in, logits out, through the public API, vs transformers 5.24 (fixture `mm.*`): the
//! fixture's raw image (uint8 RGB) and waveform go through our preprocessing, both towers and
//! the prompt layout; the 8 KV-cached greedy tokens must be identical and the logits of every
//! position of `mm.input_ids` within 1e-3.
//!
//! Why 1e-3 and not 1e-4: each stage is checked at 1e-4 on its own (vision_parity,
//! audio_parity: soft tokens within ~5e-6 of transformers; multimodal_prompt: the decoder fed
//! transformers' own soft tokens, 5e-5), but this random tiny model amplifies soft-token
//! differences about a hundredfold — `soft_token_sensitivity` in multimodal_prompt.rs shows
//! ±5e-6 of noise on transformers' soft tokens moving the logits by more than 1e-4 — so the
//! end-to-end bound is the f32 rounding of the towers times that gain (measured 2.5e-4 E2B,
//! 4.0e-4 E4B on CPU). Also: bad media and
//! mismatched placeholders are typed errors, and a conversation lays media out as
//! transformers' processor does (boi + 60 image placeholders + eoi, boa + 31 audio + eoa).

mod common;

use common::*;
use gemmakit::chat::Part;
use gemmakit::engine::media::MediaEncoder;
use gemmakit::eval::all_logits_with_media;
use gemmakit::media::layout::{self, PlaceholderIds};
use gemmakit::media::{AudioInput, ImageInput, Media};
use gemmakit::model::audio::AttentionWindow;
use gemmakit::model::{LogitsFor, SoftTokens};
use gemmakit::source::ModelSource;
use gemmakit::{BackendKind, ComputeDevice, GemmaError};

const CPU_TOL: f32 = 1e-3;
const GPU_TOL: f32 = 1e-3;

fn fixture_media(reference: &Reference) -> Vec<Media> {
    let shape = reference.shape("vision.image_uint8");
    let pixels = reference.u8("vision.image_uint8");
    let image = ImageInput::from_rgb8(shape[1] as u32, shape[0] as u32, pixels)
        .unwrap()
        .with_max_soft_tokens(70)
        .unwrap();
    let audio = AudioInput::from_pcm_f32(&reference.f32("audio.waveform"), 16_000, 1).unwrap();
    vec![Media::Image(image), Media::Audio(audio)]
}

fn check(fixture: &str, backend: BackendKind, tol: f32) {
    let reference = Reference::load(fixture);
    let model = load(fixture, backend);
    let dir = fixture_dir(fixture);
    let media = fixture_media(&reference);
    let ids = reference.ids("mm.input_ids");

    let logits = all_logits_with_media(
        &model,
        &ModelSource::open(&dir).unwrap(),
        None,
        AttentionWindow::Transformers,
        &ids,
        &media,
    )
    .expect("image + audio prompt");
    assert_close(
        "mm logits from raw media",
        &logits,
        &reference.f32("mm.logits"),
        tol,
    );

    // Greedy with the KV cache, soft tokens from our towers.
    let placeholders = gemmakit::eval::placeholder_ids(&dir).unwrap();
    let encoder = MediaEncoder::for_source(
        &ModelSource::open(&dir).unwrap(),
        None,
        model.device().clone(),
        AttentionWindow::Transformers,
    )
    .unwrap();
    let counts: Vec<_> = media
        .iter()
        .map(|m| encoder.segment_counts(m).unwrap())
        .collect();
    assert_eq!(
        counts,
        vec![vec![60], vec![31]],
        "soft-token counts vs transformers' processor"
    );
    let slots = layout::assign_slots(&ids, &placeholders, &media, &counts);
    let (positions, values) = encoder
        .soft_tokens(&media, &slots, 0, model.config().hidden_size)
        .unwrap();
    let expected = reference.ids("mm.gen_tokens");
    let mut cache = model.new_cache_with_slack(ids.len() + expected.len(), 0);
    let mut step = model
        .forward_with_soft_tokens(
            &mut cache,
            &ids,
            SoftTokens {
                positions: &positions,
                values: &values,
            },
            LogitsFor::Last,
        )
        .unwrap();
    let mut tokens = Vec::new();
    while tokens.len() < expected.len() {
        let next = argmax(&step);
        tokens.push(next);
        step = model.forward(&mut cache, &[next], LogitsFor::Last).unwrap();
    }
    assert_eq!(tokens, expected, "greedy tokens differ from transformers");
}

#[test]
fn e2b_cpu() {
    check("tiny_gemma4_e2b", BackendKind::Cpu, CPU_TOL);
}

#[test]
fn e4b_cpu() {
    check("tiny_gemma4_e4b", BackendKind::Cpu, CPU_TOL);
}

#[test]
fn e2b_gpu() {
    if gpu_expected() {
        check("tiny_gemma4_e2b", BackendKind::Gpu, GPU_TOL);
    }
}

#[test]
fn placeholder_mismatches_are_typed_errors() {
    let fixture = "tiny_gemma4_e2b";
    let reference = Reference::load(fixture);
    let model = load(fixture, BackendKind::Cpu);
    let dir = fixture_dir(fixture);
    let media = fixture_media(&reference);
    let ids = reference.ids("mm.input_ids");
    let source = ModelSource::open(&dir).unwrap();
    let run = |ids: &[u32], media: &[Media]| {
        all_logits_with_media(
            &model,
            &source,
            None,
            AttentionWindow::Transformers,
            ids,
            media,
        )
        .expect_err("mismatch")
    };
    // More placeholders than media: the audio is missing.
    let err = run(&ids, &media[..1]);
    assert!(matches!(err, GemmaError::MediaMismatch(_)), "{err:?}");
    // One image placeholder too few.
    let image_id = gemmakit::eval::placeholder_ids(&dir).unwrap().image;
    let cut = ids.iter().position(|&id| id == image_id).unwrap();
    let mut short = ids.clone();
    short.remove(cut);
    let err = run(&short, &media);
    assert!(matches!(err, GemmaError::MediaMismatch(_)), "{err:?}");
}

#[test]
fn bad_media_are_typed_errors() {
    assert!(matches!(
        ImageInput::from_bytes(b"not an image at all"),
        Err(GemmaError::InvalidImage(_))
    ));
    assert!(matches!(
        ImageInput::from_bytes(&[]),
        Err(GemmaError::InvalidImage(_))
    ));
    assert!(matches!(
        ImageInput::from_rgb8(0, 10, vec![]),
        Err(GemmaError::InvalidImage(_))
    ));
    assert!(matches!(
        ImageInput::from_rgb8(4, 4, vec![0; 10]),
        Err(GemmaError::InvalidImage(_))
    ));
    assert!(matches!(
        AudioInput::from_pcm_f32(&[], 16_000, 1),
        Err(GemmaError::InvalidAudio(_))
    ));
    assert!(matches!(
        AudioInput::from_pcm_f32(&vec![0.0; 16_000], 16_000, 1),
        Err(GemmaError::InvalidAudio(_))
    ));
    assert!(matches!(
        AudioInput::from_wav_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk"),
        Err(GemmaError::InvalidAudio(_))
    ));
}

/// A conversation on the tiny model (with a 512-token tokenizer whose special tokens sit at
/// the fixture's ids) renders Google's Gemma 4 template, expands the markers as transformers'
/// processor does, and answers; a second turn with the same image reuses the cache.
#[test]
fn conversation_lays_out_media_like_transformers() {
    let fixture = "tiny_gemma4_e2b";
    let tmp = std::env::temp_dir().join(format!("gemmakit-mm-conv-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_dir(fixture).join(f), tmp.join(f)).unwrap();
    }
    std::fs::copy(
        fixture_dir("tiny_gemma4_tokenizer").join("tokenizer.json"),
        tmp.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture_dir("templates").join("gemma4.jinja"),
        tmp.join("chat_template.jinja"),
    )
    .unwrap();
    let engine = gemmakit::engine::Engine::load(
        &tmp,
        gemmakit::engine::EngineOptions {
            backend: gemmakit::engine::BackendChoice::Cpu,
            context_len: 512,
            ..Default::default()
        },
    )
    .unwrap();
    let reference = Reference::load(fixture);
    let media = fixture_media(&reference);
    let chat = engine.conversation();
    let options = gemmakit::generate::GenerateOptions {
        max_tokens: 4,
        ..Default::default()
    };
    let mut parts: Vec<Part> = media.iter().cloned().map(Part::Media).collect();
    parts.push(Part::Text("What is this?".into()));
    let out = chat
        .send_parts(parts, &options, &mut |_| gemmakit::generate::Flow::Continue)
        .expect("multimodal turn");
    assert_eq!(out.stats.generated_tokens.min(4), out.tokens.len().min(4));

    let tok = engine.tokenizer();
    let ids = tok
        .encode(
            &engine
                .chat_template()
                .unwrap()
                .render(
                    &chat.messages()[..1],
                    &gemmakit::chat::RenderOptions {
                        add_generation_prompt: true,
                        ..Default::default()
                    },
                )
                .unwrap(),
            true,
        )
        .unwrap();
    // The template writes one marker per media part, in order.
    let placeholders = PlaceholderIds::from_tokenizer(tok).unwrap();
    let markers: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|&id| placeholders.kind_of(id).is_some())
        .collect();
    assert_eq!(markers, vec![placeholders.image, placeholders.audio]);
    // transformers' processor expands them to boi + 60 × image + eoi and boa + 31 × audio + eoa
    // (fixture mm.input_ids, processor counts in reference_meta.json).
    let mm = reference.ids("mm.input_ids");
    let run_of = |id: u32| mm.iter().filter(|&&x| x == id).count();
    assert_eq!(
        (run_of(placeholders.image), run_of(placeholders.audio)),
        (60, 31)
    );
    let expanded = ids.len() - 2 + (60 + 2) + (31 + 2);
    assert_eq!(out.stats.prompt_tokens, expanded);

    // A second turn keeps the cached image and audio positions: only the new turn is prefilled.
    let second = chat
        .send("And now?", &options, &mut |_| {
            gemmakit::generate::Flow::Continue
        })
        .expect("follow-up turn");
    // Re-rendering rewrites the end of the first turn (the generation prompt's empty thought
    // channel is not part of the stored answer), so the cache rolls back a few tokens: never
    // into the media, which sit well before that.
    let reused = second.stats.prompt_tokens - second.stats.prefilled_tokens;
    assert!(
        reused + 40 >= expanded && reused > 60 + 31 + 4,
        "reused {reused} of the first prompt's {expanded}: {:?}",
        second.stats
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The GGUF route: llama.cpp's converter wrote the text model and the `mmproj` file with both
/// towers; the engine finds `mmproj-f32.gguf` next to the model by itself.
#[test]
fn gguf_with_mmproj_matches_transformers() {
    let fixture = "tiny_gemma4_e2b";
    let reference = Reference::load(fixture);
    let path = fixture_dir(fixture).join("model-f32.gguf");
    let source = ModelSource::open(&path).unwrap();
    let model = source
        .load_model(ComputeDevice::open(BackendKind::Cpu).unwrap())
        .unwrap();
    let media = fixture_media(&reference);
    let logits = all_logits_with_media(
        &model,
        &source,
        None,
        AttentionWindow::Transformers,
        &reference.ids("mm.input_ids"),
        &media,
    )
    .expect("GGUF + mmproj");
    assert_close(
        "mm logits, GGUF + mmproj",
        &logits,
        &reference.f32("mm.logits"),
        CPU_TOL,
    );

    // Through a conversation: the file's template only knows string content, so the markers
    // are passed inline.
    let engine = gemmakit::engine::Engine::load(
        &path,
        gemmakit::engine::EngineOptions {
            backend: gemmakit::engine::BackendChoice::Cpu,
            context_len: 512,
            ..Default::default()
        },
    )
    .unwrap();
    let source = engine.media_support().expect("towers found");
    assert!(source.contains("mmproj-f32.gguf"), "{source}");
    let mut parts: Vec<Part> = media.into_iter().map(Part::Media).collect();
    parts.push(Part::Text("Describe.".into()));
    let out = engine
        .conversation()
        .send_parts(
            parts,
            &gemmakit::generate::GenerateOptions {
                max_tokens: 2,
                ..Default::default()
            },
            &mut |_| gemmakit::generate::Flow::Continue,
        )
        .expect("multimodal turn on the GGUF");
    assert!(out.stats.prompt_tokens > 60 + 31 + 4);

    // Without towers (no mmproj next to the file): a typed error naming the reason.
    let tmp = std::env::temp_dir().join(format!("gemmakit-no-mmproj-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(&path, tmp.join("model.gguf")).unwrap();
    let engine = gemmakit::engine::Engine::load(
        &tmp.join("model.gguf"),
        gemmakit::engine::EngineOptions {
            backend: gemmakit::engine::BackendChoice::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let err = engine
        .conversation()
        .send_parts(
            fixture_media(&reference)
                .into_iter()
                .map(Part::Media)
                .collect(),
            &Default::default(),
            &mut |_| gemmakit::generate::Flow::Continue,
        )
        .expect_err("no towers");
    assert!(matches!(err, GemmaError::Unsupported(_)), "{err:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
