//! Gemma 4's tool-call syntax as a Lark grammar, one alternative per tool, each tool's
//! arguments following its JSON schema.
//!
//! The model writes `<|tool_call>call:NAME{key:<|"|>text<|"|>,n:42}<tool_call|>`: keys bare,
//! strings between `<|"|>` tokens, numbers, booleans and null as in JSON. The grammar covers
//! what follows `<|tool_call>`, up to and including `<tool_call|>`. Object properties come in
//! the schema's order; optional ones may be left out. Supported schema keywords: `type` (one or
//! a list), `properties`, `required`, `items`, `minItems`, `maxItems`, `enum`, `const`,
//! `anyOf`/`oneOf`, `pattern`, `minLength`, `maxLength`, and for numbers everything llguidance's
//! JSON compiler knows (`minimum`, `maximum`, …). Others (`$ref`, `allOf`, …) are errors.

use serde_json::{Map, Value};

use super::lark_string;
use crate::error::{GemmaError, Result};
use crate::tokenizer::{TokenKind, Tokenizer};

/// Deeper schemas are refused (a grammar per nesting level).
const MAX_DEPTH: usize = 24;

/// How the grammar writes the two tokens it needs: as a token reference (`<[52]>`) when the
/// vocabulary holds them as special tokens, else as their text.
pub struct ToolTokens {
    pub string_delimiter: String,
    pub call_close: String,
    /// The delimiter is text, so string contents must not contain it.
    pub delimiter_is_text: bool,
}

impl ToolTokens {
    /// Gemma 4's `<|"|>` and `<tool_call|>` in `tok`'s vocabulary.
    pub fn for_vocabulary(tok: &Tokenizer) -> Result<ToolTokens> {
        let find = |text: &str| {
            tok.token_id(text).ok_or_else(|| {
                bad(format!(
                    "strict tools need Gemma 4's `{text}` token; this vocabulary has none"
                ))
            })
        };
        let special = |id: u32| {
            matches!(
                tok.kind(id),
                Some(TokenKind::Control | TokenKind::Unused | TokenKind::Unknown)
            )
        };
        let refer = |id: u32, text: &str| {
            if special(id) {
                format!("<[{id}]>")
            } else {
                lark_string(text)
            }
        };
        let delimiter = find(STRING_DELIMITER)?;
        let close = find("<tool_call|>")?;
        Ok(ToolTokens {
            string_delimiter: refer(delimiter, STRING_DELIMITER),
            call_close: refer(close, "<tool_call|>"),
            delimiter_is_text: !special(delimiter),
        })
    }
}

const STRING_DELIMITER: &str = "<|\"|>";

/// One tool's name, argument schema and whether its arguments are enforced.
struct ToolSpec<'a> {
    name: &'a str,
    parameters: Option<&'a Value>,
    strict: bool,
}

fn bad(msg: impl Into<String>) -> GemmaError {
    GemmaError::InvalidConstraint(format!("tool grammar: {}", msg.into()))
}

/// Reads a declaration in OpenAI's function format (`{"type":"function","function":{…}}`) or
/// the bare function object.
fn tool_spec(tool: &Value) -> Result<ToolSpec<'_>> {
    let function = tool.get("function").unwrap_or(tool);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a tool has no `name`"))?;
    if name.is_empty() || name.contains(['{', '}']) || name.chars().any(char::is_whitespace) {
        return Err(bad(format!(
            "tool name `{name}` cannot be written as `call:NAME{{`"
        )));
    }
    let strict = function
        .get("strict")
        .or_else(|| tool.get("strict"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ToolSpec {
        name,
        parameters: function.get("parameters"),
        strict,
    })
}

/// Whether any of `tools` asks for strict arguments (only then is a grammar needed).
pub fn any_strict(tools: &[Value]) -> bool {
    tools
        .iter()
        .any(|t| tool_spec(t).map(|s| s.strict).unwrap_or(false))
}

/// The Lark grammar of one call: strict tools' arguments follow their schema, the others any
/// object.
pub fn tool_call_grammar(tools: &[Value], tokens: &ToolTokens) -> Result<String> {
    if tools.is_empty() {
        return Err(bad("no tools"));
    }
    let mut b = Builder {
        rules: Vec::new(),
        next: 0,
        tokens,
        any_value: None,
    };
    let mut calls = Vec::new();
    for tool in tools {
        let spec = tool_spec(tool)?;
        let args = match (spec.strict, spec.parameters) {
            (true, Some(schema)) => b.object_or_value(schema, 0)?,
            (true, None) => "\"{}\"".to_string(),
            (false, _) => b.any_object(),
        };
        calls.push(format!(
            "{} {args}",
            lark_string(&format!("call:{}", spec.name))
        ));
    }
    let mut out = format!("start: ({}) {}\n", calls.join(" | "), tokens.call_close);
    for rule in &b.rules {
        out.push_str(rule);
        out.push('\n');
    }
    Ok(out)
}

struct Builder<'a> {
    rules: Vec<String>,
    next: usize,
    tokens: &'a ToolTokens,
    any_value: Option<String>,
}

impl Builder<'_> {
    fn rule(&mut self, body: String) -> String {
        let name = format!("r{}", self.next);
        self.next += 1;
        self.rules.push(format!("{name}: {body}"));
        name
    }

    /// A terminal (lexeme) named `T<n>`: only terminals may intersect regexes (`&`).
    fn terminal(&mut self, body: String) -> String {
        let name = format!("T{}", self.next);
        self.next += 1;
        self.rules.push(format!("{name}: {body}"));
        name
    }

    fn string_with(&mut self, content: &str) -> String {
        let content = if self.tokens.delimiter_is_text {
            format!("{content} & ~/(?s:.*)<\\|\"\\|>(?s:.*)/")
        } else {
            content.to_string()
        };
        let content = self.terminal(content);
        let q = &self.tokens.string_delimiter;
        format!("{q} {content} {q}")
    }

    /// Arguments are an object; a schema without `properties` still gets its braces.
    fn object_or_value(&mut self, schema: &Value, depth: usize) -> Result<String> {
        match schema {
            Value::Object(map) if map.contains_key("properties") || is_type(map, "object") => {
                self.object(map, depth)
            }
            Value::Bool(true) => Ok(self.any_object()),
            _ => Err(bad("`parameters` must be an object schema")),
        }
    }

    fn value(&mut self, schema: &Value, depth: usize) -> Result<String> {
        if depth > MAX_DEPTH {
            return Err(bad(format!("schema nested deeper than {MAX_DEPTH}")));
        }
        let map = match schema {
            Value::Bool(true) => return Ok(self.any_value()),
            Value::Bool(false) => return Err(bad("a `false` schema admits no value")),
            Value::Object(map) => map,
            _ => return Err(bad(format!("not a schema: {schema}"))),
        };
        for unsupported in [
            "$ref",
            "allOf",
            "not",
            "if",
            "patternProperties",
            "prefixItems",
        ] {
            if map.contains_key(unsupported) {
                return Err(bad(format!("`{unsupported}` is not supported")));
            }
        }
        if let Some(c) = map.get("const") {
            return Ok(self.literal(c));
        }
        if let Some(options) = map.get("enum") {
            let options = options
                .as_array()
                .filter(|o| !o.is_empty())
                .ok_or_else(|| bad("`enum` must be a non-empty array"))?;
            let alts: Vec<String> = options.iter().map(|o| self.literal(o)).collect();
            return Ok(format!("({})", alts.join(" | ")));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = map.get(key) {
                let options = options
                    .as_array()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| bad(format!("`{key}` must be a non-empty array")))?;
                let mut alts = Vec::new();
                for option in options {
                    alts.push(self.value(option, depth + 1)?);
                }
                return Ok(format!("({})", alts.join(" | ")));
            }
        }
        match map.get("type") {
            None if map.contains_key("properties") => self.object(map, depth),
            None if map.contains_key("items") => self.array(map, depth),
            None => Ok(self.any_value()),
            Some(Value::String(t)) => self.typed(t, map, depth),
            Some(Value::Array(types)) => {
                let mut alts = Vec::new();
                for t in types {
                    let t = t
                        .as_str()
                        .ok_or_else(|| bad("`type` entries must be strings"))?;
                    alts.push(self.typed(t, map, depth)?);
                }
                if alts.is_empty() {
                    return Err(bad("`type` is an empty list"));
                }
                Ok(format!("({})", alts.join(" | ")))
            }
            Some(other) => Err(bad(format!("`type` {other} is not a string"))),
        }
    }

    fn typed(&mut self, t: &str, map: &Map<String, Value>, depth: usize) -> Result<String> {
        match t {
            "string" => self.string(map),
            "object" => self.object(map, depth),
            "array" => self.array(map, depth),
            "integer" | "number" | "boolean" | "null" => {
                // Numbers, booleans and null are written as in JSON: llguidance's own JSON
                // compiler enforces their bounds.
                let mut sub = Map::new();
                for (k, v) in map {
                    if !matches!(k.as_str(), "type" | "description" | "title" | "default") {
                        sub.insert(k.clone(), v.clone());
                    }
                }
                sub.insert("type".into(), Value::String(t.into()));
                Ok(format!("%json {}", Value::Object(sub)))
            }
            other => Err(bad(format!("unknown type `{other}`"))),
        }
    }

    fn string(&mut self, map: &Map<String, Value>) -> Result<String> {
        let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        let max = map.get("maxLength").and_then(Value::as_u64);
        if max.is_some_and(|max| max < min) {
            return Err(bad("maxLength < minLength"));
        }
        let length = match max {
            Some(max) => format!("/(?s:.{{{min},{max}}})/"),
            None => format!("/(?s:.{{{min},}})/"),
        };
        let content = match map.get("pattern") {
            Some(Value::String(pattern)) => {
                let anchored = pattern
                    .strip_prefix('^')
                    .and_then(|p| p.strip_suffix('$').filter(|p| !p.ends_with('\\')));
                let rx = match anchored {
                    Some(inner) => format!("(?:{inner})"),
                    None => format!("(?s:.*)(?:{pattern})(?s:.*)"),
                };
                format!("/{}/ & {length}", rx.replace('/', "\\/"))
            }
            Some(_) => return Err(bad("`pattern` must be a string")),
            None => length,
        };
        let body = self.string_with(&content);
        Ok(self.rule(body))
    }

    fn array(&mut self, map: &Map<String, Value>, depth: usize) -> Result<String> {
        let item = match map.get("items") {
            Some(items) => self.value(items, depth + 1)?,
            None => self.any_value(),
        };
        let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = map.get("maxItems").and_then(Value::as_u64);
        if max.is_some_and(|max| max < min) {
            return Err(bad("maxItems < minItems"));
        }
        if max == Some(0) {
            return Ok("\"[\" \"]\"".into());
        }
        let lo = min.saturating_sub(1);
        let tail = match max {
            Some(max) => format!("(\",\" {item}){{{lo},{}}}", max - 1),
            None => format!("(\",\" {item}){{{lo},}}"),
        };
        let body = if min == 0 {
            format!("\"[\" ({item} {tail})? \"]\"")
        } else {
            format!("\"[\" {item} {tail} \"]\"")
        };
        Ok(self.rule(body))
    }

    /// `{` the properties in schema order, optional ones skippable, comma-separated `}`.
    fn object(&mut self, map: &Map<String, Value>, depth: usize) -> Result<String> {
        let empty = Map::new();
        let properties = match map.get("properties") {
            Some(Value::Object(p)) => p,
            Some(_) => return Err(bad("`properties` must be an object")),
            None if map.get("additionalProperties") == Some(&Value::Bool(false)) => &empty,
            None => return Ok(self.any_object()),
        };
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in &required {
            if !properties.contains_key(*name) {
                return Err(bad(format!("required property `{name}` is not declared")));
            }
        }
        let mut props = Vec::new();
        for (key, schema) in properties {
            if !is_bare_key(key) {
                return Err(bad(format!(
                    "property `{key}` cannot be written as a bare key"
                )));
            }
            let value = self.value(schema, depth + 1)?;
            props.push((
                format!("{} {value}", lark_string(&format!("{key}:"))),
                required.contains(&key.as_str()),
            ));
        }
        // rest[i]: properties i.. after one was written (each behind a comma, optional ones
        // skippable); first[i]: properties i.. when none was yet, with whether it may be empty.
        let mut rest: Option<String> = None;
        let mut first: Option<(String, bool)> = None;
        for (prop, required) in props.iter().rev() {
            let tail = rest.as_deref().unwrap_or("");
            let this = format!("{prop} {tail}");
            first = Some(match (required, &first) {
                (true, _) => (self.rule(this), false),
                (false, None) => (self.rule(this), true),
                (false, Some((next, nullable))) => {
                    (self.rule(format!("{this} | {next}")), *nullable)
                }
            });
            let item = if *required {
                format!("\",\" {prop}")
            } else {
                format!("(\",\" {prop})?")
            };
            rest = Some(self.rule(format!("{item} {tail}")));
        }
        Ok(match first {
            None => "\"{\" \"}\"".to_string(),
            Some((first, false)) => format!("\"{{\" {first} \"}}\""),
            Some((first, true)) => format!("\"{{\" {first}? \"}}\""),
        })
    }

    /// A value in Gemma syntax of the given JSON value (for `const` and `enum`).
    fn literal(&self, value: &Value) -> String {
        match value {
            Value::String(s) => {
                let q = &self.tokens.string_delimiter;
                format!("({q} {} {q})", lark_string(s))
            }
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(|v| self.literal(v)).collect();
                let inner = inner.join(" \",\" ");
                format!("(\"[\" {inner} \"]\")")
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let inner: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{} {}",
                            lark_string(&format!("{k}:")),
                            self.literal(&map[*k])
                        )
                    })
                    .collect();
                format!("(\"{{\" {} \"}}\")", inner.join(" \",\" "))
            }
            other => lark_string(&other.to_string()),
        }
    }

    /// Any value: the rules are written once.
    fn any_value(&mut self) -> String {
        if let Some(name) = &self.any_value {
            return name.clone();
        }
        let string = self.string_with("/(?s:.*)/");
        let rules = [
            "gv: gstr | %json {\"type\":\"number\"} | \"true\" | \"false\" | \"null\" | garr | gobj"
                .to_string(),
            format!("gstr: {string}"),
            "garr: \"[\" (gv (\",\" gv)*)? \"]\"".to_string(),
            "gobj: \"{\" (GKEY \":\" gv (\",\" GKEY \":\" gv)*)? \"}\"".to_string(),
            "GKEY: /[A-Za-z_][A-Za-z0-9_.\\-]*/".to_string(),
        ];
        self.rules.extend(rules);
        self.any_value = Some("gv".into());
        "gv".into()
    }

    fn any_object(&mut self) -> String {
        self.any_value();
        "gobj".into()
    }
}

fn is_type(map: &Map<String, Value>, t: &str) -> bool {
    map.get("type").and_then(Value::as_str) == Some(t)
}

/// Keys the tool-call parser reads back as bare words.
fn is_bare_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
