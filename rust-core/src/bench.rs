//! `gemmakit bench`: llama-bench-style measurements through the public engine API.
//!
//! For every (prompt length p, generation length n, depth d) it measures, over `r`
//! repetitions after one warm-up:
//! - prefill: a cache holding d tokens (untimed), then p tokens in one forward pass
//!   (llama-bench's `pp` at depth d). Time to first token = that pass plus the argmax.
//!   Every timed pass ends in a greedy pick (`GemmaModel::forward_greedy`, as plain greedy
//!   generation runs it: on a GPU the pick is made on the device and the logits stay there).
//! - decode: a cache holding d tokens (untimed), then n single-token passes
//!   (llama-bench's `tg` at depth d).
//!
//! The d tokens are prefilled once per depth (depths in increasing order extend the same
//! cache), and every timed run starts from them: prefill on a copy of the cache, decode on the
//! cache itself, rolled back to d afterwards (exact: `KvCache::truncate`) or filled again where a
//! sliding ring has wrapped too far to roll back. At depth 16k the fill is most of the work.
//!
//! Load time is measured once per run: warm (the file already in the page cache) and, on
//! Linux where GNU `dd` can ask the kernel to drop the file's cached pages
//! (`iflag=nocache count=0`, i.e. posix_fadvise DONTNEED), cold. Peak RSS is the process's
//! high-water mark (`VmHWM`), so it covers everything the run touched.
//!
//! On the GPU each result also carries what the engine asked of the device
//! ([`GpuBench`]): dispatches and bytes moved per decoded token (counted over the timed decode
//! passes by `device::counters`), the bytes the device holds, and the process's first pass's
//! extra time over the same pass repeated (pipeline compilation, cold start).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::device::Activations;
use crate::device::counters::{self, GpuCounters};
use crate::engine::{BackendChoice, ChatFormat, CpuCores, Engine, EngineOptions, KvType, KvTypes};
use crate::error::{GemmaError, Result};
use crate::model::kv_cache::ROLLBACK_SLACK;
use crate::model::{GemmaModel, LogitsFor, SoftTokens};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    pub model: PathBuf,
    pub n_prompt: Vec<usize>,
    pub n_gen: Vec<usize>,
    pub depths: Vec<usize>,
    pub threads: Option<usize>,
    /// Where the CPU workers run.
    pub cpu_cores: CpuCores,
    pub repetitions: usize,
    pub backend: BackendChoice,
    /// KV element types of keys and values (`None`: the backend's default).
    pub kv_type_k: Option<KvType>,
    pub kv_type_v: Option<KvType>,
    /// Also measure a cold load (drops the file from the page cache first).
    pub cold_load: bool,
    /// CPU activation numerics per phase.
    pub cpu_activations: Activations,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: PathBuf::new(),
            n_prompt: vec![512],
            n_gen: vec![128],
            depths: vec![0],
            threads: None,
            cpu_cores: CpuCores::Auto,
            repetitions: 3,
            backend: BackendChoice::Auto,
            kv_type_k: None,
            kv_type_v: None,
            cold_load: true,
            cpu_activations: Activations::EXACT,
        }
    }
}

impl BenchOptions {
    /// What every bench loads its engine with: the backend, activation numerics and KV types
    /// asked for, plain-text prompts, room for `context_len` positions.
    fn engine_options(&self, context_len: usize) -> EngineOptions {
        EngineOptions {
            backend: self.backend,
            context_len,
            chat_format: ChatFormat::PlainText,
            prefill_activations: self.cpu_activations.prefill,
            decode_activations: self.cpu_activations.decode,
            kv_type_k: self.kv_type_k,
            kv_type_v: self.kv_type_v,
            ..EngineOptions::default()
        }
    }
}

/// Median and spread of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub stddev: f64,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Spread {
        if samples.is_empty() {
            return Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
                stddev: 0.0,
            };
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        Spread {
            median,
            min: s[0],
            max: s[n - 1],
            stddev: var.sqrt(),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "stddev": self.stddev})
    }
}

/// One configuration's results.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub model: String,
    pub model_bytes: u64,
    pub backend: String,
    pub device: String,
    pub backend_reason: String,
    pub threads: usize,
    pub kv_types: KvTypes,
    /// What the CPU prefill and decode ran with (`Int8` only where requested and supported).
    pub activations: Activations,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub depth: usize,
    pub repetitions: usize,
    pub prefill_tok_s: Spread,
    pub decode_tok_s: Spread,
    pub ttft_ms: Spread,
    /// Prompt tokens run in timed prefill passes, all repetitions together.
    pub prefill_tokens_run: usize,
    /// Tokens run in timed decode passes, all repetitions together.
    pub decode_tokens_run: usize,
    pub load_ms: f64,
    pub load_cold_ms: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// GPU runs only.
    pub gpu: Option<GpuBench>,
}

/// What a GPU run asked of the device.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuBench {
    /// Kernel dispatches per decoded token (timed decode passes, every repetition).
    pub dispatches_per_token: f64,
    pub bytes_uploaded_per_token: f64,
    pub bytes_read_back_per_token: f64,
    /// Bytes the device held after the runs (weights, KV cache, scratch, pools).
    pub resident_bytes: u64,
    /// The process's first warm-up pass (a short prefill and one decode step) minus the same
    /// pass run again: pipeline compilation and other first-use costs.
    pub pipeline_compile_ms: f64,
}

impl GpuBench {
    fn per_token(
        counted: GpuCounters,
        tokens: usize,
        resident_bytes: u64,
        compile_ms: f64,
    ) -> Self {
        let per = |n: u64| n as f64 / tokens.max(1) as f64;
        GpuBench {
            dispatches_per_token: per(counted.dispatches),
            bytes_uploaded_per_token: per(counted.bytes_uploaded),
            bytes_read_back_per_token: per(counted.bytes_read_back),
            resident_bytes,
            pipeline_compile_ms: compile_ms,
        }
    }
}

impl BenchResult {
    /// One flat JSON object; the `*_tok_s`, `ttft_ms` keys hold medians, `*_spread` the rest.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "model_bytes": self.model_bytes,
            "backend": self.backend,
            "device": self.device,
            "backend_reason": self.backend_reason,
            "threads": self.threads,
            "kv_type_k": self.kv_types.k.name(),
            "kv_type_v": self.kv_types.v.name(),
            "prefill_activations": self.activations.prefill.to_string(),
            "decode_activations": self.activations.decode.to_string(),
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "depth": self.depth,
            "repetitions": self.repetitions,
            "prefill_tok_s": self.prefill_tok_s.median,
            "decode_tok_s": self.decode_tok_s.median,
            "ttft_ms": self.ttft_ms.median,
            "prefill_tok_s_spread": self.prefill_tok_s.json(),
            "decode_tok_s_spread": self.decode_tok_s.json(),
            "ttft_ms_spread": self.ttft_ms.json(),
            "prefill_tokens_run": self.prefill_tokens_run,
            "decode_tokens_run": self.decode_tokens_run,
            "load_ms": self.load_ms,
            "load_cold_ms": self.load_cold_ms,
            "peak_rss_bytes": self.peak_rss_bytes,
            "gpu_dispatches_per_token": self.gpu.as_ref().map(|g| g.dispatches_per_token),
            "gpu_bytes_uploaded_per_token": self.gpu.as_ref().map(|g| g.bytes_uploaded_per_token),
            "gpu_bytes_read_back_per_token": self.gpu.as_ref().map(|g| g.bytes_read_back_per_token),
            "gpu_resident_bytes": self.gpu.as_ref().map(|g| g.resident_bytes),
            "pipeline_compile_ms": self.gpu.as_ref().map(|g| g.pipeline_compile_ms),
        })
    }
}

/// The process's peak resident set size (`VmHWM`), where the platform reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asks the kernel to drop `path` from the page cache. Returns whether that was done.
pub fn drop_from_page_cache(path: &Path) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Deterministic token ids that avoid the special tokens at the start of the vocabulary.
fn bench_tokens(vocab: usize, n: usize, salt: usize) -> Vec<u32> {
    let (lo, hi) = if vocab > 2000 {
        (1000, vocab - 1000)
    } else {
        (vocab.min(10), vocab)
    };
    let span = (hi - lo).max(1);
    (0..n)
        .map(|i| (lo + (i.wrapping_mul(7919).wrapping_add(salt * 104_729)) % span) as u32)
        .collect()
}

/// Prefills `cache` with the depth tokens up to `depth` (the tokens are the same prefix at
/// every depth, so a cache at a smaller depth is extended, not refilled).
fn fill_cache(
    model: &GemmaModel,
    cache: &mut crate::model::kv_cache::KvCache,
    depth: usize,
) -> Result<()> {
    let tokens = bench_tokens(model.config().vocab_size, depth, 1);
    for chunk in tokens[cache.len().min(depth)..].chunks(512) {
        model.forward(cache, chunk, LogitsFor::Last)?;
    }
    Ok(())
}

/// A cache prefilled to one depth, from which every timed run starts.
struct DepthCache<'m> {
    model: &'m GemmaModel,
    ctx: usize,
    cache: crate::model::kv_cache::KvCache,
}

impl<'m> DepthCache<'m> {
    fn new(model: &'m GemmaModel, ctx: usize) -> Self {
        DepthCache {
            model,
            ctx,
            cache: model.new_cache(ctx),
        }
    }

    /// The cache at exactly `depth` tokens: rolled back, extended, or filled anew.
    fn at(&mut self, depth: usize) -> Result<&mut crate::model::kv_cache::KvCache> {
        if self.cache.len() > depth && !self.cache.truncate(depth) {
            self.cache = self.model.new_cache(self.ctx);
        }
        fill_cache(self.model, &mut self.cache, depth)?;
        Ok(&mut self.cache)
    }

    /// Seconds for one prefill of `n_prompt` tokens at `depth` (and the argmax of its logits):
    /// on the cache itself when a sliding ring can roll that many back, else on a copy (rows
    /// copied on write: one copy per layer inside the timed pass, small next to it).
    fn time_prefill(&mut self, depth: usize, n_prompt: usize) -> Result<f64> {
        let model = self.model;
        let mut copy;
        let cache = if n_prompt <= ROLLBACK_SLACK {
            self.at(depth)?
        } else {
            copy = self.at(depth)?.clone();
            &mut copy
        };
        let tokens = bench_tokens(model.config().vocab_size, n_prompt, 2);
        let start = Instant::now();
        let first = model.forward_greedy(cache, &tokens, SoftTokens::NONE)?;
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(first);
        Ok(secs)
    }

    /// Seconds for `n_gen` single-token greedy passes at `depth` (on the cache itself, rolled back
    /// by the next [`at`](Self::at)).
    fn time_decode(&mut self, depth: usize, n_gen: usize) -> Result<f64> {
        let model = self.model;
        let cache = self.at(depth)?;
        let tokens = bench_tokens(model.config().vocab_size, n_gen, 3);
        let start = Instant::now();
        for &t in &tokens {
            std::hint::black_box(model.forward_greedy(cache, &[t], SoftTokens::NONE)?);
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

fn validate(options: &BenchOptions) -> Result<()> {
    let bad = |m: &str| Err(GemmaError::InvalidArgument(m.into()));
    if options.repetitions == 0 {
        return bad("repetitions must be at least 1");
    }
    if options.n_prompt.is_empty() || options.n_gen.is_empty() || options.depths.is_empty() {
        return bad("give at least one prompt length, generation length and depth");
    }
    if options.n_prompt.contains(&0) || options.n_gen.contains(&0) {
        return bad("prompt and generation lengths must be at least 1");
    }
    Ok(())
}

/// Runs every configuration; `on_result` sees each as soon as it is measured.
pub fn run_bench(
    options: &BenchOptions,
    on_result: &mut dyn FnMut(&BenchResult),
) -> Result<Vec<BenchResult>> {
    validate(options)?;
    let longest = options.depths.iter().max().copied().unwrap_or(0)
        + options
            .n_prompt
            .iter()
            .chain(&options.n_gen)
            .max()
            .copied()
            .unwrap_or(0);
    // The workers are process-wide: started here rather than by the loads below. If they
    // already exist, the results report the thread count they have.
    crate::engine::start_cpu_workers(options.threads, &options.cpu_cores)?;
    let engine_options = options.engine_options(longest + 1);
    let model_bytes = std::fs::metadata(&options.model)
        .map_err(|e| GemmaError::io(&options.model, e))?
        .len();

    let load_cold_ms = if options.cold_load && drop_from_page_cache(&options.model) {
        let start = Instant::now();
        drop(Engine::load(&options.model, engine_options.clone())?);
        Some(start.elapsed().as_secs_f64() * 1e3)
    } else {
        None
    };
    if load_cold_ms.is_none() {
        // Warm the page cache so the measured load is a warm one.
        drop(Engine::load(&options.model, engine_options.clone())?);
    }
    let start = Instant::now();
    let engine = Engine::load(&options.model, engine_options)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    if engine.context_len() < longest + 1 {
        return Err(GemmaError::ContextOverflow {
            requested: longest + 1,
            context_len: engine.context_len(),
        });
    }
    let model = engine.model();
    let ctx = engine.context_len();

    let mut decode_memo: Vec<((usize, usize), (Vec<f64>, GpuCounters))> = Vec::new();
    let mut results = Vec::new();
    let mut warm_up = DepthCache::new(model, ctx);
    let mut at_depth = DepthCache::new(model, ctx);
    let on_gpu = !model.device().is_host();
    // The first pass of the process compiles the pipelines it uses; the same pass again
    // compiles nothing.
    let mut first_pass_ms = || -> Result<f64> {
        let start = Instant::now();
        warm_up.time_prefill(0, options.n_prompt[0].min(8))?;
        warm_up.time_decode(0, 1)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    let pipeline_compile_ms = if on_gpu {
        let cold = first_pass_ms()?;
        (cold - first_pass_ms()?).max(0.0)
    } else {
        0.0
    };
    for &depth in &options.depths {
        for &n_prompt in &options.n_prompt {
            for &n_gen in &options.n_gen {
                // Warm-up (not counted): a short prefill and one decode step.
                warm_up.time_prefill(0, n_prompt.min(8))?;
                warm_up.time_decode(0, 1)?;
                let mut prefill = Vec::new();
                let mut ttft = Vec::new();
                for _ in 0..options.repetitions {
                    let secs = at_depth.time_prefill(depth, n_prompt)?;
                    prefill.push(n_prompt as f64 / secs);
                    ttft.push(secs * 1e3);
                }
                let (decode, decode_counted) =
                    match decode_memo.iter().find(|(k, _)| *k == (n_gen, depth)) {
                        Some((_, memo)) => memo.clone(),
                        None => {
                            let mut v = Vec::new();
                            let mut counted = GpuCounters::default();
                            for _ in 0..options.repetitions {
                                // Counted around the timed passes alone (not the fill to depth).
                                at_depth.at(depth)?;
                                let before = counters::snapshot();
                                v.push(n_gen as f64 / at_depth.time_decode(depth, n_gen)?);
                                counted += counters::snapshot() - before;
                            }
                            decode_memo.push(((n_gen, depth), (v.clone(), counted)));
                            (v, counted)
                        }
                    };
                let gpu = on_gpu.then(|| {
                    GpuBench::per_token(
                        decode_counted,
                        n_gen * options.repetitions,
                        counters::resident_bytes(&model.device().device).unwrap_or(0),
                        pipeline_compile_ms,
                    )
                });
                let result = BenchResult {
                    model: options.model.display().to_string(),
                    model_bytes,
                    backend: engine.backend().backend.to_string(),
                    device: engine.backend().device.clone(),
                    backend_reason: engine.backend().reason.clone(),
                    threads: rayon::current_num_threads(),
                    kv_types: model.kv_types(),
                    activations: engine.activations(),
                    n_prompt,
                    n_gen,
                    depth,
                    repetitions: options.repetitions,
                    prefill_tok_s: Spread::of(&prefill),
                    decode_tok_s: Spread::of(&decode),
                    ttft_ms: Spread::of(&ttft),
                    prefill_tokens_run: n_prompt * options.repetitions,
                    decode_tokens_run: n_gen * options.repetitions,
                    load_ms,
                    load_cold_ms,
                    peak_rss_bytes: peak_rss_bytes(),
                    gpu,
                };
                on_result(&result);
                results.push(result);
            }
        }
    }
    Ok(results)
}

/// One verify pass over 1 + k tokens against one decode step, same cache depth.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyCost {
    pub k: usize,
    pub depth: usize,
    pub decode_ms: Spread,
    pub verify_ms: Spread,
}

impl VerifyCost {
    /// Median verify pass ÷ median decode step.
    pub fn ratio(&self) -> f64 {
        self.verify_ms.median / self.decode_ms.median.max(1e-12)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "test": "verify_cost",
            "k": self.k,
            "depth": self.depth,
            "decode_ms": self.decode_ms.median,
            "verify_ms": self.verify_ms.median,
            "ratio": self.ratio(),
            "decode_ms_spread": self.decode_ms.json(),
            "verify_ms_spread": self.verify_ms.json(),
        })
    }
}

/// Speculative decoding's verify cost: for each k, the time of one pass over 1 + k tokens
/// (the verify pass, logits for every row, then rolled back) ÷ one single-token decode step,
/// both at the first depth of `options` (8 passes per repetition, interleaved); `on_result`
/// sees each k as soon as it is measured.
pub fn run_verify_cost(
    options: &BenchOptions,
    ks: &[usize],
    on_result: &mut dyn FnMut(&VerifyCost),
) -> Result<Vec<VerifyCost>> {
    validate(options)?;
    // The workers are process-wide: started here rather than by the loads below. If they
    // already exist, the results report the thread count they have.
    crate::engine::start_cpu_workers(options.threads, &options.cpu_cores)?;
    let depth = options.depths.first().copied().unwrap_or(0);
    let kmax = ks.iter().copied().max().unwrap_or(1);
    let engine = Engine::load(&options.model, options.engine_options(depth + kmax + 64))?;
    let model = engine.model();
    let mut cache = model.new_cache(engine.context_len());
    fill_cache(model, &mut cache, depth)?;
    let tokens = bench_tokens(model.config().vocab_size, kmax + 1, 5);
    const PASSES: usize = 8;
    let mut time = |n: usize| -> Result<f64> {
        let start = Instant::now();
        for _ in 0..PASSES {
            if n == 1 {
                std::hint::black_box(model.forward(&mut cache, &tokens[..1], LogitsFor::Last)?);
            } else {
                std::hint::black_box(model.verify(&mut cache, &tokens[..n])?);
            }
            cache.truncate(depth);
        }
        Ok(start.elapsed().as_secs_f64() * 1e3 / PASSES as f64)
    };
    time(1)?; // warm-up
    let mut results = Vec::new();
    for &k in ks {
        let (mut decode, mut verify) = (Vec::new(), Vec::new());
        for _ in 0..options.repetitions {
            decode.push(time(1)?);
            verify.push(time(k + 1)?);
        }
        let cost = VerifyCost {
            k,
            depth,
            decode_ms: Spread::of(&decode),
            verify_ms: Spread::of(&verify),
        };
        on_result(&cost);
        results.push(cost);
    }
    Ok(results)
}

/// Gemma 4's MTP assistant: one draft step against one decode step of its target, same depth.
#[derive(Debug, Clone, PartialEq)]
pub struct AssistantCost {
    pub depth: usize,
    pub decode_ms: Spread,
    pub draft_step_ms: Spread,
}

impl AssistantCost {
    /// Median draft step ÷ median decode step: the cost of one drafted token in decode steps.
    pub fn ratio(&self) -> f64 {
        self.draft_step_ms.median / self.decode_ms.median.max(1e-12)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "test": "assistant_cost",
            "depth": self.depth,
            "decode_ms": self.decode_ms.median,
            "draft_step_ms": self.draft_step_ms.median,
            "ratio": self.ratio(),
            "decode_ms_spread": self.decode_ms.json(),
            "draft_step_ms_spread": self.draft_step_ms.json(),
        })
    }
}

/// The cost of one MTP draft step (the assistant at `assistant` over the target's cache, head
/// included) ÷ one decode step of the target, at the first depth of `options` (8 of each per
/// repetition, interleaved).
pub fn run_assistant_cost(options: &BenchOptions, assistant: &Path) -> Result<AssistantCost> {
    validate(options)?;
    crate::engine::start_cpu_workers(options.threads, &options.cpu_cores)?;
    let depth = options.depths.first().copied().unwrap_or(0);
    let engine = Engine::load(&options.model, options.engine_options(depth + 64))?;
    let model = engine.model();
    let drafter = crate::source::load_assistant(assistant, model.config(), model.device().clone())?;
    let mut cache = model.new_cache(engine.context_len());
    fill_cache(model, &mut cache, depth.max(1))?;
    let depth = cache.len();
    let token = bench_tokens(model.config().vocab_size, 1, 7)[0];
    let (_, hidden) =
        model.forward_with_hidden(&mut cache, &[token], SoftTokens::NONE, LogitsFor::Last)?;
    cache.truncate(depth);
    const PASSES: usize = 8;
    let decode_step = |cache: &mut crate::model::KvCache| -> Result<f64> {
        let start = Instant::now();
        for _ in 0..PASSES {
            std::hint::black_box(model.forward(cache, &[token], LogitsFor::Last)?);
            cache.truncate(depth);
        }
        Ok(start.elapsed().as_secs_f64() * 1e3 / PASSES as f64)
    };
    decode_step(&mut cache)?; // warm-up
    let draft_step = |cache: &crate::model::KvCache| -> Result<f64> {
        let start = Instant::now();
        for _ in 0..PASSES {
            std::hint::black_box(drafter.step(model, cache, token, &hidden, depth)?);
        }
        Ok(start.elapsed().as_secs_f64() * 1e3 / PASSES as f64)
    };
    draft_step(&cache)?;
    let (mut decode, mut draft) = (Vec::new(), Vec::new());
    for _ in 0..options.repetitions {
        decode.push(decode_step(&mut cache)?);
        draft.push(draft_step(&cache)?);
    }
    Ok(AssistantCost {
        depth,
        decode_ms: Spread::of(&decode),
        draft_step_ms: Spread::of(&draft),
    })
}

/// Decode speed-up of speculative decoding with `k` drafts a round, each drafted token costing
/// `draft_cost` decode steps and the verify pass over 1 + k tokens `verify_cost` decode steps,
/// when each draft is accepted with probability `acceptance` (independently, until the first
/// rejection): a round yields `1 + a + … + a^k` tokens for `k · draft_cost + verify_cost`.
pub fn speculative_speedup(acceptance: f64, k: usize, draft_cost: f64, verify_cost: f64) -> f64 {
    let tokens: f64 = (0..=k).map(|i| acceptance.powi(i as i32)).sum();
    tokens / (k as f64 * draft_cost + verify_cost).max(1e-12)
}

/// Prompt lookup against plain decoding on prompts whose answers copy their context.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftBench {
    pub prompt: String,
    pub plain_decode_tok_s: Spread,
    pub draft_decode_tok_s: Spread,
    /// Whether every drafted generation equalled the plain one, token for token.
    pub identical: bool,
    pub generated_tokens: usize,
    pub drafted: usize,
    pub accepted: usize,
    pub rounds: usize,
}

impl DraftBench {
    pub fn speedup(&self) -> f64 {
        self.draft_decode_tok_s.median / self.plain_decode_tok_s.median.max(1e-9)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "test": "draft",
            "prompt": self.prompt,
            "plain_decode_tok_s": self.plain_decode_tok_s.median,
            "draft_decode_tok_s": self.draft_decode_tok_s.median,
            "speedup": self.speedup(),
            "identical": self.identical,
            "generated_tokens": self.generated_tokens,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "rounds": self.rounds,
        })
    }
}

/// Prompts whose answers copy from their context (prompt lookup's use case).
pub const COPYING_PROMPTS: [&str; 2] = [
    "Repeat this list exactly, one item per line, but write pears instead of plums:\n\
     apples, bread, milk, eggs, butter, cheese, plums, rice, beans, coffee, tea, sugar, salt, \
     pepper, flour, oil, vinegar, honey, jam, yoghurt",
    "Quote this paragraph word for word:\n\
     The quick brown fox jumps over the lazy dog. The dog wakes up, looks around, and goes back \
     to sleep. The fox runs into the forest, where it finds a river, drinks some water, and \
     rests under an old oak tree until the sun goes down.",
];

/// Greedy generation (chat template, up to the largest `n_gen` tokens) of each prompt without
/// and with `draft`, alternating, `repetitions` times each.
pub fn run_draft_bench(
    options: &BenchOptions,
    draft: crate::engine::generate::Draft,
    prompts: &[&str],
) -> Result<Vec<DraftBench>> {
    validate(options)?;
    // The workers are process-wide: started here rather than by the loads below. If they
    // already exist, the results report the thread count they have.
    crate::engine::start_cpu_workers(options.threads, &options.cpu_cores)?;
    let n_gen = options.n_gen.iter().copied().max().unwrap_or(128);
    let engine = Engine::load(
        &options.model,
        EngineOptions {
            // The prompts are chat turns: the model's own template.
            chat_format: EngineOptions::default().chat_format,
            ..options.engine_options(n_gen + 512)
        },
    )?;
    let run = |prompt: &str, draft: crate::engine::generate::Draft| {
        let options = crate::engine::generate::GenerateOptions {
            max_tokens: n_gen,
            draft,
            ..Default::default()
        };
        engine.conversation().send(prompt, &options, &mut |_| {
            crate::engine::generate::Flow::Continue
        })
    };
    let mut results = Vec::new();
    for &prompt in prompts {
        run(prompt, draft.clone())?; // warm-up
        let (mut plain, mut drafted) = (Vec::new(), Vec::new());
        let mut identical = true;
        let mut last = None;
        for _ in 0..options.repetitions.max(1) {
            let a = run(prompt, crate::engine::generate::Draft::None)?;
            let b = run(prompt, draft.clone())?;
            identical &= a.tokens == b.tokens;
            plain.push(a.stats.decode_tok_s);
            drafted.push(b.stats.decode_tok_s);
            last = Some(b);
        }
        let last = last.ok_or_else(|| GemmaError::InvalidArgument("no repetitions".into()))?;
        results.push(DraftBench {
            prompt: prompt.to_string(),
            plain_decode_tok_s: Spread::of(&plain),
            draft_decode_tok_s: Spread::of(&drafted),
            identical,
            generated_tokens: last.stats.generated_tokens,
            drafted: last.stats.drafted,
            accepted: last.stats.accepted,
            rounds: last.stats.rounds,
        });
    }
    Ok(results)
}

/// Decode speed with and without a constraint: same engine, prompt, sampling and seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstrainedBench {
    /// The first constrained request's extra latency: building the token trie and lexer
    /// slices for the vocabulary (once per engine).
    pub prepare_ms: f64,
    pub free_decode_tok_s: Spread,
    pub constrained_decode_tok_s: Spread,
    /// Tokens generated per repetition (the constrained answer ends where the schema does).
    pub free_tokens: Vec<usize>,
    pub constrained_tokens: Vec<usize>,
}

impl ConstrainedBench {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "test": "constrained_decode",
            "prepare_ms": self.prepare_ms,
            "free_decode_tok_s": self.free_decode_tok_s.median,
            "constrained_decode_tok_s": self.constrained_decode_tok_s.median,
            "slowdown": 1.0 - self.constrained_decode_tok_s.median / self.free_decode_tok_s.median.max(1e-9),
            "free_tokens": self.free_tokens,
            "constrained_tokens": self.constrained_tokens,
        })
    }
}

/// Samples (Gemma's recommended settings, seeds 0..repetitions) up to `n_gen` tokens after a
/// short prompt, without and with `constraint`, alternating so drift hits both alike.
pub fn run_constrained_bench(
    options: &BenchOptions,
    constraint: crate::constraint::Constraint,
) -> Result<ConstrainedBench> {
    validate(options)?;
    let n_gen = options.n_gen.iter().copied().max().unwrap_or(128);
    let engine = Engine::load(&options.model, options.engine_options(n_gen + 64))?;
    let start = Instant::now();
    engine.prepare_constraints()?;
    let prepare_ms = start.elapsed().as_secs_f64() * 1e3;
    let prompt = engine
        .tokenizer()
        .encode_prompt("The requested record, as JSON:\n", false)?;
    let run = |seed: u64, constraint: Option<crate::constraint::Constraint>| {
        let options = crate::engine::generate::GenerateOptions {
            sampling: crate::sampling::SamplingOptions {
                seed: Some(seed),
                ..crate::sampling::SamplingOptions::gemma_default()
            },
            max_tokens: n_gen,
            constraint,
            ..Default::default()
        };
        engine.generate_from_tokens(&prompt, &options, &mut |_| {
            crate::engine::generate::Flow::Continue
        })
    };
    run(0, Some(constraint.clone()))?; // warm-up
    let (mut free, mut constrained) = (Vec::new(), Vec::new());
    let (mut free_tokens, mut constrained_tokens) = (Vec::new(), Vec::new());
    for seed in 0..options.repetitions.max(1) as u64 {
        let out = run(seed, None)?;
        free.push(out.stats.decode_tok_s);
        free_tokens.push(out.stats.generated_tokens);
        let out = run(seed, Some(constraint.clone()))?;
        constrained.push(out.stats.decode_tok_s);
        constrained_tokens.push(out.stats.generated_tokens);
    }
    Ok(ConstrainedBench {
        prepare_ms,
        free_decode_tok_s: Spread::of(&free),
        constrained_decode_tok_s: Spread::of(&constrained),
        free_tokens,
        constrained_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculative_speedup_counts_the_expected_tokens_per_round() {
        // k = 0: a plain decode step.
        assert!((speculative_speedup(0.7, 0, 0.1, 1.0) - 1.0).abs() < 1e-12);
        // k = 2, a = 0.5: 1 + 0.5 + 0.25 tokens for 2·0.1 + 1.2 steps.
        assert!((speculative_speedup(0.5, 2, 0.1, 1.2) - 1.75 / 1.4).abs() < 1e-12);
        // Free drafts and verification, every draft taken: k + 1 tokens a step.
        assert!((speculative_speedup(1.0, 3, 0.0, 1.0) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn spread_of_samples() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert!((s.stddev - 3.5355).abs() < 1e-3);
    }
}
