//! Arbitrary text as the body of a Gemma tool call (`chat::tools::parse_tool_call`, what the
//! engine parses between `<|tool_call>` and `<tool_call|>`). A call that parses is written back
//! in Gemma syntax and must parse to itself when its keys are plain words.

use gemmakit::GemmaError;
use gemmakit::chat::tools::{parse_tool_call, to_gemma_syntax};
use serde_json::Value;

use super::Outcome;

pub fn run(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::NotApplicable;
    };
    let call = match parse_tool_call(text) {
        Ok(call) => call,
        Err(e @ GemmaError::InvalidArgument(_)) => return Outcome::Rejected(e.to_string()),
        Err(e) => panic!("a bad tool call is InvalidArgument, got {e:?}"),
    };
    assert!(!call.name.is_empty() && call.name == call.name.trim());
    assert!(call.arguments.is_object());
    if plain(&call.arguments) && !call.name.contains('{') {
        let written = format!("call:{}{}", call.name, to_gemma_syntax(&call.arguments));
        let again = parse_tool_call(&written).expect("a written call parses");
        assert_eq!(again.name, call.name);
        assert!(
            same(&again.arguments, &call.arguments),
            "{written}: {:?}",
            again.arguments
        );
    }
    Outcome::Accepted
}

/// Keys are identifiers and strings hold no string delimiter: what Gemma syntax can express.
fn plain(v: &Value) -> bool {
    let ident = |k: &str| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    match v {
        Value::Object(m) => m.iter().all(|(k, v)| ident(k) && plain(v)),
        Value::Array(a) => a.iter().all(plain),
        Value::String(s) => !s.contains("<|\"|>"),
        _ => true,
    }
}

/// Equal, floats to within 2 ulp: serde_json (without `float_roundtrip`) may parse a long
/// decimal to a neighbour of the nearest double, and the written number is the parsed one.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 2.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}
