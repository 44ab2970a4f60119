//! Cancel is never lost, readers never wait for a running turn, and many threads sending,
//! forking, cancelling, resetting and dropping conversations on one engine neither deadlock
//! nor panic, with every transcript made of what was streamed. Tiny Gemma 4 GGUF.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::*;
use gemmakit::chat::Role;
use gemmakit::conversation::{ContextPolicy, Conversation};
use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
use gemmakit::generate::{Event, Flow, GenerateOptions, StopReason};
use gemmakit::sampling::SamplingOptions;
use rand::{Rng, SeedableRng};

fn tiny() -> Engine {
    Engine::load(
        &tiny_gguf(),
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len: 512,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

/// Long runs: the tiny model's only end-of-turn id (`<eos>`) biased away.
fn long(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingOptions {
            logit_bias: vec![(1, -1e9)],
            ..SamplingOptions::greedy()
        },
        max_tokens,
        ..GenerateOptions::default()
    }
}

/// Runs `f` on a thread and fails the test if it does not finish within `secs` (a deadlock).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {secs} s (deadlock?)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test body panicked (see above)"),
    }
}

type Turn = std::thread::JoinHandle<gemmakit::Result<gemmakit::generate::GenerationOutput>>;

/// Starts a long turn that parks inside its first event callback, holding the conversation,
/// until the returned sender is sent to; returns once the turn is parked.
fn parked_turn(chat: &Arc<Conversation>, prompt: &'static str) -> (Turn, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let chat = chat.clone();
    let turn = std::thread::spawn(move || {
        let mut first = true;
        chat.send(prompt, &long(100_000), &mut |_| {
            if first {
                first = false;
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }
            Flow::Continue
        })
    });
    started_rx.recv().unwrap();
    (turn, release_tx)
}

#[test]
fn a_cancel_issued_while_a_turn_waits_for_the_conversation_is_not_lost() {
    within(120, || {
        let engine = tiny();
        let chat = Arc::new(engine.conversation());
        chat.set_context_policy(ContextPolicy::DropOldestTurns);
        // A: a turn that holds the conversation, parked inside its event callback until the
        // second turn is waiting and the cancel has been issued (no race with its length).
        let (a, release_tx) = parked_turn(&chat, "first");
        // B: waits for A to release the conversation.
        let b = {
            let chat = chat.clone();
            std::thread::spawn(move || chat.send("second", &long(100_000), &mut |_| Flow::Continue))
        };
        std::thread::sleep(Duration::from_millis(300));
        chat.cancel();
        release_tx.send(()).unwrap();
        let a = a.join().unwrap().unwrap();
        let b = b.join().unwrap().unwrap();
        assert_eq!(a.stats.stop_reason, StopReason::Cancelled);
        assert_eq!(
            b.stats.stop_reason,
            StopReason::Cancelled,
            "B's cancel was lost"
        );
        assert_eq!(b.stats.generated_tokens, 0);
        // A cancel applies to turns begun before it, not to later ones.
        let c = chat
            .send("third", &long(5), &mut |_| Flow::Continue)
            .unwrap();
        assert_eq!(c.stats.stop_reason, StopReason::MaxTokens);
        assert_eq!(c.tokens.len(), 5);
    });
}

#[test]
fn messages_and_stats_are_readable_while_a_turn_runs() {
    within(120, || {
        let engine = tiny();
        let chat = Arc::new(engine.conversation());
        chat.send("hello", &long(3), &mut |_| Flow::Continue)
            .unwrap();
        let before = chat.messages();
        let cached = chat.cached_tokens();
        let stats = chat.last_stats().expect("a finished turn has stats");
        assert_eq!(stats.generated_tokens, 3);
        // The running turn parks inside its event callback, holding the conversation, until
        // the readers are done: a reader that waited for the turn would hang here.
        let (runner, release_tx) = parked_turn(&chat, "go on");
        for _ in 0..20 {
            assert_eq!(chat.messages(), before);
            assert_eq!(chat.cached_tokens(), cached);
            assert_eq!(chat.last_stats(), Some(stats.clone()));
        }
        chat.cancel();
        release_tx.send(()).unwrap();
        let out = runner.join().unwrap().unwrap();
        assert_eq!(out.stats.stop_reason, StopReason::Cancelled);
        let after = chat.messages();
        assert_eq!(after.len(), before.len() + 2);
        assert_eq!(after.last().unwrap().content, out.text);
    });
}

#[test]
fn eight_threads_of_random_operations_neither_deadlock_nor_panic() {
    const THREADS: usize = 8;
    const OPS: usize = 300;
    within(600, || {
        let engine = Arc::new(tiny());
        let root = Arc::new(engine.conversation());
        root.set_context_policy(ContextPolicy::DropOldestTurns);
        let pool: Arc<Mutex<Vec<Arc<Conversation>>>> = Arc::new(Mutex::new(vec![root]));
        // Every answer any send returned: every assistant message of every transcript must be
        // one of them (checked after all threads joined, so no bookkeeping race).
        let answers: Arc<Mutex<HashSet<String>>> = Arc::default();
        let sends = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (pool, engine, sends, answers) =
                    (pool.clone(), engine.clone(), sends.clone(), answers.clone());
                std::thread::spawn(move || {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t as u64);
                    for op in 0..OPS {
                        let pick = {
                            let pool = pool.lock().unwrap();
                            (!pool.is_empty())
                                .then(|| pool[rng.random_range(0..pool.len())].clone())
                        };
                        let Some(chat) = pick else {
                            let fresh = Arc::new(engine.conversation());
                            fresh.set_context_policy(ContextPolicy::DropOldestTurns);
                            pool.lock().unwrap().push(fresh);
                            continue;
                        };
                        match rng.random_range(0..100) {
                            0..=54 => {
                                let mut streamed = String::new();
                                let cancel_at = rng.random_range(0..8usize);
                                let handle = chat.cancel_handle();
                                let mut n = 0;
                                let out = chat
                                    .send(
                                        &format!("t{t} op{op}"),
                                        &long(rng.random_range(1..6)),
                                        &mut |e| {
                                            if let Event::Text(text) = e {
                                                streamed.push_str(&text);
                                            }
                                            n += 1;
                                            if n == cancel_at {
                                                handle.cancel();
                                            }
                                            Flow::Continue
                                        },
                                    )
                                    .unwrap_or_else(|e| panic!("send failed: {e}"));
                                assert_eq!(streamed, out.text, "the stream is the answer");
                                answers.lock().unwrap().insert(out.text);
                                sends.fetch_add(1, Ordering::Relaxed);
                            }
                            55..=69 => {
                                let fork = Arc::new(chat.fork());
                                pool.lock().unwrap().push(fork);
                            }
                            70..=84 => chat.cancel(),
                            85..=92 => {
                                chat.reset();
                            }
                            _ => {
                                let mut pool = pool.lock().unwrap();
                                if pool.len() > 1 {
                                    let i = rng.random_range(0..pool.len());
                                    pool.swap_remove(i);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("no worker panicked");
        }
        assert!(sends.load(Ordering::Relaxed) > THREADS * OPS / 3);
        let answers = answers.lock().unwrap();
        for chat in pool.lock().unwrap().iter() {
            for m in chat.messages() {
                if m.role == Role::Assistant {
                    assert!(
                        answers.contains(&m.content),
                        "{:?} was never streamed",
                        m.content
                    );
                }
            }
        }
    });
}
