//! `gemmakit bench` on the tiny fixture (sanity of the numbers and the JSON, no speed
//! thresholds), and the measured Auto backend choice. The command line itself is tested in
//! cli/tests/bench_command.rs.

mod common;

use gemmakit::kernels::cpu::{ActivationPrecision, Activations};
use std::path::PathBuf;

use common::{positive, tiny_gguf};
use gemmakit::bench::{BenchOptions, run_bench};
use gemmakit::engine::BackendChoice;
use gemmakit::engine::auto::{AutoPolicy, choose_auto};
use gemmakit::source::ModelSource;
use gemmakit::{BackendKind, GemmaError};

#[test]
fn bench_reports_sane_numbers_for_every_configuration() {
    let options = BenchOptions {
        model: tiny_gguf(),
        n_prompt: vec![4, 9],
        n_gen: vec![3],
        depths: vec![0, 10],
        threads: None,
        cpu_cores: gemmakit::engine::CpuCores::Auto,
        repetitions: 2,
        backend: BackendChoice::Cpu,
        cold_load: true,
        cpu_activations: Activations {
            prefill: ActivationPrecision::Exact,
            decode: ActivationPrecision::Int8,
        },
        kv_type_k: None,
        kv_type_v: None,
    };
    let mut seen = 0;
    let results = run_bench(&options, &mut |_| seen += 1).unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(seen, 4);
    let configs: Vec<(usize, usize)> = results.iter().map(|r| (r.depth, r.n_prompt)).collect();
    assert_eq!(configs, vec![(0, 4), (0, 9), (10, 4), (10, 9)]);
    for r in &results {
        let v = r.to_json();
        let prefill = positive(&v, "prefill_tok_s");
        positive(&v, "decode_tok_s");
        let ttft = positive(&v, "ttft_ms");
        positive(&v, "load_ms");
        // Reported as run: int8 decode where this CPU has a fast int8 kernel.
        assert_eq!(v["prefill_activations"], "exact");
        let decode = match gemmakit::kernels::cpu::int8::DotIsa::fast() {
            Some(_) => "int8",
            None => "exact",
        };
        assert_eq!(v["decode_activations"], decode);
        // Prefill rate and time to first token describe the same passes.
        let spread = &v["prefill_tok_s_spread"];
        assert!(
            spread["min"].as_f64().unwrap() <= prefill
                && prefill <= spread["max"].as_f64().unwrap()
        );
        let implied = r.n_prompt as f64 / (ttft / 1e3);
        assert!(
            implied >= spread["min"].as_f64().unwrap() * 0.999
                && implied <= spread["max"].as_f64().unwrap() * 1.001,
            "ttft {ttft} ms vs prefill {prefill} tok/s"
        );
        assert_eq!(v["prefill_tokens_run"], r.n_prompt * 2);
        assert_eq!(v["decode_tokens_run"], 3 * 2);
        assert_eq!(v["repetitions"], 2);
        assert_eq!(v["backend"], "cpu");
        if cfg!(target_os = "linux") {
            assert!(positive(&v, "peak_rss_bytes") > 1e6);
        }
    }
    // Decode at a depth is measured once and shared by the prompt lengths.
    assert_eq!(results[0].decode_tok_s, results[1].decode_tok_s);
}

/// On the GPU a result carries what the device was asked per decoded token, counted by the
/// engine: the same whole number of dispatches for every token, a few bytes read back (the
/// greedy pick's block maxima: 8 bytes per 4096 ids, not the 4 bytes per id of a logits row),
/// and the device's bytes at least the packed weights'. The CPU run has none of it.
#[test]
fn bench_on_the_gpu_counts_dispatches_and_bytes() {
    if !common::gpu_expected() {
        return;
    }
    let options = BenchOptions {
        model: tiny_gguf(),
        n_prompt: vec![4],
        n_gen: vec![3],
        depths: vec![0],
        threads: None,
        cpu_cores: gemmakit::engine::CpuCores::Auto,
        repetitions: 2,
        backend: BackendChoice::Gpu,
        cold_load: false,
        cpu_activations: Activations::default(),
        kv_type_k: None,
        kv_type_v: None,
    };
    let results = run_bench(&options, &mut |_| {}).unwrap();
    let gpu = results[0].gpu.as_ref().expect("GPU counts");
    let model = ModelSource::open(&tiny_gguf()).unwrap();
    let vocab = model.config().vocab_size;
    eprintln!("{gpu:?}, vocab {vocab}");
    assert!(gpu.dispatches_per_token >= 1.0 && gpu.dispatches_per_token.fract() == 0.0);
    let blocks = vocab.div_ceil(4096) as f64;
    assert!(
        gpu.bytes_read_back_per_token >= 8.0 * blocks
            && gpu.bytes_read_back_per_token < 4.0 * vocab as f64,
        "{} bytes read back a token",
        gpu.bytes_read_back_per_token
    );
    let file_bytes = std::fs::metadata(tiny_gguf()).unwrap().len();
    assert!(
        gpu.resident_bytes > file_bytes / 2,
        "{} bytes on the device",
        gpu.resident_bytes
    );
    let cpu = run_bench(
        &BenchOptions {
            backend: BackendChoice::Cpu,
            ..options
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(cpu[0].gpu.is_none());
    assert!(cpu[0].to_json()["gpu_dispatches_per_token"].is_null());
}

#[test]
fn bench_rejects_bad_options() {
    let base = BenchOptions {
        model: tiny_gguf(),
        backend: BackendChoice::Cpu,
        ..BenchOptions::default()
    };
    for options in [
        BenchOptions {
            repetitions: 0,
            ..base.clone()
        },
        BenchOptions {
            n_prompt: vec![0],
            ..base.clone()
        },
        BenchOptions {
            model: PathBuf::from("/nonexistent.gguf"),
            ..base.clone()
        },
    ] {
        let err = run_bench(&options, &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                GemmaError::Unsupported(_) | GemmaError::InvalidArgument(_) | GemmaError::Io { .. }
            ),
            "{err}"
        );
    }
}

/// Auto measures both backends when a GPU may compete, remembers the result, and reports
/// why; a software adapter competes only when allowed. Runs on lavapipe in CI.
#[test]
fn auto_backend_is_chosen_by_measurement_and_cached() {
    std::fs::create_dir_all("/tmp/xdg").ok();
    let cache = std::env::temp_dir().join(format!("gemmakit-auto-{}.json", std::process::id()));
    // A corrupt cache (a torn write of an older version, a full disk) is ignored, not fatal,
    // and replaced whole by the next measurement.
    std::fs::write(&cache, b"{\"truncated\": [1, 2").unwrap();
    let model = tiny_gguf();
    let policy = AutoPolicy {
        allow_software_gpu: true,
        cache_file: Some(cache.clone()),
        cpu_activations: Activations::EXACT,
    };
    let first = choose_auto(&ModelSource::open(&model).unwrap(), &policy).unwrap();
    if first.reason.contains("no usable GPU") {
        eprintln!("no GPU here: {}", first.reason);
        assert_eq!(first.device.kind, BackendKind::Cpu);
        return;
    }
    eprintln!("first: {} — {}", first.device.kind, first.reason);
    assert!(first.reason.contains("measured decode"), "{}", first.reason);
    assert!(
        first.model.is_some(),
        "the measured model is handed over, not reloaded"
    );
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    let entry = stored.as_object().unwrap().values().next().unwrap();
    let (cpu, gpu) = (
        entry["cpu_tok_s"].as_f64().unwrap(),
        entry["gpu_tok_s"].as_f64().unwrap(),
    );
    assert!(cpu > 0.0 && gpu > 0.0);
    let faster = if gpu > cpu {
        BackendKind::Gpu
    } else {
        BackendKind::Cpu
    };
    assert_eq!(first.device.kind, faster);

    let second = choose_auto(&ModelSource::open(&model).unwrap(), &policy).unwrap();
    assert_eq!(second.device.kind, faster);
    assert!(second.reason.contains("cached"), "{}", second.reason);
    assert!(second.model.is_none());

    let gpu_device = gemmakit::ComputeDevice::open(BackendKind::Gpu).unwrap();
    if gpu_device.software {
        let strict = AutoPolicy {
            allow_software_gpu: false,
            cache_file: None,
            cpu_activations: Activations::EXACT,
        };
        let third = choose_auto(&ModelSource::open(&model).unwrap(), &strict).unwrap();
        assert_eq!(third.device.kind, BackendKind::Cpu);
        assert!(
            third.reason.contains("software rasterizer"),
            "{}",
            third.reason
        );
    }
    let _ = std::fs::remove_file(&cache);
}
