//! Constrained decoding against independent checkers: every JSON answer parses (serde_json) and
//! validates (the `jsonschema` crate) under its schema, every regex answer fully matches (the
//! `regex` crate), Lark answers match an equivalent regex, and strict Gemma 4 tool calls parse
//! and validate under their tool's schema. Bad constraints are typed errors before any token.

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use gemmakit::GemmaError;
use gemmakit::chat::tools::parse_tool_call;
use gemmakit::constraint::{Constraint, ConstraintCompiler};
use gemmakit::engine::{BackendChoice, Engine, EngineOptions};
use gemmakit::generate::{Event, Flow, GenerateOptions, GenerationOutput, StopReason};
use gemmakit::sampling::SamplingOptions;
use gemmakit::tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn load(path: &std::path::Path) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            backend: BackendChoice::Cpu,
            context_len: 1024,
            ..EngineOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn demo() -> &'static Engine {
    static DEMO: OnceLock<Engine> = OnceLock::new();
    DEMO.get_or_init(|| load(&demo_model_path()))
}

fn tiny() -> &'static Engine {
    static TINY: OnceLock<Engine> = OnceLock::new();
    TINY.get_or_init(|| load(&tiny_gguf()))
}

fn options(
    constraint: Option<Constraint>,
    seed: Option<u64>,
    max_tokens: usize,
) -> GenerateOptions {
    let sampling = match seed {
        Some(seed) => SamplingOptions {
            seed: Some(seed),
            ..SamplingOptions::gemma_default()
        },
        None => SamplingOptions::greedy(),
    };
    GenerateOptions {
        sampling,
        max_tokens,
        constraint,
        ..GenerateOptions::default()
    }
}

fn continue_text(engine: &Engine, prompt: &str, options: &GenerateOptions) -> GenerationOutput {
    let ids = engine.tokenizer().encode_prompt(prompt, false).unwrap();
    engine
        .generate_from_tokens(&ids, options, &mut |_: Event| Flow::Continue)
        .unwrap_or_else(|e| panic!("{prompt:?}: {e}"))
}

/// Schemas that must finish: strings, arrays and numbers are bounded.
fn schemas() -> Vec<Value> {
    vec![
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 24},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"}
            },
            "required": ["name", "age"],
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": {
                "color": {"enum": ["red", "green", "blue"]},
                "scores": {"type": "array", "items": {"type": "number", "minimum": -5, "maximum": 5}, "minItems": 1, "maxItems": 4},
                "ok": {"type": "boolean"}
            },
            "required": ["color", "scores", "ok"],
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "maxLength": 16},
                        "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                    },
                    "required": ["city", "zip"],
                    "additionalProperties": false
                },
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
                "note": {"type": ["string", "null"], "maxLength": 12}
            },
            "required": ["address"],
            "additionalProperties": false
        }),
        json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 2, "maxItems": 5}),
    ]
}

fn assert_valid_json(schema: &Value, text: &str, what: &str) {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).expect("the test schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {text:?} violates the schema: {errors:?}"
    );
}

#[test]
fn json_answers_validate_under_their_schema_on_the_demo_model() {
    let engine = demo();
    for (i, schema) in schemas().into_iter().enumerate() {
        for seed in [None, Some(7), Some(8)] {
            let out = continue_text(
                engine,
                "A record of the customer, as JSON:\n",
                &options(Some(Constraint::JsonSchema(schema.clone())), seed, 200),
            );
            let what = format!("schema {i}, seed {seed:?}");
            assert_eq!(
                out.stats.stop_reason,
                StopReason::EndOfTurn,
                "{what}: {:?}",
                out.text
            );
            assert_valid_json(&schema, &out.text, &what);
        }
    }
}

#[test]
fn json_answers_validate_on_the_tiny_gemma4_model() {
    let engine = tiny();
    let schema = &schemas()[1];
    for seed in [None, Some(1), Some(2)] {
        let out = continue_text(
            engine,
            "data: ",
            &options(Some(Constraint::JsonSchema(schema.clone())), seed, 200),
        );
        assert_eq!(
            out.stats.stop_reason,
            StopReason::EndOfTurn,
            "{:?}",
            out.text
        );
        assert_valid_json(schema, &out.text, &format!("tiny, seed {seed:?}"));
    }
}

#[test]
fn regex_answers_match_in_full() {
    let engine = demo();
    let cases = [
        (
            "The meeting is on ",
            r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
        ),
        ("Call me at ", r"\+\d{1,3} \d{3} \d{3} \d{4}"),
        ("My favourite colour is ", r"(red|green|blue|yellow)"),
    ];
    for (prompt, rx) in cases {
        let full = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        for seed in [None, Some(3)] {
            let out = continue_text(
                engine,
                prompt,
                &options(Some(Constraint::Regex(rx.into())), seed, 40),
            );
            assert_eq!(
                out.stats.stop_reason,
                StopReason::EndOfTurn,
                "{rx}: {:?}",
                out.text
            );
            assert!(full.is_match(&out.text), "{rx}: {:?}", out.text);
        }
    }
}

#[test]
fn choices_and_lark_grammars_are_followed() {
    let engine = demo();
    let words = vec![
        "yes".to_string(),
        "no".to_string(),
        "maybe later".to_string(),
    ];
    for seed in [None, Some(11), Some(12)] {
        let out = continue_text(
            engine,
            "Will it rain tomorrow? Answer:",
            &options(Some(Constraint::Choice(words.clone())), seed, 20),
        );
        assert!(words.contains(&out.text), "{:?}", out.text);
    }
    // Sums of up to five numbers; checked by the equivalent regex.
    let grammar = r#"
start: term ("+" term)~0..4 "=" NUMBER
term: NUMBER | "(" NUMBER "*" NUMBER ")"
NUMBER: /[0-9]{1,3}/
"#;
    let same = regex::Regex::new(
        r"^(\d{1,3}|\(\d{1,3}\*\d{1,3}\))(\+(\d{1,3}|\(\d{1,3}\*\d{1,3}\))){0,4}=\d{1,3}$",
    )
    .unwrap();
    for seed in [None, Some(5), Some(6)] {
        let out = continue_text(
            engine,
            "Arithmetic practice: ",
            &options(Some(Constraint::Lark(grammar.into())), seed, 60),
        );
        assert_eq!(
            out.stats.stop_reason,
            StopReason::EndOfTurn,
            "{:?}",
            out.text
        );
        assert!(same.is_match(&out.text), "{:?}", out.text);
    }
}

#[test]
fn a_constraint_that_allows_anything_leaves_greedy_output_unchanged() {
    let engine = demo();
    let prompt = "The history of the bicycle begins";
    let free = continue_text(engine, prompt, &options(None, None, 24));
    let any = continue_text(
        engine,
        prompt,
        &options(Some(Constraint::Regex(r"(?s:.*)".into())), None, 24),
    );
    assert_eq!(free.tokens, any.tokens);
    assert_eq!(free.text, any.text);
}

#[test]
fn bad_constraints_are_typed_errors_before_any_token() {
    let engine = tiny();
    let ids = engine.tokenizer().encode_prompt("x", false).unwrap();
    let bad = [
        Constraint::JsonSchema(json!({"type": "no-such-type"})),
        Constraint::JsonSchema(json!([1, 2])),
        Constraint::Regex("(unclosed".into()),
        Constraint::Lark("start: (".into()),
        Constraint::Lark("start: undefined_rule".into()),
        Constraint::Choice(Vec::new()),
    ];
    for constraint in bad {
        let mut events = 0;
        let result = engine.generate_from_tokens(
            &ids,
            &options(Some(constraint.clone()), None, 8),
            &mut |_| {
                events += 1;
                Flow::Continue
            },
        );
        assert!(
            matches!(result, Err(GemmaError::InvalidConstraint(_))),
            "{constraint:?}: {result:?}"
        );
        assert_eq!(events, 0, "{constraint:?}");
    }
    assert!(matches!(
        Constraint::json_schema_text("{not json"),
        Err(GemmaError::InvalidConstraint(_))
    ));
}

#[test]
fn a_grammar_that_cannot_finish_stops_at_max_tokens() {
    let out = continue_text(
        tiny(),
        "x",
        &options(Some(Constraint::Regex("a{500}".into())), None, 6),
    );
    assert_eq!(out.stats.stop_reason, StopReason::MaxTokens);
    assert_eq!(out.tokens.len(), 6);
    assert!(out.text.chars().all(|c| c == 'a'), "{:?}", out.text);
}

/// A byte-fallback BPE vocabulary with Gemma 4's tool tokens as special tokens, some
/// multi-character pieces, and every printable ASCII character.
fn gemma4_like_tokenizer() -> Tokenizer {
    let specials = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<|tool_call>",
        "<tool_call|>",
        "<|\"|>",
        "<|tool_response>",
        "<turn|>",
    ];
    let mut pieces: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    pieces.extend((0..=255u32).map(|b| format!("<0x{b:02X}>")));
    pieces.extend((0x21u8..0x7f).map(|c| (c as char).to_string()));
    pieces.push("\u{2581}".into());
    for word in [
        "call:",
        "get_weather",
        "city:",
        "days:",
        "search",
        "query:",
        "set_alarm",
        "time:",
        "label:",
        "true",
        "false",
        "Paris",
        "ab",
        "cd",
        "12",
        "\u{2581}the",
    ] {
        pieces.push(word.into());
    }
    let vocab: serde_json::Map<String, Value> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": null, "post_processor": null,
        "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    });
    Tokenizer::from_json_str(&tokenizer.to_string()).unwrap()
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "strict": true,
            "description": "Weather forecast",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 12},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"enum": ["celsius", "fahrenheit"]}
            }, "required": ["city", "days"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "search", "strict": true,
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string", "maxLength": 10},
                "filters": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,4}$"}, "maxItems": 2},
                "exact": {"type": "boolean"}
            }, "required": ["query"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "set_alarm", "strict": true,
            "parameters": {"type": "object", "properties": {
                "time": {"type": "object", "properties": {
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                    "minute": {"type": "integer", "minimum": 0, "maximum": 59}
                }, "required": ["hour", "minute"], "additionalProperties": false},
                "label": {"type": ["string", "null"], "maxLength": 6}
            }, "required": ["time"], "additionalProperties": false}}}),
    ]
}

/// Random logits, sampled under the tool-call mask until the call closes: whatever the
/// model prefers, the call parses and its arguments validate.
#[test]
fn strict_tool_calls_parse_and_validate_whatever_the_logits() {
    let tok = Arc::new(gemma4_like_tokenizer());
    let close = tok.token_id("<tool_call|>").unwrap();
    let compiler = ConstraintCompiler::new(tok.clone(), &[1, 8]).unwrap();
    let tools = tools();
    let mut names_seen = std::collections::BTreeSet::new();
    for seed in 0..40u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut matcher = compiler.start_tool_call(&tools).unwrap();
        let mut ids = matcher.take_forced().unwrap();
        while !matcher.is_finished() {
            assert!(ids.len() < 2000, "seed {seed}: the call does not end");
            let allowed = matcher.allowed().unwrap();
            let choices: Vec<u32> = (0..tok.vocab_size() as u32)
                .filter(|&t| allowed.is_allowed(t))
                .collect();
            assert!(!choices.is_empty(), "seed {seed}: dead end after {ids:?}");
            let next = choices[rng.random_range(0..choices.len())];
            matcher.consume(next).unwrap();
            ids.push(next);
            if !matcher.is_finished() {
                ids.extend(matcher.take_forced().unwrap());
            }
        }
        assert_eq!(ids.last(), Some(&close), "seed {seed}");
        let text = tok.decode(&ids[..ids.len() - 1], false);
        let call = parse_tool_call(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text}"));
        let tool = tools
            .iter()
            .find(|t| t["function"]["name"] == call.name)
            .unwrap_or_else(|| panic!("seed {seed}: unknown tool in {text}"));
        assert_valid_json(
            &tool["function"]["parameters"],
            &call.arguments.to_string(),
            &text,
        );
        names_seen.insert(call.name);
    }
    assert_eq!(
        names_seen.len(),
        3,
        "every tool was called at least once: {names_seen:?}"
    );
}

#[test]
fn unsupported_tool_schemas_are_typed_errors() {
    let tok = Arc::new(gemma4_like_tokenizer());
    let compiler = ConstraintCompiler::new(tok, &[1]).unwrap();
    for params in [
        json!({"type": "object", "properties": {"a": {"$ref": "#/defs/x"}}}),
        json!({"type": "object", "properties": {"bad key": {"type": "string"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 2}}}),
        json!({"type": "object", "properties": {"a": {"type": "strange"}}}),
    ] {
        let tools = vec![json!({"name": "f", "strict": true, "parameters": params})];
        assert!(
            matches!(
                compiler.start_tool_call(&tools),
                Err(GemmaError::InvalidConstraint(_))
            ),
            "{params}"
        );
    }
    // A vocabulary without Gemma 4's tool tokens cannot take strict tools.
    let engine = demo();
    let tools = vec![
        json!({"name": "f", "strict": true, "parameters": {"type": "object", "properties": {}}}),
    ];
    let chat = engine.conversation();
    chat.set_tools(tools);
    let result = chat.send("hi", &options(None, None, 4), &mut |_| Flow::Continue);
    assert!(
        matches!(result, Err(GemmaError::InvalidConstraint(_))),
        "{result:?}"
    );
}
