//! A GGUF writer that streams tensor data to disk: the header and every tensor's description
//! are written first (sizes are known from shapes and types), then each tensor's bytes arrive
//! in as many pieces as the producer likes. Peak memory is one piece, not the file.
//!
//! The header (metadata and tensor descriptions) is serialised by [`GgufWriter::header_for`],
//! the code that also writes in-memory files, so both writers agree byte for byte; this type
//! only appends the data.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{GemmaError, Result};
use crate::weights::gguf::{GgmlType, GgufWriter, TensorHeader};

/// One tensor of the file: GGUF name, shape in GGUF order (ne0 first), element type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    pub shape: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorPlan {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Encoded bytes; errors when the row length is not a whole number of blocks.
    pub fn byte_len(&self) -> Result<u64> {
        self.ty.bytes_for(self.n_elements()).ok_or_else(|| {
            GemmaError::InvalidArgument(format!(
                "tensor `{}`: {:?} is not a whole number of {} blocks",
                self.name, self.shape, self.ty
            ))
        })
    }

    fn header(&self) -> TensorHeader<'_> {
        TensorHeader {
            name: &self.name,
            shape: &self.shape,
            ty: self.ty,
        }
    }
}

pub struct StreamingGgufWriter {
    out: BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
    plan: Vec<TensorPlan>,
    sizes: Vec<u64>,
    alignment: u64,
    current: usize,
    written: u64,
    total: u64,
}

impl StreamingGgufWriter {
    /// Writes the header (metadata from `meta`, which must hold no tensors) and the tensor
    /// descriptions to `path.partial`; the file is renamed to `path` by [`finish`](Self::finish).
    pub fn create(path: &Path, meta: &GgufWriter, plan: Vec<TensorPlan>) -> Result<Self> {
        let sizes = plan
            .iter()
            .map(TensorPlan::byte_len)
            .collect::<Result<Vec<u64>>>()?;
        let described: Vec<TensorHeader<'_>> = plan.iter().map(TensorPlan::header).collect();
        let header = meta
            .header_for(&described)
            .map_err(|e| GemmaError::InvalidArgument(e.to_string()))?;
        let alignment = u64::from(meta.alignment());
        let data_len: u64 = sizes.iter().map(|s| s.next_multiple_of(alignment)).sum();

        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| GemmaError::io(&partial, e))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        out.write_all(&header)
            .map_err(|e| GemmaError::io(&partial, e))?;
        let total = header.len() as u64 + data_len;
        Ok(StreamingGgufWriter {
            out,
            partial,
            path: path.to_path_buf(),
            plan,
            sizes,
            alignment,
            current: 0,
            written: 0,
            total,
        })
    }

    /// The tensor whose bytes are expected next, if any.
    pub fn current(&self) -> Option<&TensorPlan> {
        self.plan.get(self.current)
    }

    /// Total file size once finished.
    pub fn file_len(&self) -> u64 {
        self.total
    }

    /// Appends encoded bytes of the current tensor; moves on to the next one when complete.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.plan.get(self.current) else {
            return Err(GemmaError::InvalidArgument(
                "more tensor data than the plan holds".into(),
            ));
        };
        let size = self.sizes[self.current];
        if self.written + bytes.len() as u64 > size {
            return Err(GemmaError::InvalidArgument(format!(
                "tensor `{}`: more than its {size} bytes",
                t.name
            )));
        }
        self.out
            .write_all(bytes)
            .map_err(|e| GemmaError::io(&self.partial, e))?;
        self.written += bytes.len() as u64;
        if self.written == size {
            let pad = size.next_multiple_of(self.alignment) - size;
            self.out
                .write_all(&vec![0u8; pad as usize])
                .map_err(|e| GemmaError::io(&self.partial, e))?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks every tensor was written in full, flushes, and renames the file into place.
    pub fn finish(mut self) -> Result<u64> {
        if self.current != self.plan.len() {
            return Err(GemmaError::InvalidArgument(format!(
                "tensor `{}` was not written in full",
                self.plan[self.current].name
            )));
        }
        self.out
            .flush()
            .map_err(|e| GemmaError::io(&self.partial, e))?;
        drop(self.out);
        std::fs::rename(&self.partial, &self.path).map_err(|e| GemmaError::io(&self.path, e))?;
        Ok(self.total)
    }
}
