//! The text decoder's side of multimodal prompts vs transformers 5.24:
//! transformers' own projected soft tokens (`vision.soft_tokens`, `audio.soft_tokens`) are
//! scattered into the placeholder positions of `mm.input_ids` (60 image + 31 audio), and the
//! logits of every position and the 8 KV-cached greedy tokens must match `mm.*`.
//! This isolates the prompt layout from the towers (tested in vision_parity / audio_parity).
//! Tolerances: CPU 1e-4, wgpu (lavapipe) 1e-3, max-abs over every logit.

mod common;

use common::*;
use gemmakit::BackendKind;
use gemmakit::model::{GemmaModel, LogitsFor, SoftTokens};

const CPU_TOL: f32 = 1e-4;
const GPU_TOL: f32 = 1e-3;

struct MmPrompt {
    ids: Vec<u32>,
    positions: Vec<usize>,
    values: Vec<f32>,
}

fn token_id(fixture: &str, name: &str) -> u32 {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir(fixture).join("reference_meta.json")).unwrap(),
    )
    .unwrap();
    meta["token_ids"][name].as_u64().expect("token id") as u32
}

/// Image soft tokens fill the image placeholders in order, audio ones the audio placeholders.
fn mm_prompt(fixture: &str, reference: &Reference, hidden: usize) -> MmPrompt {
    let ids = reference.ids("mm.input_ids");
    let (image_id, audio_id) = (token_id(fixture, "image"), token_id(fixture, "audio"));
    let image = reference.f32("vision.soft_tokens");
    let audio = reference.f32("audio.soft_tokens");
    let (mut next_image, mut next_audio) = (image.chunks_exact(hidden), audio.chunks_exact(hidden));
    let (mut positions, mut values) = (Vec::new(), Vec::new());
    for (p, &id) in ids.iter().enumerate() {
        let row = if id == image_id {
            next_image
                .next()
                .expect("an image soft token per image placeholder")
        } else if id == audio_id {
            next_audio
                .next()
                .expect("an audio soft token per audio placeholder")
        } else {
            continue;
        };
        positions.push(p);
        values.extend_from_slice(row);
    }
    assert!(next_image.next().is_none() && next_audio.next().is_none());
    MmPrompt {
        ids,
        positions,
        values,
    }
}

fn soft(p: &MmPrompt) -> SoftTokens<'_> {
    SoftTokens {
        positions: &p.positions,
        values: &p.values,
    }
}

fn check(fixture: &str, backend: BackendKind, tol: f32) {
    let reference = Reference::load(fixture);
    let model: GemmaModel = load(fixture, backend);
    let prompt = mm_prompt(fixture, &reference, model.config().hidden_size);
    assert_eq!(prompt.positions.len(), 60 + 31);

    let mut cache = model.new_cache(prompt.ids.len());
    let logits = model
        .forward_with_soft_tokens(&mut cache, &prompt.ids, soft(&prompt), LogitsFor::All)
        .expect("forward");
    assert_close(
        "mm logits (all positions)",
        &logits,
        &reference.f32("mm.logits"),
        tol,
    );

    // KV-cached greedy: the prompt in two uneven chunks (soft positions re-based per chunk),
    // then one token per step.
    let expected = reference.ids("mm.gen_tokens");
    let expected_logits = reference.f32("mm.gen_step_logits");
    let mut cache = model.new_cache_with_slack(prompt.ids.len() + expected.len(), 0);
    let split = prompt.positions[40] + 1;
    let (first_pos, first_vals, rest_pos, rest_vals) = {
        let n = prompt.positions.iter().take_while(|&&p| p < split).count();
        let h = model.config().hidden_size;
        let rest: Vec<usize> = prompt.positions[n..].iter().map(|p| p - split).collect();
        (
            prompt.positions[..n].to_vec(),
            prompt.values[..n * h].to_vec(),
            rest,
            prompt.values[n * h..].to_vec(),
        )
    };
    model
        .forward_with_soft_tokens(
            &mut cache,
            &prompt.ids[..split],
            SoftTokens {
                positions: &first_pos,
                values: &first_vals,
            },
            LogitsFor::Last,
        )
        .expect("prefill, first chunk");
    let mut logits = model
        .forward_with_soft_tokens(
            &mut cache,
            &prompt.ids[split..],
            SoftTokens {
                positions: &rest_pos,
                values: &rest_vals,
            },
            LogitsFor::Last,
        )
        .expect("prefill, second chunk");
    let mut tokens = Vec::new();
    let mut all_logits = Vec::new();
    for _ in 0..expected.len() {
        let next = argmax(&logits);
        tokens.push(next);
        all_logits.extend_from_slice(&logits);
        if tokens.len() < expected.len() {
            logits = model
                .forward(&mut cache, &[next], LogitsFor::Last)
                .expect("decode");
        }
    }
    assert_eq!(tokens, expected, "greedy tokens differ from transformers");
    assert_close("mm greedy step logits", &all_logits, &expected_logits, tol);
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
fn e4b_gpu() {
    if gpu_expected() {
        check("tiny_gemma4_e4b", BackendKind::Gpu, GPU_TOL);
    }
}

#[test]
fn malformed_soft_tokens_are_typed_errors() {
    let model = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let h = model.config().hidden_size;
    let ids = [2u32, 500, 502, 502, 501];
    let values = vec![0.5f32; 2 * h];
    let cases: [(&[usize], &[f32]); 3] = [
        (&[2, 3], &values[..h]), // too few values
        (&[3, 2], &values),      // not ascending
        (&[2, 5], &values),      // past the end
    ];
    for (positions, values) in cases {
        let mut cache = model.new_cache(16);
        let err = model
            .forward_with_soft_tokens(
                &mut cache,
                &ids,
                SoftTokens { positions, values },
                LogitsFor::Last,
            )
            .expect_err("malformed soft tokens");
        assert!(
            matches!(err, gemmakit::GemmaError::MediaMismatch(_)),
            "{err:?}"
        );
    }
}

/// How much this random tiny model amplifies soft-token differences: ±5e-6 of uniform noise on
/// transformers' soft tokens (the size of f32 rounding differences between our towers and
/// torch's) must move the logits by more than 1e-4. This is what bounds the end-to-end
/// tolerance in multimodal_engine.rs; if the model ever stopped amplifying, that tolerance
/// should be tightened.
#[test]
fn soft_token_sensitivity() {
    let fixture = "tiny_gemma4_e2b";
    let reference = Reference::load(fixture);
    let model = load(fixture, BackendKind::Cpu);
    let prompt = mm_prompt(fixture, &reference, model.config().hidden_size);
    let run = |values: &[f32]| {
        let mut cache = model.new_cache(prompt.ids.len());
        model
            .forward_with_soft_tokens(
                &mut cache,
                &prompt.ids,
                SoftTokens {
                    positions: &prompt.positions,
                    values,
                },
                LogitsFor::All,
            )
            .expect("forward")
    };
    let base = run(&prompt.values);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let noisy: Vec<f32> = prompt
        .values
        .iter()
        .map(|v| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            v + u * 5e-6
        })
        .collect();
    let change = max_abs_diff(&base, &run(&noisy));
    eprintln!("soft tokens ±5e-6 → logits change {change:.3e}");
    assert!(change > 1e-4, "logit change {change}");
}
