//! Our tokenizer as llguidance's [`TokenizerEnv`]: the byte string of every id and a canonical
//! tokenization of text.
//!
//! Not `toktrie_hf_tokenizers`: it pins an older `tokenizers` and, on Gemma's vocabulary, marks
//! every `<...>`-shaped token special and takes `</s>` (an ordinary text token) for the end of
//! sequence. Here only control, unused and unknown tokens are special (llguidance writes them
//! as `\xff` + their text, so no text can produce them), byte-fallback pieces are their byte,
//! `▁` is a space, and the stop set is the model's end-of-turn ids.

use std::sync::Arc;

use llguidance::toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::error::{GemmaError, Result};
use crate::tokenizer::{TokenKind, Tokenizer};

pub(crate) struct GemmaTokenEnv {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl GemmaTokenEnv {
    /// `stop_ids`: the ids that end the model's turn (the first is llguidance's "EOS").
    pub(crate) fn new(tokenizer: Arc<Tokenizer>, stop_ids: &[u32]) -> Result<Self> {
        let vocab = tokenizer.vocab_size();
        let stop_ids: Vec<u32> = stop_ids
            .iter()
            .copied()
            .filter(|&id| (id as usize) < vocab)
            .collect();
        let Some(&first_stop) = stop_ids.first() else {
            return Err(GemmaError::InvalidConstraint(
                "the model has no end-of-turn token inside its vocabulary".into(),
            ));
        };
        let words: Vec<Vec<u8>> = (0..vocab as u32)
            .map(|id| token_word(&tokenizer, id))
            .collect();
        let mut info = TokRxInfo::new(vocab as u32, first_stop);
        info.tok_bos = tokenizer.bos_id;
        // toktrie asserts on internal invariants; a vocabulary from a hostile file must not
        // bring the app down, so a panic there becomes an error.
        let trie =
            std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&stop_ids))
                .map_err(|_| {
                    GemmaError::InvalidConstraint(
                        "the vocabulary cannot be indexed for constrained decoding".into(),
                    )
                })?;
        Ok(GemmaTokenEnv { tokenizer, trie })
    }
}

/// The bytes llguidance matches for `id`: special tokens behind the `\xff` marker.
fn token_word(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    let bytes = tokenizer.token_bytes(id);
    match tokenizer.kind(id) {
        Some(TokenKind::Control | TokenKind::Unused | TokenKind::Unknown) => {
            let mut word = Vec::with_capacity(bytes.len() + 1);
            word.push(TokTrie::SPECIAL_TOKEN_MARKER);
            word.extend_from_slice(bytes);
            word
        }
        _ => bytes.to_vec(),
    }
}

impl TokenizerEnv for GemmaTokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Text is tokenized as the model would see it in a prompt (control-token text stays
        // text); bytes that are not UTF-8 fall back to the trie's greedy split.
        match std::str::from_utf8(s) {
            Ok(text) => match self.tokenizer.encode(text, false) {
                Ok(ids) => ids,
                Err(_) => self.trie.greedy_tokenize(s),
            },
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}
