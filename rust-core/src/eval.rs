//! Scoring a token sequence: the logits of every position, for parity checks from outside the
//! test suite (`gemmakit eval`).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use npyz::WriterBuilder;

use crate::backend::{BackendKind, ComputeDevice};
use crate::error::{GemmaError, Result};
use crate::model::{GemmaModel, LogitsFor};

/// Opens a model: a `.gguf` file, or a Hugging Face checkpoint directory (or a file in one).
pub fn load_model(path: &Path, backend: BackendKind) -> Result<GemmaModel> {
    let meta = std::fs::metadata(path).map_err(|e| GemmaError::io(path, e))?;
    let device = ComputeDevice::open(backend)?;
    if meta.is_dir() {
        GemmaModel::load_hf_dir(path, device)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        crate::model::gguf::load(path, device)
    } else {
        GemmaModel::load_hf_dir(path.parent().unwrap_or(Path::new(".")), device)
    }
}

/// Logits `[tokens.len(), vocab]` of every position, in one uncached pass.
pub fn all_logits(model: &GemmaModel, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(&mut cache, tokens, LogitsFor::All)
}

/// Writes a float32 C-order `.npy` array.
pub fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    let file = File::create(path).map_err(|e| GemmaError::io(path, e))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(|e| GemmaError::io(path, e))?;
    writer
        .extend(values.iter().copied())
        .map_err(|e| GemmaError::io(path, e))?;
    writer.finish().map_err(|e| GemmaError::io(path, e))?;
    Ok(())
}

/// Parses `2,17,301` into token ids.
pub fn parse_token_list(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| GemmaError::InvalidArgument(format!("`{s}` is not a token id")))
        })
        .collect()
}
