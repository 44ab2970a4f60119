//! `gemmakit convert`: checkpoints → GGUF in llama.cpp's layout, and full-size random-weight
//! GGUFs for benchmarking.
//!
//! Both paths write through [`writer::StreamingGgufWriter`], so a multi-gigabyte file never
//! sits in memory: tensors are produced a block of rows at a time.
//!
//! The layout follows llama.cpp's `convert_hf_to_gguf.py` (`Gemma4Model`, gguf-py 0.19):
//! metadata keys and types, tensor names, GGUF shapes, unshifted norms, the generated
//! `rope_freqs` tensor, and the rule for which tensors stay f32 (1-D tensors and norms) and
//! which fall back to f16 (rows that are not a whole number of quantization blocks).

pub mod assistant;
pub mod hf;
pub mod random;
pub mod vocab;
pub mod writer;

use std::fmt;
use std::str::FromStr;

use half::f16;

use crate::error::{GemmaError, Result};
use crate::weights::gguf::GgmlType;
use crate::weights::quant;

pub use hf::convert_hf;
pub use random::{RandomVariant, write_random};

/// Element types a converted file can use for its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl OutType {
    pub fn ggml(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Q8_0 => GgmlType::Q8_0,
            OutType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// llama.cpp's `general.file_type` (`LlamaFileType`).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q4_0 => 2,
            OutType::Q8_0 => 7,
        }
    }
}

impl FromStr for OutType {
    type Err = GemmaError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(OutType::F32),
            "f16" => Ok(OutType::F16),
            "q8_0" => Ok(OutType::Q8_0),
            "q4_0" => Ok(OutType::Q4_0),
            other => Err(GemmaError::InvalidArgument(format!(
                "unknown quantization `{other}` (f32, f16, q8_0, q4_0)"
            ))),
        }
    }
}

impl fmt::Display for OutType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::Q8_0 => "q8_0",
            OutType::Q4_0 => "q4_0",
        })
    }
}

/// Which type each kind of matrix gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantPlan {
    /// Every 2-D weight not named below.
    pub weights: OutType,
    /// `token_embd` (also the tied output matrix). Default: `weights`.
    pub embeddings: Option<OutType>,
    /// `per_layer_token_embd` (the big per-layer-embedding table). Default: `weights`.
    pub per_layer_embeddings: Option<OutType>,
}

impl QuantPlan {
    pub fn uniform(ty: OutType) -> Self {
        QuantPlan {
            weights: ty,
            embeddings: None,
            per_layer_embeddings: None,
        }
    }

    /// The type of GGUF tensor `name` with GGUF shape `shape` (ne0 first), by llama.cpp's
    /// rules: 1-D tensors, norms and non-`.weight` tensors stay f32; a quantized type whose
    /// block does not divide the row length falls back to f16.
    pub fn tensor_type(&self, name: &str, shape: &[u64]) -> GgmlType {
        if shape.len() <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") {
            return GgmlType::F32;
        }
        let ty = match name {
            "token_embd.weight" => self.embeddings.unwrap_or(self.weights),
            "per_layer_token_embd.weight" => self.per_layer_embeddings.unwrap_or(self.weights),
            _ => self.weights,
        }
        .ggml();
        if !shape[0].is_multiple_of(ty.block_size() as u64) {
            return GgmlType::F16;
        }
        ty
    }

    /// `general.file_type`: that of the bulk of the weights.
    pub fn file_type(&self) -> u32 {
        self.weights.file_type()
    }
}

/// Encodes whole rows of f32 values as `ty` (F32, F16, Q8_0 or Q4_0). F16 rounds to nearest
/// even (as numpy's `astype(float16)` does); the quantizers are ggml's reference ones.
pub fn encode(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let bad = |e: quant::QuantError| GemmaError::InvalidArgument(e.to_string());
    match ty {
        GgmlType::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        GgmlType::F16 => Ok(values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect()),
        GgmlType::Q8_0 => quant::quantize_row_q8_0(values).map_err(bad),
        GgmlType::Q4_0 => quant::quantize_row_q4_0(values).map_err(bad),
        other => Err(GemmaError::Unsupported(format!("encoding {other}"))),
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertSummary {
    pub tensors: usize,
    pub file_bytes: u64,
    /// Parameters written (elements of all tensors).
    pub parameters: u64,
    /// Whether tokenizer metadata went in (HF: only when `tokenizer.json` was present).
    pub tokenizer: bool,
    /// Human-readable remarks (skipped tensors, missing tokenizer, …).
    pub notes: Vec<String>,
}

/// Elements per piece handed to the writer: bounds the memory of a conversion.
pub(crate) const PIECE_ELEMENTS: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_rules_follow_llama_cpp() {
        let plan = QuantPlan {
            weights: OutType::Q4_0,
            embeddings: Some(OutType::Q8_0),
            per_layer_embeddings: Some(OutType::F16),
        };
        assert_eq!(
            plan.tensor_type("blk.0.attn_norm.weight", &[64]),
            GgmlType::F32
        );
        assert_eq!(plan.tensor_type("output_norm.weight", &[64]), GgmlType::F32);
        assert_eq!(
            plan.tensor_type("blk.0.layer_output_scale.weight", &[1]),
            GgmlType::F32
        );
        assert_eq!(plan.tensor_type("rope_freqs.weight", &[16]), GgmlType::F32);
        assert_eq!(
            plan.tensor_type("blk.0.attn_q.weight", &[64, 64]),
            GgmlType::Q4_0
        );
        assert_eq!(
            plan.tensor_type("blk.0.proj.weight", &[8, 64]),
            GgmlType::F16
        );
        assert_eq!(
            plan.tensor_type("token_embd.weight", &[64, 512]),
            GgmlType::Q8_0
        );
        assert_eq!(
            plan.tensor_type("per_layer_token_embd.weight", &[64, 512]),
            GgmlType::F16
        );
        assert_eq!("Q4_0".parse::<OutType>().unwrap(), OutType::Q4_0);
        assert!("q5_k".parse::<OutType>().is_err());
    }
}
