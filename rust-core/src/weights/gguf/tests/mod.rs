//! Unit tests of the GGUF reader and writer, and the helpers they share.

use super::*;

mod read;
mod references;
mod write;

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
