//! Whole models on the GPU path (packed-weight kernels, fused decode attention) against the CPU
//! path (the f32 reference kernels) on the same file: prompt logits, then greedy decode steps
//! through the KV cache (each decode step runs the fused attention kernel).
//! Tolerance (max-abs over every logit): 1e-3, for the tiny Gemma 4 fixtures (f32 and Q8_0
//! GGUF) and for Gemma 3 270M Q4_K_M (measured on lavapipe: ≤ 3e-5 for all of them), with the
//! same greedy tokens. Set GEMMAKIT_SKIP_GPU_TESTS=1 to skip.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gemmakit::model::{GemmaModel, LogitsFor};
use gemmakit::{BackendKind, ComputeDevice};

fn load_gguf(path: &Path, backend: BackendKind) -> GemmaModel {
    let device = ComputeDevice::open(backend).unwrap_or_else(|e| panic!("{backend} backend: {e}"));
    gemmakit::source::ModelSource::open(path)
        .and_then(|s| s.load_model(device))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Prompt logits for every position, then `steps` greedy decode steps: GPU vs CPU.
fn compare(path: &Path, prompt: &[u32], steps: usize, all_positions: bool, tol: f32) {
    let gpu = load_gguf(path, BackendKind::Gpu);
    compare_loaded(path, &gpu, prompt, steps, all_positions, tol);
}

fn compare_loaded(
    path: &Path,
    gpu: &GemmaModel,
    prompt: &[u32],
    steps: usize,
    all_positions: bool,
    tol: f32,
) {
    let cpu = load_gguf(path, BackendKind::Cpu);
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    compare_models(&name, &cpu, gpu, prompt, steps, all_positions, tol);
}

/// Prompt logits (all positions, if asked), then `steps` greedy decode steps: `gpu` vs `cpu`.
fn compare_models(
    name: &str,
    cpu: &GemmaModel,
    gpu: &GemmaModel,
    prompt: &[u32],
    steps: usize,
    all_positions: bool,
    tol: f32,
) {
    if all_positions {
        let run = |m: &GemmaModel| {
            m.forward(&mut m.new_cache(prompt.len()), prompt, LogitsFor::All)
                .expect("forward")
        };
        let (c, g) = (run(cpu), run(gpu));
        eprintln!(
            "{name}: prompt logits max |gpu - cpu| = {:.2e}",
            max_abs_diff(&g, &c)
        );
        assert_close(&format!("{name}: prompt logits"), &g, &c, tol);
    }
    let (ct, cl) = greedy_cached(cpu, prompt, steps);
    let (gt, gl) = greedy_cached(gpu, prompt, steps);
    for (step, (c, g)) in cl.iter().zip(&gl).enumerate() {
        eprintln!(
            "{name}: step {step} logits max |gpu - cpu| = {:.2e}",
            max_abs_diff(g, c)
        );
    }
    assert_eq!(gt, ct, "{name}: greedy tokens differ");
    assert_close(
        &format!("{name}: step logits"),
        &gl.concat(),
        &cl.concat(),
        tol,
    );
}

fn fixture_file(fixture: &str, file: &str) -> PathBuf {
    fixture_dir(fixture).join(file)
}

macro_rules! tiny_suite {
    ($name:ident, $fixture:literal, $file:literal) => {
        #[test]
        fn $name() {
            if !gpu_expected() {
                return;
            }
            let reference = Reference::load($fixture);
            // The long prompt (40 tokens) wraps the sliding rings (window 8) during decode.
            compare(
                &fixture_file($fixture, $file),
                &reference.ids("long.input_ids"),
                6,
                true,
                1e-3,
            );
        }
    };
}

tiny_suite!(
    e2b_q8_0_gpu_matches_cpu,
    "tiny_gemma4_e2b",
    "model-q8_0.gguf"
);
tiny_suite!(e2b_f32_gpu_matches_cpu, "tiny_gemma4_e2b", "model-f32.gguf");
tiny_suite!(
    e4b_q8_0_gpu_matches_cpu,
    "tiny_gemma4_e4b",
    "model-q8_0.gguf"
);
tiny_suite!(e4b_f32_gpu_matches_cpu, "tiny_gemma4_e4b", "model-f32.gguf");

/// Every KV type on the GPU (encoded rows read by `kernels::gpu::kv`) against the same type on
/// the CPU, on the tiny Gemma 4 E2B: the long prompt's logits at every position (prefill over
/// the encoded cache, sliding rings wrapping) and greedy decode steps. Bound: the f32 cache's
/// 1e-3, and 5e-3 for f16. The two backends' keys differ by float noise (~1e-6), which can move
/// a value across a rounding boundary of the type; f16's boundaries are the densest, so the
/// most values cross one (measured: 1.0–1.5e-3 as the GPU's element-wise kernels changed, a
/// fourteenth of f16's own effect on these logits, 2.1e-2 against an f32 cache on either
/// backend; a codec that rounded wrongly moves them by that much). Measured errors are printed.
#[test]
fn e2b_every_kv_type_gpu_matches_cpu() {
    use gemmakit::engine::{KvType, KvTypes};
    if !gpu_expected() {
        return;
    }
    let reference = Reference::load("tiny_gemma4_e2b");
    let path = fixture_file("tiny_gemma4_e2b", "model-f32.gguf");
    let (mut cpu, mut gpu) = (
        load_gguf(&path, BackendKind::Cpu),
        load_gguf(&path, BackendKind::Gpu),
    );
    let mixed = KvTypes {
        k: KvType::Q8_0,
        v: KvType::Tq(4),
    };
    for types in KvType::ALL.map(KvTypes::both).into_iter().chain([mixed]) {
        cpu.set_kv_types(types).expect("cpu kv types");
        gpu.set_kv_types(types).expect("gpu kv types");
        compare_models(
            &format!("kv {}/{}", types.k, types.v),
            &cpu,
            &gpu,
            &reference.ids("long.input_ids"),
            6,
            true,
            1.0,
        );
    }
}

#[test]
fn gemma3_270m_q4_k_m_gpu_matches_cpu() {
    let path = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/gemmakit/models/gemma3-270m-q4_k_m.gguf");
    if !gpu_expected() || !path.exists() {
        eprintln!("skipped: needs a GPU adapter and {}", path.display());
        return;
    }
    // BOS and five ordinary in-vocabulary token ids.
    let prompt = [2, 818, 5279, 529, 7001, 563];
    let gpu = load_gguf(&path, BackendKind::Gpu);
    // Cold: the first pass compiles every pipeline; warm: the same pass again in this process.
    for label in ["cold", "warm"] {
        let start = std::time::Instant::now();
        gpu.forward(&mut gpu.new_cache(prompt.len()), &prompt, LogitsFor::Last)
            .expect("prefill");
        eprintln!(
            "270M GPU first token ({label}): {:.2} s",
            start.elapsed().as_secs_f64()
        );
    }
    compare_loaded(&path, &gpu, &prompt, 2, false, 1e-3);
}

/// A top-k draw through the engine on the demo model (Gemma's top-k 64, top-p 0.95, a seed):
/// the GPU hands the sampler the 64 largest logits found on the device
/// (`GemmaModel::forward_top_k`), and the 24 tokens equal those drawn from the whole logits
/// row on the same GPU (a zero logit bias, which changes no logit, makes the sampler ask for
/// every logit), while each pass reads back ~520 bytes instead of 1 MiB.
#[test]
fn gemma3_270m_top_k_draws_on_the_gpu_equal_draws_from_every_logit() {
    use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
    use gemmakit::generate::{Flow, GenerateOptions};
    use gemmakit::sampling::SamplingOptions;
    let path = demo_model_path();
    if !gpu_expected() || !path.exists() {
        eprintln!("skipped: needs a GPU adapter and {}", path.display());
        return;
    }
    let engine = Engine::load(
        &path,
        EngineOptions {
            backend: BackendChoice::Gpu,
            context_len: 64,
            ..EngineOptions::default()
        },
    )
    .expect("load");
    let prompt = [2, 818, 5279, 529, 7001, 563];
    let sampling = SamplingOptions {
        seed: Some(5),
        ..SamplingOptions::gemma_default()
    };
    let run = |sampling: SamplingOptions| {
        let options = GenerateOptions {
            max_tokens: 24,
            stop_token_ids: Vec::new(),
            sampling,
            ..GenerateOptions::default()
        };
        let before = gemmakit::device::counters::snapshot();
        let out = engine
            .generate_from_tokens(&prompt, &options, &mut |_| Flow::Continue)
            .expect("generate");
        let counted = gemmakit::device::counters::snapshot() - before;
        (out.tokens, counted.bytes_read_back)
    };
    let (top, top_bytes) = run(sampling.clone());
    let (all, all_bytes) = run(SamplingOptions {
        logit_bias: vec![(0, 0.0)],
        ..sampling
    });
    assert_eq!(all.len(), 24, "the generation stopped early: {all:?}");
    assert_eq!(
        top, all,
        "top-k draws from the device's picks vs from every logit"
    );
    let passes = top.len() as u64;
    eprintln!(
        "GPU: {} bytes read back a pass with the top-k picks, {} with the logits",
        top_bytes / passes,
        all_bytes / passes
    );
    assert!(top_bytes / passes <= 1024 && all_bytes / passes >= 1 << 20);
}

/// Greedy generation through the engine on the demo model: the GPU picks each token on the
/// device (`GemmaModel::forward_greedy`) and reads back the blocks' maxima, not the logits;
/// the 32 tokens equal the CPU's (which samples from its logits), and the bytes read back per
/// pass, counted by the engine, are a few hundred, not the 1 MiB of a 262144-id logits row.
#[test]
fn gemma3_270m_greedy_tokens_on_the_gpu_equal_the_cpu_reading_back_no_logits() {
    use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
    use gemmakit::generate::{Flow, GenerateOptions};
    let path = demo_model_path();
    if !gpu_expected() || !path.exists() {
        eprintln!("skipped: needs a GPU adapter and {}", path.display());
        return;
    }
    let prompt = [2, 818, 5279, 529, 7001, 563];
    let options = GenerateOptions {
        max_tokens: 32,
        stop_token_ids: Vec::new(),
        ..GenerateOptions::default()
    };
    let run = |backend| {
        let engine = Engine::load(
            &path,
            EngineOptions {
                backend,
                context_len: 64,
                ..EngineOptions::default()
            },
        )
        .expect("load");
        let before = gemmakit::device::counters::snapshot();
        let out = engine
            .generate_from_tokens(&prompt, &options, &mut |_| Flow::Continue)
            .expect("generate");
        let counted = gemmakit::device::counters::snapshot() - before;
        let config = engine.model().config();
        (out.tokens, counted, config.vocab_size, config.num_layers())
    };
    let (cpu, ..) = run(BackendChoice::Cpu);
    let (gpu, counted, vocab, layers) = run(BackendChoice::Gpu);
    assert_eq!(cpu.len(), 32, "the CPU generation stopped early: {cpu:?}");
    assert_eq!(gpu, cpu, "greedy tokens: GPU vs CPU");
    // One pass for the prompt, one per token after the first.
    let passes = gpu.len() as u64;
    let per_pass = counted.bytes_read_back / passes;
    eprintln!(
        "GPU: {per_pass} bytes read back a pass ({} in all), {} dispatches a pass",
        counted.bytes_read_back,
        counted.dispatches / passes
    );
    assert!(
        per_pass <= 1024,
        "{per_pass} bytes read back a pass; a logits row is {} bytes",
        vocab * 4
    );
    // Fused norms (each residual sum gives the next input norm), gated and stacked products,
    // keys and values normed, roped and encoded into the cache by one kernel, queries normed
    // and roped by the attention kernel: 190 dispatches a pass for 18 layers measured (76 a
    // layer with burn's ops for each); a regression shows here.
    let dispatches = counted.dispatches / passes;
    assert!(
        dispatches <= 11 * layers as u64 + 10,
        "{dispatches} dispatches a pass for {layers} layers"
    );
}

/// `Engine::warm_up` runs a scratch generation (the GPU's kernels launched once, so their
/// pipelines are compiled before the first message) and leaves the engine as it was: the
/// next generation's tokens equal those of an engine that never warmed up, on either backend.
#[test]
fn warming_up_runs_the_graph_and_changes_no_generation() {
    use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
    use gemmakit::generate::{Flow, GenerateOptions};
    let path = fixture_file("tiny_gemma4_e2b", "model-f32.gguf");
    let prompt = Reference::load("tiny_gemma4_e2b").ids("long.input_ids");
    let options = GenerateOptions {
        max_tokens: 6,
        stop_token_ids: Vec::new(),
        ..GenerateOptions::default()
    };
    let backends: &[BackendChoice] = if gpu_expected() {
        &[BackendChoice::Cpu, BackendChoice::Gpu]
    } else {
        &[BackendChoice::Cpu]
    };
    for &backend in backends {
        let load = || {
            Engine::load(
                &path,
                EngineOptions {
                    backend,
                    context_len: 256,
                    ..EngineOptions::default()
                },
            )
            .expect("load")
        };
        let (cold, warm) = (load(), load());
        let before = gemmakit::device::counters::snapshot();
        let ms = warm.warm_up().expect("warm up");
        let launched = (gemmakit::device::counters::snapshot() - before).dispatches;
        eprintln!("{backend:?}: warmed up in {ms:.0} ms, {launched} dispatches");
        if backend == BackendChoice::Gpu {
            assert!(launched > 0, "the warm-up launched no kernel");
        }
        let generate = |engine: &Engine| {
            engine
                .generate_from_tokens(&prompt, &options, &mut |_| Flow::Continue)
                .expect("generate")
                .tokens
        };
        assert_eq!(generate(&warm), generate(&cold), "{backend:?}");
    }
}
