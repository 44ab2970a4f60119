//! Weight files, memory-mapped. Tensors are views into the mapping; nothing is copied until a
//! caller asks for it, and every copy is recorded in a [`ReadLog`] so tests (and `gemmakit info`)
//! can prove which tensors were materialised and which were only gathered row by row.

pub mod safetensors;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{GemmaError, Result};

/// Element encodings a mapped tensor can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    F32,
    F16,
    BF16,
}

impl ElementType {
    pub fn size_bytes(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::F16 | ElementType::BF16 => 2,
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ElementType::F32 => "F32",
            ElementType::F16 => "F16",
            ElementType::BF16 => "BF16",
        };
        f.write_str(name)
    }
}

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
    dtype: ElementType,
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
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dtype(&self) -> ElementType {
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

    pub fn row_bytes(&self, row: usize) -> &[u8] {
        let width = self.cols() * self.dtype.size_bytes();
        &self.bytes()[row * width..(row + 1) * width]
    }

    /// Copies the whole tensor out as f32 (recorded in the read log).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.num_elements()];
        decode_f32(self.bytes(), self.dtype, &mut out);
        self.log.record(&self.name, self.len);
        out
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
            decode_f32(self.row_bytes(id), self.dtype, dst);
            if scale != 1.0 {
                dst.iter_mut().for_each(|v| *v *= scale);
            }
        }
        self.log
            .record(&self.name, ids.len() * cols * self.dtype.size_bytes());
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

/// Decodes little-endian elements of `dtype` into f32. `bytes` must hold `out.len()` elements.
pub fn decode_f32(bytes: &[u8], dtype: ElementType, out: &mut [f32]) {
    match dtype {
        ElementType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        ElementType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        ElementType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
    }
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

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
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

    /// Total bytes of all tensors whose name starts with `prefix`.
    pub fn bytes_with_prefix(&self, prefix: &str) -> u64 {
        self.tensors
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, t)| t.len as u64)
            .sum()
    }
}
