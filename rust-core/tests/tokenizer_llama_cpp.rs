//! Tokenization of the Gemma 3 270M GGUF vs llama.cpp (reference ids committed by
//! scripts/reference/llama_cpp_tokenize.py). Needs the demo model: scripts/fetch-demo-model.sh.

mod common;

use gemmakit::tokenizer::Tokenizer;
use gemmakit::tokenizer::stream::StreamDecoder;
use gemmakit::weights::gguf::GgufFile;
use serde_json::Value;

fn tokenizer() -> Tokenizer {
    let path = common::demo_model_path();
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-demo-model.sh)", path.display()));
    let gguf = GgufFile::parse(&bytes).expect("demo GGUF parses");
    gemmakit::tokenizer::gguf::from_gguf(&gguf).expect("tokenizer builds")
}

fn cases() -> Vec<Value> {
    let path = common::fixture_dir("gemma3_270m").join("llama_cpp_tokenize.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"].as_array().unwrap().clone()
}

#[test]
fn token_ids_match_llama_cpp() {
    let tok = tokenizer();
    let cases = cases();
    assert!(cases.len() >= 50);
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        for (key, special) in [("ids_special", true), ("ids_no_special", false)] {
            let expected = common::json_ids(&case[key]);
            let ours = tok.encode(text, special).unwrap();
            if ours != expected {
                failures.push(format!(
                    "{text:?} (special={special}): ours {ours:?}, llama.cpp {expected:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} mismatches:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}

#[test]
fn streamed_text_equals_full_decode() {
    let tok = tokenizer();
    for case in cases() {
        let ids = common::json_ids(&case["ids_special"]);
        let mut stream = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &ids {
            let chunk = stream.push(&tok, id);
            assert!(
                !chunk.contains('\u{FFFD}') || case["text"].as_str().unwrap().contains('\u{FFFD}')
            );
            streamed.push_str(&chunk);
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, tok.decode(&ids, false));
        assert_eq!(
            streamed,
            case["detok_special"].as_str().unwrap(),
            "detokenization differs from llama.cpp"
        );
    }
}
