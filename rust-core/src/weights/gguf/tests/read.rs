//! The reader: typed access to what it parsed, and its rejection of malformed files.

use super::*;

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
    // Under Miri (~1000x slower) every length of the header region and every 17th after it.
    let lengths = (0..bytes.len()).filter(|&len| !cfg!(miri) || len < 512 || len % 17 == 0);
    for len in lengths {
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
