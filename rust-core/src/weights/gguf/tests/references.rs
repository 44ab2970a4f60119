//! Checks against references outside this crate: a file from gguf-py, ggml's type table and
//! the fuzzer's seed corpus.

use super::*;

/// A file written by gguf-py's GGUFWriter (scripts/reference/gguf_dequant_ref.py).
#[test]
fn reads_gguf_py_output() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/quant/gguf_py_sample.gguf"
    );
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!((f.version(), f.alignment(), f.data_offset()), (3, 64, 768));
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(f.get_str("general.name").unwrap(), "gemmakit-ref-sample");
    assert_eq!(f.get_u8("test.u8").unwrap(), 200);
    assert_eq!(f.get_i8("test.i8").unwrap(), -100);
    assert_eq!(f.get_u16("test.u16").unwrap(), 60000);
    assert_eq!(f.get_i16("test.i16").unwrap(), -30000);
    assert_eq!(f.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i32("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(f.get_f32("test.f32").unwrap(), 0.25);
    assert!(f.get_bool("test.bool").unwrap());
    assert_eq!(f.get_u64("test.u64").unwrap(), (1 << 63) + 5);
    assert_eq!(f.get_i64("test.i64").unwrap(), -(1 << 62));
    assert_eq!(f.get_f64("test.f64").unwrap(), -1.5e300);
    assert_eq!(f.get_str_array("test.strings").unwrap(), ["a", "", "héllo"]);
    assert_eq!(f.get_f32_array("test.f32s").unwrap(), [1.5, -2.0, 3.25]);
    assert_eq!(
        f.get_array("test.nested").unwrap(),
        &MetaArray::Array(vec![MetaArray::I32(vec![1, 2]), MetaArray::I32(vec![3])])
    );
    assert_eq!(f.metadata().len(), 17);

    let t = f.tensor("f32.weight").unwrap();
    assert_eq!(
        (t.ggml_type(), t.shape(), t.relative_offset()),
        (GgmlType::F32, &[8u64, 3][..], 0)
    );
    let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 4.0).collect();
    assert_eq!(t.data(&bytes).unwrap(), f32_bytes(&want).as_slice());
    let t = f.tensor("f16.bias").unwrap();
    assert_eq!(
        (t.ggml_type(), t.shape(), t.relative_offset()),
        (GgmlType::F16, &[4u64][..], 128)
    );
    assert_eq!(
        t.data(&bytes).unwrap(),
        [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38, 0xFF, 0x7B]
    );
    let t = f.tensor("q8.weight").unwrap();
    assert_eq!(
        (t.ggml_type(), t.shape(), t.relative_offset()),
        (GgmlType::Q8_0, &[64u64, 2][..], 192)
    );
    assert_eq!((t.byte_len(), t.row_bytes()), (136, 68));
}

/// Valid GGUF files from this writer, used as the fuzzer's seed corpus
/// (rust-core/fuzz/corpus/gguf_parse). Regenerate with GGUF_WRITE_FUZZ_SEEDS=1.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 37 + 11) as u8).collect() };

    let mut minimal = GgufWriter::new();
    minimal
        .add_metadata("general.architecture", MetaValue::String("gemma3".into()))
        .unwrap();

    let mut values = GgufWriter::new();
    for (k, v) in every_value_type() {
        values.add_metadata(k, v).unwrap();
    }
    values
        .add_tensor(
            "v",
            &[2, 2],
            GgmlType::F32,
            f32_bytes(&[1.0, -1.0, 0.5, 2.0]),
        )
        .unwrap();

    let mut blocks = GgufWriter::new();
    blocks.set_alignment(16).unwrap();
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
    ] {
        let row = ty.block_size().max(8) as u64;
        let bytes = ty.bytes_for(row).unwrap() as usize;
        blocks
            .add_tensor(format!("t.{}", ty.name()), &[row], ty, pattern(bytes))
            .unwrap();
    }

    let mut gemma = GgufWriter::new();
    gemma.set_alignment(64).unwrap();
    let tokens = [
        "<pad>", "<eos>", "<bos>", "<unk>", "▁the", "▁a", "<0x0A>", "é",
    ];
    gemma
        .add_metadata("general.architecture", MetaValue::String("gemma3".into()))
        .unwrap()
        .add_metadata("gemma3.context_length", MetaValue::U32(8192))
        .unwrap()
        .add_metadata("gemma3.embedding_length", MetaValue::U32(64))
        .unwrap()
        .add_metadata(
            "gemma3.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-6),
        )
        .unwrap()
        .add_metadata("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .unwrap()
        .add_metadata(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(
                tokens.iter().map(|t| t.to_string()).collect(),
            )),
        )
        .unwrap()
        .add_metadata(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(vec![
                0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0,
            ])),
        )
        .unwrap()
        .add_metadata(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(vec![3, 3, 3, 2, 1, 1, 6, 1])),
        )
        .unwrap()
        .add_metadata("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .unwrap();
    gemma
        .add_tensor(
            "token_embd.weight",
            &[64, 8],
            GgmlType::Q8_0,
            pattern(8 * 2 * 34),
        )
        .unwrap()
        .add_tensor(
            "blk.0.attn_norm.weight",
            &[64],
            GgmlType::F32,
            f32_bytes(&[1.0; 64]),
        )
        .unwrap()
        .add_tensor(
            "blk.0.ffn_down.weight",
            &[256, 2],
            GgmlType::Q4_K,
            pattern(2 * 144),
        )
        .unwrap();

    vec![
        ("minimal.gguf", minimal.to_bytes()),
        ("all_value_types.gguf", values.to_bytes()),
        ("block_types.gguf", blocks.to_bytes()),
        ("gemma_like.gguf", gemma.to_bytes()),
    ]
}

#[test]
fn fuzz_seed_corpus_is_current() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/gguf_parse"
    ));
    let write = std::env::var_os("GGUF_WRITE_FUZZ_SEEDS").is_some();
    for (name, bytes) in fuzz_seeds() {
        assert!(bytes.len() < 10 * 1024, "{name} is {} bytes", bytes.len());
        GgufFile::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with GGUF_WRITE_FUZZ_SEEDS=1)",
                path.display()
            )
        });
        assert!(
            on_disk == bytes,
            "{} is stale (regenerate with GGUF_WRITE_FUZZ_SEEDS=1)",
            path.display()
        );
    }
}

#[test]
fn ggml_type_table() {
    for &t in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(t.id()), Some(t));
        assert!(
            t.block_size().is_power_of_two() && t.block_bytes() > 0,
            "{t}"
        );
    }
    let spot = [
        (GgmlType::F32, 0, 1, 4),
        (GgmlType::F16, 1, 1, 2),
        (GgmlType::Q4_0, 2, 32, 18),
        (GgmlType::Q4_1, 3, 32, 20),
        (GgmlType::Q5_0, 6, 32, 22),
        (GgmlType::Q5_1, 7, 32, 24),
        (GgmlType::Q8_0, 8, 32, 34),
        (GgmlType::Q8_1, 9, 32, 36),
        (GgmlType::Q2_K, 10, 256, 84),
        (GgmlType::Q3_K, 11, 256, 110),
        (GgmlType::Q4_K, 12, 256, 144),
        (GgmlType::Q5_K, 13, 256, 176),
        (GgmlType::Q6_K, 14, 256, 210),
        (GgmlType::Q8_K, 15, 256, 292),
        (GgmlType::BF16, 30, 1, 2),
    ];
    for (t, id, block, bytes) in spot {
        assert_eq!(
            (t.id(), t.block_size(), t.block_bytes()),
            (id, block, bytes),
            "{t}"
        );
    }
    assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
    assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
    assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    assert_eq!(GgmlType::Q6_K.to_string(), "Q6_K");
}
