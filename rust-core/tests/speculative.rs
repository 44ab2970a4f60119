//! Speculative decoding: the verify pass against transformers, exact rollback of rejected
//! drafts, and prompt lookup's losslessness (greedy token for token, sampling in distribution)
//! through the engine, with stop strings, constraints and multi-turn KV reuse.

mod common;

use common::*;
use gemmakit::BackendKind;
use gemmakit::engine::{BackendChoice, ChatFormat, Engine, EngineOptions};
use gemmakit::generate::{Constraint, Draft, Flow, GenerateOptions, GenerationOutput};
use gemmakit::model::LogitsFor;
use gemmakit::sampling::SamplingOptions;

const CPU_TOL: f32 = 1e-4;

/// One pass over 1 + k prompt tokens gives transformers' logits at each of those positions;
/// drafts rejected after the first token leave a cache that continues exactly like a fresh
/// one (transformers' logits again, and a cache that never saw the drafts), across the
/// fixture's sliding window of 8 (the rings wrap) and its KV-shared layers.
fn check_verify_and_rollback(fixture: &str) {
    let reference = Reference::load(fixture);
    let model = load(fixture, BackendKind::Cpu);
    let prompt = reference.ids("long.input_ids");
    let expected = reference.f32("long.logits");
    let vocab = model.config().vocab_size;
    let rows = |from: usize, n: usize| &expected[from * vocab..(from + n) * vocab];
    for p in [3usize, 11, 25] {
        for k in 1..=7 {
            let mut cache = model.new_cache(prompt.len());
            model
                .forward(&mut cache, &prompt[..p], LogitsFor::Last)
                .unwrap();
            let logits = model.verify(&mut cache, &prompt[p..p + 1 + k]).unwrap();
            assert_close(
                &format!("{fixture} verify at {p}, k = {k}"),
                &logits,
                rows(p, 1 + k),
                CPU_TOL,
            );
        }
        // Forced rejection: the token at p, then 5 wrong drafts, all rejected.
        let mut drafted = model.new_cache(prompt.len());
        model
            .forward(&mut drafted, &prompt[..p], LogitsFor::Last)
            .unwrap();
        let mut fed = vec![prompt[p]];
        fed.extend(prompt[p + 1..p + 6].iter().map(|t| (t + 1) % vocab as u32));
        model.verify(&mut drafted, &fed).unwrap();
        assert!(drafted.truncate(p + 1), "rolls back 5 drafts");
        assert_eq!(drafted.len(), p + 1);
        let mut fresh = model.new_cache(prompt.len());
        model
            .forward(&mut fresh, &prompt[..p], LogitsFor::Last)
            .unwrap();
        model
            .forward(&mut fresh, &prompt[p..p + 1], LogitsFor::Last)
            .unwrap();
        // Fed one by one, so each step's keys go through the decode path too.
        let (mut after_rollback, mut after_fresh) = (Vec::new(), Vec::new());
        for &t in &prompt[p + 1..p + 11] {
            after_rollback.extend(model.forward(&mut drafted, &[t], LogitsFor::Last).unwrap());
            after_fresh.extend(model.forward(&mut fresh, &[t], LogitsFor::Last).unwrap());
        }
        assert_close(
            &format!("{fixture} after rollback at {p} vs transformers"),
            &after_rollback,
            rows(p + 1, 10),
            CPU_TOL,
        );
        assert_close(
            &format!("{fixture} after rollback at {p} vs a fresh cache"),
            &after_rollback,
            &after_fresh,
            1e-5,
        );
    }
}

#[test]
fn verify_pass_matches_transformers_and_rollback_is_exact_e2b() {
    check_verify_and_rollback("tiny_gemma4_e2b");
}

#[test]
fn verify_pass_matches_transformers_and_rollback_is_exact_e4b() {
    check_verify_and_rollback("tiny_gemma4_e4b");
}

fn engine(path: &std::path::Path, format: ChatFormat) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len: 1024,
            chat_format: format,
            ..EngineOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ngram(max_tokens: usize, adaptive: bool) -> Draft {
    Draft::Ngram {
        ngram: 3,
        max_tokens,
        adaptive,
    }
}

fn run(engine: &Engine, prompt: &[u32], options: &GenerateOptions) -> GenerationOutput {
    engine
        .generate_from_tokens(prompt, options, &mut |_| Flow::Continue)
        .unwrap()
}

/// Three ordinary tokens of the tiny vocabulary.
const ALPHABET: [u32; 3] = [300, 350, 420];

/// A prompt over [`ALPHABET`] that repeats itself, so prompt lookup always has something to
/// propose.
fn repetitive_prompt(repeats: usize) -> Vec<u32> {
    let [a, b, c] = ALPHABET;
    let phrase = [a, b, c, a, c, b, b, a, c];
    let mut prompt = vec![2];
    for _ in 0..repeats {
        prompt.extend(&phrase);
    }
    prompt
}

/// Sampling options that keep a random tiny model on [`ALPHABET`] (a +30 bias), where its
/// output soon repeats and prompt lookup's drafts are taken as well as rejected.
fn on_alphabet(sampling: SamplingOptions) -> SamplingOptions {
    SamplingOptions {
        logit_bias: ALPHABET.iter().map(|&t| (t, 30.0)).collect(),
        ..sampling
    }
}

/// Plain and drafted generation of `options` are the same tokens and text; returns the drafted
/// run (its counters) for further checks.
fn same_with_draft(
    engine: &Engine,
    prompt: &[u32],
    options: &GenerateOptions,
    draft: Draft,
) -> GenerationOutput {
    let plain = run(engine, prompt, options);
    let drafted = run(
        engine,
        prompt,
        &GenerateOptions {
            draft,
            ..options.clone()
        },
    );
    assert_eq!(drafted.tokens, plain.tokens, "drafting changed the tokens");
    assert_eq!(drafted.text, plain.text);
    assert_eq!(drafted.stats.stop_reason, plain.stats.stop_reason);
    assert_eq!(plain.stats.drafted, 0);
    let s = &drafted.stats;
    assert!(s.accepted <= s.drafted && s.rounds <= s.drafted, "{s:?}");
    drafted
}

#[test]
fn greedy_and_seeded_sampling_with_prompt_lookup_equal_plain_decoding_on_tiny_models() {
    for fixture in ["tiny_gemma4_e2b", "tiny_gemma4_e4b"] {
        let engine = engine(
            &fixture_dir(fixture).join("model-f32.gguf"),
            ChatFormat::PlainText,
        );
        let prompt = repetitive_prompt(4);
        let greedy = GenerateOptions {
            sampling: on_alphabet(SamplingOptions::greedy()),
            max_tokens: 48,
            ..GenerateOptions::default()
        };
        let mut drafted = 0;
        for draft in [ngram(7, true), ngram(4, false), ngram(1, false)] {
            let out = same_with_draft(&engine, &prompt, &greedy, draft);
            assert!(out.stats.rounds > 0, "{fixture}: no draft was verified");
            drafted += out.stats.accepted;
        }
        assert!(drafted > 0, "{fixture}: no draft was ever accepted");
        // Sampling: each token is still drawn by the same sampler from the same logits, in the
        // same order, so a seed gives the same tokens.
        for seed in 0..4 {
            let sampled = GenerateOptions {
                sampling: on_alphabet(SamplingOptions {
                    temperature: 0.7,
                    top_k: 4,
                    repetition_penalty: 1.1,
                    seed: Some(seed),
                    ..SamplingOptions::default()
                }),
                max_tokens: 32,
                ..GenerateOptions::default()
            };
            same_with_draft(&engine, &prompt, &sampled, ngram(7, true));
        }
        // Stop strings and a constraint see every token as without drafting.
        let tokenizer = engine.tokenizer();
        let plain = run(&engine, &prompt, &greedy);
        let word: String = plain.text.chars().skip(10).take(3).collect();
        if !word.trim().is_empty() {
            let stopped = GenerateOptions {
                stop_strings: vec![word],
                ..greedy.clone()
            };
            same_with_draft(&engine, &prompt, &stopped, ngram(7, true));
        }
        let pieces: Vec<String> = prompt[1..4]
            .iter()
            .map(|&t| tokenizer.decode(&[t], true))
            .collect();
        let constrained = GenerateOptions {
            constraint: Some(Constraint::Choice(vec![
                pieces.concat().repeat(3),
                pieces[0].repeat(2),
            ])),
            ..greedy.clone()
        };
        same_with_draft(&engine, &prompt, &constrained, ngram(7, true));
    }
}

/// The same losslessness on the GPU (the tiny E2B fixture: KV-shared layers, sliding rings
/// that wrap inside a verify pass, the value norm, and the fused kernels that norm, rope and
/// encode the 1 + k rows): drafted generation gives plain generation's tokens on the same
/// device — greedy with the logits read back, greedy picked on the device (no bias), and a
/// seeded top-k draw from the device's top-k picks — so the verify pass's rows equal the
/// decode step's.
#[test]
fn prompt_lookup_on_the_gpu_equals_plain_decoding_on_the_gpu() {
    if !gpu_expected() {
        eprintln!("skipped: GEMMAKIT_SKIP_GPU_TESTS=1");
        return;
    }
    let path = fixture_dir("tiny_gemma4_e2b").join("model-f32.gguf");
    let engine = Engine::load(
        &path,
        EngineOptions {
            backend: BackendChoice::Gpu,
            context_len: 1024,
            chat_format: ChatFormat::PlainText,
            ..EngineOptions::default()
        },
    )
    .expect("load on the GPU");
    let prompt = repetitive_prompt(4);
    let with = |sampling: SamplingOptions| GenerateOptions {
        sampling,
        max_tokens: 40,
        ..GenerateOptions::default()
    };
    let biased = same_with_draft(
        &engine,
        &prompt,
        &with(on_alphabet(SamplingOptions::greedy())),
        ngram(7, true),
    );
    assert!(
        biased.stats.accepted > 0,
        "no draft was accepted: {:?}",
        biased.stats
    );
    same_with_draft(
        &engine,
        &prompt,
        &with(SamplingOptions::greedy()),
        ngram(4, false),
    );
    let top_k = SamplingOptions {
        temperature: 0.8,
        top_k: 8,
        seed: Some(3),
        ..SamplingOptions::default()
    };
    same_with_draft(&engine, &prompt, &with(top_k), ngram(7, true));
}

#[test]
fn prompt_lookup_keeps_multi_turn_conversations_identical() {
    let engine = engine(&tiny_gguf(), ChatFormat::Auto);
    let greedy = GenerateOptions {
        max_tokens: 24,
        ..GenerateOptions::default()
    };
    let with_draft = GenerateOptions {
        draft: ngram(7, true),
        ..greedy.clone()
    };
    let (plain, drafted) = (engine.conversation(), engine.conversation());
    for text in [
        "one two three one two three",
        "one two three again",
        "and three",
    ] {
        let a = plain.send(text, &greedy, &mut |_| Flow::Continue).unwrap();
        let b = drafted
            .send(text, &with_draft, &mut |_| Flow::Continue)
            .unwrap();
        assert_eq!(a.tokens, b.tokens, "turn `{text}`");
        // The next turn reuses the cache: the drafts' rollback left it equal to plain's.
        assert_eq!(a.stats.prefilled_tokens, b.stats.prefilled_tokens);
    }
    // Forking a conversation after drafted turns continues both the same way.
    let fork = drafted.fork();
    let a = fork
        .send("last", &with_draft, &mut |_| Flow::Continue)
        .unwrap();
    let b = plain
        .send("last", &greedy, &mut |_| Flow::Continue)
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
}

#[test]
fn greedy_with_prompt_lookup_equals_plain_greedy_on_the_demo_model() {
    let engine = engine(&demo_model_path(), ChatFormat::Auto);
    let options = GenerateOptions {
        max_tokens: 48,
        ..GenerateOptions::default()
    };
    let prompt = "Repeat this list exactly, one item per line:\n\
                  apples, bread, milk, eggs, butter, cheese, plums, rice, beans, coffee";
    let send = |options: &GenerateOptions| {
        engine
            .conversation()
            .send(prompt, options, &mut |_| Flow::Continue)
            .unwrap()
    };
    let plain = send(&options);
    let drafted = send(&GenerateOptions {
        draft: Draft::ngram(),
        ..options.clone()
    });
    assert_eq!(drafted.tokens, plain.tokens);
    let s = &drafted.stats;
    eprintln!("demo: {s:?}");
    // The answer copies the prompt: a good part of it comes from accepted drafts.
    assert!(s.accepted * 3 > s.generated_tokens, "{s:?}");
}

/// Upper 0.1% point of the chi-square distribution with `df` degrees of freedom
/// (Wilson–Hilferty; within 1% for df ≥ 3).
fn chi_square_critical_0_001(df: f64) -> f64 {
    let z = 3.0902; // standard normal upper 0.1%
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Sampling with drafting has the distribution of plain sampling: the tokens after the first
/// one (the ones drafts decide) from 400 seeds each, different seeds for the two arms,
/// compared by a chi-square test of homogeneity at significance 0.001.
#[test]
fn sampled_output_with_drafting_has_the_plain_distribution() {
    let engine = engine(&tiny_gguf(), ChatFormat::PlainText);
    let prompt = repetitive_prompt(1);
    let sample = |seed: u64, draft: Draft| {
        run(
            &engine,
            &prompt,
            &GenerateOptions {
                sampling: on_alphabet(SamplingOptions {
                    temperature: 4.0,
                    top_k: 3,
                    seed: Some(seed),
                    ..SamplingOptions::default()
                }),
                max_tokens: 3,
                draft,
                ..GenerateOptions::default()
            },
        )
    };
    const N: u64 = 200;
    let mut counts: std::collections::BTreeMap<Vec<u32>, [f64; 2]> = Default::default();
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..N {
        let plain = sample(seed, Draft::None);
        let spec = sample(N + seed, ngram(3, false));
        drafted += spec.stats.drafted;
        accepted += spec.stats.accepted;
        counts.entry(plain.tokens[1..].to_vec()).or_default()[0] += 1.0;
        counts.entry(spec.tokens[1..].to_vec()).or_default()[1] += 1.0;
    }
    assert!(
        accepted > 0 && accepted < drafted,
        "both acceptance and rejection must occur ({accepted} of {drafted})"
    );
    // Sequences expected fewer than 5 times per arm are pooled.
    let (mut cells, mut rare) = (Vec::new(), [0.0; 2]);
    for c in counts.values() {
        if c[0] + c[1] < 10.0 {
            rare[0] += c[0];
            rare[1] += c[1];
        } else {
            cells.push(*c);
        }
    }
    if rare[0] + rare[1] >= 10.0 {
        cells.push(rare);
    }
    assert!(cells.len() >= 4, "too few categories: {}", cells.len());
    let n = N as f64;
    let stat: f64 = cells
        .iter()
        .map(|c| {
            let e = (c[0] + c[1]) / 2.0;
            (c[0] - e).powi(2) / e + (c[1] - e).powi(2) / e
        })
        .sum();
    let df = (cells.len() - 1) as f64;
    let critical = chi_square_critical_0_001(df);
    eprintln!("chi-square {stat:.2} with {df} df (critical {critical:.2}, n = {n} per arm)");
    assert!(
        stat < critical,
        "chi-square {stat} ≥ {critical}: distributions differ"
    );
}

#[test]
fn a_missing_assistant_and_bad_parameters_are_typed_errors() {
    let engine = engine(&tiny_gguf(), ChatFormat::PlainText);
    for draft in [
        Draft::Mtp("assistant.gguf".into()),
        ngram(0, true),
        Draft::Ngram {
            ngram: 0,
            max_tokens: 4,
            adaptive: true,
        },
    ] {
        let err = engine
            .generate_from_tokens(
                &[2, 30, 31],
                &GenerateOptions {
                    draft,
                    ..GenerateOptions::default()
                },
                &mut |_| Flow::Continue,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                gemmakit::GemmaError::Io { .. } | gemmakit::GemmaError::InvalidArgument(_)
            ),
            "{err:?}"
        );
    }
}
