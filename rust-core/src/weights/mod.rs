//! Weight files, memory-mapped. Tensors are views into the mapping; nothing is copied until a
//! caller asks for it, and every copy is recorded in a [`ReadLog`] so tests (and `gemmakit info`)
//! can prove which tensors were materialised and which were only gathered row by row.

pub mod gguf;
pub mod quant;
pub mod safetensors;

pub use gguf::GgmlType;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::error::{GemmaError, Result};

/// Bytes copied out of the mapping, per tensor name.
#[derive(Debug, Default)]
pub struct ReadLog {
    bytes: Mutex<BTreeMap<String, u64>>,
}

impl ReadLog {
    fn record(&self, name: &str, bytes: usize) {
        let mut map = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(name.to_string()).or_default() += bytes as u64;
    }

    /// Bytes of `name` copied out of the mapping so far.
    pub fn bytes_read(&self, name: &str) -> u64 {
        let map = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        let map = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        map.values().sum()
    }
}

/// A tensor that lives in a memory-mapped file.
#[derive(Clone)]
pub struct MappedTensor {
    name: Arc<str>,
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
    dtype: GgmlType,
    shape: Vec<usize>,
    log: Arc<ReadLog>,
}

impl fmt::Debug for MappedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedTensor")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish()
    }
}

impl MappedTensor {
    /// A view of `len` bytes at `offset` in `map`, holding `shape` (row-major, rows first)
    /// elements of `dtype`. Checks that the bytes lie in the mapping, that every row is a whole
    /// number of blocks, and that the element type can be decoded.
    pub(crate) fn new(
        name: &str,
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
        dtype: GgmlType,
        shape: Vec<usize>,
        log: Arc<ReadLog>,
    ) -> Result<Self> {
        if !quant::is_supported(dtype) && !quant::is_integer(dtype) {
            return Err(GemmaError::UnsupportedDtype {
                name: name.to_string(),
                dtype: dtype.to_string(),
            });
        }
        let bad =
            |reason: String| GemmaError::InvalidArgument(format!("tensor `{name}`: {reason}"));
        let cols: usize = shape.iter().skip(1).product();
        let rows = shape.first().copied().unwrap_or(1);
        let row_bytes = quant::encoded_len(dtype, cols).map_err(|e| bad(e.to_string()))?;
        let expected = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| bad("size overflows".into()))?;
        if expected != len {
            return Err(bad(format!(
                "{len} bytes for shape {shape:?} of {dtype} (expected {expected})"
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > map.len()) {
            return Err(bad("data lies outside the file".into()));
        }
        Ok(MappedTensor {
            name: Arc::from(name),
            map,
            offset,
            len,
            dtype,
            shape,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dtype(&self) -> GgmlType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
    /// Leading dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    /// Product of the trailing dimensions.
    pub fn cols(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    /// The raw little-endian bytes, straight from the mapping (not counted as a read: callers
    /// that stream over them, such as the CPU matmul kernels, do not keep a copy).
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.len]
    }

    /// Bytes of the whole tensor in the file encoding.
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// Bytes of one row in the file encoding.
    pub fn row_stride(&self) -> usize {
        self.len / self.rows().max(1)
    }

    pub fn row_bytes(&self, row: usize) -> &[u8] {
        let width = self.row_stride();
        &self.bytes()[row * width..(row + 1) * width]
    }

    /// Decodes row `row` into `out` (`cols` values).
    pub fn decode_row(&self, row: usize, out: &mut [f32]) {
        decode_f32(self.row_bytes(row), self.dtype, out);
    }

    /// Copies the whole tensor out as f32 (recorded in the read log).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.num_elements()];
        decode_f32(self.bytes(), self.dtype, &mut out);
        self.log.record(&self.name, self.len);
        out
    }

    /// Copies an integer tensor (I32 or I64) out as i64; any other element type is an error.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let bytes = self.bytes();
        let out: Vec<i64> = match self.dtype {
            GgmlType::I32 => bytes
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            GgmlType::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            other => {
                return Err(GemmaError::UnsupportedDtype {
                    name: self.name.to_string(),
                    dtype: format!("{other} (expected an integer tensor)"),
                });
            }
        };
        self.log.record(&self.name, self.len);
        Ok(out)
    }

    /// Gathers rows `ids` as f32 into `[ids.len(), cols]`, each multiplied by `scale`.
    /// Only the gathered rows are touched (and recorded).
    pub fn gather_rows_f32(&self, ids: &[u32], scale: f32) -> Result<Vec<f32>> {
        let cols = self.cols();
        let mut out = vec![0.0f32; ids.len() * cols];
        for (dst, &id) in out.chunks_exact_mut(cols.max(1)).zip(ids) {
            let id = id as usize;
            if id >= self.rows() {
                return Err(GemmaError::TokenOutOfRange {
                    id: id as u32,
                    vocab: self.rows(),
                });
            }
            self.decode_row(id, dst);
            if scale != 1.0 {
                dst.iter_mut().for_each(|v| *v *= scale);
            }
        }
        self.log.record(&self.name, ids.len() * self.row_stride());
        Ok(out)
    }

    pub fn ensure_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(GemmaError::ShapeMismatch {
                name: self.name.to_string(),
                expected: expected.to_vec(),
                found: self.shape.clone(),
            })
        }
    }
}

/// Decodes elements of `dtype` into f32. `bytes` must be exactly the encoding of `out.len()`
/// elements; [`MappedTensor::new`] guarantees that for its rows.
pub fn decode_f32(bytes: &[u8], dtype: GgmlType, out: &mut [f32]) {
    quant::dequantize_row(dtype, bytes, out)
        .expect("row layout validated when the tensor was mapped");
}

/// All tensors of a checkpoint, by name.
pub struct WeightStore {
    tensors: BTreeMap<String, MappedTensor>,
    log: Arc<ReadLog>,
}

impl WeightStore {
    pub(crate) fn new(tensors: BTreeMap<String, MappedTensor>, log: Arc<ReadLog>) -> Self {
        Self { tensors, log }
    }

    pub fn read_log(&self) -> &ReadLog {
        &self.log
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn tensors(&self) -> impl Iterator<Item = &MappedTensor> {
        self.tensors.values()
    }

    pub fn get(&self, name: &str) -> Result<&MappedTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| GemmaError::MissingTensor(name.to_string()))
    }

    /// The tensor `name`, checked to have exactly `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<&MappedTensor> {
        let t = self.get(name)?;
        t.ensure_shape(shape)?;
        Ok(t)
    }
}
