//! Gemma 4 tool-call syntax ↔ structured calls.
//!
//! The model writes `call:NAME{key:<|"|>text<|"|>,n:3,flag:true,obj:{k:[1,2]}}`: bare keys,
//! strings wrapped in the `<|"|>` token, everything else JSON-like. This converts the
//! arguments to JSON (string delimiters → `"`, bare keys quoted), as Hugging Face's
//! `response_schema` does.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{GemmaError, Result};

const STRING_DELIMITER: &str = "<|\"|>";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    /// A JSON object.
    pub arguments: Value,
}

fn bad(msg: impl Into<String>) -> GemmaError {
    GemmaError::InvalidArgument(format!("tool call: {}", msg.into()))
}

/// Parses the text between `<|tool_call>` and `<tool_call|>`.
pub fn parse_tool_call(text: &str) -> Result<ToolCall> {
    let body = text.trim();
    let body = body
        .strip_prefix("call:")
        .ok_or_else(|| bad("does not start with `call:`"))?;
    let brace = body.find('{').ok_or_else(|| bad("no `{`"))?;
    let name = body[..brace].trim();
    if name.is_empty() {
        return Err(bad("empty tool name"));
    }
    let json = gemma_args_to_json(&body[brace..])?;
    let arguments: Value =
        serde_json::from_str(&json).map_err(|e| bad(format!("arguments are not valid: {e}")))?;
    if !arguments.is_object() {
        return Err(bad("arguments are not an object"));
    }
    Ok(ToolCall {
        name: name.to_string(),
        arguments,
    })
}

/// Rewrites Gemma's argument syntax as JSON text.
fn gemma_args_to_json(src: &str) -> Result<String> {
    let mut out = String::with_capacity(src.len() + 16);
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(STRING_DELIMITER) {
            let end = after
                .find(STRING_DELIMITER)
                .ok_or_else(|| bad("unterminated string"))?;
            out.push_str(&serde_json::to_string(&after[..end]).expect("a str serialises"));
            rest = &after[end + STRING_DELIMITER.len()..];
            continue;
        }
        let c = rest.chars().next().expect("non-empty");
        if c.is_alphabetic() || c == '_' {
            // A bare word: a key if a colon follows, else a literal (true/false/null).
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.'))
                .unwrap_or(rest.len());
            let word = &rest[..len];
            let after = rest[len..].trim_start();
            if after.starts_with(':') {
                out.push_str(&serde_json::to_string(word).expect("a str serialises"));
            } else {
                out.push_str(word);
            }
            rest = &rest[len..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// Renders a JSON value in Gemma's tool syntax (for tool responses and declarations):
/// keys bare and sorted, strings wrapped in `<|"|>`.
pub fn to_gemma_syntax(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{STRING_DELIMITER}{s}{STRING_DELIMITER}"),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(to_gemma_syntax).collect();
            format!("[{}]", inner.join(","))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", to_gemma_syntax(&map[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_strings_numbers_and_nesting() {
        let call = parse_tool_call(
            "call:get_weather{city:<|\"|>Paris, \"FR\"<|\"|>,days:3,metric:true,opts:{hours:[6,12]},note:null}",
        )
        .unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(
            call.arguments,
            json!({"city": "Paris, \"FR\"", "days": 3, "metric": true, "opts": {"hours": [6, 12]}, "note": null})
        );
    }

    #[test]
    fn strings_may_contain_colons_braces_and_keywords() {
        let call = parse_tool_call("call:say{text:<|\"|>a: {b} true<|\"|>}").unwrap();
        assert_eq!(call.arguments, json!({"text": "a: {b} true"}));
    }

    #[test]
    fn malformed_calls_are_errors() {
        for bad in [
            "get{}",
            "call:{}",
            "call:f{x:<|\"|>open}",
            "call:f[1]",
            "call:f{x:}",
        ] {
            assert!(parse_tool_call(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gemma_syntax_round_trips_through_the_parser() {
        let args = json!({"b": [1, "x"], "a": {"c": false}});
        let text = format!("call:f{}", to_gemma_syntax(&args));
        assert_eq!(text, "call:f{a:{c:false},b:[1,<|\"|>x<|\"|>]}");
        assert_eq!(parse_tool_call(&text).unwrap().arguments, args);
    }
}
