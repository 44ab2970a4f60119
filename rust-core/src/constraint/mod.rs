//! Constrained decoding: the answer follows a JSON schema, a regex, a Lark grammar or one of
//! a list of strings, and Gemma 4 tool calls follow their tools' schemas.
//!
//! [llguidance](https://github.com/guidance-ai/llguidance) does the grammar work: from a
//! grammar and our vocabulary ([`token_env`]) it answers, per step, whether a token may come
//! next, the mask of all tokens that may, and the tokens the grammar forces. The decode loop
//! (`engine::guide`) decides when a constraint applies (not to the thought channel) and how
//! the sampler uses it.

mod token_env;
pub mod tool_grammar;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::{GemmaError, Result};
use crate::tokenizer::Tokenizer;
use token_env::GemmaTokenEnv;

/// The shape the model's answer must take.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// A JSON value valid under this JSON schema (draft 2020-12 subset llguidance supports).
    JsonSchema(Value),
    /// Text that fully matches this regular expression (Rust `regex` syntax, anchored).
    Regex(String),
    /// Text of this Lark grammar (llguidance's Lark dialect; `start` is the root rule).
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

impl Constraint {
    /// A JSON-schema constraint from the schema's text.
    pub fn json_schema_text(text: &str) -> Result<Self> {
        let schema: Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("the JSON schema is not JSON: {e}")))?;
        Ok(Constraint::JsonSchema(schema))
    }

    fn grammar(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            Constraint::JsonSchema(schema) => {
                let mut schema = schema.clone();
                match &mut schema {
                    Value::Object(map) if !map.contains_key("x-guidance") => {
                        // Whitespace between JSON tokens is free in JSON, so a model could
                        // write it forever (small models do: "\n  \n  \n…"). One line break
                        // and up to 48 spaces or tabs per gap is room for any indentation.
                        map.insert(
                            "x-guidance".into(),
                            serde_json::json!({"whitespace_pattern": "[ \\t]{1,48}|\\r?\\n[ \\t]{0,48}"}),
                        );
                    }
                    Value::Object(_) | Value::Bool(_) => {}
                    _ => return Err(invalid("a JSON schema must be an object or a boolean")),
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            Constraint::Choice(options) => {
                if options.is_empty() {
                    return Err(invalid("a choice needs at least one option"));
                }
                let alternatives: Vec<String> = options.iter().map(|o| lark_string(o)).collect();
                TopLevelGrammar::from_lark(format!("start: {}\n", alternatives.join(" | ")))
            }
        })
    }
}

fn invalid(msg: impl Into<String>) -> GemmaError {
    GemmaError::InvalidConstraint(msg.into())
}

/// `s` as a Lark string literal (JSON string syntax without raw control characters).
pub(crate) fn lark_string(s: &str) -> String {
    let json = serde_json::to_string(s).expect("a str serialises");
    json.replace('\u{7f}', "\\u007f")
}

/// Compiles constraints for one model: the token trie of its vocabulary and llguidance's
/// precomputed lexer slices. Building it takes about a second for a 262k vocabulary, so the
/// engine builds it once, on the first constrained request (or when the app asks).
pub struct ConstraintCompiler {
    factory: ParserFactory,
    tokenizer: Arc<Tokenizer>,
}

impl ConstraintCompiler {
    /// `stop_ids`: the ids that end the model's turn; a finished grammar allows exactly these.
    pub fn new(tokenizer: Arc<Tokenizer>, stop_ids: &[u32]) -> Result<Self> {
        let env: TokEnv = Arc::new(GemmaTokenEnv::new(tokenizer.clone(), stop_ids)?);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| invalid(format!("cannot prepare the vocabulary: {e}")))?;
        factory.set_stderr_log_level(0).set_buffer_log_level(0);
        Ok(ConstraintCompiler { factory, tokenizer })
    }

    /// A matcher at the start of `constraint`; a bad schema, regex or grammar is an error here,
    /// before any token is generated.
    pub fn start(&self, constraint: &Constraint) -> Result<ConstraintMatcher> {
        self.start_grammar(constraint.grammar()?)
    }

    /// A matcher for one Gemma 4 tool call (what follows `<|tool_call>`, through
    /// `<tool_call|>`): strict tools' arguments follow their schemas.
    pub fn start_tool_call(&self, tools: &[Value]) -> Result<ConstraintMatcher> {
        let tokens = tool_grammar::ToolTokens::for_vocabulary(&self.tokenizer)?;
        let grammar = tool_grammar::tool_call_grammar(tools, &tokens)?;
        self.start_grammar(TopLevelGrammar::from_lark(grammar))
    }

    fn start_grammar(&self, grammar: TopLevelGrammar) -> Result<ConstraintMatcher> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| invalid(first_line(&e.to_string())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        Ok(ConstraintMatcher {
            matcher,
            vocab: self.tokenizer.vocab_size(),
        })
    }
}

fn first_line(s: &str) -> String {
    // llguidance appends the whole grammar to some errors; the first lines say what is wrong.
    s.lines().take(3).collect::<Vec<_>>().join(" ")
}

/// Where one constrained text stands: which tokens may come next.
pub struct ConstraintMatcher {
    matcher: Matcher,
    vocab: usize,
}

impl ConstraintMatcher {
    fn check<T, E: std::fmt::Display>(&self, r: std::result::Result<T, E>) -> Result<T> {
        r.map_err(|e| invalid(format!("constraint failed: {}", first_line(&e.to_string()))))
    }

    /// Whether `token` may come next (cheap: no mask is computed).
    pub fn allows(&mut self, token: u32) -> Result<bool> {
        if token as usize >= self.vocab {
            return Ok(false);
        }
        let r = self.matcher.validate_tokens(&[token]);
        Ok(self.check(r)? == 1)
    }

    /// Whether the text so far is complete (the turn may end here).
    pub fn is_accepting(&mut self) -> Result<bool> {
        let r = self.matcher.is_accepting();
        self.check(r)
    }

    /// The grammar is complete and allows nothing more.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Every token that may come next (end-of-turn ids included when the text is complete).
    pub fn allowed(&mut self) -> Result<SimpleVob> {
        let r = self.matcher.compute_mask();
        self.check(r)
    }

    /// Moves past `token`, which must be allowed.
    pub fn consume(&mut self, token: u32) -> Result<()> {
        if token as usize >= self.vocab {
            return Err(invalid(format!("token {token} is outside the vocabulary")));
        }
        let r = self.matcher.consume_token(token);
        self.check(r)
    }

    /// Tokens the grammar forces next (already consumed): the caller feeds them to the model
    /// without sampling.
    pub fn take_forced(&mut self) -> Result<Vec<u32>> {
        let forced = self.matcher.consume_ff_tokens();
        match self.matcher.get_error() {
            Some(e) => Err(invalid(format!("constraint failed: {e}"))),
            None => Ok(forced),
        }
    }

    /// Undoes the last `tokens` consumed tokens (a rejected speculative draft).
    pub fn rollback(&mut self, tokens: usize) -> Result<()> {
        let r = self.matcher.rollback(tokens);
        self.check(r)
    }

    /// An independent copy at the same position.
    pub fn fork(&self) -> ConstraintMatcher {
        ConstraintMatcher {
            matcher: self.matcher.deep_clone(),
            vocab: self.vocab,
        }
    }
}
