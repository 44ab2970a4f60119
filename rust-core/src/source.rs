//! A model on disk, opened once: the one place that decides what a path holds and answers
//! everything the layers above ask of it (hyper-parameters, weights, tokenizer, chat template,
//! media placeholder ids, where the towers are, name and size). Engine, eval and bench all
//! open models through [`ModelSource::open`].
//!
//! What a path holds:
//! - a directory: a Hugging Face checkpoint (`config.json`, `*.safetensors`, `tokenizer.json`);
//! - `config.json` or a `*.safetensors` file: the checkpoint directory that holds it;
//! - any other file: a GGUF file (llama.cpp's layout), whose towers come from an `mmproj`
//!   GGUF (given, or the one `mmproj*.gguf` next to it).

use std::path::{Path, PathBuf};

use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::media::audio::{FeatureExtractor, FeatureExtractorConfig};
use crate::media::layout::PlaceholderIds;
use crate::model::gguf::GgufModelFile;
use crate::model::names::TEXT_PREFIXES;
use crate::model::towers::TowerFiles;
use crate::model::{AssistantConfig, AssistantModel, GemmaConfig, GemmaModel};
use crate::tokenizer::Tokenizer;
use crate::weights::{self, WeightStore};

enum Format {
    /// Parsed once; the mapping is shared by every store made from it.
    Gguf(GgufModelFile),
    Checkpoint {
        dir: PathBuf,
        shards: Vec<PathBuf>,
    },
}

/// An opened model file or checkpoint directory.
pub struct ModelSource {
    path: PathBuf,
    format: Format,
    config: GemmaConfig,
    name: String,
    file_bytes: u64,
}

impl ModelSource {
    /// Opens `path` (see the module docs for what it may be) and reads its hyper-parameters.
    /// Weights are memory-mapped later, by [`weights`](Self::weights).
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| GemmaError::io(path, e))?;
        let in_checkpoint = path.file_name().is_some_and(|n| n == "config.json")
            || path.extension().is_some_and(|e| e == "safetensors");
        if meta.is_dir() || in_checkpoint {
            let dir = if meta.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            let config = GemmaConfig::from_file(&dir.join("config.json"))?;
            let shards = weights::safetensors::shard_paths(&dir)?;
            let file_bytes = shards
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(ModelSource {
                path: dir.clone(),
                format: Format::Checkpoint { dir, shards },
                config,
                name,
                file_bytes,
            })
        } else {
            let file = GgufModelFile::open(path)?;
            let config = crate::model::gguf::config_from_gguf(&file)?;
            let name = file.gguf.get_str("general.name").unwrap_or("").to_string();
            Ok(ModelSource {
                path: path.to_path_buf(),
                format: Format::Gguf(file),
                config,
                name,
                file_bytes: meta.len(),
            })
        }
    }

    /// The file or checkpoint directory this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &GemmaConfig {
        &self.config
    }

    /// `general.name` of a GGUF, the directory name of a checkpoint.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of weight files on disk.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The text model's weights, memory-mapped, under their Hugging Face names.
    pub fn weights(&self) -> Result<WeightStore> {
        match &self.format {
            Format::Gguf(file) => crate::model::gguf::text_store(file),
            Format::Checkpoint { shards, .. } => weights::safetensors::open(shards, &TEXT_PREFIXES),
        }
    }

    /// The text model on `device`.
    pub fn load_model(&self, device: ComputeDevice) -> Result<GemmaModel> {
        GemmaModel::from_store(self.config.clone(), self.weights()?, device)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match &self.format {
            Format::Gguf(file) => crate::tokenizer::gguf::from_gguf(&file.gguf),
            Format::Checkpoint { dir, .. } => {
                Tokenizer::from_json_file(&dir.join("tokenizer.json"))
            }
        }
    }

    /// The file's Jinja chat template: a GGUF's `tokenizer.chat_template`; a checkpoint's
    /// `chat_template.jinja`, or `chat_template` in its `tokenizer_config.json`.
    pub fn chat_template(&self) -> Option<String> {
        match &self.format {
            Format::Gguf(file) => file
                .gguf
                .get_str("tokenizer.chat_template")
                .ok()
                .map(str::to_string),
            Format::Checkpoint { dir, .. } => {
                if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
                    return Some(t);
                }
                let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
                let config: serde_json::Value = serde_json::from_str(&text).ok()?;
                config.get("chat_template")?.as_str().map(str::to_string)
            }
        }
    }

    /// Whether the file says it is instruction-tuned (a GGUF's `general.finetune` or name);
    /// checkpoints do not say.
    pub fn instruction_tuned(&self) -> bool {
        match &self.format {
            Format::Gguf(file) => {
                let finetune = file
                    .gguf
                    .get_str("general.finetune")
                    .unwrap_or("")
                    .to_lowercase();
                finetune.contains("it")
                    || finetune.contains("instruct")
                    || self.name.to_lowercase().contains("-it")
            }
            Format::Checkpoint { .. } => false,
        }
    }

    /// The media placeholder ids: a checkpoint's `config.json` `*_token_id` entries when it
    /// has them, else the vocabulary's `<|image|>`/`<|audio|>`/`<|video|>` and their begin/end
    /// tokens (GGUF files carry only the vocabulary). `Ok(None)`: the model has none. The
    /// vocabulary is read only when needed; pass `tokenizer` if you already have it.
    pub fn placeholder_ids(&self, tokenizer: Option<&Tokenizer>) -> Result<Option<PlaceholderIds>> {
        if let Format::Checkpoint { dir, .. } = &self.format
            && let Some(ids) = config_placeholder_ids(&dir.join("config.json"))?
        {
            return Ok(Some(ids));
        }
        Ok(match tokenizer {
            Some(t) => PlaceholderIds::from_tokenizer(t),
            None => PlaceholderIds::from_tokenizer(&self.tokenizer()?),
        })
    }

    /// Where this model's vision and audio towers are: `mmproj` if given; a checkpoint's own
    /// directory; else the one `mmproj*.gguf` next to a GGUF file.
    pub fn tower_files(&self, mmproj: Option<&Path>) -> Result<TowerFiles> {
        Ok(match (mmproj, &self.format) {
            (Some(p), _) => {
                std::fs::metadata(p).map_err(|e| GemmaError::io(p, e))?;
                TowerFiles::Mmproj(p.to_path_buf())
            }
            (None, Format::Checkpoint { dir, .. }) => TowerFiles::Checkpoint(dir.clone()),
            (None, Format::Gguf(_)) => match find_mmproj(&self.path) {
                Some(p) => TowerFiles::Mmproj(p),
                None => TowerFiles::Missing(format!(
                    "no mmproj GGUF next to {} (pass one with --mmproj / EngineOptions::mmproj)",
                    self.path.display()
                )),
            },
        })
    }

    /// The audio front end's settings: a checkpoint's `processor_config.json` or
    /// `preprocessor_config.json`, else transformers' defaults (an mmproj GGUF stores none).
    pub fn feature_extractor(&self, towers: &TowerFiles) -> Result<FeatureExtractor> {
        let TowerFiles::Checkpoint(dir) = towers else {
            return Ok(FeatureExtractor::default());
        };
        for name in ["processor_config.json", "preprocessor_config.json"] {
            let path = dir.join(name);
            if let Ok(text) = std::fs::read_to_string(&path) {
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| GemmaError::InvalidConfig(format!("{name}: {e}")))?;
                let section = value.get("feature_extractor").unwrap_or(&value);
                if section.get("feature_size").is_some() {
                    let config = FeatureExtractorConfig::from_json(&section.to_string())?;
                    return FeatureExtractor::new(config);
                }
            }
        }
        Ok(FeatureExtractor::default())
    }
}

/// `config.json`'s `*_token_id` entries, if it names all seven.
/// Gemma 4's MTP assistant for `target` from `path`: a `gemma4_assistant` checkpoint
/// (directory, its `config.json` or a `*.safetensors` in it) or a `gemma4-assistant` GGUF
/// (llama.cpp's, without the centroid head: the dense head drafts; or `gemmakit convert`'s,
/// with it). One loader per format, both into [`AssistantModel::from_store`], which checks
/// that the assistant belongs to `target` ([`GemmaError::DraftModelMismatch`] if not).
/// The checkpoint directory when `path` names a safetensors checkpoint (the directory, its
/// `config.json` or a shard); `None` for a GGUF file.
fn assistant_checkpoint_dir(path: &Path) -> Result<Option<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| GemmaError::io(path, e))?;
    let in_checkpoint = path.file_name().is_some_and(|n| n == "config.json")
        || path.extension().is_some_and(|e| e == "safetensors");
    Ok(if meta.is_dir() {
        Some(path.to_path_buf())
    } else if in_checkpoint {
        Some(path.parent().unwrap_or(Path::new(".")).to_path_buf())
    } else {
        None
    })
}

/// The bytes of the assistant's weight files at `path` (a GGUF, or a checkpoint directory /
/// its `config.json` / a shard, as [`load_assistant`] takes them): what loading it adds.
pub fn assistant_file_bytes(path: &Path) -> Result<u64> {
    let Some(dir) = assistant_checkpoint_dir(path)? else {
        let meta = std::fs::metadata(path).map_err(|e| GemmaError::io(path, e))?;
        return Ok(meta.len());
    };
    let mut total = 0u64;
    for shard in weights::safetensors::shard_paths(&dir)? {
        let len = std::fs::metadata(&shard)
            .map_err(|e| GemmaError::io(&shard, e))?
            .len();
        total = total.saturating_add(len);
    }
    Ok(total)
}

pub fn load_assistant(
    path: &Path,
    target: &GemmaConfig,
    device: ComputeDevice,
) -> Result<AssistantModel> {
    if let Some(dir) = assistant_checkpoint_dir(path)? {
        let config = AssistantConfig::from_file(&dir.join("config.json"))?;
        let shards = weights::safetensors::shard_paths(&dir)?;
        let store = weights::safetensors::open(&shards, &crate::model::names::ASSISTANT_PREFIXES)?;
        AssistantModel::from_store(config, store, target, device)
    } else {
        let file = GgufModelFile::open(path)?;
        let config = crate::model::gguf::assistant_config_from_gguf(&file)?;
        let store = crate::model::gguf::assistant_store(&file)?;
        AssistantModel::from_store(config, store, target, device)
    }
}

fn config_placeholder_ids(config: &Path) -> Result<Option<PlaceholderIds>> {
    let text = std::fs::read_to_string(config).map_err(|e| GemmaError::io(config, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| GemmaError::InvalidConfig(format!("config.json: {e}")))?;
    // transformers writes `eoa_token_index` in some releases and `eoa_token_id` in others.
    let id = |key: &str| -> Option<u32> {
        let alias = key.replace("_id", "_index");
        v.get(key)
            .or_else(|| v.get(&alias))
            .and_then(serde_json::Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
    };
    Ok((|| {
        Some(PlaceholderIds {
            image: id("image_token_id")?,
            audio: id("audio_token_id")?,
            video: id("video_token_id")?,
            boi: id("boi_token_id")?,
            eoi: id("eoi_token_id")?,
            boa: id("boa_token_id")?,
            eoa: id("eoa_token_id")?,
        })
    })())
}

/// `mmproj*.gguf` in the model file's directory (llama.cpp's naming), if exactly one is there.
fn find_mmproj(model_file: &Path) -> Option<PathBuf> {
    let dir = model_file.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "gguf")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.to_lowercase().contains("mmproj"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => found.pop(),
        0 => None,
        n => {
            log::warn!(
                "{n} mmproj files next to {}: pass one explicitly",
                model_file.display()
            );
            None
        }
    }
}
