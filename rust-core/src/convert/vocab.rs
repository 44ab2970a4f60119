//! Tokenizer metadata for a `gemma4` GGUF: read from a Hugging Face `tokenizer.json`
//! (+ `tokenizer_config.json`, `chat_template.jinja`) the way gguf-py's `LlamaHfVocab` and
//! `SpecialVocab` do, or synthesised for random-weight files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::error::{GemmaError, Result};
use crate::weights::gguf::{GgufWriter, MetaArray, MetaValue};

/// gguf-py's `TokenType`.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// Tokens llama.cpp's Gemma 4 converter marks user-defined so its chat parser sees them.
const VISIBLE_TOKENS: [&str; 7] = [
    "<|channel>",
    "<channel|>",
    "<|tool_call>",
    "<tool_call|>",
    "<|tool_response>",
    "<tool_response|>",
    "<|\"|>",
];

/// Everything the GGUF tokenizer section holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    /// (`bos`, `eos`, `unk`, `sep`, `pad`, `cls`, `mask`) → id, in that order.
    pub special_ids: Vec<(&'static str, u32)>,
    /// `bos` / `eos` → whether the tokenizer adds it.
    pub add_special: Vec<(&'static str, bool)>,
    pub chat_template: Option<String>,
}

const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

fn invalid(path: &Path, reason: impl Into<String>) -> GemmaError {
    GemmaError::invalid_weight_file(path, reason)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

/// The text of a special-token entry: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

impl GgufVocab {
    /// Reads `dir/tokenizer.json`; `Ok(None)` when there is none.
    pub fn from_hf_dir(dir: &Path) -> Result<Option<Self>> {
        let tok_path = dir.join("tokenizer.json");
        let Some(tok) = read_json(&tok_path)? else {
            return Ok(None);
        };
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let model_config = read_json(&dir.join("config.json"))?;
        let model = tok
            .get("model")
            .ok_or_else(|| invalid(&tok_path, "no `model`"))?;
        if model.get("type").and_then(Value::as_str) != Some("BPE")
            || model.get("byte_fallback").and_then(Value::as_bool) != Some(true)
        {
            return Err(GemmaError::Unsupported(
                "tokenizer.json is not a byte-fallback BPE model (Gemma 4's kind)".into(),
            ));
        }
        let vocab = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(&tok_path, "no `model.vocab`"))?;
        let added: Vec<(String, u32)> = tok
            .get("added_tokens")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| {
                        Some((
                            t.get("content")?.as_str()?.to_string(),
                            t.get("id")?.as_u64()? as u32,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();

        // id → text over the base vocabulary, then added tokens beyond it (LlamaHfVocab).
        let base = vocab.len();
        if base > 1 << 24 {
            return Err(invalid(&tok_path, format!("{base} tokens")));
        }
        let mut by_id: Vec<Option<String>> = vec![None; base];
        let mut all: HashMap<String, u32> = HashMap::new();
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .filter(|&id| (id as usize) < base)
                .ok_or_else(|| invalid(&tok_path, format!("token `{text}` has id {id}")))?;
            by_id[id as usize] = Some(text.clone());
            all.insert(text.clone(), id as u32);
        }
        let mut extra: BTreeMap<u32, String> = BTreeMap::new();
        for (text, id) in &added {
            all.entry(text.clone()).or_insert(*id);
            if *id as usize >= base {
                extra.insert(*id, text.clone());
            }
        }

        // transformers' all_special_ids: the named special tokens plus the additional ones.
        let mut special_texts: Vec<String> = Vec::new();
        if let Some(c) = &config {
            for typ in SPECIAL_TYPES {
                if let Some(t) = c.get(format!("{typ}_token")).and_then(token_text) {
                    special_texts.push(t.to_string());
                }
            }
            for key in ["additional_special_tokens", "extra_special_tokens"] {
                match c.get(key) {
                    Some(Value::Array(a)) => {
                        special_texts.extend(a.iter().filter_map(token_text).map(str::to_string))
                    }
                    Some(Value::Object(o)) => {
                        special_texts.extend(o.values().filter_map(token_text).map(str::to_string))
                    }
                    _ => {}
                }
            }
        }
        let special_ids: HashSet<u32> = special_texts
            .iter()
            .filter_map(|t| all.get(t).copied())
            .collect();

        let mut out = GgufVocab::default();
        let is_byte = |t: &str| {
            t.len() == 6
                && t.starts_with("<0x")
                && t.ends_with('>')
                && t[3..5].chars().all(|c| c.is_ascii_hexdigit())
        };
        for (id, text) in by_id.into_iter().enumerate() {
            let text = text.ok_or_else(|| invalid(&tok_path, format!("no token has id {id}")))?;
            let ty = if is_byte(&text) {
                token_type::BYTE
            } else if special_ids.contains(&(id as u32)) {
                token_type::CONTROL
            } else {
                token_type::NORMAL
            };
            out.push(text, ty);
        }
        for (id, text) in extra {
            if id as usize != out.tokens.len() {
                return Err(invalid(&tok_path, format!("added token ids skip to {id}")));
            }
            let ty = if special_ids.contains(&id) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            out.push(text, ty);
        }
        for (text, ty) in out.tokens.iter().zip(out.types.iter_mut()) {
            if VISIBLE_TOKENS.contains(&text.as_str()) {
                *ty = token_type::USER_DEFINED;
            }
        }

        out.merges = match model.get("merges") {
            Some(Value::Array(m)) => m
                .iter()
                .map(|entry| match entry {
                    Value::String(s) => Ok(s.clone()),
                    // The pair form (transformers ≥ 4.45); spaces inside pieces become U+0120.
                    Value::Array(pair) if pair.len() == 2 => Ok(pair
                        .iter()
                        .map(|p| {
                            p.as_str()
                                .unwrap_or("")
                                .chars()
                                .map(|c| if c == ' ' { '\u{120}' } else { c })
                                .collect::<String>()
                        })
                        .collect::<Vec<_>>()
                        .join(" ")),
                    _ => Err(invalid(&tok_path, "unknown merges format")),
                })
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };

        // Special ids: tokenizer_config's token text looked up among the added tokens, else
        // config.json's `<typ>_token_id` (SpecialVocab).
        for typ in SPECIAL_TYPES {
            let from_config = config
                .as_ref()
                .and_then(|c| c.get(format!("{typ}_token")))
                .and_then(token_text)
                .and_then(|t| added.iter().find(|(a, _)| a == t).map(|(_, id)| *id));
            let from_model = model_config.as_ref().and_then(|c| {
                let key = format!("{typ}_token_id");
                c.get(&key)
                    .or_else(|| c.get("text_config").and_then(|t| t.get(&key)))
                    .and_then(Value::as_u64)
                    .map(|v| v as u32)
            });
            if let Some(id) = from_config.or(from_model) {
                out.special_ids.push((typ, id));
            }
        }

        // add_bos / add_eos: the post-processor's template first, then tokenizer_config.
        let mut add: BTreeMap<&'static str, bool> = BTreeMap::new();
        if let Some(pp) = tok.get("post_processor").filter(|p| !p.is_null()) {
            let processors = pp
                .get("processors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_else(|| vec![pp.clone()]);
            for p in processors {
                if p.get("type").and_then(Value::as_str) == Some("TemplateProcessing") {
                    let single = p.get("single").and_then(Value::as_array);
                    if let Some(single) = single.filter(|s| s.len() > 1) {
                        let special = |v: &Value| v.get("SpecialToken").is_some();
                        if special(&single[0]) {
                            add.insert("bos", true);
                        }
                        if special(&single[single.len() - 1]) {
                            add.insert("eos", true);
                        }
                    }
                }
            }
        }
        if let Some(c) = &config {
            for typ in ["bos", "eos"] {
                if let Some(v) = c.get(format!("add_{typ}_token")).and_then(Value::as_bool) {
                    add.entry(typ).or_insert(v);
                }
            }
        }
        out.add_special = ["bos", "eos"]
            .into_iter()
            .filter_map(|t| add.get(t).map(|&v| (t, v)))
            .collect();

        out.chat_template = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
        Ok(Some(out))
    }

    fn push(&mut self, text: String, ty: i32) {
        self.tokens.push(text);
        self.scores.push(-1000.0);
        self.types.push(ty);
    }

    /// A minimal valid Gemma 4 vocabulary of `size` tokens for random-weight files: the
    /// special and chat tokens at their real ids, the 256 byte tokens, single characters,
    /// and `<unusedN>` filler. Text tokenizes character by character (no merges).
    pub fn synthetic(size: usize) -> Self {
        let mut fixed: BTreeMap<usize, (&str, i32)> = BTreeMap::new();
        use token_type::*;
        for (id, text, ty) in [
            (0, "<pad>", CONTROL),
            (1, "<eos>", CONTROL),
            (2, "<bos>", CONTROL),
            (3, "<unk>", CONTROL),
            (4, "<mask>", CONTROL),
            (46, "<|tool>", CONTROL),
            (47, "<tool|>", CONTROL),
            (48, "<|tool_call>", USER_DEFINED),
            (49, "<tool_call|>", USER_DEFINED),
            (50, "<|tool_response>", USER_DEFINED),
            (51, "<tool_response|>", USER_DEFINED),
            (52, "<|\"|>", USER_DEFINED),
            (98, "<|think|>", CONTROL),
            (100, "<|channel>", USER_DEFINED),
            (101, "<channel|>", USER_DEFINED),
            (105, "<|turn>", CONTROL),
            (106, "<turn|>", CONTROL),
            (107, "\n", NORMAL),
            (255_999, "<|image>", CONTROL),
            (256_000, "<|audio>", CONTROL),
            (258_880, "<|image|>", CONTROL),
            (258_881, "<|audio|>", CONTROL),
            (258_882, "<image|>", CONTROL),
            (258_883, "<audio|>", CONTROL),
            (258_884, "<|video|>", CONTROL),
        ] {
            if id < size {
                fixed.insert(id, (text, ty));
            }
        }
        let mut free: Vec<String> = (0..256).map(|b| format!("<0x{b:02X}>")).collect();
        free.push("\u{2581}".into());
        free.extend((0x21u8..0x7f).map(|c| (c as char).to_string()));
        free.extend((0x21u8..0x7f).map(|c| format!("\u{2581}{}", c as char)));
        let mut free = free.into_iter();
        let mut out = GgufVocab::default();
        let mut unused = 0usize;
        for id in 0..size {
            if let Some((text, ty)) = fixed.get(&id) {
                out.push(text.to_string(), *ty);
            } else if let Some(text) = free.next() {
                let ty = if text.starts_with("<0x") {
                    BYTE
                } else {
                    NORMAL
                };
                out.push(text, ty);
            } else {
                out.push(format!("<unused{unused}>"), NORMAL);
                unused += 1;
            }
        }
        out.special_ids = vec![("bos", 2), ("eos", 1), ("unk", 3), ("pad", 0), ("mask", 4)]
            .into_iter()
            .filter(|&(_, id)| (id as usize) < size)
            .collect();
        out.add_special = vec![("bos", true), ("eos", false)];
        out.chat_template = Some(SYNTHETIC_CHAT_TEMPLATE.to_string());
        out
    }

    /// Writes the `tokenizer.*` keys as llama.cpp's Gemma 4 converter does.
    pub fn write(&self, meta: &mut GgufWriter) -> Result<()> {
        let w = |e: crate::weights::gguf::GgufError| GemmaError::InvalidArgument(e.to_string());
        meta.add_metadata("tokenizer.ggml.model", MetaValue::String("gemma4".into()))
            .map_err(w)?;
        meta.add_metadata(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(self.tokens.clone())),
        )
        .map_err(w)?;
        meta.add_metadata(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(self.scores.clone())),
        )
        .map_err(w)?;
        meta.add_metadata(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(self.types.clone())),
        )
        .map_err(w)?;
        // llama.cpp's gemma4 tokenizer requires the key, even when empty.
        meta.add_metadata(
            "tokenizer.ggml.merges",
            MetaValue::Array(MetaArray::String(self.merges.clone())),
        )
        .map_err(w)?;
        for (typ, id) in &self.special_ids {
            let key = match *typ {
                "unk" => "unknown",
                "sep" => "seperator", // sic, gguf-py's spelling
                "pad" => "padding",
                other => other,
            };
            meta.add_metadata(
                format!("tokenizer.ggml.{key}_token_id"),
                MetaValue::U32(*id),
            )
            .map_err(w)?;
        }
        for (typ, value) in &self.add_special {
            if *typ == "bos" {
                continue; // forced to true below, as the Gemma 4 converter does
            }
            meta.add_metadata(
                format!("tokenizer.ggml.add_{typ}_token"),
                MetaValue::Bool(*value),
            )
            .map_err(w)?;
        }
        meta.add_metadata("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
            .map_err(w)?;
        if let Some(t) = &self.chat_template {
            meta.add_metadata("tokenizer.chat_template", MetaValue::String(t.clone()))
                .map_err(w)?;
        }
        meta.add_metadata("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false))
            .map_err(w)?;
        Ok(())
    }
}

/// A small Gemma 4 turn format for random-weight files (system/user/model turns).
pub const SYNTHETIC_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}<|turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}";
