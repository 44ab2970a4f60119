//! `gemmakit convert` against llama.cpp's own converter (the fixtures' model-f32.gguf and
//! model-q8_0.gguf come from convert_hf_to_gguf.py, see scripts/reference/
//! convert_tiny_to_gguf.sh) and against transformers' logits.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gemmakit::convert::writer::{StreamingGgufWriter, TensorPlan};
use gemmakit::convert::{OutType, QuantPlan, convert_hf};
use gemmakit::engine::{BackendChoice, ChatFormat, Engine, EngineOptions};
use gemmakit::model::LogitsFor;
use gemmakit::weights::gguf::{GgmlType, GgufFile, GgufWriter, MetaValue};
use gemmakit::weights::quant;
use gemmakit::{BackendKind, ComputeDevice, GemmaError};
use half::f16;

/// A fresh directory per call (tests run in parallel and convert the same fixtures).
fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "gemmakit-convert-{}-{n}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of a tiny fixture checkpoint plus the synthetic 512-token tokenizer that the
/// llama.cpp reference conversion used (the fixtures themselves ship no tokenizer).
fn checkpoint_with_tokenizer(fixture: &str) -> PathBuf {
    let dir = scratch(fixture).join(fixture);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_dir(fixture).join(f), dir.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture_dir("tiny_gemma4_tokenizer").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn convert(fixture: &str, quant: OutType) -> PathBuf {
    let dir = checkpoint_with_tokenizer(fixture);
    let out = dir.parent().unwrap().join(format!("model-{quant}.gguf"));
    let summary = convert_hf(&dir, &QuantPlan::uniform(quant), &out).unwrap();
    assert!(summary.tokenizer);
    assert_eq!(summary.file_bytes, std::fs::metadata(&out).unwrap().len());
    out
}

/// Metadata (except the free-form name and size label) and every tensor's type, shape and
/// bytes must equal llama.cpp's converter output.
fn assert_same_as_llama_cpp(ours: &Path, reference: &Path) {
    let a_bytes = std::fs::read(ours).unwrap();
    let b_bytes = std::fs::read(reference).unwrap();
    let a = GgufFile::parse(&a_bytes).unwrap();
    let b = GgufFile::parse(&b_bytes).unwrap();
    let skip = ["general.name", "general.size_label"];
    let keys = |f: &GgufFile| -> Vec<String> {
        f.metadata()
            .keys()
            .filter(|k| !skip.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(keys(&a), keys(&b), "metadata keys");
    for key in keys(&b) {
        assert_eq!(a.get(&key), b.get(&key), "metadata `{key}`");
    }
    assert_eq!(a.tensors().len(), b.tensors().len());
    for tb in b.tensors() {
        let ta = a
            .tensor(tb.name())
            .unwrap_or_else(|| panic!("missing tensor {}", tb.name()));
        assert_eq!(ta.ggml_type(), tb.ggml_type(), "{}", tb.name());
        assert_eq!(ta.shape(), tb.shape(), "{}", tb.name());
        assert!(
            ta.data(&a_bytes).unwrap() == tb.data(&b_bytes).unwrap(),
            "tensor {} differs",
            tb.name()
        );
    }
    eprintln!(
        "{}: {} metadata keys and {} tensors identical to llama.cpp's",
        ours.display(),
        keys(&b).len(),
        b.tensors().len()
    );
}

#[test]
fn tiny_checkpoints_convert_exactly_like_llama_cpp() {
    for fixture in ["tiny_gemma4_e2b", "tiny_gemma4_e4b"] {
        for (quant, reference) in [
            (OutType::F32, "model-f32.gguf"),
            (OutType::Q8_0, "model-q8_0.gguf"),
        ] {
            let ours = convert(fixture, quant);
            assert_same_as_llama_cpp(&ours, &fixture_dir(fixture).join(reference));
        }
    }
}

#[test]
fn converted_files_run_and_match_transformers() {
    for fixture in ["tiny_gemma4_e2b", "tiny_gemma4_e4b"] {
        let path = convert(fixture, OutType::F32);
        let reference = Reference::load(fixture);
        let ids = reference.ids("long.input_ids");
        let model = gemmakit::source::ModelSource::open(&path)
            .and_then(|s| s.load_model(ComputeDevice::open(BackendKind::Cpu).unwrap()))
            .unwrap();
        let mut cache = model.new_cache(ids.len());
        let logits = model.forward(&mut cache, &ids, LogitsFor::All).unwrap();
        assert_close(
            &format!("{fixture} converted F32 vs transformers"),
            &logits,
            &reference.f32("long.logits"),
            1e-4,
        );
        // The engine loads it whole: tokenizer and chat template included.
        let engine = Engine::load(
            &path,
            EngineOptions {
                backend: BackendChoice::Cpu,
                chat_format: ChatFormat::Auto,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        assert_eq!(engine.tokenizer().token_id("<|turn>"), Some(5));
        assert!(engine.chat_template().is_some());
    }
}

/// Q4_0 has no llama.cpp converter reference; each value must lie within the float64 error
/// bound of ggml's Q4_0 rounding: half a step (d = the block's signed extreme / −8), one step
/// for the values pinned to the top code 15, plus the f16 rounding of d times the code.
#[test]
fn q4_0_conversion_is_within_the_quantization_bound() {
    let fixture = "tiny_gemma4_e2b";
    let path = convert(fixture, OutType::Q4_0);
    let bytes = std::fs::read(&path).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let f32_bytes = std::fs::read(fixture_dir(fixture).join("model-f32.gguf")).unwrap();
    let f32_file = GgufFile::parse(&f32_bytes).unwrap();
    let mut checked = 0;
    for t in file.tensors() {
        let original = quant::dequantize(
            GgmlType::F32,
            f32_file.tensor_data(&f32_bytes, t.name()).unwrap(),
        )
        .unwrap();
        let data = t.data(&bytes).unwrap();
        let decoded = quant::dequantize(t.ggml_type(), data).unwrap();
        assert_eq!(decoded.len(), original.len(), "{}", t.name());
        match t.ggml_type() {
            GgmlType::F32 => assert_eq!(decoded, original, "{}", t.name()),
            GgmlType::F16 => {
                for (d, o) in decoded.iter().zip(&original) {
                    assert_eq!(*d, f16::from_f32(*o).to_f32(), "{}", t.name());
                }
            }
            GgmlType::Q4_0 => {
                for (block, (x, y)) in original.chunks(32).zip(decoded.chunks(32)).enumerate() {
                    let extreme = x.iter().fold(0.0f64, |m, &v| {
                        if (v as f64).abs() > m.abs() {
                            v as f64
                        } else {
                            m
                        }
                    });
                    let d = extreme / -8.0;
                    let d16 = f16::from_le_bytes([data[block * 18], data[block * 18 + 1]]).to_f64();
                    for (&xv, &yv) in x.iter().zip(y) {
                        let steps = if d != 0.0 { xv as f64 / d } else { 0.0 };
                        let rounding = if steps > 7.5 { 1.0 } else { 0.5 };
                        let bound = d.abs() * (rounding + 1e-5) + 8.0 * (d - d16).abs() + 1e-30;
                        let err = (xv as f64 - yv as f64).abs();
                        assert!(
                            err <= bound,
                            "{} block {block}: |{xv} - {yv}| > {bound}",
                            t.name()
                        );
                    }
                }
                checked += 1;
            }
            other => panic!("unexpected type {other} for {}", t.name()),
        }
    }
    assert!(checked > 40, "only {checked} Q4_0 tensors");
}

/// The streaming writer and the in-memory GgufWriter (tested against gguf-py) must produce
/// the same bytes, however the data is split.
#[test]
fn streaming_writer_matches_the_in_memory_writer() {
    let dir = scratch("stream");
    let a: Vec<u8> = (0..96u32)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let b: Vec<u8> =
        quant::quantize_row_q8_0(&(0..64).map(|i| i as f32 - 30.0).collect::<Vec<_>>()).unwrap();
    let c: Vec<u8> = 7.0f32.to_le_bytes().to_vec();
    let mut reference = GgufWriter::new();
    reference
        .add_metadata("general.architecture", MetaValue::String("gemma4".into()))
        .unwrap();
    reference
        .add_tensor("a", &[32, 3], GgmlType::F32, a.clone())
        .unwrap();
    reference
        .add_tensor("b", &[64], GgmlType::Q8_0, b.clone())
        .unwrap();
    reference
        .add_tensor("c", &[1], GgmlType::F32, c.clone())
        .unwrap();
    let expected = reference.to_bytes();

    let mut meta = GgufWriter::new();
    meta.add_metadata("general.architecture", MetaValue::String("gemma4".into()))
        .unwrap();
    let plan = vec![
        TensorPlan {
            name: "a".into(),
            shape: vec![32, 3],
            ty: GgmlType::F32,
        },
        TensorPlan {
            name: "b".into(),
            shape: vec![64],
            ty: GgmlType::Q8_0,
        },
        TensorPlan {
            name: "c".into(),
            shape: vec![1],
            ty: GgmlType::F32,
        },
    ];
    let path = dir.join("s.gguf");
    let mut w = StreamingGgufWriter::create(&path, &meta, plan.clone()).unwrap();
    for piece in a.chunks(100) {
        w.write(piece).unwrap();
    }
    w.write(&b[..10]).unwrap();
    w.write(&b[10..]).unwrap();
    w.write(&c).unwrap();
    assert_eq!(w.finish().unwrap(), expected.len() as u64);
    assert_eq!(std::fs::read(&path).unwrap(), expected);

    // Too much data and too little are errors, not corrupt files.
    let mut w = StreamingGgufWriter::create(&dir.join("t.gguf"), &meta, plan).unwrap();
    assert!(w.write(&vec![0u8; a.len() + 1]).is_err());
    w.write(&a).unwrap();
    assert!(w.finish().is_err());
    assert!(!dir.join("t.gguf").exists());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dir = scratch("bad");
    let out = dir.join("x.gguf");
    assert!(matches!(
        convert_hf(&dir, &QuantPlan::uniform(OutType::F32), &out),
        Err(GemmaError::Io { .. })
    ));
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    assert!(matches!(
        convert_hf(&dir, &QuantPlan::uniform(OutType::F32), &out),
        Err(GemmaError::UnknownArchitecture(_))
    ));
    assert!(matches!(
        "q3_k".parse::<OutType>(),
        Err(GemmaError::InvalidArgument(_))
    ));
    assert!(matches!(
        "e8b".parse::<gemmakit::convert::RandomVariant>(),
        Err(GemmaError::InvalidArgument(_))
    ));

    // Without tokenizer.json the conversion still succeeds and says so.
    let ckpt = scratch("notok");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture_dir("tiny_gemma4_e2b").join(f), ckpt.join(f)).unwrap();
    }
    let summary = convert_hf(
        &ckpt,
        &QuantPlan::uniform(OutType::F16),
        &ckpt.join("m.gguf"),
    )
    .unwrap();
    assert!(!summary.tokenizer);
    assert!(summary.notes.iter().any(|n| n.contains("tokenizer")));
}
