//! The generation API: multi-turn KV reuse, fork, cancel, streaming, sampling, concurrency and
//! context limits. Tiny Gemma 4 GGUF (with a chat template) and the Gemma 3 270M demo model.

mod common;

use std::sync::Arc;

use common::*;
use gemmakit::GemmaError;
use gemmakit::chat::RenderOptions;
use gemmakit::conversation::ContextPolicy;
use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
use gemmakit::generate::{Event, Flow, GenerateOptions, StopReason};
use gemmakit::sampling::SamplingOptions;

fn engine(path: &std::path::Path, context_len: usize) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len,
            ..EngineOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tiny() -> Engine {
    engine(&fixture_dir("tiny_gemma4_e2b").join("model-f32.gguf"), 512)
}

fn demo() -> Engine {
    engine(&demo_model_path(), 1024)
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    }
}

fn quiet(_: Event) -> Flow {
    Flow::Continue
}

#[test]
fn three_turns_with_kv_reuse_equal_a_full_rerun() {
    let engine = tiny();
    assert!(
        engine.chat_template().is_some(),
        "the tiny GGUF carries a chat template"
    );
    let chat = engine.conversation();
    let mut last = None;
    for (turn, text) in ["hello there", "and now", "one more thing"]
        .iter()
        .enumerate()
    {
        let out = chat.send(text, &greedy(6), &mut quiet).unwrap();
        if turn > 0 {
            assert!(
                out.stats.prefilled_tokens < out.stats.prompt_tokens,
                "turn {turn}: {} of {} prompt tokens were prefilled: no KV reuse",
                out.stats.prefilled_tokens,
                out.stats.prompt_tokens
            );
        }
        last = Some(out);
    }
    let last = last.unwrap();
    assert!(!last.tokens.is_empty());

    // The same transcript rendered and run from scratch in one prefill.
    let mut messages = chat.messages();
    messages.pop();
    let options = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    let text = engine
        .chat_template()
        .unwrap()
        .render(&messages, &options)
        .unwrap();
    let ids = engine.tokenizer().encode(&text, true).unwrap();
    let rerun = engine
        .generate_from_tokens(&ids, &greedy(6), &mut quiet)
        .unwrap();
    assert_eq!(
        rerun.tokens, last.tokens,
        "KV-reused turn differs from a full re-run"
    );
    assert_eq!(rerun.stats.prompt_tokens, last.stats.prompt_tokens);
}

#[test]
fn forks_are_independent() {
    let engine = tiny();
    let a = engine.conversation();
    a.send("hello there", &greedy(4), &mut quiet).unwrap();
    let b = a.fork();
    let a2 = a.send("first branch", &greedy(5), &mut quiet).unwrap();
    let b2 = b.send("second branch", &greedy(5), &mut quiet).unwrap();

    // Each branch equals the same history replayed in a fresh conversation.
    for (branch, text, out) in [(&a, "first branch", &a2), (&b, "second branch", &b2)] {
        let fresh = engine.conversation();
        fresh.send("hello there", &greedy(4), &mut quiet).unwrap();
        let replay = fresh.send(text, &greedy(5), &mut quiet).unwrap();
        assert_eq!(replay.tokens, out.tokens, "{text}");
        assert_eq!(branch.messages(), fresh.messages());
    }
    assert_ne!(a.messages(), b.messages());
}

#[test]
fn reset_forgets_history() {
    let engine = tiny();
    let chat = engine.conversation();
    let first = chat.send("hello there", &greedy(4), &mut quiet).unwrap();
    chat.send("more", &greedy(4), &mut quiet).unwrap();
    chat.reset();
    assert!(chat.messages().is_empty());
    assert_eq!(chat.cached_tokens(), 0);
    let again = chat.send("hello there", &greedy(4), &mut quiet).unwrap();
    assert_eq!(again.tokens, first.tokens);
}

#[test]
fn cancel_from_another_thread_stops_within_one_token() {
    let engine = demo();
    let chat = Arc::new(engine.conversation());
    let handle = chat.cancel_handle();
    let mut tokens_at_cancel = None;
    let mut seen = 0usize;
    let out = chat
        .send("Once upon a time", &greedy(200), &mut |event| {
            if let Event::Text(_) = event {
                seen += 1;
                if seen == 3 {
                    let h = handle.clone();
                    std::thread::spawn(move || h.cancel()).join().unwrap();
                    tokens_at_cancel = Some(seen);
                }
            }
            Flow::Continue
        })
        .unwrap();
    assert_eq!(out.stats.stop_reason, StopReason::Cancelled);
    let at = tokens_at_cancel.expect("cancelled during generation");
    assert!(
        out.stats.generated_tokens <= at + 1,
        "{} tokens after cancel at {at}",
        out.stats.generated_tokens
    );
    // The conversation stays usable.
    let next = chat.send(" and then", &greedy(3), &mut quiet).unwrap();
    assert_eq!(next.stats.generated_tokens, 3);
}

#[test]
fn streamed_text_equals_the_full_decode_for_cjk_and_emoji() {
    let engine = demo();
    for prompt in [
        "日本の首都は東京です。日本の",
        "My favourite emojis are 😀 🎉 🍕 and",
    ] {
        let chat = engine.conversation();
        let mut streamed = String::new();
        let out = chat
            .send(prompt, &greedy(24), &mut |event| {
                if let Event::Text(t) = event {
                    assert!(!t.contains('\u{FFFD}'), "broken UTF-8 streamed: {t:?}");
                    streamed.push_str(&t);
                }
                Flow::Continue
            })
            .unwrap();
        let full = engine.tokenizer().decode(&out.tokens, true);
        assert_eq!(streamed, full, "{prompt}");
        assert_eq!(out.text, full);
        assert!(
            full.chars().any(|c| !c.is_ascii()),
            "{prompt}: expected non-ASCII output, got {full:?}"
        );
    }
}

#[test]
fn same_seed_same_tokens() {
    let engine = demo();
    let run = |seed| {
        let options = GenerateOptions {
            sampling: SamplingOptions {
                seed: Some(seed),
                ..SamplingOptions::gemma_default()
            },
            max_tokens: 16,
            ..GenerateOptions::default()
        };
        engine
            .conversation()
            .send("The weather today", &options, &mut quiet)
            .unwrap()
            .tokens
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn stop_strings_end_generation_before_the_string() {
    let engine = demo();
    let options = GenerateOptions {
        stop_strings: vec![" of".into()],
        ..greedy(32)
    };
    let mut streamed = String::new();
    let out = engine
        .conversation()
        .send("The capital of France is", &options, &mut |e| {
            if let Event::Text(t) = e {
                streamed.push_str(&t);
            }
            Flow::Continue
        })
        .unwrap();
    // Greedy continuation is " the capital of the country…" (llama.cpp and the float64 reference).
    assert_eq!(out.stats.stop_reason, StopReason::StopString);
    assert_eq!(out.text, " the capital");
    assert_eq!(streamed, out.text);
}

#[test]
fn two_conversations_run_concurrently() {
    let engine = tiny();
    let expected: Vec<_> = ["hello there", "something else"]
        .iter()
        .map(|t| {
            engine
                .conversation()
                .send(t, &greedy(6), &mut quiet)
                .unwrap()
                .tokens
        })
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ["hello there", "something else"]
            .iter()
            .map(|t| {
                let engine = engine.clone();
                s.spawn(move || {
                    engine
                        .conversation()
                        .send(t, &greedy(6), &mut quiet)
                        .unwrap()
                        .tokens
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, expected);
}

#[test]
fn context_limits_are_errors_or_drop_old_turns() {
    let engine = engine(&fixture_dir("tiny_gemma4_e2b").join("model-f32.gguf"), 64);
    let chat = engine.conversation();
    let long = "hello ".repeat(60);
    match chat.send(&long, &greedy(4), &mut quiet) {
        Err(GemmaError::ContextOverflow {
            context_len: 64, ..
        }) => {}
        other => panic!("expected ContextOverflow, got {:?}", other.map(|o| o.text)),
    }
    assert!(
        chat.messages().is_empty(),
        "a refused turn leaves the conversation unchanged"
    );

    chat.set_context_policy(ContextPolicy::DropOldestTurns);
    for turn in 0..6 {
        let out = chat
            .send("hello there again", &greedy(4), &mut quiet)
            .unwrap();
        assert!(out.stats.prompt_tokens < 64, "turn {turn}");
    }
    assert!(chat.messages().len() < 12, "old turns were dropped");
}
