//! Gemma 4's MTP assistant (drafter): each draft step against transformers'
//! `Gemma4AssistantForCausalLM` (centroid-masked and dense logits, the normed state, the chosen
//! centroids, `h_next`, the drafted tokens), loaded from the checkpoint and from our converted
//! GGUF; the engine's MTP drafting token-identical to plain decoding; an assistant of another
//! model and hostile assistant files are typed errors.
//!
//! Fixture: tests/fixtures/tiny_gemma4_e2b_assistant, written by
//! scripts/reference/tiny_gemma4_assistant_ref.py for the tiny E2B target.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gemmakit::convert::{OutType, QuantPlan, convert_hf};
use gemmakit::engine::{BackendChoice, ChatFormat, Engine, EngineOptions};
use gemmakit::generate::{Draft, Flow, GenerateOptions, GenerationOutput};
use gemmakit::model::{AssistantConfig, AssistantModel, GemmaModel, LogitsFor, SoftTokens};
use gemmakit::sampling::SamplingOptions;
use gemmakit::source::load_assistant;
use gemmakit::weights::safetensors as st;
use gemmakit::{BackendKind, ComputeDevice, GemmaError};

const TOL: f32 = 1e-4;
const ASSISTANT: &str = "tiny_gemma4_e2b_assistant";

fn assistant_dir() -> PathBuf {
    fixture_dir(ASSISTANT)
}

fn cpu() -> ComputeDevice {
    ComputeDevice::open(BackendKind::Cpu).expect("CPU backend")
}

/// A fresh directory per call (tests run in parallel).
fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gemmakit-mtp-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The assistant converted by `gemmakit convert` (f32), centroid head kept.
fn converted_gguf() -> PathBuf {
    let out = scratch("gguf").join("assistant-f32.gguf");
    let summary = convert_hf(&assistant_dir(), &QuantPlan::uniform(OutType::F32), &out)
        .expect("the assistant converts");
    // 50 checkpoint tensors + the generated rope_freqs (llama.cpp's 49 + the centroid head's 2).
    assert_eq!(summary.tensors, 51, "{summary:?}");
    out
}

/// Which head the reference logits of a run come from.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Head {
    Masked,
    Dense,
}

/// Every draft round of the fixture: the target's hidden state, then each step's outputs
/// against transformers; the greedy drafts exact.
fn check_rounds(what: &str, target: &GemmaModel, assistant: &AssistantModel, head: Head) {
    let reference = Reference::load(ASSISTANT);
    let mut worst = [0f32; 4];
    let mut r = 0;
    while reference.has(&format!("round.{r}.ids")) {
        let ids = reference.ids(&format!("round.{r}.ids"));
        let p = ids.len() - 1;
        let mut cache = target.new_cache(64);
        let (_, hidden) = target
            .forward_with_hidden(&mut cache, &ids[..p], SoftTokens::NONE, LogitsFor::Last)
            .unwrap();
        assert_close(
            &format!("{what} round {r}: target hidden"),
            &hidden,
            &reference.f32(&format!("round.{r}.target_hidden")),
            TOL,
        );
        let expected_drafts = reference.ids(&format!(
            "round.{r}.{}",
            if head == Head::Masked {
                "drafts"
            } else {
                "dense_drafts"
            }
        ));
        let mut h = hidden.clone();
        for (s, &expected) in expected_drafts.iter().enumerate() {
            let key = |k: &str| format!("round.{r}.step.{s}.{k}");
            // transformers' steps are fed the masked head's drafts (also for the dense logits).
            let token = reference.ids(&key("token"))[0];
            let step = assistant.step(target, &cache, token, &h, p).unwrap();
            let normed = reference.f32(&key("normed"));
            let dense = reference.f32(&key("dense_logits"));
            let logits_ref = match head {
                Head::Masked => reference.f32(&key("masked_logits")),
                Head::Dense => dense.clone(),
            };
            let errs = [
                max_abs_diff(&step.normed, &normed),
                max_abs_diff(&step.logits, &logits_ref),
                max_abs_diff(&assistant.dense_logits(&step.normed).unwrap(), &dense),
                max_abs_diff(&step.h_next, &reference.f32(&key("h_next"))),
            ];
            for (w, e) in worst.iter_mut().zip(errs) {
                *w = w.max(e);
            }
            assert!(
                errs.iter().all(|&e| e <= TOL),
                "{what} round {r} step {s}: errors {errs:?}"
            );
            if head == Head::Masked {
                let centroids: Vec<usize> = reference
                    .ids(&key("centroids"))
                    .into_iter()
                    .map(|c| c as usize)
                    .collect();
                assert_eq!(
                    assistant.top_centroids(&step.normed).unwrap(),
                    Some(centroids),
                    "{what} round {r} step {s}: centroids"
                );
            }
            assert_eq!(
                argmax(&step.logits),
                expected,
                "{what} round {r} step {s}: draft"
            );
            h = step.h_next;
        }
        if head == Head::Masked {
            // The greedy loop itself gives the same drafts.
            let drafts = assistant
                .draft(target, &cache, ids[p], &hidden, p, expected_drafts.len())
                .unwrap();
            assert_eq!(drafts, expected_drafts, "{what} round {r}: drafts");
        }
        r += 1;
    }
    assert!(r >= 3, "the fixture has {r} rounds");
    eprintln!(
        "{what}: max abs errors over {r} rounds: normed {:.2e}, logits {:.2e}, dense {:.2e}, h_next {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

#[test]
fn assistant_steps_match_transformers_from_the_checkpoint() {
    let target = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let assistant = load_assistant(&assistant_dir(), target.config(), cpu()).unwrap();
    assert!(assistant.has_centroid_head());
    check_rounds("safetensors", &target, &assistant, Head::Masked);
}

#[test]
fn assistant_steps_match_transformers_from_the_converted_gguf() {
    let device = cpu();
    let target = gemmakit::source::ModelSource::open(&tiny_gguf())
        .and_then(|s| s.load_model(device.clone()))
        .unwrap();
    let gguf = converted_gguf();
    let assistant = load_assistant(&gguf, target.config(), device).unwrap();
    assert!(
        assistant.has_centroid_head(),
        "the converter keeps the centroid head"
    );
    check_rounds("converted GGUF", &target, &assistant, Head::Masked);
}

/// Without the centroid head (llama.cpp's GGUFs drop it) the dense head drafts, against
/// transformers' dense logits.
#[test]
fn the_dense_head_matches_transformers() {
    let target = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let mut config = AssistantConfig::from_file(&assistant_dir().join("config.json")).unwrap();
    config.centroids = None;
    let store = st::open(
        &st::shard_paths(&assistant_dir()).unwrap(),
        &gemmakit::model::names::ASSISTANT_PREFIXES,
    )
    .unwrap();
    let assistant = AssistantModel::from_store(config, store, target.config(), cpu()).unwrap();
    check_rounds("dense head", &target, &assistant, Head::Dense);
}

fn engine(path: &Path) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len: 256,
            chat_format: ChatFormat::PlainText,
            ..EngineOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(engine: &Engine, prompt: &[u32], options: &GenerateOptions) -> GenerationOutput {
    engine
        .generate_from_tokens(prompt, options, &mut |_| Flow::Continue)
        .unwrap()
}

/// Every output token is still the target sampler's draw: MTP drafting gives the tokens of
/// plain decoding, greedy and seeded sampling, the assistant from its checkpoint and from the
/// converted GGUF (the engine needs the target GGUF's tokenizer).
#[test]
fn mtp_drafting_equals_plain_decoding() {
    let gguf = converted_gguf();
    for (target, assistant) in [(tiny_gguf(), assistant_dir()), (tiny_gguf(), gguf)] {
        let engine = engine(&target);
        let mut rounds = 0;
        for (i, prompt) in [
            vec![2u32, 17, 301, 45],
            vec![2, 300, 350, 420, 300, 350, 420, 300],
        ]
        .iter()
        .enumerate()
        {
            for sampling in [
                SamplingOptions::greedy(),
                SamplingOptions {
                    temperature: 0.8,
                    top_k: 8,
                    seed: Some(7 + i as u64),
                    ..SamplingOptions::default()
                },
            ] {
                let plain = GenerateOptions {
                    sampling,
                    max_tokens: 40,
                    ..GenerateOptions::default()
                };
                let drafted = GenerateOptions {
                    draft: Draft::Mtp(assistant.clone()),
                    ..plain.clone()
                };
                let a = run(&engine, prompt, &plain);
                let b = run(&engine, prompt, &drafted);
                assert_eq!(
                    b.tokens,
                    a.tokens,
                    "{}: MTP changed the tokens",
                    assistant.display()
                );
                assert_eq!(b.stats.stop_reason, a.stats.stop_reason);
                let s = &b.stats;
                assert!(
                    s.accepted <= s.drafted && s.rounds <= s.drafted && s.rounds > 0,
                    "{s:?}"
                );
                rounds += s.rounds;
            }
        }
        assert!(rounds > 0);
    }
}

/// An assistant made for another model is a typed error at load, through the engine too.
#[test]
fn an_assistant_of_another_model_is_a_draft_model_mismatch() {
    // The tiny E4B target has 2 KV heads; the assistant reads 1.
    let e4b = load("tiny_gemma4_e4b", BackendKind::Cpu);
    let err = load_assistant(&assistant_dir(), e4b.config(), cpu()).err();
    assert!(
        matches!(&err, Some(GemmaError::DraftModelMismatch { what, .. }) if what.contains("KV head")),
        "{err:?}"
    );
    let e2b = load("tiny_gemma4_e2b", BackendKind::Cpu);
    for (what, change) in [
        ("backbone hidden size", 0usize),
        ("vocabulary size", 1),
        ("head size", 2),
    ] {
        let mut config = e2b.config().clone();
        match change {
            0 => config.hidden_size = 128,
            1 => config.vocab_size = 1024,
            _ => config.layers.iter_mut().for_each(|l| l.head_dim *= 2),
        }
        let err = load_assistant(&assistant_dir(), &config, cpu()).err();
        assert!(
            matches!(&err, Some(GemmaError::DraftModelMismatch { what: w, .. }) if w.contains(what)),
            "{what}: {err:?}"
        );
    }
    let engine = engine(&fixture_dir("tiny_gemma4_e4b").join("model-f32.gguf"));
    let err = engine
        .generate_from_tokens(
            &[2, 30, 31],
            &GenerateOptions {
                draft: Draft::Mtp(assistant_dir()),
                ..GenerateOptions::default()
            },
            &mut |_| Flow::Continue,
        )
        .unwrap_err();
    assert!(
        matches!(err, GemmaError::DraftModelMismatch { .. }),
        "{err:?}"
    );
}

/// A copy of the assistant checkpoint whose `masked_embedding.token_ordering` is `ordering`.
fn with_ordering(ordering: &[i64]) -> PathBuf {
    let dir = scratch("hostile");
    std::fs::copy(assistant_dir().join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(assistant_dir().join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let data: Vec<u8> = ordering.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views = Vec::new();
    for (name, view) in file.tensors() {
        if name == "masked_embedding.token_ordering" {
            let shape = vec![ordering.len()];
            views.push((
                name,
                safetensors::tensor::TensorView::new(view.dtype(), shape, &data).unwrap(),
            ));
        } else {
            views.push((name, view));
        }
    }
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn hostile_assistant_files_are_typed_errors() {
    let target = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let c = target.config();
    // Missing file or directory.
    let err = load_assistant(Path::new("/nonexistent/assistant.gguf"), c, cpu()).err();
    assert!(matches!(err, Some(GemmaError::Io { .. })), "{err:?}");
    // Orderings that are not a permutation of the vocabulary.
    let identity: Vec<i64> = (0..512).collect();
    let mut twice = identity.clone();
    twice[7] = 3;
    let mut outside = identity.clone();
    outside[9] = 512;
    let mut negative = identity.clone();
    negative[0] = -1;
    for bad in [twice, outside, negative, identity[..256].to_vec()] {
        let err = load_assistant(&with_ordering(&bad), c, cpu()).err();
        assert!(
            matches!(
                err,
                Some(GemmaError::InvalidConfig(_) | GemmaError::ShapeMismatch { .. })
            ),
            "{err:?}"
        );
    }
    assert!(load_assistant(&with_ordering(&identity), c, cpu()).is_ok());
    // A truncated GGUF, and a target GGUF where an assistant is expected.
    let gguf = converted_gguf();
    let bytes = std::fs::read(&gguf).unwrap();
    for cut in [16, bytes.len() / 3, bytes.len() - 8] {
        let path = gguf.with_file_name(format!("cut-{cut}.gguf"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_assistant(&path, c, cpu()).err();
        assert!(
            matches!(
                err,
                Some(GemmaError::InvalidWeightFile { .. } | GemmaError::InvalidArgument(_))
            ),
            "cut at {cut}: {err:?}"
        );
    }
    let err = load_assistant(&tiny_gguf(), c, cpu()).err();
    assert!(
        matches!(err, Some(GemmaError::UnknownArchitecture(_))),
        "{err:?}"
    );
    // The target's checkpoint where an assistant checkpoint is expected.
    let err = load_assistant(&fixture_dir("tiny_gemma4_e2b"), c, cpu()).err();
    assert!(
        matches!(err, Some(GemmaError::UnknownArchitecture(_))),
        "{err:?}"
    );
}

/// Multi-turn: each turn's prompt prefills over a cache the MTP rounds rolled back, and the
/// assistant reads the earlier turns through it; the tokens stay plain decoding's (also after
/// a fork, and with a stop string).
#[test]
fn mtp_keeps_multi_turn_conversations_and_stop_strings_identical() {
    let engine = Engine::load(
        &tiny_gguf(),
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len: 512,
            chat_format: ChatFormat::Auto,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let greedy = GenerateOptions {
        max_tokens: 24,
        ..GenerateOptions::default()
    };
    let with_draft = GenerateOptions {
        draft: Draft::Mtp(assistant_dir()),
        ..greedy.clone()
    };
    let (plain, drafted) = (engine.conversation(), engine.conversation());
    for text in ["one two three", "four five", "and six"] {
        let a = plain.send(text, &greedy, &mut |_| Flow::Continue).unwrap();
        let b = drafted
            .send(text, &with_draft, &mut |_| Flow::Continue)
            .unwrap();
        assert_eq!(a.tokens, b.tokens, "turn `{text}`");
        assert_eq!(a.stats.prefilled_tokens, b.stats.prefilled_tokens);
        assert!(b.stats.rounds > 0, "{:?}", b.stats);
    }
    let fork = drafted.fork();
    let a = fork
        .send("last", &with_draft, &mut |_| Flow::Continue)
        .unwrap();
    let b = plain
        .send("last", &greedy, &mut |_| Flow::Continue)
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
    // A stop string inside the answer stops both at the same token.
    let prompt = [2u32, 17, 301, 45];
    let full = run(&engine, &prompt, &greedy);
    let word: String = full.text.chars().skip(6).take(2).collect();
    if !word.trim().is_empty() {
        let stopped = GenerateOptions {
            stop_strings: vec![word],
            ..greedy.clone()
        };
        let a = run(&engine, &prompt, &stopped);
        let b = run(
            &engine,
            &prompt,
            &GenerateOptions {
                draft: Draft::Mtp(assistant_dir()),
                ..stopped
            },
        );
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.text, b.text);
        assert_eq!(a.stats.stop_reason, b.stats.stop_reason);
    }
}

/// The assistant's weights count against the memory budget: a budget that fits the model but
/// not the model and its assistant refuses the draft before it loads (naming both numbers),
/// one that fits both drafts.
#[test]
fn the_assistant_is_checked_against_the_memory_budget() {
    let target = tiny_gguf();
    let load = |budget: u64| {
        Engine::load(
            &target,
            EngineOptions {
                backend: BackendChoice::Cpu,
                context_len: 256,
                chat_format: ChatFormat::PlainText,
                memory_budget: Some(budget),
                ..EngineOptions::default()
            },
        )
        .unwrap()
    };
    let estimate = engine(&target).info().estimated_memory_bytes;
    let shards: u64 = st::shard_paths(&assistant_dir())
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let options = GenerateOptions {
        draft: Draft::Mtp(assistant_dir()),
        max_tokens: 4,
        ..GenerateOptions::default()
    };
    let short = load(estimate + shards - 1);
    let err = short
        .generate_from_tokens(&[2, 17, 301], &options, &mut |_| Flow::Continue)
        .unwrap_err();
    assert!(
        matches!(err, GemmaError::MemoryBudgetExceeded { needed, budget } if needed == shards && budget == shards - 1),
        "{err:?}"
    );
    let enough = load(estimate + shards);
    let out = run(&enough, &[2, 17, 301], &options);
    assert!(out.stats.rounds > 0, "{:?}", out.stats);
}
