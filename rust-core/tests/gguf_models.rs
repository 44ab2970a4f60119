//! Gemma 4 from GGUF files written by llama.cpp's own converter (convert_hf_to_gguf.py, see
//! scripts/reference/convert_tiny_to_gguf.sh), and hostile GGUF files.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gemmakit::engine::{BackendChoice, ChatFormat, Engine, EngineOptions};
use gemmakit::generate::{Flow, GenerateOptions};
use gemmakit::kernels::cpu::{ActivationPrecision, Activations};
use gemmakit::model::{GemmaModel, LogitsFor};
use gemmakit::{BackendKind, ComputeDevice, GemmaError};

fn load_gguf(path: &Path) -> Result<GemmaModel, GemmaError> {
    gemmakit::source::ModelSource::open(path)
        .and_then(|s| s.load_model(ComputeDevice::open(BackendKind::Cpu).unwrap()))
}

fn all_logits(model: &GemmaModel, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(ids.len());
    model.forward(&mut cache, ids, LogitsFor::All).unwrap()
}

fn check_variant(fixture: &str) {
    let reference = Reference::load(fixture);
    let ids = reference.ids("long.input_ids");
    let expected = reference.f32("long.logits");
    let safetensors = all_logits(&load(fixture, BackendKind::Cpu), &ids);
    let f32_gguf = all_logits(
        &load_gguf(&fixture_dir(fixture).join("model-f32.gguf")).unwrap(),
        &ids,
    );
    assert_close("F32 GGUF vs safetensors", &f32_gguf, &safetensors, 1e-5);
    assert_close("F32 GGUF vs transformers", &f32_gguf, &expected, 1e-4);

    let q8 = load_gguf(&fixture_dir(fixture).join("model-q8_0.gguf")).unwrap();
    let q8_logits = all_logits(&q8, &ids);
    // Random tiny weights (64-wide, softcap 30) amplify 8-bit rounding: measured 0.89 (E2B)
    // and 1.58 (E4B) max-abs on this 40-token prompt; llama.cpp on the same Q8_0 files is
    // 1.7–1.8 away from transformers. The dequantizers themselves are bit-exact (weights::quant
    // tests); this checks the mixed Q8_0/F16/F32 plumbing end to end.
    assert_close(
        "Q8_0 GGUF vs transformers (f32)",
        &q8_logits,
        &expected,
        2.0,
    );
    // 8-bit activations on the prefill path (where this CPU runs them): llama.cpp's numerics
    // class. Measured 1.78 (E2B) / 2.11 (E4B) against llama.cpp's 1.7–1.8 on these files; a
    // wrong scale or packing gives errors in the tens (the kernels themselves are checked
    // against float64 in cpu_kernels.rs).
    let int8_device = ComputeDevice {
        activations: Activations {
            prefill: ActivationPrecision::Int8,
            decode: ActivationPrecision::Exact,
        },
        ..ComputeDevice::open(BackendKind::Cpu).unwrap()
    };
    let q8_int8 =
        gemmakit::source::ModelSource::open(&fixture_dir(fixture).join("model-q8_0.gguf"))
            .unwrap()
            .load_model(int8_device)
            .unwrap();
    assert_close(
        "Q8_0 GGUF, int8 prefill, vs transformers (f32)",
        &all_logits(&q8_int8, &ids),
        &expected,
        2.5,
    );
    // Q8_0 must also be consistent with itself through the KV cache.
    let (cached, _) = greedy_cached(&q8, &ids, 6);
    let (uncached, _) = greedy_uncached(&q8, &ids, 6);
    assert_eq!(cached, uncached);
}

#[test]
fn tiny_e2b_gguf_matches_safetensors_and_transformers() {
    check_variant("tiny_gemma4_e2b");
}

#[test]
fn tiny_e4b_gguf_matches_safetensors_and_transformers() {
    check_variant("tiny_gemma4_e4b");
}

/// 8-bit activations on the decode path (the tiny E2B's Q8_0 file): the engine reports and
/// generates with them; the prompt's products (40 rows, the prefill path) stay bit-identical to
/// exact, and the decode steps, fed the exact model's greedy tokens, stay close to exact's logits
/// while differing from them where this CPU runs int8 (so the option reaches the kernels).
#[test]
fn int8_decode_generates_and_leaves_prefill_exact() {
    let path = fixture_dir("tiny_gemma4_e2b").join("model-q8_0.gguf");
    let ids = Reference::load("tiny_gemma4_e2b").ids("long.input_ids");
    let engine = |decode| {
        Engine::load(
            &path,
            EngineOptions {
                backend: BackendChoice::Cpu,
                chat_format: ChatFormat::PlainText,
                decode_activations: decode,
                ..EngineOptions::default()
            },
        )
        .unwrap()
    };
    let (exact, int8) = (
        engine(ActivationPrecision::Exact),
        engine(ActivationPrecision::Int8),
    );
    let fast = gemmakit::kernels::cpu::int8::DotIsa::fast().is_some();
    assert_eq!(exact.activations(), Activations::EXACT);
    assert_eq!(
        int8.activations(),
        Activations {
            prefill: ActivationPrecision::Exact,
            decode: if fast {
                ActivationPrecision::Int8
            } else {
                ActivationPrecision::Exact
            },
        }
    );
    let steps = 6;
    let (tokens, want) = greedy_cached(exact.model(), &ids, steps);
    let model = int8.model();
    let mut cache = model.new_cache_with_slack(ids.len() + steps, 0);
    let mut got = vec![model.forward(&mut cache, &ids, LogitsFor::Last).unwrap()];
    for &t in &tokens[..steps - 1] {
        got.push(model.forward(&mut cache, &[t], LogitsFor::Last).unwrap());
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // Every product of the prompt pass with all logits has 40 rows (the prefill path); with
    // only the last row's logits the LM head is a one-row (decode) product.
    let all = |m: &GemmaModel| {
        let mut cache = m.new_cache(ids.len());
        m.forward(&mut cache, &ids, LogitsFor::All).unwrap()
    };
    assert!(
        bits(&all(model)) == bits(&all(exact.model())),
        "prefill must stay exact"
    );
    let mut differ = false;
    for s in 0..steps {
        // Measured ≤ 0.3 here (random 64-wide weights amplify the rounding, as for prefill
        // above); a wrong scale or offset gives errors in the tens.
        assert_close(&format!("int8 decode step {s}"), &got[s], &want[s], 1.0);
        differ |= bits(&got[s]) != bits(&want[s]);
    }
    assert_eq!(
        differ, fast,
        "int8 decode ran where (and only where) it is fast"
    );
    let out = int8
        .generate_from_tokens(
            &ids,
            &GenerateOptions {
                max_tokens: 8,
                ..GenerateOptions::default()
            },
            &mut |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(out.tokens.len(), 8);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gemmakit-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Offset of the first tensor-info record (its name's length prefix) in a GGUF.
fn first_tensor_info(bytes: &[u8], name: &str) -> usize {
    let needle = name.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("tensor name in header");
    at - 8
}

fn expect_invalid(bytes: &[u8], what: &str) {
    let path = scratch(&format!("{}.gguf", what.replace(' ', "_")));
    std::fs::write(&path, bytes).unwrap();
    match load_gguf(&path) {
        Err(GemmaError::InvalidWeightFile { reason, .. }) => eprintln!("{what}: {reason}"),
        Err(GemmaError::UnknownArchitecture(a)) => eprintln!("{what}: unknown architecture {a}"),
        Err(other) => panic!("{what}: expected an invalid-file error, got {other}"),
        Ok(_) => panic!("{what}: a hostile file loaded"),
    }
}

#[test]
fn hostile_gguf_files_are_typed_errors() {
    let good = std::fs::read(fixture_dir("tiny_gemma4_e2b").join("model-q8_0.gguf")).unwrap();
    load_gguf(&fixture_dir("tiny_gemma4_e2b").join("model-q8_0.gguf")).expect("the original loads");

    // Truncated at 20 points spread over the header, metadata, tensor infos and data.
    let mut state = 0x2545_f491_u64;
    for i in 0..20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let cut = if i < 5 {
            [0, 3, 8, 23, 100][i]
        } else {
            (state % good.len() as u64) as usize
        };
        let err = match load_gguf(&{
            let p = scratch(&format!("trunc{i}.gguf"));
            std::fs::write(&p, &good[..cut]).unwrap();
            p
        }) {
            Err(e) => e,
            Ok(_) => panic!("truncated at {cut} loaded"),
        };
        assert!(
            matches!(err, GemmaError::InvalidWeightFile { .. }),
            "cut at {cut}: {err}"
        );
    }

    let mut bad = good.clone();
    bad[0..4].copy_from_slice(b"GGUX");
    expect_invalid(&bad, "wrong magic");

    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&7u32.to_le_bytes());
    expect_invalid(&bad, "wrong version");

    let mut bad = good.clone();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_invalid(&bad, "absurd tensor count");

    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    expect_invalid(&bad, "absurd metadata count");

    // Tensor info: name length u64, name, n_dims u32, dims u64 × n, type u32, offset u64.
    let name = "token_embd.weight";
    let info = first_tensor_info(&good, name);
    let dims_at = info + 8 + name.len() + 4;
    let n_dims =
        u32::from_le_bytes(good[info + 8 + name.len()..dims_at].try_into().unwrap()) as usize;
    let type_at = dims_at + 8 * n_dims;
    let offset_at = type_at + 4;

    let mut bad = good.clone();
    bad[dims_at..dims_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    expect_invalid(&bad, "absurd dimension");

    let mut bad = good.clone();
    bad[info + 8 + name.len()..dims_at].copy_from_slice(&9u32.to_le_bytes());
    expect_invalid(&bad, "too many dimensions");

    let mut bad = good.clone();
    bad[type_at..type_at + 4].copy_from_slice(&1234u32.to_le_bytes());
    expect_invalid(&bad, "unknown tensor type");

    let mut bad = good.clone();
    bad[offset_at..offset_at + 8].copy_from_slice(&((good.len() as u64) << 4).to_le_bytes());
    expect_invalid(&bad, "offset past the end");

    // Unknown architecture: rewrite the value of general.architecture (same length).
    let mut bad = good.clone();
    let arch = b"gemma4";
    let key = b"general.architecture";
    let at = bad.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 8;
    assert_eq!(&bad[at..at + arch.len()], arch);
    bad[at..at + arch.len()].copy_from_slice(b"llama9");
    expect_invalid(&bad, "unknown architecture");
}
