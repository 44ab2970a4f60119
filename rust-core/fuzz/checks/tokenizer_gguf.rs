//! A GGUF vocabulary built from arbitrary bytes (tokens, scores, token types, merges, special
//! ids, flags), written with `GgufWriter`, parsed back and imported with
//! `tokenizer::gguf::from_gguf`, the path a GGUF model's tokenizer takes. When the import
//! succeeds, text drawn from the input is encoded and decoded.

use gemmakit::GemmaError;
use gemmakit::tokenizer::gguf::from_gguf;
use gemmakit::weights::gguf::{GgufFile, GgufWriter, MetaArray, MetaValue};

use super::{Bytes, Outcome};

pub fn run(data: &[u8]) -> Outcome {
    let mut b = Bytes(data);
    let gguf = vocabulary(&mut b);
    let text = b.text();
    let file = GgufFile::parse(&gguf).expect("the writer's output parses");
    let tok = match from_gguf(&file) {
        Ok(tok) => tok,
        Err(e @ (GemmaError::InvalidConfig(_) | GemmaError::Unsupported(_))) => {
            return Outcome::Rejected(e.to_string());
        }
        Err(e) => panic!("a bad vocabulary is InvalidConfig or Unsupported, got {e:?}"),
    };
    super::tokenizer_json::exercise(&tok, &text);
    Outcome::Accepted
}

fn vocabulary(b: &mut Bytes) -> Vec<u8> {
    let model = *b.pick(&["llama", "gemma4", "bpe"]);
    let mut meta = vec![("tokenizer.ggml.model", MetaValue::String(model.into()))];
    let n = b.up_to(40);
    let tokens: Vec<String> = (0..n).map(|_| piece(b)).collect();
    // Off by one now and then: the lengths must agree.
    let len_of = |b: &mut Bytes| match b.up_to(9) {
        0 => n + 1,
        1 => n.saturating_sub(1),
        _ => n,
    };
    if b.flag() {
        let len = len_of(b);
        let scores = (0..len).map(|_| b.f32()).collect();
        meta.push((
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(scores)),
        ));
    }
    if b.flag() {
        let len = len_of(b);
        let types = (0..len).map(|_| b.up_to(8) as i32 - 1).collect();
        meta.push((
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(types)),
        ));
    }
    if b.flag() {
        let merges = (0..b.up_to(20))
            .map(|_| {
                if n >= 2 && b.flag() {
                    format!("{} {}", b.pick(&tokens), b.pick(&tokens))
                } else {
                    piece(b)
                }
            })
            .collect();
        meta.push((
            "tokenizer.ggml.merges",
            MetaValue::Array(MetaArray::String(merges)),
        ));
    }
    for key in [
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
    ] {
        if b.flag() {
            let id = if b.flag() {
                b.up_to(41) as u32
            } else {
                b.u32()
            };
            meta.push((key, MetaValue::U32(id)));
        }
    }
    for key in [
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_space_prefix",
    ] {
        if b.flag() {
            meta.push((key, MetaValue::Bool(b.flag())));
        }
    }
    meta.push((
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaArray::String(tokens)),
    ));
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k, v).expect("distinct keys");
    }
    w.to_bytes()
}

/// A short piece, mostly from a SentencePiece-like alphabet so that merges and byte tokens meet.
fn piece(b: &mut Bytes) -> String {
    if b.up_to(3) == 0 {
        return b.text();
    }
    let parts = [
        "a", "b", "ab", "\u{2581}", " ", "<0x41>", "<0xFF>", "<bos>", "<eos>", "é", "<",
    ];
    (0..=b.up_to(3)).map(|_| *b.pick(&parts)).collect()
}
