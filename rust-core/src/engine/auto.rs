//! Auto: the backend chosen by measurement. A short decode on each usable device, the
//! faster wins, remembered per model file and device in a cache file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::device::{Activations, BackendKind, ComputeDevice};
use crate::error::Result;
use crate::model::{GemmaModel, LogitsFor};
use crate::source::ModelSource;

/// How [`choose_auto`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPolicy {
    /// Let a software GPU adapter (lavapipe, SwiftShader) compete. Off by default: it is
    /// never faster than the CPU path it emulates on, and measuring it costs a second load.
    pub allow_software_gpu: bool,
    /// Where measurements are remembered (`None`: measure every time).
    pub cache_file: Option<PathBuf>,
    /// Activation numerics if the CPU is chosen.
    pub cpu_activations: Activations,
}

impl AutoPolicy {
    /// `GEMMAKIT_AUTO_ALLOW_SOFTWARE_GPU=1` allows software adapters; the cache lives at
    /// `$GEMMAKIT_HOME/backend-choice.json` (default `~/.cache/gemmakit`).
    pub fn from_env() -> Self {
        let home = std::env::var_os("GEMMAKIT_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/gemmakit")));
        AutoPolicy {
            allow_software_gpu: std::env::var("GEMMAKIT_AUTO_ALLOW_SOFTWARE_GPU")
                .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
            cache_file: home.map(|h| h.join("backend-choice.json")),
            cpu_activations: Activations::EXACT,
        }
    }
}

/// The device Auto picked, why, and the model already loaded on it when measuring did that.
pub struct AutoChoice {
    pub device: ComputeDevice,
    pub reason: String,
    pub model: Option<GemmaModel>,
}

/// Decode tokens timed per backend (after a 4-token prefill and one untimed step).
const PROBE_STEPS: usize = 4;

/// Decode speed of `model`: a short prompt, one warm-up step, then [`PROBE_STEPS`] timed steps.
pub fn measure_decode_tok_s(model: &GemmaModel) -> Result<f64> {
    let vocab = model.config().vocab_size as u32;
    let token = |i: u32| (1000 + i * 7919) % vocab.max(1);
    let mut cache = model.new_cache(16);
    model.forward(
        &mut cache,
        &[token(0), token(1), token(2), token(3)],
        LogitsFor::Last,
    )?;
    model.forward(&mut cache, &[token(4)], LogitsFor::Last)?;
    let start = Instant::now();
    for i in 0..PROBE_STEPS as u32 {
        model.forward(&mut cache, &[token(5 + i)], LogitsFor::Last)?;
    }
    Ok(PROBE_STEPS as f64 / start.elapsed().as_secs_f64())
}

/// Identifies a model file and the two devices, so a cached choice is reused only for the
/// same file (path, size, modification time) on the same hardware and thread count.
fn cache_key(path: &Path, cpu: &ComputeDevice, gpu: &ComputeDevice) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(path).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!(
        "{}|{}|{}|{}|{}",
        canonical.display(),
        meta.map_or(0, |m| m.len()),
        mtime,
        cpu.description,
        gpu.description
    )
}

/// The remembered measurements; a missing file is empty, and an unreadable or corrupt one is
/// ignored with a warning (it is rewritten whole after the next measurement).
fn read_cache(file: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = match std::fs::read(file) {
        Ok(bytes) if bytes.len() <= MAX_CACHE_BYTES => bytes,
        Ok(bytes) => {
            log::warn!(
                "ignoring {}: {} bytes is too large",
                file.display(),
                bytes.len()
            );
            return Default::default();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
        Err(e) => {
            log::warn!("ignoring {}: {e}", file.display());
            return Default::default();
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            log::warn!("ignoring {}: not a JSON object", file.display());
            Default::default()
        }
        Err(e) => {
            log::warn!("ignoring {}: {e}", file.display());
            Default::default()
        }
    }
}

/// The cache holds a few entries per model and device pair; anything bigger is not ours.
const MAX_CACHE_BYTES: usize = 1 << 20;

/// Picks the backend for `BackendChoice::Auto`. No usable GPU, or only a software one that
/// the policy does not let compete: the CPU, with that reason. Otherwise the faster of the
/// two by a short decode on each, remembered in the policy's cache file.
pub fn choose_auto(source: &ModelSource, policy: &AutoPolicy) -> Result<AutoChoice> {
    let cpu = || {
        ComputeDevice::open(BackendKind::Cpu).map(|d| ComputeDevice {
            activations: crate::kernels::cpu::int8::effective(policy.cpu_activations),
            ..d
        })
    };
    let gpu = match ComputeDevice::open(BackendKind::Gpu) {
        Ok(gpu) => gpu,
        Err(e) => {
            return Ok(AutoChoice {
                device: cpu()?,
                reason: format!("auto: no usable GPU ({e})"),
                model: None,
            });
        }
    };
    if gpu.software && !policy.allow_software_gpu {
        return Ok(AutoChoice {
            device: cpu()?,
            reason: format!(
                "auto: the only GPU adapter ({}) is a software rasterizer (set GEMMAKIT_AUTO_ALLOW_SOFTWARE_GPU=1 to measure it)",
                gpu.description
            ),
            model: None,
        });
    }
    let cpu = cpu()?;
    let key = cache_key(source.path(), &cpu, &gpu);
    if let Some(file) = &policy.cache_file
        && let Some(entry) = read_cache(file).get(&key)
    {
        let rate = |k: &str| {
            entry
                .get(k)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        let (c, g) = (rate("cpu_tok_s"), rate("gpu_tok_s"));
        if c > 0.0 || g > 0.0 {
            let device = if g > c { gpu } else { cpu };
            return Ok(AutoChoice {
                reason: format!(
                    "auto: {} decoded faster when measured earlier (cpu {c:.1} tok/s, gpu {g:.1} tok/s; cached in {})",
                    device.kind,
                    file.display()
                ),
                device,
                model: None,
            });
        }
    }

    let cpu_model = source.load_model(cpu.clone())?;
    let cpu_rate = measure_decode_tok_s(&cpu_model)?;
    let gpu_result = source
        .load_model(gpu.clone())
        .and_then(|m| measure_decode_tok_s(&m).map(|rate| (m, rate)));
    let (gpu_model, gpu_rate) = match gpu_result {
        Ok(pair) => pair,
        Err(e) => {
            return Ok(AutoChoice {
                device: cpu,
                reason: format!(
                    "auto: the GPU ({}) could not run the model ({e}); cpu measured {cpu_rate:.1} tok/s",
                    gpu.description
                ),
                model: Some(cpu_model),
            });
        }
    };
    let mut remembered = String::new();
    if let Some(file) = &policy.cache_file {
        let mut cache = read_cache(file);
        cache.insert(
            key,
            serde_json::json!({"cpu_tok_s": cpu_rate, "gpu_tok_s": gpu_rate}),
        );
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let json = serde_json::Value::Object(cache).to_string();
                crate::files::write_atomic(file, json.as_bytes())
            });
        remembered = match written {
            Ok(()) => format!("; cached in {}", file.display()),
            Err(e) => format!("; not cached ({e})"),
        };
    }
    let (device, model) = if gpu_rate > cpu_rate {
        (gpu, gpu_model)
    } else {
        (cpu, cpu_model)
    };
    Ok(AutoChoice {
        reason: format!(
            "auto: measured decode cpu {cpu_rate:.1} tok/s, gpu {gpu_rate:.1} tok/s{remembered}"
        ),
        device,
        model: Some(model),
    })
}
