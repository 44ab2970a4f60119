//! Arbitrary text as a Hugging Face `tokenizer.json` (`Tokenizer::from_json_str`). The input is
//! the JSON, then optionally a NUL byte and text to encode with the tokenizer that parsed.

use gemmakit::GemmaError;
use gemmakit::tokenizer::Tokenizer;

use super::Outcome;

pub fn run(data: &[u8]) -> Outcome {
    let (json, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"Hello <start_of_turn>user\nworld"[..]),
    };
    let Ok(json) = std::str::from_utf8(json) else {
        return Outcome::NotApplicable;
    };
    let tok = match Tokenizer::from_json_str(json) {
        Ok(tok) => tok,
        Err(e @ GemmaError::InvalidConfig(_)) => return Outcome::Rejected(e.to_string()),
        Err(e) => panic!("a bad tokenizer.json is InvalidConfig, got {e:?}"),
    };
    exercise(&tok, &String::from_utf8_lossy(text));
    Outcome::Accepted
}

/// Encodes and decodes `text` and checks what every path promises about the ids it returns.
pub fn exercise(tok: &Tokenizer, text: &str) {
    let vocab = tok.vocab_size();
    for special in [false, true] {
        let Ok(ids) = tok.encode(text, special) else {
            continue;
        };
        let prompt = tok
            .encode_prompt(text, special)
            .expect("encodes as encode did");
        assert!(prompt.ends_with(&ids));
        for &id in &ids {
            assert!(
                (id as usize) < vocab,
                "id {id} outside the vocabulary of {vocab}"
            );
            let _ = (tok.kind(id), tok.is_control(id));
            assert_eq!(
                tok.token_bytes(id).is_empty(),
                tok.decode(&[id], false).is_empty()
            );
        }
        let _ = (tok.decode(&ids, true), tok.decode(&ids, false));
    }
    assert!(tok.token_bytes(u32::MAX).is_empty());
    let _ = tok.decode(&[0, 1, u32::MAX, vocab as u32], false);
}
