//! Models stored as GGUF in llama.cpp's layout: the architecture's hyper-parameters from the
//! metadata, and llama.cpp's tensor names translated to the Hugging Face names the graph loaders
//! use (model::names), so one graph loader serves both file formats.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::config::{
    Architecture, AssistantConfig, AttentionKind, CentroidHead, GemmaConfig, LayerPlan, RopeParams,
    resolve_layers,
};
use super::names::{ASSISTANT, TEXT, TEXT_PREFIXES};
use crate::error::{GemmaError, Result};
use crate::weights::gguf::{GgufError, GgufFile, MetaArray, MetaValue};
use crate::weights::{MappedTensor, ReadLog, WeightStore, quant};

/// A parsed GGUF file and its mapping.
pub struct GgufModelFile {
    pub gguf: GgufFile,
    pub map: Arc<Mmap>,
}

impl GgufModelFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| GemmaError::io(path, e))?;
        // SAFETY: read-only mapping; the file is assumed not to change while in use.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GemmaError::io(path, e))?;
        let gguf = GgufFile::parse(&map).map_err(|e| GemmaError::weight_file_rejected(path, e))?;
        Ok(GgufModelFile {
            gguf,
            map: Arc::new(map),
        })
    }

    pub fn architecture(&self) -> Result<&str> {
        self.gguf
            .get_str("general.architecture")
            .map_err(meta_error)
    }
}

fn meta_error(e: GgufError) -> GemmaError {
    GemmaError::InvalidConfig(e.to_string())
}

/// The text model's tensors under their Hugging Face names (model::names::TEXT).
pub fn text_store(file: &GgufModelFile) -> Result<WeightStore> {
    if file
        .gguf
        .tensors()
        .iter()
        .any(|t| t.name() == "output.weight")
    {
        return Err(GemmaError::Unsupported(
            "an untied output matrix (output.weight)".into(),
        ));
    }
    mapped_store(file, |name| {
        TEXT.to_hf(name).map(|n| format!("{}{n}", TEXT_PREFIXES[0]))
    })
}

/// The MTP assistant's tensors under their Hugging Face names (model::names::ASSISTANT).
pub fn assistant_store(file: &GgufModelFile) -> Result<WeightStore> {
    mapped_store(file, |name| ASSISTANT.to_hf(name))
}

/// The architecture name of Gemma 4's MTP assistant in GGUF (llama.cpp's).
pub const ASSISTANT_ARCH: &str = "gemma4-assistant";
/// GemmaKit's metadata key for the centroid head's top-k (`centroid_intermediate_top_k`);
/// llama.cpp has none yet and drops the head. The centroid count is the rows of
/// `masked_embd_centroids.weight`.
pub const CENTROID_TOP_K_KEY: &str = "gemma4-assistant.centroid_intermediate_top_k";

/// Hyper-parameters of a `gemma4-assistant` GGUF: llama.cpp's keys, plus GemmaKit's
/// [`CENTROID_TOP_K_KEY`] when the file keeps the centroid head (else the dense head).
pub fn assistant_config_from_gguf(file: &GgufModelFile) -> Result<AssistantConfig> {
    let gguf = &file.gguf;
    let arch = gguf.get_str("general.architecture").map_err(meta_error)?;
    if arch != ASSISTANT_ARCH {
        return Err(GemmaError::UnknownArchitecture(format!(
            "{arch} (an MTP assistant GGUF is {ASSISTANT_ARCH})"
        )));
    }
    let text = config_from_gguf(file)?;
    let backbone_hidden_size = gguf
        .get_uint(&format!("{ASSISTANT_ARCH}.embedding_length_out"))
        .map_err(meta_error)? as usize;
    let centroids = match (
        gguf.tensor("masked_embd_centroids.weight"),
        gguf.get_uint(CENTROID_TOP_K_KEY),
    ) {
        (Some(t), Ok(top_k)) => Some(CentroidHead {
            num_centroids: t.shape_row_major().first().copied().unwrap_or(0) as usize,
            top_k: top_k as usize,
        }),
        _ => None,
    };
    let config = AssistantConfig {
        backbone_hidden_size,
        centroids,
        text,
    };
    config.check()?;
    Ok(config)
}

/// The tensors of `file` that `rename` maps to a name (llama.cpp → Hugging Face), still
/// memory-mapped; the others are left out. Shared by the text model and the mmproj towers.
pub fn mapped_store(
    file: &GgufModelFile,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<WeightStore> {
    let log = Arc::new(ReadLog::default());
    let mut tensors = BTreeMap::new();
    for info in file.gguf.tensors() {
        let Some(name) = rename(info.name()) else {
            continue;
        };
        let shape: Vec<usize> = info
            .shape_row_major()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                GemmaError::Unsupported(format!(
                    "tensor `{}` is too large for this platform",
                    info.name()
                ))
            })?;
        let range = info.byte_range();
        let tensor = MappedTensor::new(
            &name,
            file.map.clone(),
            range.start,
            range.len(),
            info.ggml_type(),
            shape,
            log.clone(),
        )?;
        tensors.insert(name, tensor);
    }
    Ok(WeightStore::new(tensors, log))
}

/// Reads `key` as one value per layer: either a scalar (same for all) or an array of `n`.
fn per_layer_uint(gguf: &GgufFile, key: &str, n: usize) -> Result<Vec<usize>> {
    match gguf.get(key) {
        Some(MetaValue::Array(arr)) => {
            let values: Vec<u64> = match arr {
                MetaArray::U32(v) => v.iter().map(|&x| x as u64).collect(),
                MetaArray::I32(v) => v.iter().map(|&x| x.max(0) as u64).collect(),
                MetaArray::U64(v) => v.clone(),
                MetaArray::I64(v) => v.iter().map(|&x| x.max(0) as u64).collect(),
                _ => {
                    return Err(GemmaError::InvalidConfig(format!(
                        "`{key}` is not an integer array"
                    )));
                }
            };
            if values.len() != n {
                return Err(GemmaError::InvalidConfig(format!(
                    "`{key}` has {} entries for {n} layers",
                    values.len()
                )));
            }
            Ok(values.into_iter().map(|v| v as usize).collect())
        }
        Some(_) => Ok(vec![gguf.get_uint(key).map_err(meta_error)? as usize; n]),
        None => Err(GemmaError::InvalidConfig(format!(
            "metadata key `{key}` is missing"
        ))),
    }
}

fn float(gguf: &GgufFile, key: &str) -> Option<f64> {
    match gguf.get(key)? {
        MetaValue::F32(v) => Some(*v as f64),
        MetaValue::F64(v) => Some(*v),
        _ => None,
    }
}

/// Hyper-parameters of a `gemma3` or `gemma4` GGUF.
pub fn config_from_gguf(file: &GgufModelFile) -> Result<GemmaConfig> {
    let gguf = &file.gguf;
    let arch = gguf
        .get_str("general.architecture")
        .map_err(meta_error)?
        .to_string();
    let architecture = match arch.as_str() {
        "gemma3" => Architecture::Gemma3,
        "gemma4" | ASSISTANT_ARCH => Architecture::Gemma4,
        other => return Err(GemmaError::UnknownArchitecture(other.to_string())),
    };
    let key = |k: &str| format!("{arch}.{k}");
    let uint =
        |k: &str| -> Result<usize> { Ok(gguf.get_uint(&key(k)).map_err(meta_error)? as usize) };
    let n = uint("block_count")?;
    if n == 0 || n > 1024 {
        return Err(GemmaError::InvalidConfig(format!("block_count = {n}")));
    }
    let hidden = uint("embedding_length")?;
    let heads = uint("attention.head_count")?;
    let kv_heads = per_layer_uint(gguf, &key("attention.head_count_kv"), n)?;
    let ffn = per_layer_uint(gguf, &key("feed_forward_length"), n)?;
    let head_dim_full = uint("attention.key_length")?;
    let head_dim_swa = gguf
        .get_uint(&key("attention.key_length_swa"))
        .map(|v| v as usize)
        .unwrap_or(head_dim_full);
    let window = gguf
        .get_uint(&key("attention.sliding_window"))
        .map(|v| v as usize)
        .ok();
    let eps = float(gguf, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6) as f32;
    let base_full = float(gguf, &key("rope.freq_base")).unwrap_or(10_000.0);
    let vocab = gguf
        .tensor("token_embd.weight")
        .map(|t| t.shape_row_major()[0] as usize)
        .ok_or_else(|| GemmaError::MissingTensor("token_embd.weight".into()))?;

    let kinds: Vec<AttentionKind> = match (architecture, window) {
        (_, None) => vec![AttentionKind::Full; n],
        (Architecture::Gemma4, Some(_)) => match gguf.get(&key("attention.sliding_window_pattern"))
        {
            Some(MetaValue::Array(MetaArray::Bool(pattern))) if pattern.len() == n => pattern
                .iter()
                .map(|&swa| {
                    if swa {
                        AttentionKind::Sliding
                    } else {
                        AttentionKind::Full
                    }
                })
                .collect(),
            _ => {
                return Err(GemmaError::InvalidConfig(
                    "gemma4 GGUF needs a per-layer bool array attention.sliding_window_pattern"
                        .into(),
                ));
            }
        },
        // llama.cpp hard-codes Gemma 3's pattern: five sliding layers, then one full.
        (Architecture::Gemma3, Some(_)) => (0..n)
            .map(|i| {
                if i % 6 < 5 {
                    AttentionKind::Sliding
                } else {
                    AttentionKind::Full
                }
            })
            .collect(),
    };

    let mut shared = gguf
        .get_uint(&key("attention.shared_kv_layers"))
        .unwrap_or(0) as usize;
    if arch == ASSISTANT_ARCH {
        // Every assistant layer reads the target's cache; the assistant is fitted to its
        // target at load (model::gemma4_assistant), which names the layers they read.
        if shared != n {
            return Err(GemmaError::Unsupported(format!(
                "an assistant with {shared} of {n} layers KV-shared (all must be)"
            )));
        }
        shared = 0;
    }
    let plans = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| LayerPlan {
            kind,
            head_dim: match kind {
                AttentionKind::Full => head_dim_full,
                AttentionKind::Sliding => head_dim_swa,
            },
            num_kv_heads: kv_heads[i],
            intermediate_size: ffn[i],
        })
        .collect();
    let layers = resolve_layers(plans, heads, shared, false)?;

    let (rope_full, rope_sliding, attention_scale, per_layer) = match architecture {
        Architecture::Gemma4 => {
            // Full layers rotate only the pairs whose rope_freqs divisor is 1 (the rest 1e30).
            let rotated = match gguf.tensor("rope_freqs.weight") {
                Some(_) => rope_freqs_rotated_pairs(file)?,
                None => head_dim_full / 2,
            };
            (
                RopeParams {
                    theta: base_full,
                    partial_rotary_factor: (2 * rotated) as f64 / head_dim_full as f64,
                    scaling_factor: 1.0,
                },
                RopeParams {
                    theta: float(gguf, &key("rope.freq_base_swa")).unwrap_or(10_000.0),
                    partial_rotary_factor: 1.0,
                    scaling_factor: 1.0,
                },
                1.0,
                uint("embedding_length_per_layer_input")?,
            )
        }
        Architecture::Gemma3 => {
            let scaling = match gguf.get_str(&key("rope.scaling.type")) {
                Ok("linear") => float(gguf, &key("rope.scaling.factor")).unwrap_or(1.0),
                Ok("none") | Err(_) => 1.0,
                Ok(other) => {
                    return Err(GemmaError::Unsupported(format!("rope scaling `{other}`")));
                }
            };
            (
                RopeParams {
                    theta: base_full,
                    partial_rotary_factor: 1.0,
                    scaling_factor: scaling,
                },
                RopeParams {
                    theta: 10_000.0,
                    partial_rotary_factor: 1.0,
                    scaling_factor: 1.0,
                },
                (head_dim_full as f32).sqrt().recip(),
                0,
            )
        }
    };

    let token_id = |k: &str, default: u32| gguf.get_uint(k).map(|v| v as u32).unwrap_or(default);
    let mut eos = vec![token_id("tokenizer.ggml.eos_token_id", 1)];
    if let Ok(eot) = gguf.get_uint("tokenizer.ggml.eot_token_id") {
        eos.push(eot as u32);
    }
    Ok(GemmaConfig {
        architecture,
        vocab_size: vocab,
        hidden_size: hidden,
        num_heads: heads,
        layers,
        hidden_size_per_layer_input: per_layer,
        vocab_size_per_layer_input: vocab,
        attention_scale,
        value_norm: architecture == Architecture::Gemma4,
        layer_scalars: architecture == Architecture::Gemma4,
        sliding_window: window.unwrap_or(usize::MAX / 2),
        final_logit_softcapping: float(gguf, &key("final_logit_softcapping"))
            .filter(|&c| c > 0.0)
            .map(|c| c as f32),
        rms_norm_eps: eps,
        rope_sliding,
        rope_full,
        max_position_embeddings: gguf.get_uint(&key("context_length")).unwrap_or(131072) as usize,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id", 2),
        eos_token_ids: eos,
        pad_token_id: token_id("tokenizer.ggml.padding_token_id", 0),
    })
}

/// Counts the leading frequency divisors equal to 1 in `rope_freqs` and checks that the rest
/// effectively disable rotation (llama.cpp's encoding of proportional RoPE).
fn rope_freqs_rotated_pairs(file: &GgufModelFile) -> Result<usize> {
    let name = "rope_freqs.weight";
    let info = file.gguf.require_tensor(name).map_err(meta_error)?;
    let bytes = file.gguf.tensor_data(&file.map, name).map_err(meta_error)?;
    let divisors = quant::dequantize(info.ggml_type(), bytes)
        .map_err(|e| GemmaError::InvalidConfig(format!("{name}: {e}")))?;
    let rotated = divisors.iter().take_while(|&&d| d == 1.0).count();
    if divisors[rotated..].iter().any(|&d| d < 1e20) {
        return Err(GemmaError::Unsupported(format!(
            "{name} holds frequency divisors other than 1 and ~1e30"
        )));
    }
    Ok(rotated)
}
