//! A long session stays flat: 1,000 short turns and 100 forks on the demo model, over which
//! allocated memory grows by under 5%, no file descriptor or thread is
//! left behind, and a reset conversation holds nothing in its cache. CI-sized (about a minute);
//! its own test binary, so no other test shares the process it measures.

mod common;

use common::*;
use gemmakit::conversation::ContextPolicy;
use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
use gemmakit::generate::{Flow, GenerateOptions};

/// `field` (`VmRSS`, `RssAnon`, …) of this process's status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Bytes the allocator has handed out and not had back: with glibc every arena's chunks in
/// use plus its mmapped ones — what a leak grows, unmoved by fragmentation or by when freed
/// memory goes back to the kernel (anonymous resident memory moved 90 ↔ 100 MiB between
/// samples under load). Elsewhere anonymous resident memory, the closest the platform says.
fn held_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    status_bytes("RssAnon:")
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
    // Allocated memory is where a leak shows. `VmRSS` also counts the memory-mapped model's
    // pages, which grow as turns touch embedding rows of tokens not seen before (file-backed,
    // reclaimable; not held by us).
    let (rss0, fds0, threads0) = (
        held_bytes(),
        count_entries("/proc/self/fd"),
        count_entries("/proc/self/task"),
    );
    let mut samples = Vec::new();
    for i in 100..1100 {
        turn(i);
        if i % 100 == 99 {
            samples.push(held_bytes());
        }
    }
    let (rss1, fds1, threads1) = (
        held_bytes(),
        count_entries("/proc/self/fd"),
        count_entries("/proc/self/task"),
    );
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    eprintln!(
        "after warm-up: {:.1} MiB allocated, {fds0} fds, {threads0} threads; after 1,000 turns and 100 forks: {:.1} MiB allocated ({:.1} MiB anonymous, {:.1} MiB resident in all), {fds1} fds, {threads1} threads; every 100 turns (MiB allocated): {:?}",
        mib(rss0),
        mib(rss1),
        mib(status_bytes("RssAnon:")),
        mib(status_bytes("VmRSS:")),
        samples
            .iter()
            .map(|&b| (mib(b) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    // What grows here, ~0.8 KB a turn (83.3 → 84.0 MiB), is a cache keyed by text: with the
    // same seven turn texts repeated the series levels off after ~400 turns (83.4 → 83.7
    // MiB, then flat for 600 turns), with a new number every turn it keeps growing — most
    // likely the tokenizer's word cache (the tokenizers crate's BPE cache holds up to 10,000
    // words; not confirmed with a heap profiler).
    // A leak grows with every turn. The median of the last three samples (turns 800–1,100) is
    // held to 5% over the median of the first three (turns 100–400): ~700 turns apart, that
    // catches a leak from a few KB a turn, and no single sample decides.
    let median3 = |three: &[u64]| {
        let mut v = three.to_vec();
        v.sort_unstable();
        v[1]
    };
    let (early, late) = (median3(&samples[..3]), median3(&samples[7..]));
    assert!(
        (late as f64) <= early as f64 * 1.05,
        "allocated memory grew from {early} to {late} bytes (medians of the first and last three samples)"
    );
    assert_eq!(fds1, fds0, "file descriptors leaked");
    assert_eq!(threads1, threads0, "threads leaked");
}
