//! A tokenizer from a GGUF file's metadata.
//!
//! Gemma GGUFs carry a SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`): pieces,
//! scores and token types, usually without merges. SentencePiece BPE repeatedly joins the
//! adjacent pair whose concatenation is the highest-scoring piece in the vocabulary; a BPE model
//! whose merge list holds every split `(a, b)` of every piece, ranked by that piece's score,
//! makes exactly the same choices. With `tokenizer.ggml.merges` present, those are used instead.

use std::collections::HashMap;

use tokenizers::Tokenizer as HfTokenizer;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::{DecoderWrapper, NormalizerWrapper};

use super::{TokenKind, Tokenizer};
use crate::error::{GemmaError, Result};
use crate::weights::gguf::GgufFile;

fn invalid(msg: impl Into<String>) -> GemmaError {
    GemmaError::InvalidConfig(format!("GGUF tokenizer: {}", msg.into()))
}

pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let model = gguf
        .get_str("tokenizer.ggml.model")
        .map_err(|e| invalid(e.to_string()))?;
    if model != "llama" && model != "gemma4" {
        return Err(GemmaError::Unsupported(format!(
            "GGUF tokenizer model `{model}`"
        )));
    }
    let pieces = gguf
        .get_str_array("tokenizer.ggml.tokens")
        .map_err(|e| invalid(e.to_string()))?;
    let scores = gguf.get_f32_array("tokenizer.ggml.scores").ok();
    let types = gguf.get_i32_array("tokenizer.ggml.token_type").ok();
    if scores.is_some_and(|s| s.len() != pieces.len())
        || types.is_some_and(|t| t.len() != pieces.len())
    {
        return Err(invalid("scores / token types do not match the token count"));
    }
    let kinds: Vec<TokenKind> = (0..pieces.len())
        .map(|i| match types.map_or(1, |t| t[i]) {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        })
        .collect();

    let vocab: Vocab = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i as u32))
        .collect();
    let merges = match gguf.get_str_array("tokenizer.ggml.merges") {
        Ok(lines) => lines
            .iter()
            .map(|line| {
                let (a, b) = line
                    .split_once(' ')
                    .ok_or_else(|| invalid(format!("merge `{line}` is not two pieces")))?;
                // tokenizers' BPE builder panics on a merge whose join is longer than every
                // piece; a merge must make a piece of the vocabulary anyway.
                if ![a, b, &format!("{a}{b}")]
                    .iter()
                    .all(|p| vocab.contains_key(*p))
                {
                    return Err(invalid(format!(
                        "merge `{line}` is not of and into vocabulary pieces"
                    )));
                }
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<Vec<_>>>()?,
        Err(_) => {
            let scores = scores.ok_or_else(|| invalid("neither merges nor scores"))?;
            merges_from_scores(pieces, scores, &kinds)
        }
    };

    let unk = gguf
        .get_uint("tokenizer.ggml.unknown_token_id")
        .ok()
        .and_then(|id| pieces.get(id as usize).cloned());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| invalid(e.to_string()))?;

    let mut hf = HfTokenizer::new(bpe);
    let add_space_prefix = gguf
        .get_bool("tokenizer.ggml.add_space_prefix")
        .unwrap_or(false);
    if add_space_prefix {
        return Err(GemmaError::Unsupported(
            "tokenizer.ggml.add_space_prefix = true".into(),
        ));
    }
    let space = Replace::new(" ", "\u{2581}").map_err(|e| invalid(e.to_string()))?;
    hf.with_normalizer(Some(NormalizerWrapper::Replace(space)))
        .map_err(|e| invalid(e.to_string()))?;
    let unspace = Replace::new("\u{2581}", " ").map_err(|e| invalid(e.to_string()))?;
    hf.with_decoder(Some(DecoderWrapper::Sequence(Sequence::new(vec![
        DecoderWrapper::Replace(unspace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]))));

    let id = |key: &str| gguf.get_uint(key).ok().map(|v| v as u32);
    let add_bos = gguf
        .get_bool("tokenizer.ggml.add_bos_token")
        .unwrap_or(true);
    Tokenizer::from_parts(
        hf,
        pieces,
        kinds,
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id"),
        add_bos,
    )
}

/// Every split of every mergeable piece into two pieces of the vocabulary, ordered by the
/// joined piece's score (highest first; ties by id, as SentencePiece breaks them).
fn merges_from_scores(
    pieces: &[String],
    scores: &[f32],
    kinds: &[TokenKind],
) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let mut ranked: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in pieces.iter().enumerate() {
        if kinds[id] != TokenKind::Normal && kinds[id] != TokenKind::UserDefined {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (index.get(left), index.get(right)) {
                ranked.push((scores[id], id, l, r));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (pieces[l].clone(), pieces[r].clone()))
        .collect()
}
