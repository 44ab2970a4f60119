//! Shared helpers for the parity tests: fixture paths, reference tensors, greedy decoding.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use gemmakit::model::{GemmaModel, LogitsFor};
use gemmakit::{BackendKind, ComputeDevice};
use safetensors::SafeTensors;

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The tiny Gemma 4 E2B fixture as an f32 GGUF (llama.cpp's converter): the quickest model to
/// load, for tests of the engine's plumbing rather than its numbers.
pub fn tiny_gguf() -> PathBuf {
    fixture_dir("tiny_gemma4_e2b").join("model-f32.gguf")
}

/// The number at `key` of a JSON object, asserted finite and above zero (a measured rate,
/// time or size).
pub fn positive(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` missing or not a number in {v}"));
    assert!(x.is_finite() && x > 0.0, "`{key}` = {x}");
    x
}

/// Reference tensors written by transformers (`reference_outputs.safetensors`).
pub struct Reference {
    tensors: HashMap<String, (Vec<usize>, Vec<u8>, safetensors::Dtype)>,
}

impl Reference {
    pub fn load(fixture: &str) -> Self {
        let path = fixture_dir(fixture).join("reference_outputs.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).expect("reference file parses");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                (
                    name,
                    (view.shape().to_vec(), view.data().to_vec(), view.dtype()),
                )
            })
            .collect();
        Reference { tensors }
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors[name].0.clone()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let (_, bytes, dtype) = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no reference `{name}`"));
        assert_eq!(*dtype, safetensors::Dtype::F32, "{name}");
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    pub fn u8(&self, name: &str) -> Vec<u8> {
        let (_, bytes, dtype) = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no reference `{name}`"));
        assert_eq!(*dtype, safetensors::Dtype::U8, "{name}");
        bytes.clone()
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let (_, bytes, dtype) = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no reference `{name}`"));
        assert_eq!(*dtype, safetensors::Dtype::I64, "{name}");
        bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn assert_close(what: &str, ours: &[f32], reference: &[f32], tol: f32) {
    let err = max_abs_diff(ours, reference);
    eprintln!("{what}: max abs error {err:.3e} (tolerance {tol:.0e})");
    assert!(err <= tol, "{what}: max abs error {err} exceeds {tol}");
}

/// For residual-stream activations, whose magnitude grows layer by layer (to ~200 in the E4B
/// fixture): the tolerance applies per unit of the reference's largest magnitude (f32 rounding
/// of the residual sum grows with it), never tighter than `tol` itself.
pub fn assert_close_scaled(what: &str, ours: &[f32], reference: &[f32], tol: f32) {
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert_close(
        &format!("{what} (scale {scale:.1})"),
        ours,
        reference,
        tol * scale,
    );
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

pub fn load(fixture: &str, backend: BackendKind) -> GemmaModel {
    let device = ComputeDevice::open(backend).unwrap_or_else(|e| panic!("{backend} backend: {e}"));
    gemmakit::source::ModelSource::open(&fixture_dir(fixture))
        .and_then(|s| s.load_model(device))
        .expect("fixture loads")
}

/// Greedy continuation with the KV cache: prefill, then one token per step. Returns the tokens
/// and the logits that chose each of them.
pub fn greedy_cached(
    model: &GemmaModel,
    prompt: &[u32],
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    // No rollback slack: the sliding rings wrap as early as possible.
    let mut cache = model.new_cache_with_slack(prompt.len() + steps, 0);
    let mut logits = model
        .forward(&mut cache, prompt, LogitsFor::Last)
        .expect("prefill");
    let (mut tokens, mut step_logits) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let next = argmax(&logits);
        tokens.push(next);
        step_logits.push(logits);
        if step + 1 < steps {
            logits = model
                .forward(&mut cache, &[next], LogitsFor::Last)
                .expect("decode");
        } else {
            break;
        }
    }
    (tokens, step_logits)
}

/// Greedy continuation recomputing the whole sequence each step (no cache reuse).
pub fn greedy_uncached(
    model: &GemmaModel,
    prompt: &[u32],
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut seq = prompt.to_vec();
    let (mut tokens, mut step_logits) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let mut cache = model.new_cache(seq.len());
        let logits = model
            .forward(&mut cache, &seq, LogitsFor::Last)
            .expect("forward");
        let next = argmax(&logits);
        tokens.push(next);
        seq.push(next);
        step_logits.push(logits);
    }
    (tokens, step_logits)
}

pub fn gpu_expected() -> bool {
    std::env::var("GEMMAKIT_SKIP_GPU_TESTS").map_or(true, |v| v != "1")
}

/// The demo model (Gemma 3 270M Q4_K_M GGUF), fetched by scripts/fetch-demo-model.sh.
pub fn demo_model_path() -> PathBuf {
    let home = std::env::var_os("GEMMAKIT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/gemmakit")
        });
    home.join("models/gemma3-270m-q4_k_m.gguf")
}

/// A JSON array of token ids.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
