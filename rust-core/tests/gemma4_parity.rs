//! Gemma 4 text decoder vs transformers 5.24 (f32, eager) on tiny random checkpoints.
//! Tolerances: CPU 1e-4, wgpu (lavapipe) 1e-3, max-abs over every logit.

mod common;

use common::*;
use gemmakit::BackendKind;
use gemmakit::model::LogitsFor;

const CPU_TOL: f32 = 1e-4;
const GPU_TOL: f32 = 1e-3;

fn check_prompt_logits(fixture: &str, backend: BackendKind, tol: f32) {
    let reference = Reference::load(fixture);
    let model = load(fixture, backend);
    let ids = reference.ids("text.input_ids");
    let t = ids.len();
    let h = model.config().hidden_size;
    let mut cache = model.new_cache(t);
    let (logits, trace) = model
        .forward_traced(&mut cache, &ids, LogitsFor::All)
        .expect("forward");

    assert_close(
        "embeddings",
        &trace.embeddings,
        &reference.f32("text.inputs_embeds"),
        tol,
    );
    assert_close(
        "per-layer inputs",
        &trace.per_layer_inputs,
        &reference.f32("text.per_layer_inputs"),
        tol,
    );
    for (i, out) in trace.layer_outputs.iter().enumerate() {
        assert_eq!(out.len(), t * h);
        assert_close_scaled(
            &format!("layer {i} output"),
            out,
            &reference.f32(&format!("text.layer_out.{i}")),
            tol,
        );
    }
    assert_close(
        "final norm",
        &trace.final_norm,
        &reference.f32("text.final_norm"),
        tol,
    );
    assert_close(
        "logits (all positions)",
        &logits,
        &reference.f32("text.logits"),
        tol,
    );
}

fn check_greedy(fixture: &str, backend: BackendKind, tol: f32, prefix: &str) {
    let reference = Reference::load(fixture);
    let model = load(fixture, backend);
    let prompt = reference.ids(&format!("{prefix}.prompt_ids"));
    let expected = reference.ids(&format!("{prefix}.tokens"));
    let expected_logits = reference.f32(&format!("{prefix}.step_logits"));
    let (tokens, step_logits) = greedy_cached(&model, &prompt, expected.len());
    assert_eq!(tokens, expected, "greedy tokens differ from transformers");
    let flat: Vec<f32> = step_logits.concat();
    assert_close(
        "greedy step logits (KV cache)",
        &flat,
        &expected_logits,
        tol,
    );
}

fn check_cached_equals_uncached(fixture: &str, backend: BackendKind) {
    let reference = Reference::load(fixture);
    let model = load(fixture, backend);
    let prompt = reference.ids("long.input_ids");
    let (cached, cached_logits) = greedy_cached(&model, &prompt, 8);
    let (uncached, uncached_logits) = greedy_uncached(&model, &prompt, 8);
    assert_eq!(
        cached, uncached,
        "KV-cached decode diverged from recomputation"
    );
    assert_eq!(
        cached,
        reference.ids("long.gen_tokens"),
        "long-prompt greedy differs from transformers"
    );
    let tol = if backend == BackendKind::Cpu {
        CPU_TOL
    } else {
        GPU_TOL
    };
    assert_close(
        "cached vs uncached step logits",
        &cached_logits.concat(),
        &uncached_logits.concat(),
        tol,
    );
    assert_close(
        "long-prompt step logits vs transformers",
        &cached_logits.concat(),
        &reference.f32("long.gen_step_logits"),
        tol,
    );
}

/// The long prompt (40 tokens, window 8) scored in one pass, then fed in uneven chunks through
/// the cache: every position's logits must match the reference either way.
fn check_long_prompt_chunked(fixture: &str, backend: BackendKind, tol: f32) {
    let reference = Reference::load(fixture);
    let model = load(fixture, backend);
    let prompt = reference.ids("long.input_ids");
    let expected = reference.f32("long.logits");
    let vocab = model.config().vocab_size;

    let mut cache = model.new_cache(prompt.len());
    let all = model
        .forward(&mut cache, &prompt, LogitsFor::All)
        .expect("forward");
    assert_close("long prompt, one pass", &all, &expected, tol);

    for slack in [0, 3, 128] {
        let mut cache = model.new_cache_with_slack(prompt.len(), slack);
        let mut chunked = Vec::new();
        let mut start = 0;
        for size in [1usize, 3, 9, 2, 12, 1, 5, 7].iter().cycle() {
            if start >= prompt.len() {
                break;
            }
            let end = (start + size).min(prompt.len());
            chunked.extend(
                model
                    .forward(&mut cache, &prompt[start..end], LogitsFor::All)
                    .expect("chunk"),
            );
            start = end;
        }
        assert_eq!(chunked.len(), prompt.len() * vocab);
        assert_close(
            &format!("long prompt, uneven chunks through the cache (ring slack {slack})"),
            &chunked,
            &expected,
            tol,
        );
    }
}

macro_rules! parity_suite {
    ($module:ident, $fixture:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn cpu_prompt_logits_and_hidden_states() {
                check_prompt_logits($fixture, BackendKind::Cpu, CPU_TOL);
            }
            #[test]
            fn cpu_greedy_matches_transformers() {
                check_greedy($fixture, BackendKind::Cpu, CPU_TOL, "gen");
            }
            #[test]
            fn cpu_cached_equals_uncached() {
                check_cached_equals_uncached($fixture, BackendKind::Cpu);
            }
            #[test]
            fn cpu_long_prompt_chunked() {
                check_long_prompt_chunked($fixture, BackendKind::Cpu, CPU_TOL);
            }
            #[test]
            fn gpu_prompt_logits_and_hidden_states() {
                if gpu_expected() {
                    check_prompt_logits($fixture, BackendKind::Gpu, GPU_TOL);
                }
            }
            #[test]
            fn gpu_greedy_matches_transformers() {
                if gpu_expected() {
                    check_greedy($fixture, BackendKind::Gpu, GPU_TOL, "gen");
                }
            }
            #[test]
            fn gpu_cached_equals_uncached() {
                if gpu_expected() {
                    check_cached_equals_uncached($fixture, BackendKind::Gpu);
                }
            }
            #[test]
            fn gpu_long_prompt_chunked() {
                if gpu_expected() {
                    check_long_prompt_chunked($fixture, BackendKind::Gpu, GPU_TOL);
                }
            }
        }
    };
}

parity_suite!(e2b, "tiny_gemma4_e2b");
parity_suite!(e4b, "tiny_gemma4_e4b");

/// Rolling the cache back (a conversation whose last tokens changed) and re-feeding gives the
/// reference logits again; a ring refuses to roll back further than its slack.
#[test]
fn cache_rollback_within_the_ring_slack_is_exact() {
    let reference = Reference::load("tiny_gemma4_e2b");
    let model = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let prompt = reference.ids("long.input_ids");
    let expected = reference.f32("long.logits");
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache_with_slack(prompt.len(), 12);
    model.forward(&mut cache, &prompt, LogitsFor::Last).unwrap();
    assert!(
        !cache.truncate(prompt.len() - 13),
        "13 back exceeds a slack of 12"
    );
    assert_eq!(cache.len(), prompt.len());
    assert!(cache.truncate(prompt.len() - 12));
    let tail = &prompt[prompt.len() - 12..];
    let logits = model.forward(&mut cache, tail, LogitsFor::All).unwrap();
    assert_close(
        "logits after rolling back 12 tokens",
        &logits,
        &expected[(prompt.len() - 12) * vocab..],
        CPU_TOL,
    );
}

/// Every KV type (and a mixed K/V pair) against its own results without the cache operation:
/// the prompt fed in uneven chunks equals one pass, through rings that wrap (slack 0 and 3) it
/// equals the same chunks through a ring that never wraps; a rollback after other tokens, a
/// fork whose copy writes other tokens (copy on write: the original is untouched) and prefix
/// reuse (the fork rolled back to the shared prefix) equal the same two passes on a fresh
/// cache. The tolerance is the f32 parity's, except for f16: float-order noise (another slot
/// order sums the same values differently) can move a later layer's key across an f16
/// rounding boundary, which moves logits by ~1e-3 (f16 vs f32 itself: ~2e-2).
#[test]
fn every_kv_type_keeps_its_cache_operations_exact() {
    check_cache_operations(BackendKind::Cpu, CPU_TOL);
}

/// The same on the GPU (encoded rows in device memory, `kernels::gpu::kv`), at the same
/// tolerances (measured on lavapipe: ≤ 2.1e-5 for every type but f16, ≤ 8.7e-4 for f16).
#[test]
fn every_kv_type_keeps_its_cache_operations_exact_on_the_gpu() {
    if gpu_expected() {
        check_cache_operations(BackendKind::Gpu, CPU_TOL);
    }
}

fn check_cache_operations(backend: BackendKind, exact_tol: f32) {
    use gemmakit::engine::{KvType, KvTypes};
    let reference = Reference::load("tiny_gemma4_e2b");
    let model = load("tiny_gemma4_e2b", backend);
    let prompt = reference.ids("long.input_ids");
    let (n, vocab) = (prompt.len(), model.config().vocab_size);
    let mixed = KvTypes {
        k: KvType::Tq(4),
        v: KvType::Tq(3),
    };
    let other: Vec<u32> = prompt[..12].iter().rev().copied().collect();
    for types in KvType::ALL.map(KvTypes::both).into_iter().chain([mixed]) {
        let name = format!("{backend} {}/{}", types.k, types.v);
        let tol = if types == KvTypes::both(KvType::F16) {
            2e-3
        } else {
            exact_tol
        };
        let fresh = |slack| model.new_cache_typed(n, slack, types).unwrap();
        let run = |cache: &mut gemmakit::model::KvCache, tokens: &[u32]| {
            model.forward(cache, tokens, LogitsFor::All).unwrap()
        };
        let one_pass = run(&mut fresh(0), &prompt);
        let chunked = |slack| {
            let mut cache = fresh(slack);
            let (mut out, mut start) = (Vec::new(), 0);
            for size in [1usize, 3, 9, 2, 12, 1, 5, 7].iter().cycle() {
                if start >= n {
                    break;
                }
                let end = (start + size).min(n);
                out.extend(run(&mut cache, &prompt[start..end]));
                start = end;
            }
            out
        };
        let unwrapped = chunked(n);
        assert_close(
            &format!("{name}: chunks vs one pass"),
            &unwrapped,
            &one_pass,
            tol,
        );
        for slack in [0, 3] {
            let wrapped = chunked(slack);
            assert_close(
                &format!("{name}: ring wraps, slack {slack}"),
                &wrapped,
                &unwrapped,
                tol,
            );
        }
        // Two passes split at `at` on a fresh cache: the reference of the operations below.
        let two_pass = |at: usize| {
            let mut cache = fresh(12);
            run(&mut cache, &prompt[..at]);
            run(&mut cache, &prompt[at..])
        };
        let mut cache = fresh(12);
        run(&mut cache, &prompt[..n - 12]);
        run(&mut cache, &other);
        assert!(cache.truncate(n - 12), "{name}: rollback within the slack");
        let again = run(&mut cache, &prompt[n - 12..]);
        assert_close(
            &format!("{name}: after rollback"),
            &again,
            &two_pass(n - 12),
            tol,
        );
        assert_close(
            &format!("{name}: rollback vs one pass"),
            &again,
            &one_pass[(n - 12) * vocab..],
            tol,
        );

        let shared = 20;
        let want = two_pass(shared);
        let mut original = fresh(12);
        run(&mut original, &prompt[..shared]);
        let mut fork = original.clone();
        run(&mut fork, &other);
        let rest = run(&mut original, &prompt[shared..]);
        assert_close(
            &format!("{name}: original after a fork wrote"),
            &rest,
            &want,
            tol,
        );
        assert!(
            fork.truncate(shared),
            "{name}: fork back to the shared prefix"
        );
        let reused = run(&mut fork, &prompt[shared..]);
        assert_close(&format!("{name}: prefix reuse"), &reused, &want, tol);
    }
}
