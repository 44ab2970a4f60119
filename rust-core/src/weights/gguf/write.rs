//! The writer: [`GgufWriter`] builds a whole file in memory, or only the part before the tensor
//! data for a caller that streams the data itself.

use std::collections::HashSet;

use super::{
    ALIGNMENT_KEY, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_DIMS, GGUF_VERSION, GgmlType,
    GgufError, MAX_ARRAY_NESTING, MetaArray, MetaValue, Result, check_shape,
};

/// Builds a GGUF v3 file in memory. Metadata is written in insertion order, tensors in the order
/// added, each tensor's data padded with zeros to the alignment (as ggml and gguf-py do).
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    // Visible to the parent module so its tests can compare what was parsed with what was added.
    pub(super) tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
pub(super) struct PendingTensor {
    pub(super) name: String,
    pub(super) shape: Vec<u64>,
    pub(super) ty: GgmlType,
    pub(super) data: Vec<u8>,
}

/// What the header records about one tensor whose data the caller writes after the header
/// (see [`GgufWriter::header_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorHeader<'a> {
    pub name: &'a str,
    /// GGUF order: ne0 (the row length) first.
    pub shape: &'a [u64],
    pub ty: GgmlType,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata pair. Keys must be non-empty and unique; `general.alignment` must be a
    /// u32 power of two (it sets the alignment used for the data section).
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: MetaValue,
    ) -> Result<&mut GgufWriter> {
        let key = key.into();
        if key.is_empty() {
            return Err(GgufError::Writer("empty metadata key".into()));
        }
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufError::Writer(format!("duplicate metadata key '{key}'")));
        }
        if let MetaValue::Array(a) = &value
            && array_depth(a) > MAX_ARRAY_NESTING
        {
            return Err(GgufError::Writer(format!(
                "metadata key '{key}' nests arrays deeper than {MAX_ARRAY_NESTING} levels"
            )));
        }
        if key == ALIGNMENT_KEY {
            match value {
                MetaValue::U32(a) if a.is_power_of_two() => {}
                _ => {
                    return Err(GgufError::Writer(format!(
                        "'{ALIGNMENT_KEY}' must be a u32 power of two"
                    )));
                }
            }
        }
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Sets `general.alignment` (replacing an earlier value).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut GgufWriter> {
        self.metadata.retain(|(k, _)| k != ALIGNMENT_KEY);
        self.add_metadata(ALIGNMENT_KEY, MetaValue::U32(alignment))
    }

    /// Adds a tensor. `shape` is in GGUF order (ne0 first); `data` must be exactly the encoded
    /// bytes for that shape and type.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        ty: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut GgufWriter> {
        let name = name.into();
        let data = data.into();
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(duplicate_tensor(&name));
        }
        let n_bytes = check_tensor(&name, shape, ty)?;
        if n_bytes != data.len() as u64 {
            return Err(GgufError::Writer(format!(
                "tensor '{name}': {ty} {shape:?} takes {n_bytes} bytes, got {}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            shape: shape.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Alignment of the data section and of every tensor's data: `general.alignment` if set,
    /// else the GGUF default.
    pub fn alignment(&self) -> u32 {
        self.metadata
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                (ALIGNMENT_KEY, MetaValue::U32(a)) => Some(*a),
                _ => None,
            })
            .unwrap_or(GGUF_DEFAULT_ALIGNMENT)
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let alignment = self.alignment() as usize;
        let described = self.tensors.iter().map(|t| {
            let header = TensorHeader {
                name: &t.name,
                shape: &t.shape,
                ty: t.ty,
            };
            (header, t.data.len() as u64)
        });
        let mut out = self.header(described);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad_to(&mut out, alignment);
        }
        out
    }

    /// Serialises the file up to its data section for `tensors` whose data the caller writes
    /// afterwards, so that a large file never has to sit in memory: the bytes
    /// [`to_bytes`](Self::to_bytes) would write before the first tensor's data had the tensors
    /// been added. Their data must follow in the same order, each tensor's bytes padded with
    /// zeros to a multiple of [`alignment`](Self::alignment).
    ///
    /// The tensors are checked as [`add_tensor`](Self::add_tensor) checks them. This writer must
    /// hold no tensors of its own: their data would have to come first.
    pub fn header_for(&self, tensors: &[TensorHeader<'_>]) -> Result<Vec<u8>> {
        if !self.tensors.is_empty() {
            return Err(GgufError::Writer(
                "header_for needs a writer without tensors of its own".into(),
            ));
        }
        let mut names = HashSet::with_capacity(tensors.len());
        let mut described = Vec::with_capacity(tensors.len());
        for &t in tensors {
            if !names.insert(t.name) {
                return Err(duplicate_tensor(t.name));
            }
            described.push((t, check_tensor(t.name, t.shape, t.ty)?));
        }
        Ok(self.header(described.into_iter()))
    }

    /// Everything before the tensor data: magic, version, counts, metadata, one info per tensor
    /// (given with its data size, so that each offset places the data right after the previous
    /// tensor's padded data), and the padding up to the data section. The one serialisation of a
    /// header, so that files written whole and files streamed agree byte for byte.
    fn header<'a>(
        &self,
        tensors: impl ExactSizeIterator<Item = (TensorHeader<'a>, u64)>,
    ) -> Vec<u8> {
        let alignment = u64::from(self.alignment());
        let has_tensors = tensors.len() > 0;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0u64;
        for (t, n_bytes) in tensors {
            write_string(&mut out, t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += n_bytes.next_multiple_of(alignment);
        }
        // A file without tensors has no data section to align.
        if has_tensors {
            pad_to(&mut out, alignment as usize);
        }
        out
    }
}

fn duplicate_tensor(name: &str) -> GgufError {
    GgufError::Writer(format!("duplicate tensor name '{name}'"))
}

/// The rules a tensor must meet to be written (so that the file parses): at most
/// [`GGUF_MAX_DIMS`] dimensions and the reader's shape rules. Returns its size in bytes.
fn check_tensor(name: &str, shape: &[u64], ty: GgmlType) -> Result<u64> {
    if shape.len() > GGUF_MAX_DIMS {
        return Err(GgufError::Writer(format!(
            "tensor '{name}' has {} dimensions",
            shape.len()
        )));
    }
    check_shape(name, shape, ty)
}

fn array_depth(a: &MetaArray) -> usize {
    match a {
        MetaArray::Array(inner) => 1 + inner.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().next_multiple_of(alignment), 0);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(s) => write_string(out, s),
        MetaValue::Array(a) => write_array(out, a),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], to_le: fn(T) -> [u8; N]) {
        for &x in v {
            out.extend_from_slice(&to_le(x));
        }
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetaArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetaArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetaArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetaArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetaArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| write_string(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|inner| write_array(out, inner)),
        MetaArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetaArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetaArray::F64(v) => each(out, v, f64::to_le_bytes),
    }
}
