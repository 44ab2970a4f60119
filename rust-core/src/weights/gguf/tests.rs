use std::collections::BTreeMap;

use super::*;

/// Hand-assembles GGUF bytes, including invalid ones the writer refuses to produce.
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(GGUF_MAGIC.to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(GgufValueType::U32.id()).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, alignment: usize) -> &mut Raw {
        self.0.resize(self.0.len().next_multiple_of(alignment), 0);
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

fn parse_err(bytes: &[u8]) -> GgufError {
    GgufFile::parse(bytes).expect_err("hostile input parsed")
}

/// A file with one valid tensor `t` (F32, `dims`) and `ty`/`offset` as given, data zeroed.
fn one_tensor(dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("blk.0.attn_q.weight", dims, ty, offset)
        .pad(32)
        .zeros(data_len);
    r.0
}

fn every_value_type() -> Vec<(String, MetaValue)> {
    let v = vec![
        ("u8", MetaValue::U8(250)),
        ("i8", MetaValue::I8(-7)),
        ("u16", MetaValue::U16(65535)),
        ("i16", MetaValue::I16(-32768)),
        ("u32", MetaValue::U32(4_000_000_000)),
        ("i32", MetaValue::I32(-5)),
        ("f32", MetaValue::F32(-0.0)),
        ("bool.t", MetaValue::Bool(true)),
        ("bool.f", MetaValue::Bool(false)),
        ("str", MetaValue::String("Gemma ✓".into())),
        ("u64", MetaValue::U64(u64::MAX)),
        ("i64", MetaValue::I64(i64::MIN)),
        ("f64", MetaValue::F64(std::f64::consts::PI)),
        ("arr.u8", MetaValue::Array(MetaArray::U8(vec![1, 2, 3]))),
        ("arr.i8", MetaValue::Array(MetaArray::I8(vec![-1, 1]))),
        ("arr.u16", MetaValue::Array(MetaArray::U16(vec![9]))),
        ("arr.i16", MetaValue::Array(MetaArray::I16(vec![-9, 9]))),
        (
            "arr.u32",
            MetaValue::Array(MetaArray::U32(vec![1, 1 << 31])),
        ),
        ("arr.i32", MetaValue::Array(MetaArray::I32(vec![0, -1, 2]))),
        (
            "arr.f32",
            MetaValue::Array(MetaArray::F32(vec![0.5, f32::INFINITY])),
        ),
        (
            "arr.bool",
            MetaValue::Array(MetaArray::Bool(vec![true, false, true])),
        ),
        (
            "arr.str",
            MetaValue::Array(MetaArray::String(vec![
                "<pad>".into(),
                "".into(),
                "▁the".into(),
            ])),
        ),
        ("arr.u64", MetaValue::Array(MetaArray::U64(vec![u64::MAX]))),
        (
            "arr.i64",
            MetaValue::Array(MetaArray::I64(vec![i64::MIN, 3])),
        ),
        (
            "arr.f64",
            MetaValue::Array(MetaArray::F64(vec![1e300, -2.5])),
        ),
        ("arr.empty", MetaValue::Array(MetaArray::F32(vec![]))),
        (
            "arr.nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2]),
                MetaArray::String(vec!["x".into()]),
                MetaArray::Array(vec![MetaArray::U8(vec![]), MetaArray::Bool(vec![true])]),
            ])),
        ),
    ];
    v.into_iter()
        .map(|(k, v)| (format!("test.{k}"), v))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A writer with every metadata type and four tensors of different types and ranks.
fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in every_value_type() {
        w.add_metadata(k, v).unwrap();
    }
    let f32_data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 4.0).collect();
    w.add_tensor("f32.weight", &[8, 3], GgmlType::F32, f32_bytes(&f32_data))
        .unwrap();
    w.add_tensor(
        "f16.bias",
        &[3],
        GgmlType::F16,
        vec![0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B],
    )
    .unwrap();
    w.add_tensor(
        "q8.weight",
        &[64, 2],
        GgmlType::Q8_0,
        (0..136).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    w.add_tensor(
        "q4k.scalar_rows",
        &[256, 1, 1, 2],
        GgmlType::Q4_K,
        vec![7u8; 288],
    )
    .unwrap();
    w
}

#[test]
fn writer_parser_round_trip() {
    let w = sample_writer();
    let bytes = w.to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.file_len(), bytes.len());
    let want: BTreeMap<String, MetaValue> = every_value_type().into_iter().collect();
    assert_eq!(f.metadata(), &want);

    let names: Vec<&str> = f.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        ["f32.weight", "f16.bias", "q8.weight", "q4k.scalar_rows"]
    );
    for (t, p) in f.tensors().iter().zip(&w.tensors) {
        assert_eq!(t.shape(), p.shape.as_slice());
        assert_eq!(t.ggml_type(), p.ty);
        assert_eq!(t.data(&bytes).unwrap(), p.data.as_slice());
        assert_eq!(t.relative_offset() % 32, 0);
        assert_eq!(
            t.byte_range().start,
            f.data_offset() + t.relative_offset() as usize
        );
    }
    let t = f.tensor("f32.weight").unwrap();
    assert_eq!(t.shape_row_major(), vec![3, 8]);
    assert_eq!(
        (t.row_len(), t.n_rows(), t.n_elements(), t.row_bytes()),
        (8, 3, 24, 32)
    );
    let t = f.require_tensor("q4k.scalar_rows").unwrap();
    assert_eq!(t.shape_row_major(), vec![2, 1, 1, 256]);
    assert_eq!((t.n_rows(), t.row_bytes(), t.byte_len()), (2, 144, 288));
    assert_eq!(
        f.tensor_data(&bytes, "f16.bias").unwrap(),
        &[0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B]
    );

    // Writing what was parsed gives the same bytes back.
    let mut again = GgufWriter::new();
    for (k, v) in every_value_type() {
        again.add_metadata(k, v).unwrap();
    }
    for t in f.tensors() {
        again
            .add_tensor(t.name(), t.shape(), t.ggml_type(), t.data(&bytes).unwrap())
            .unwrap();
    }
    assert_eq!(again.to_bytes(), bytes);
}

#[test]
fn typed_getters() {
    let bytes = sample_writer().to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.get_u8("test.u8").unwrap(), 250);
    assert_eq!(f.get_i8("test.i8").unwrap(), -7);
    assert_eq!(f.get_u16("test.u16").unwrap(), 65535);
    assert_eq!(f.get_i16("test.i16").unwrap(), -32768);
    assert_eq!(f.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i32("test.i32").unwrap(), -5);
    assert_eq!(f.get_u64("test.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_i64("test.i64").unwrap(), i64::MIN);
    assert_eq!(
        f.get_f32("test.f32").unwrap().to_bits(),
        (-0.0f32).to_bits()
    );
    assert_eq!(f.get_f64("test.f64").unwrap(), std::f64::consts::PI);
    assert!(f.get_bool("test.bool.t").unwrap() && !f.get_bool("test.bool.f").unwrap());
    assert_eq!(f.get_str("test.str").unwrap(), "Gemma ✓");
    assert_eq!(
        f.get_str_array("test.arr.str").unwrap(),
        ["<pad>", "", "▁the"]
    );
    assert_eq!(
        f.get_f32_array("test.arr.f32").unwrap(),
        [0.5, f32::INFINITY]
    );
    assert_eq!(f.get_i32_array("test.arr.i32").unwrap(), [0, -1, 2]);
    assert_eq!(f.get_u32_array("test.arr.u32").unwrap(), [1, 1 << 31]);
    assert_eq!(f.get_array("test.arr.nested").unwrap().len(), 3);
    assert_eq!(f.get_uint("test.u8").unwrap(), 250);
    assert_eq!(f.get_uint("test.u32").unwrap(), 4_000_000_000);
    assert!(matches!(
        f.get_uint("test.i32"),
        Err(GgufError::WrongType { .. })
    ));

    let e = f.get_u32("test.str").unwrap_err();
    assert!(
        matches!(&e, GgufError::WrongType { key, expected: "u32", found } if key == "test.str" && found == "str")
    );
    assert_eq!(
        e.to_string(),
        "metadata key 'test.str' is str, expected u32"
    );
    let e = f.get_str_array("test.arr.i32").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key 'test.arr.i32' is arr[i32], expected arr[str]"
    );
    let e = f.get_f32("gemma3.rope.freq_base").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key 'gemma3.rope.freq_base' is missing"
    );
    assert!(matches!(f.require_tensor("nope"), Err(GgufError::MissingTensor(n)) if n == "nope"));
    assert!(f.tensor("nope").is_none() && f.get("nope").is_none());
}

/// Byte-for-byte against the spec: the writer's output for a small file equals a file
/// assembled by hand from the layout description.
#[test]
fn writer_output_matches_the_spec() {
    let mut r = Raw::header(3, 1, 1);
    r.str("a").u32(GgufValueType::U8.id()).bytes(&[7]);
    r.tensor("t", &[2, 3], GgmlType::F32.id(), 0);
    // 24 header + 14 kv + 41 tensor info = 79 bytes, padded to 96.
    assert_eq!(r.0.len(), 79);
    r.pad(32);
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    r.bytes(&data);

    let mut w = GgufWriter::new();
    w.add_metadata("a", MetaValue::U8(7)).unwrap();
    w.add_tensor("t", &[2, 3], GgmlType::F32, data.clone())
        .unwrap();
    let written = w.to_bytes();
    assert_eq!(
        written.len(),
        128,
        "the last tensor is padded to the alignment too"
    );
    assert_eq!(&written[..120], r.0.as_slice());
    assert!(written[120..].iter().all(|&b| b == 0));

    let f = GgufFile::parse(&r.0).unwrap();
    assert_eq!(f.data_offset(), 96);
    let t = f.tensor("t").unwrap();
    assert_eq!(t.byte_range(), 96..120);
    assert_eq!(t.data(&r.0).unwrap(), data.as_slice());
    assert_eq!(t.shape_row_major(), vec![3, 2]);
}

#[test]
fn custom_alignment() {
    for alignment in [1u32, 8, 64, 4096] {
        let mut w = sample_writer();
        w.set_alignment(alignment).unwrap();
        let bytes = w.to_bytes();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.alignment(), alignment);
        assert_eq!(f.data_offset() % alignment as usize, 0);
        for t in f.tensors() {
            assert_eq!(t.byte_range().start % alignment as usize, 0, "{}", t.name());
        }
        assert_eq!(f.get_u32(ALIGNMENT_KEY).unwrap(), alignment);
    }
    let mut w = GgufWriter::new();
    assert!(w.set_alignment(48).is_err());
    assert!(w.add_metadata(ALIGNMENT_KEY, MetaValue::U64(64)).is_err());
}

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

#[test]
fn version_2_is_accepted() {
    let mut bytes = sample_writer().to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::parse(&bytes).unwrap().version(), 2);
}

#[test]
fn wrong_magic_and_versions() {
    let mut bytes = sample_writer().to_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(parse_err(&bytes), GgufError::BadMagic { found } if &found == b"GGML"));
    assert!(matches!(
        parse_err(b"\x89PNG\r\n\x1a\n"),
        GgufError::BadMagic { .. }
    ));

    for version in [0u32, 1, 4, u32::MAX, 0x0300_0000] {
        let e = parse_err(&Raw::header(version, 0, 0).0);
        assert!(matches!(e, GgufError::UnsupportedVersion { version: v, .. } if v == version));
        if version == 0x0300_0000 {
            assert!(e.to_string().contains("big-endian"), "{e}");
        }
    }
}

/// Every proper prefix of a valid file that cuts into the header or the tensor data must be
/// rejected (and none may panic). Cutting only the final padding leaves a valid file.
#[test]
fn truncated_at_every_length() {
    let bytes = sample_writer().to_bytes();
    let full = GgufFile::parse(&bytes).unwrap();
    let data_end = full
        .tensors()
        .iter()
        .map(|t| t.byte_range().end)
        .max()
        .unwrap();
    for len in 0..bytes.len() {
        let res = GgufFile::parse(&bytes[..len]);
        if len < data_end {
            let e = res.expect_err("truncated file parsed");
            assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. }
                        | GgufError::CountTooLarge { .. }
                        | GgufError::OutOfBounds { .. }
                ),
                "len {len}: {e}"
            );
        } else {
            assert!(res.is_ok(), "len {len}");
        }
    }
    // A tensor's data range is checked against the slice it was parsed from, and `data`
    // refuses a shorter buffer instead of panicking.
    let t = &full.tensors()[3];
    assert!(matches!(
        t.data(&bytes[..t.byte_range().end - 1]),
        Err(GgufError::BufferMismatch { .. })
    ));
}

#[test]
fn absurd_counts() {
    let e = parse_err(&Raw::header(3, u64::MAX, 0).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
    let e = parse_err(&Raw::header(3, 0, u64::MAX).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
    // More tensors than the bytes left after the metadata could describe.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[1], 0, 0);
    assert!(matches!(
        parse_err(&r.0),
        GgufError::CountTooLarge {
            count: 2,
            max: 1,
            ..
        }
    ));

    for (elem, count) in [
        (GgufValueType::U8, u64::MAX),
        (GgufValueType::String, 1 << 40),
        (GgufValueType::Array, 2),
    ] {
        let mut r = Raw::header(3, 0, 1);
        r.str("tokenizer.ggml.tokens")
            .u32(GgufValueType::Array.id())
            .u32(elem.id())
            .u64(count)
            .zeros(16);
        let e = parse_err(&r.0);
        assert!(
            matches!(e, GgufError::CountTooLarge { .. }),
            "{elem:?}: {e}"
        );
        assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
    }
    // Enough bytes for the length prefixes, but the strings themselves run off the end.
    let mut r = Raw::header(3, 0, 1);
    r.str("k")
        .u32(GgufValueType::Array.id())
        .u32(GgufValueType::String.id())
        .u64(2);
    r.u64(3).bytes(b"abc").u64(100).zeros(8);
    let e = parse_err(&r.0);
    assert!(
        matches!(&e, GgufError::Truncated { what, needed: 100, .. } if what == "element 1 of array 'k'"),
        "{e}"
    );
}

#[test]
fn string_lengths_past_the_end() {
    for len in [13u64, 1000, u64::MAX] {
        let mut r = Raw::header(3, 0, 1);
        r.u64(len).bytes(b"general.name");
        let e = parse_err(&r.0);
        assert!(
            matches!(e, GgufError::Truncated { needed, .. } if needed == len),
            "{e}"
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.name")
        .u32(GgufValueType::String.id())
        .u64(u64::MAX)
        .bytes(b"gemma");
    let e = parse_err(&r.0);
    assert_eq!(
        e.to_string(),
        "truncated GGUF: value of key 'general.name' needs 18446744073709551615 bytes at offset 56, but only 5 remain"
    );

    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 62).bytes(b"blk.0").zeros(32);
    assert!(
        matches!(parse_err(&r.0), GgufError::Truncated { what, .. } if what == "name of tensor #0")
    );
}

#[test]
fn metadata_rules() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(
        parse_err(&r.0),
        GgufError::UnknownValueType { type_id: 13, .. }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(GgufValueType::Array.id()).u32(99).u64(0);
    assert!(matches!(
        parse_err(&r.0),
        GgufError::UnknownValueType { type_id: 99, .. }
    ));

    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(parse_err(&r.0), GgufError::DuplicateKey(k) if k == "k"));
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("", 1);
    assert!(matches!(parse_err(&r.0), GgufError::EmptyKey { index: 0 }));
    let mut r = Raw::header(3, 0, 1);
    r.u64(2)
        .bytes(&[0xC3, 0x28])
        .u32(GgufValueType::U8.id())
        .bytes(&[0]);
    assert!(matches!(parse_err(&r.0), GgufError::InvalidUtf8 { .. }));

    // Arrays of arrays, one level deeper than allowed.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(GgufValueType::Array.id());
    for _ in 0..MAX_ARRAY_NESTING {
        r.u32(GgufValueType::Array.id()).u64(1);
    }
    r.u32(GgufValueType::U8.id()).u64(0);
    assert!(matches!(parse_err(&r.0), GgufError::ArrayTooDeep { .. }));
    // ... and exactly at the limit it parses.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(GgufValueType::Array.id());
    for _ in 1..MAX_ARRAY_NESTING {
        r.u32(GgufValueType::Array.id()).u64(1);
    }
    r.u32(GgufValueType::U8.id()).u64(0);
    GgufFile::parse(&r.0).unwrap();

    // ggml reads any non-zero bool byte as true.
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(GgufValueType::Bool.id()).bytes(&[2]);
    assert!(GgufFile::parse(&r.0).unwrap().get_bool("b").unwrap());

    let mut w = GgufWriter::new();
    let mut deep = MetaArray::U8(vec![]);
    for _ in 0..MAX_ARRAY_NESTING {
        deep = MetaArray::Array(vec![deep]);
    }
    assert!(w.add_metadata("deep", MetaValue::Array(deep)).is_err());
    assert!(w.add_metadata("", MetaValue::U8(0)).is_err());
    w.add_metadata("k", MetaValue::U8(0)).unwrap();
    assert!(w.add_metadata("k", MetaValue::U8(0)).is_err());
}

#[test]
fn alignment_rules() {
    let mut r = Raw::header(3, 0, 1);
    r.str(ALIGNMENT_KEY).u32(GgufValueType::U64.id()).u64(32);
    assert!(matches!(parse_err(&r.0), GgufError::AlignmentType { found } if found == "u64"));
    for bad in [0u32, 3, 48, u32::MAX] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32(ALIGNMENT_KEY, bad);
        assert!(matches!(parse_err(&r.0), GgufError::BadAlignment(a) if a == u64::from(bad)));
    }
    // A huge alignment whose padding runs past the end of the file.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32(ALIGNMENT_KEY, 1 << 31)
        .tensor("t", &[1], 0, 0)
        .zeros(4);
    assert!(
        matches!(parse_err(&r.0), GgufError::Truncated { what, .. } if what.contains("padding"))
    );
    // No tensors: no padding required.
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("k", 1);
    let f = GgufFile::parse(&r.0).unwrap();
    assert_eq!((f.data_offset(), f.tensors().len()), (r.0.len(), 0));
}

#[test]
fn tensor_info_rules() {
    let name = "blk.0.attn_q.weight";
    let e = parse_err(&one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4));
    assert!(
        matches!(&e, GgufError::TooManyDims { n_dims: 5, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(name), "{e}");

    for id in [4u32, 5, 31, 36, 38, 42, 1000, u32::MAX] {
        let e = parse_err(&one_tensor(&[32], id, 0, 128));
        assert!(
            matches!(e, GgufError::UnknownGgmlType { type_id, .. } if type_id == id),
            "{e}"
        );
    }
    for dims in [&[u64::MAX][..], &[4, u64::MAX], &[0, 1 << 63]] {
        let e = parse_err(&one_tensor(dims, 0, 0, 16));
        assert!(matches!(e, GgufError::DimTooLarge { .. }), "{dims:?}: {e}");
    }
    let e = parse_err(&one_tensor(&[16, 2], GgmlType::Q4_0.id(), 0, 64));
    assert!(
        matches!(
            e,
            GgufError::NotBlockMultiple {
                row_len: 16,
                block_size: 32,
                ..
            }
        ),
        "{e}"
    );
    // Whole blocks in total but not per row is still rejected (ggml checks ne0).
    let e = parse_err(&one_tensor(&[16, 4], GgmlType::Q4_0.id(), 0, 64));
    assert!(matches!(e, GgufError::NotBlockMultiple { .. }), "{e}");

    let e = parse_err(&one_tensor(&[4], 0, 8, 64));
    assert!(
        matches!(
            e,
            GgufError::Misaligned {
                offset: 8,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
    let e = parse_err(&one_tensor(&[4], 0, 32, 16));
    assert!(matches!(e, GgufError::OutOfBounds { .. }), "{e}");
    let e = parse_err(&one_tensor(&[8], 0, 0, 16));
    assert!(matches!(e, GgufError::OutOfBounds { .. }), "{e}");
    let e = parse_err(&one_tensor(&[4], 0, u64::MAX - 31, 16));
    assert!(matches!(e, GgufError::Overflow { .. }), "{e}");
    assert!(e.to_string().contains(name), "{e}");

    // Element count overflowing u64, and exceeding i64::MAX (ggml's limit) without overflowing.
    for dims in [
        [1 << 20, 1 << 20, 1 << 20, 1 << 20],
        [1 << 20, 1 << 20, 1 << 20, 1 << 3],
    ] {
        let e = parse_err(&one_tensor(&dims, 0, 0, 64));
        assert!(
            matches!(&e, GgufError::Overflow { what } if what.contains("element count")),
            "{e}"
        );
    }
    // Byte size overflowing u64 while the element count (2^62) does not.
    let e = parse_err(&one_tensor(&[1 << 20, 1 << 20, 1 << 20, 1 << 2], 0, 0, 64));
    assert!(
        matches!(&e, GgufError::Overflow { what } if what.contains("byte size")),
        "{e}"
    );

    // Empty tensors are allowed (as in ggml) and take no bytes, whatever their other dims.
    let bytes = one_tensor(&[0, 5], 0, 0, 0);
    let f = GgufFile::parse(&bytes).unwrap();
    let t = f.tensor(name).unwrap();
    assert_eq!((t.n_elements(), t.byte_len(), t.n_rows()), (0, 0, 0));
    let f = GgufFile::parse(&one_tensor(&[1 << 62, 0], 0, 0, 0)).unwrap();
    let t = f.tensor(name).unwrap();
    assert_eq!(
        (t.n_elements(), t.row_len(), t.row_bytes()),
        (0, 1 << 62, usize::MAX)
    );
    // A 0-dimensional tensor is one element.
    let f = GgufFile::parse(&one_tensor(&[], 0, 0, 4)).unwrap();
    assert_eq!(
        (f.tensors()[0].n_elements(), f.tensors()[0].byte_len()),
        (1, 4)
    );
}

#[test]
fn duplicate_and_overlapping_tensors() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad(32)
        .zeros(64);
    assert!(matches!(parse_err(&r.0), GgufError::DuplicateTensor(n) if n == "t"));

    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[4], 0, 32)
        .pad(32)
        .zeros(64);
    let e = parse_err(&r.0);
    assert!(
        matches!(&e, GgufError::Overlap { first, second } if first == "a" && second == "b"),
        "{e}"
    );

    // Out of order but disjoint is fine (ggml itself insists on packed order).
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[4], 0, 32)
        .tensor("b", &[4], 0, 0)
        .pad(32)
        .zeros(64);
    let f = GgufFile::parse(&r.0).unwrap();
    assert!(f.tensor("a").unwrap().byte_range().start > f.tensor("b").unwrap().byte_range().start);
}

#[test]
fn writer_rejects_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    assert!(
        w.add_tensor("t", &[4], GgmlType::F32, vec![0u8; 15])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[16], GgmlType::Q4_0, vec![0u8; 9])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0u8; 4])
            .is_err()
    );
    assert!(
        w.add_tensor("t", &[u64::MAX, 2], GgmlType::F32, vec![])
            .is_err()
    );
    assert!(matches!(
        w.add_tensor("t", &[1 << 63, 0], GgmlType::F32, vec![]),
        Err(GgufError::DimTooLarge { .. })
    ));
    // Accepted by the writer means accepted by the reader, whatever the file length.
    w.add_tensor("empty", &[(1 << 63) - 1, 0], GgmlType::F32, vec![])
        .unwrap();
    w.add_tensor("t", &[4], GgmlType::F32, vec![0u8; 16])
        .unwrap();
    assert!(
        w.add_tensor("t", &[4], GgmlType::F32, vec![0u8; 16])
            .is_err()
    );
    let f = GgufFile::parse(&w.to_bytes()).unwrap();
    assert_eq!(f.tensor("empty").unwrap().shape(), [(1 << 63) - 1, 0]);
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
