//! The writer: what it produces, what it refuses, and that the reader reads it back.

use std::collections::BTreeMap;

use super::*;

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

/// The header for streamed data, followed by that data padded to the alignment, is the file the
/// in-memory path writes (convert's streaming writer relies on this); and the tensors are
/// checked as `add_tensor` checks them.
#[test]
fn header_for_streamed_data() {
    for alignment in [32u32, 64] {
        let mut whole = sample_writer();
        whole.set_alignment(alignment).unwrap();
        let mut meta = GgufWriter::new();
        for (k, v) in every_value_type() {
            meta.add_metadata(k, v).unwrap();
        }
        meta.set_alignment(alignment).unwrap();
        let described: Vec<TensorHeader<'_>> = whole
            .tensors
            .iter()
            .map(|t| TensorHeader {
                name: &t.name,
                shape: &t.shape,
                ty: t.ty,
            })
            .collect();
        let mut streamed = meta.header_for(&described).unwrap();
        for t in &whole.tensors {
            streamed.extend_from_slice(&t.data);
            streamed.resize(streamed.len().next_multiple_of(alignment as usize), 0);
        }
        assert_eq!(streamed, whole.to_bytes(), "alignment {alignment}");
    }

    let tensor = |name, shape, ty| TensorHeader { name, shape, ty };
    let meta = GgufWriter::new();
    assert!(matches!(
        meta.header_for(&[
            tensor("t", &[4], GgmlType::F32),
            tensor("t", &[4], GgmlType::F32)
        ]),
        Err(GgufError::Writer(m)) if m.contains("duplicate tensor name")
    ));
    assert!(
        meta.header_for(&[tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32)])
            .is_err()
    );
    assert!(matches!(
        meta.header_for(&[tensor("t", &[16], GgmlType::Q4_0)]),
        Err(GgufError::NotBlockMultiple { .. })
    ));
    // A writer's own tensors would have to precede the streamed data.
    assert!(sample_writer().header_for(&[]).is_err());
}
