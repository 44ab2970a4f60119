//! Hugging Face checkpoints: a directory with `config.json` and one or more `*.safetensors`
//! shards. Shards are memory-mapped; headers are validated by the `safetensors` crate (offsets
//! inside the file, no overlap, the file exactly as long as the header says).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors};

use super::{GgmlType, MappedTensor, ReadLog, WeightStore};
use crate::error::{GemmaError, Result};

/// The `*.safetensors` files of a checkpoint directory, sorted by name.
pub fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| GemmaError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| GemmaError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(GemmaError::invalid_weight_file(
            dir,
            "the directory holds no *.safetensors file",
        ));
    }
    Ok(paths)
}

/// Maps every shard and indexes its tensors. Tensors whose names start with none of
/// `prefixes` are skipped (e.g. the vision and audio towers for a text-only session).
pub fn open(paths: &[PathBuf], prefixes: &[&str]) -> Result<WeightStore> {
    let log = Arc::new(ReadLog::default());
    let mut tensors = BTreeMap::new();
    for path in paths {
        let file = File::open(path).map_err(|e| GemmaError::io(path, e))?;
        // SAFETY: the mapping is read-only; like every mmap-based loader we assume the model
        // file is not truncated or rewritten by another process while it is in use.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GemmaError::io(path, e))?;
        let map = Arc::new(map);
        let invalid = |reason: String| GemmaError::invalid_weight_file(path, reason);
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| GemmaError::weight_file_rejected(path, e))?;
        let data_start = 8 + header_len;
        for (name, info) in metadata.tensors() {
            if !prefixes.is_empty() && !prefixes.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let dtype = match info.dtype {
                Dtype::F32 => GgmlType::F32,
                Dtype::F16 => GgmlType::F16,
                Dtype::BF16 => GgmlType::BF16,
                Dtype::I32 => GgmlType::I32,
                Dtype::I64 => GgmlType::I64,
                other => {
                    return Err(GemmaError::UnsupportedDtype {
                        name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            let (start, end) = info.data_offsets;
            if tensors.contains_key(&name) {
                return Err(invalid(format!("tensor `{name}` appears in two shards")));
            }
            let tensor = MappedTensor::new(
                &name,
                map.clone(),
                data_start + start,
                end - start,
                dtype,
                info.shape.clone(),
                log.clone(),
            )
            .map_err(|e| GemmaError::weight_file_rejected(path, e))?;
            tensors.insert(name, tensor);
        }
    }
    Ok(WeightStore::new(tensors, log))
}
