//! Checkpoint loading: what is (not) read into memory, and typed errors for bad inputs.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use gemmakit::model::{GemmaConfig, GemmaModel, LogitsFor};
use gemmakit::{BackendKind, ComputeDevice, GemmaError};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

const PLE: &str = "model.language_model.embed_tokens_per_layer.weight";
const EMBED: &str = "model.language_model.embed_tokens.weight";

#[test]
fn embedding_tables_are_gathered_row_by_row_not_loaded() {
    let model = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let log = model.weights().read_log();
    assert_eq!(
        log.bytes_read(PLE),
        0,
        "loading must not copy the per-layer embedding table"
    );
    assert_eq!(
        log.bytes_read(EMBED),
        0,
        "loading must not copy the token embedding"
    );

    let tokens = [2u32, 17, 301, 5];
    let mut cache = model.new_cache(8);
    model.forward(&mut cache, &tokens, LogitsFor::Last).unwrap();
    let ple = model.weights().get(PLE).unwrap();
    let row_bytes = ple.row_stride() as u64;
    assert_eq!(
        log.bytes_read(PLE),
        tokens.len() as u64 * row_bytes,
        "exactly one PLE row per token"
    );
    let embed = model.weights().get(EMBED).unwrap();
    let embed_row = embed.row_stride() as u64;
    assert_eq!(
        log.bytes_read(EMBED),
        tokens.len() as u64 * embed_row,
        "one embedding row per token"
    );
}

#[test]
fn both_config_layouts_resolve_to_the_same_layers() {
    // Release layout (global_head_dim) vs transformers ≥ 5.2x layout (per_layer_config).
    let release =
        std::fs::read_to_string(fixture_dir("tiny_gemma4_e2b").join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&release).unwrap();
    let tc = value["text_config"].as_object_mut().unwrap();
    let global = tc.remove("global_head_dim").unwrap();
    tc.remove("num_global_key_value_heads");
    let mut per_layer = serde_json::Map::new();
    for (i, t) in tc["layer_types"].as_array().unwrap().iter().enumerate() {
        if t == "full_attention" {
            per_layer.insert(format!("{i:02}"), serde_json::json!({ "head_dim": global }));
        }
    }
    tc.insert("per_layer_config".into(), per_layer.into());
    let a = GemmaConfig::from_json(&release).unwrap();
    let b = GemmaConfig::from_json(&value.to_string()).unwrap();
    assert_eq!(a, b);
    // Layers [S,S,F,S,S,F]; producers are sliding → 1, full → 2; shared layers 3..5
    // use a doubled MLP.
    let sources: Vec<_> = a.layers.iter().map(|l| l.kv_source).collect();
    assert_eq!(sources, [None, None, None, Some(1), Some(1), Some(2)]);
    let widths: Vec<_> = a.layers.iter().map(|l| l.intermediate_size).collect();
    assert_eq!(widths, [128, 128, 128, 256, 256, 256]);
    let dims: Vec<_> = a.layers.iter().map(|l| l.head_dim).collect();
    assert_eq!(dims, [16, 16, 32, 16, 16, 32]);
}

/// Copies the fixture's config into `dir` and writes `tensors` as its only shard.
fn write_checkpoint(dir: &Path, config: &str, tensors: &HashMap<String, TensorView<'_>>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, v)| (k.clone(), v.clone())),
        None,
        &dir.join("model.safetensors"),
    )
    .unwrap();
}

fn load_dir(dir: &Path) -> Result<GemmaModel, GemmaError> {
    gemmakit::source::ModelSource::open(dir)
        .and_then(|s| s.load_model(ComputeDevice::open(BackendKind::Cpu).unwrap()))
}

fn fixture_parts() -> (String, Vec<u8>) {
    let dir = fixture_dir("tiny_gemma4_e2b");
    (
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        std::fs::read(dir.join("model.safetensors")).unwrap(),
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gemmakit-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn missing_tensor_is_named() {
    let (config, bytes) = fixture_parts();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let missing = "model.language_model.layers.2.self_attn.k_norm.weight";
    let tensors: HashMap<_, _> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != missing)
        .collect();
    let dir = scratch("missing");
    write_checkpoint(&dir, &config, &tensors);
    match load_dir(&dir) {
        Err(GemmaError::MissingTensor(name)) => assert_eq!(name, missing),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
}

#[test]
fn unused_kv_tensors_on_shared_layers_are_tolerated() {
    // Released checkpoints carry k/v projections on KV-shared layers; they must be ignored.
    let (config, bytes) = fixture_parts();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<_, _> = st.tensors().into_iter().collect();
    let k = tensors["model.language_model.layers.0.self_attn.k_proj.weight"].clone();
    tensors.insert(
        "model.language_model.layers.3.self_attn.k_proj.weight".into(),
        k,
    );
    let dir = scratch("extra");
    write_checkpoint(&dir, &config, &tensors);
    load_dir(&dir).expect("extra unused tensors load");
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let (config, bytes) = fixture_parts();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<_, _> = st.tensors().into_iter().collect();
    let target = "model.language_model.layers.1.mlp.up_proj.weight";
    // Same bytes, transposed shape [64, 128] instead of [128, 64].
    let original = tensors[target].clone();
    let swapped = TensorView::new(original.dtype(), vec![64, 128], original.data()).unwrap();
    tensors.insert(target.into(), swapped);
    let dir = scratch("shape");
    write_checkpoint(&dir, &config, &tensors);
    match load_dir(&dir) {
        Err(GemmaError::ShapeMismatch {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, target);
            assert_eq!(expected, vec![128, 64]);
            assert_eq!(found, vec![64, 128]);
        }
        other => panic!("expected ShapeMismatch, got {:?}", other.err()),
    }
}

#[test]
fn unknown_model_type_is_rejected() {
    let (config, bytes) = fixture_parts();
    let dir = scratch("arch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"model_type\": \"gemma4\"", "\"model_type\": \"llama\""),
    )
    .unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    match load_dir(&dir) {
        Err(GemmaError::UnknownArchitecture(arch)) => assert_eq!(arch, "llama"),
        other => panic!("expected UnknownArchitecture, got {:?}", other.err()),
    }
}

#[test]
fn truncated_weight_file_is_a_typed_error() {
    let (config, bytes) = fixture_parts();
    for cut in [0usize, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let dir = scratch(&format!("trunc{cut}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), &config).unwrap();
        std::fs::write(dir.join("model.safetensors"), &bytes[..cut]).unwrap();
        match load_dir(&dir) {
            Err(GemmaError::InvalidWeightFile { reason, .. }) => {
                eprintln!("cut at {cut}: {reason}")
            }
            other => panic!(
                "cut at {cut}: expected InvalidWeightFile, got {:?}",
                other.err()
            ),
        }
    }
}

#[test]
fn missing_directory_and_config_are_io_errors() {
    let dir = scratch("empty");
    assert!(matches!(load_dir(&dir), Err(GemmaError::Io { .. })));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(load_dir(&dir), Err(GemmaError::Io { .. })));
}

#[test]
fn out_of_vocabulary_token_and_context_overflow_are_errors() {
    let model = load("tiny_gemma4_e2b", BackendKind::Cpu);
    let mut cache = model.new_cache(4);
    assert!(matches!(
        model.forward(&mut cache, &[2, 9999], LogitsFor::Last),
        Err(GemmaError::TokenOutOfRange { id: 9999, .. })
    ));
    assert!(matches!(
        model.forward(&mut cache, &[2, 3, 4, 5, 6], LogitsFor::Last),
        Err(GemmaError::ContextOverflow {
            requested: 5,
            context_len: 4
        })
    ));
    // A failed call leaves the cache untouched and usable.
    assert_eq!(cache.len(), 0);
    model.forward(&mut cache, &[2, 3], LogitsFor::Last).unwrap();
    assert_eq!(cache.len(), 2);
}
