//! A long session stays flat: 1,000 short turns and 100 forks on the demo model, after which
//! resident memory is within 5% of what it was after warm-up, no file descriptor or thread is
//! left behind, and a reset conversation holds nothing in its cache. CI-sized (about a minute);
//! its own test binary, so no other test shares the process it measures.

mod common;

use common::*;
use gemmakit::conversation::ContextPolicy;
use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
use gemmakit::generate::{Flow, GenerateOptions};

/// `VmRSS` of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn a_thousand_turns_and_a_hundred_forks_leave_memory_fds_and_threads_flat() {
    let engine = Engine::load(
        &demo_model_path(),
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len: 1024,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let options = GenerateOptions {
        max_tokens: 2,
        ..GenerateOptions::default()
    };
    // 100 turns of ~6 tokens fit in the context, so every turn reuses the cache (a dropped
    // oldest turn would shift the transcript and re-run it whole).
    let chat = engine.conversation();
    chat.set_context_policy(ContextPolicy::DropOldestTurns);
    let turn = |i: usize| {
        chat.send(&format!(" item {i},"), &options, &mut |_| Flow::Continue)
            .unwrap();
        if i % 10 == 0 {
            // A fork that diverges and is dropped: its copy-on-write cache must go with it.
            let fork = chat.fork();
            fork.send(" and then", &options, &mut |_| Flow::Continue)
                .unwrap();
        }
        if i % 100 == 99 {
            chat.reset();
            assert_eq!(chat.cached_tokens(), 0, "a reset conversation holds no KV");
        }
    };
    // Warm-up: allocator pools, the thread pool and caches reach their working size.
    for i in 0..100 {
        turn(i);
    }
    let (rss0, fds0, threads0) = (
        rss_bytes(),
        count_entries("/proc/self/fd"),
        count_entries("/proc/self/task"),
    );
    for i in 100..1100 {
        turn(i);
    }
    let (rss1, fds1, threads1) = (
        rss_bytes(),
        count_entries("/proc/self/fd"),
        count_entries("/proc/self/task"),
    );
    eprintln!(
        "after warm-up: {:.1} MiB, {fds0} fds, {threads0} threads; after 1,000 turns and 100 forks: {:.1} MiB, {fds1} fds, {threads1} threads",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0
    );
    assert!(
        (rss1 as f64) <= rss0 as f64 * 1.05,
        "RSS grew from {rss0} to {rss1} bytes"
    );
    assert_eq!(fds1, fds0, "file descriptors leaked");
    assert_eq!(threads1, threads0, "threads leaked");
}
