//! Text ↔ token ids for Gemma models, on the `tokenizers` crate.
//!
//! Built from a Hugging Face `tokenizer.json` or from a GGUF file's SentencePiece-style
//! vocabulary (see [`gguf`]). Control tokens (turn markers, media placeholders, tool tokens)
//! are single ids that the text never splits; they are recognised in input text only when the
//! caller asks for it (`parse_special`), as llama.cpp does.

pub mod gguf;
pub mod stream;

use std::path::Path;
use std::sync::Mutex;

use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::error::{GemmaError, Result};

/// How a vocabulary entry is used (SentencePiece / GGUF token types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    /// Special tokens with a meaning to the runtime (`<bos>`, `<start_of_turn>`, …).
    Control,
    /// Always matched as one token in text, even when special tokens are not parsed.
    UserDefined,
    Unused,
    /// `<0xAB>`: one raw byte (byte fallback).
    Byte,
}

pub struct Tokenizer {
    /// One instance (a 262k vocabulary with its merges is ~100 MB): whether control-token text
    /// is matched is a flag on it, set per call under the lock.
    inner: Mutex<HfTokenizer>,
    /// The bytes each id stands for when decoded (control tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    kinds: Vec<TokenKind>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Whether a BOS id is prepended when encoding a whole prompt.
    pub add_bos: bool,
}

impl Tokenizer {
    /// Wraps a `tokenizers` model whose vocabulary uses SentencePiece conventions (`▁` for a
    /// space, `<0xAB>` byte tokens), registering `kinds` as added tokens.
    fn from_parts(
        mut base: HfTokenizer,
        pieces: &[String],
        kinds: Vec<TokenKind>,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let added: Vec<AddedToken> = pieces
            .iter()
            .zip(&kinds)
            .filter_map(|(piece, kind)| match kind {
                TokenKind::Control => Some(AddedToken::from(piece.clone(), true).normalized(false)),
                TokenKind::UserDefined => {
                    Some(AddedToken::from(piece.clone(), false).normalized(false))
                }
                _ => None,
            })
            .collect();
        base.add_tokens(added)
            .map_err(|e| GemmaError::InvalidConfig(format!("special tokens: {e}")))?;
        let token_bytes = pieces.iter().map(|p| piece_bytes(p)).collect();
        Ok(Tokenizer {
            inner: Mutex::new(base),
            token_bytes,
            kinds,
            bos_id,
            eos_id,
            add_bos,
        })
    }

    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let json = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
        let json = String::from_utf8(json).map_err(|e| {
            GemmaError::InvalidConfig(format!("{}: not UTF-8: {e}", path.display()))
        })?;
        Self::from_json_str(&json)
    }

    /// Parses the contents of a `tokenizer.json`.
    pub fn from_json_str(json: &str) -> Result<Self> {
        // tokenizers 0.23 panics (an `expect` in its decoder deserializer) on a syntax error
        // inside "decoder"; checked first, the JSON reaches it well-formed, where it cannot fail.
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .map_err(|e| GemmaError::InvalidConfig(format!("tokenizer.json: {e}")))?;
        let hf: HfTokenizer = json
            .parse()
            .map_err(|e| GemmaError::InvalidConfig(format!("tokenizer.json: {e}")))?;
        Self::from_hf(hf)
    }

    fn from_hf(hf: HfTokenizer) -> Result<Self> {
        // Ids index tables (and the model's embedding): every id the tokenizer can return must
        // lie below the size, and a size far above the piece count would be a hostile allocation.
        let vocab = hf.get_vocab(true);
        let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if size > 2 * vocab.len() + 1024 {
            return Err(GemmaError::InvalidConfig(format!(
                "tokenizer.json: token id {} in a vocabulary of {} pieces",
                size - 1,
                vocab.len()
            )));
        }
        let mut pieces = vec![String::new(); size];
        let mut kinds = vec![TokenKind::Normal; size];
        for (piece, id) in vocab {
            if let Some(slot) = pieces.get_mut(id as usize) {
                *slot = piece;
            }
        }
        for (id, added) in hf.get_added_tokens_decoder() {
            if let Some(kind) = kinds.get_mut(id as usize) {
                *kind = if added.special {
                    TokenKind::Control
                } else {
                    TokenKind::UserDefined
                };
            }
        }
        for (piece, kind) in pieces.iter().zip(kinds.iter_mut()) {
            if is_byte_piece(piece) {
                *kind = TokenKind::Byte;
            }
        }
        let id = |t: &str| hf.token_to_id(t);
        let (bos, eos) = (id("<bos>"), id("<eos>"));
        Self::from_parts(hf, &pieces, kinds, bos, eos, false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HfTokenizer> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.kind(id) == Some(TokenKind::Control)
    }

    /// The id of a token given by its exact text (e.g. `"<start_of_turn>"`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.lock().token_to_id(piece)
    }

    /// Encodes `text` without adding BOS. With `parse_special`, control-token text such as
    /// `<start_of_turn>` becomes its id; without, it is tokenized as ordinary text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let mut tk = self.lock();
        tk.set_encode_special_tokens(!parse_special);
        let enc = tk
            .encode(text, false)
            .map_err(|e| GemmaError::InvalidArgument(format!("tokenization failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a whole prompt: BOS first if the model's tokenizer adds it.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(bos) = self.bos_id
        {
            ids.push(bos);
        }
        ids.extend(self.encode(text, parse_special)?);
        Ok(ids)
    }

    /// The bytes id `id` decodes to (a byte token is one raw byte, possibly part of a
    /// multi-byte character; control tokens decode to their text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Decodes ids to text; with `skip_control`, control tokens are dropped. Invalid UTF-8
    /// (an incomplete byte sequence) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_control: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_control && self.is_control(id) {
                continue;
            }
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn is_byte_piece(piece: &str) -> bool {
    piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>')
}

/// SentencePiece piece → bytes: `<0xAB>` is the byte 0xAB, `▁` is a space.
fn piece_bytes(piece: &str) -> Vec<u8> {
    if is_byte_piece(piece)
        && let Ok(b) = u8::from_str_radix(&piece[3..5], 16)
    {
        return vec![b];
    }
    piece.replace('\u{2581}', " ").into_bytes()
}
