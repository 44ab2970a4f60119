//! Conversations as prompts: messages, chat templates, tool calls.
//!
//! A model file's own template (GGUF `tokenizer.chat_template`, HF `chat_template.jinja` or
//! `tokenizer_config.json`) is rendered with minijinja, with Python string methods and
//! `raise_exception` as transformers provides them. Without one, a built-in renderer for the
//! Gemma 3 or Gemma 4 format is used; a model with neither (a base model) has no template.

pub mod tools;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value as JinjaValue, context};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{GemmaError, Result};
use crate::media::input::Media;
use tools::{ToolCall, to_gemma_syntax};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// A piece of a multimodal message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Media(Media),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// The text (for a multimodal message: its text parts joined).
    pub content: String,
    /// A multimodal message's parts in order; empty for a text-only message.
    pub parts: Vec<Part>,
    /// Calls made by an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: which tool produced `content`.
    pub tool_name: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            parts: Vec::new(),
            tool_calls: Vec::new(),
            tool_name: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// A user message of text and media in order.
    pub fn user_parts(parts: Vec<Part>) -> Self {
        let content = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Media(_) => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        Message {
            parts,
            ..Self::new(Role::User, content)
        }
    }

    /// The media of this message, in order.
    pub fn media(&self) -> impl Iterator<Item = &Media> {
        self.parts.iter().filter_map(|p| match p {
            Part::Media(m) => Some(m),
            Part::Text(_) => None,
        })
    }

    /// The message as prompt text, media as their markers (for renderers without a template).
    pub fn text_with_markers(&self) -> String {
        if self.parts.is_empty() {
            return self.content.clone();
        }
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.trim(),
                Part::Media(m) => m.kind().marker(),
            })
            .collect()
    }

    pub fn tool_result(name: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_name: Some(name.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// The transformers message dict a chat template expects.
    pub fn to_template_value(&self) -> Value {
        let mut m = json!({ "role": self.role, "content": self.content });
        if !self.parts.is_empty() {
            // transformers' content-list form: the template writes a marker per media part.
            m["content"] = self
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::Media(media) => {
                        json!({"type": format!("{:?}", media.kind()).to_lowercase()})
                    }
                })
                .collect();
        }
        if !self.tool_calls.is_empty() {
            m["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
        }
        if let Some(name) = &self.tool_name {
            m["name"] = json!(name);
        }
        m
    }
}

/// Everything a rendering depends on besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    /// Gemma 4 thinking mode.
    pub enable_thinking: bool,
    /// Tool declarations in OpenAI function format (`{"type":"function","function":{…}}`).
    pub tools: Vec<Value>,
}

#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// The model file's own Jinja template.
    Jinja {
        source: String,
        bos: String,
        eos: String,
    },
    /// `<start_of_turn>role\n…<end_of_turn>\n`.
    BuiltinGemma3,
    /// `<|turn>role\n…<turn|>\n` with thinking and tools.
    BuiltinGemma4,
}

impl ChatTemplate {
    pub fn name(&self) -> &'static str {
        match self {
            ChatTemplate::Jinja { .. } => "model file's Jinja template",
            ChatTemplate::BuiltinGemma3 => "built-in Gemma 3 format",
            ChatTemplate::BuiltinGemma4 => "built-in Gemma 4 format",
        }
    }

    pub fn render(&self, messages: &[Message], options: &RenderOptions) -> Result<String> {
        match self {
            ChatTemplate::Jinja { source, bos, eos } => {
                render_jinja(source, bos, eos, messages, options)
            }
            ChatTemplate::BuiltinGemma3 => render_gemma3(messages, options),
            ChatTemplate::BuiltinGemma4 => render_gemma4(messages, options),
        }
    }
}

/// What a chat template may use. A GGUF's template is code from the internet: these bound its
/// time and memory. Fuel counts instructions and produced data (minijinja charges one fuel per
/// instruction and per 64 bytes of strings and lists made), so it also bounds string-doubling
/// and loop bombs; a real Gemma template renders a long conversation in a few thousand.
pub mod limits {
    /// Instructions plus produced data (64 bytes a unit): at most ~64 MiB of strings.
    pub const FUEL: u64 = 1_000_000;
    /// minijinja's recursion counter (a loop or `if` costs 1, a macro call ~10).
    pub const RECURSION: usize = 200;
    /// Template source text.
    pub const SOURCE_BYTES: usize = 1 << 20;
    /// Rendered prompt: 4 MiB of text is far past any context length.
    pub const OUTPUT_BYTES: usize = 4 << 20;
}

fn template_error(e: JinjaError) -> GemmaError {
    match e.kind() {
        ErrorKind::OutOfFuel => {
            return GemmaError::ChatTemplateLimit {
                limit: format!("fuel ({} steps)", limits::FUEL),
            };
        }
        ErrorKind::InvalidOperation if e.to_string().contains("recursion limit exceeded") => {
            return GemmaError::ChatTemplateLimit {
                limit: format!("recursion depth ({})", limits::RECURSION),
            };
        }
        _ => {}
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    GemmaError::InvalidArgument(format!("chat template: {msg}"))
}

fn render_jinja(
    source: &str,
    bos: &str,
    eos: &str,
    messages: &[Message],
    options: &RenderOptions,
) -> Result<String> {
    let messages: Vec<Value> = messages.iter().map(Message::to_template_value).collect();
    let mut kwargs = serde_json::Map::new();
    kwargs.insert(
        "enable_thinking".into(),
        Value::Bool(options.enable_thinking),
    );
    render_jinja_values(
        source,
        bos,
        eos,
        &messages,
        &options.tools,
        options.add_generation_prompt,
        &kwargs,
    )
}

/// Renders a Jinja chat template the way transformers' `apply_chat_template` does, from
/// messages given as transformers message dicts. `kwargs` become extra template variables.
pub fn render_jinja_values(
    source: &str,
    bos: &str,
    eos: &str,
    messages: &[Value],
    tools: &[Value],
    add_generation_prompt: bool,
    kwargs: &serde_json::Map<String, Value>,
) -> Result<String> {
    if source.len() > limits::SOURCE_BYTES {
        return Err(GemmaError::ChatTemplateLimit {
            limit: format!("source size ({} bytes)", limits::SOURCE_BYTES),
        });
    }
    // No loader: `include`/`import` find nothing, and the context below is all a template
    // sees (no files, environment or network).
    let mut env = Environment::new();
    env.set_fuel(Some(limits::FUEL));
    env.set_recursion_limit(limits::RECURSION);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // transformers renders with trim_blocks and lstrip_blocks.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(template_error)?;
    env.set_syntax(syntax);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<JinjaValue, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    add_python_compatibility(&mut env);
    env.add_template("chat", source).map_err(template_error)?;
    let tmpl = env.get_template("chat").map_err(template_error)?;
    let tools = if tools.is_empty() {
        None
    } else {
        Some(tools.to_vec())
    };
    let base = context! {
        messages => JinjaValue::from(minijinja::value::Serde(messages)),
        tools => JinjaValue::from(minijinja::value::Serde(&tools)),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    };
    let extra = JinjaValue::from(minijinja::value::Serde(kwargs));
    let text = tmpl
        .render(context! { ..extra, ..base })
        .map_err(template_error)?;
    if text.len() > limits::OUTPUT_BYTES {
        return Err(GemmaError::ChatTemplateLimit {
            limit: format!("output size ({} bytes)", limits::OUTPUT_BYTES),
        });
    }
    Ok(text)
}

/// Where Jinja2 under Python and minijinja differ in ways chat templates can see.
fn add_python_compatibility(env: &mut Environment<'_>) {
    // `|trim` is Python's `str.strip()`, whose whitespace also includes U+001C..U+001F.
    env.add_filter("trim", |value: String, chars: Option<String>| -> String {
        match chars {
            Some(chars) => value.trim_matches(|c| chars.contains(c)).to_string(),
            None => value.trim_matches(is_python_whitespace).to_string(),
        }
    });
    // Jinja2's `sequence` test is true for anything with a length and indexing: strings and
    // dicts too.
    env.add_test("sequence", |value: JinjaValue| {
        matches!(
            value.kind(),
            minijinja::value::ValueKind::Seq
                | minijinja::value::ValueKind::Map
                | minijinja::value::ValueKind::String
        )
    });
    // Values print as Python prints them: floats in repr form (`1e-05`), None as `None`.
    env.set_formatter(|out, state, value| {
        if value.kind() == minijinja::value::ValueKind::Number
            && value.as_i64().is_none()
            && let Ok(x) = f64::try_from(value.clone())
        {
            return out
                .write_str(&python_float_repr(x))
                .map_err(JinjaError::from);
        }
        if value.is_none() {
            return out.write_str("None").map_err(JinjaError::from);
        }
        minijinja::escape_formatter(out, state, value)
    });
}

fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16.
fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let exponent = if x == 0.0 {
        0
    } else {
        x.abs().log10().floor() as i32
    };
    if (-4..16).contains(&exponent) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("integer exponent");
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

fn check_alternation(messages: &[Message]) -> Result<()> {
    for (i, m) in messages.iter().enumerate() {
        let expect_user = i % 2 == 0;
        if (m.role == Role::User) != expect_user || !matches!(m.role, Role::User | Role::Assistant)
        {
            return Err(GemmaError::InvalidArgument(
                "Conversation roles must alternate user/assistant/user/assistant/...".into(),
            ));
        }
    }
    Ok(())
}

/// Google's Gemma 3 template: the system prompt is folded into the first user turn.
fn render_gemma3(messages: &[Message], options: &RenderOptions) -> Result<String> {
    let mut out = String::from("<bos>");
    let (prefix, rest) = match messages.first() {
        Some(m) if m.role == Role::System => (format!("{}\n\n", m.content), &messages[1..]),
        _ => (String::new(), messages),
    };
    check_alternation(rest)?;
    for (i, m) in rest.iter().enumerate() {
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        out.push_str(&format!("<start_of_turn>{role}\n"));
        if i == 0 {
            out.push_str(&prefix);
        }
        out.push_str(m.content.trim());
        out.push_str("<end_of_turn>\n");
    }
    if options.add_generation_prompt {
        out.push_str("<start_of_turn>model\n");
    }
    Ok(out)
}

/// Strips `<|channel>…<channel|>` thought sections from an earlier model turn.
fn strip_thoughts(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<|channel>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("<channel|>") {
            Some(end) => rest = &rest[start + end + "<channel|>".len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn tool_declaration(tool: &Value) -> String {
    let function = tool.get("function").unwrap_or(tool);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut decl = serde_json::Map::new();
    if let Some(d) = function.get("description") {
        decl.insert("description".into(), d.clone());
    }
    for key in ["parameters", "response"] {
        if let Some(Value::Object(schema)) = function.get(key) {
            // An empty `properties` object is left out, as the template does.
            let schema: serde_json::Map<String, Value> = schema
                .iter()
                .filter(|(k, v)| {
                    !(k.as_str() == "properties" && v.as_object().is_some_and(|o| o.is_empty()))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            decl.insert(key.into(), uppercase_types(&Value::Object(schema)));
        }
    }
    format!(
        "<|tool>declaration:{name}{}<tool|>",
        to_gemma_syntax(&Value::Object(decl))
    )
}

fn uppercase_types(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("type", Value::String(t)) => (k.clone(), Value::String(t.to_uppercase())),
                    _ => (k.clone(), uppercase_types(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(uppercase_types).collect()),
        other => other.clone(),
    }
}

/// The Gemma 4 format of Google's template (Gemma 4's `chat_template.jinja`), for model files that carry none.
fn render_gemma4(messages: &[Message], options: &RenderOptions) -> Result<String> {
    let mut out = String::from("<bos>");
    let (system, rest) = match messages.first() {
        Some(m) if m.role == Role::System => (Some(m.content.trim()), &messages[1..]),
        _ => (None, messages),
    };
    if system.is_some() || options.enable_thinking || !options.tools.is_empty() {
        out.push_str("<|turn>system\n");
        if options.enable_thinking {
            out.push_str("<|think|>\n");
        }
        out.push_str(system.unwrap_or(""));
        for tool in &options.tools {
            out.push_str(&tool_declaration(tool));
        }
        out.push_str("<turn|>\n");
    }
    // A model turn stays open across tool calls, tool results and consecutive model messages.
    let mut model_turn_open = false;
    let mut awaiting_tool_result = false;
    for (i, m) in rest.iter().enumerate() {
        match m.role {
            Role::User | Role::System => {
                let role = if m.role == Role::User {
                    "user"
                } else {
                    "system"
                };
                out.push_str(&format!(
                    "<|turn>{role}\n{}<turn|>\n",
                    m.text_with_markers().trim()
                ));
                model_turn_open = false;
            }
            Role::Assistant => {
                let continues = i > 0 && matches!(rest[i - 1].role, Role::Assistant | Role::Tool);
                if !continues {
                    out.push_str("<|turn>model\n");
                }
                out.push_str(strip_thoughts(&m.content).trim());
                for call in &m.tool_calls {
                    out.push_str(&format!(
                        "<|tool_call>call:{}{}<tool_call|>",
                        call.name,
                        to_gemma_syntax(&call.arguments)
                    ));
                }
                if m.tool_calls.is_empty() {
                    out.push_str("<turn|>\n");
                    model_turn_open = false;
                } else {
                    model_turn_open = true;
                    awaiting_tool_result = true;
                }
            }
            Role::Tool => {
                let name = m.tool_name.as_deref().unwrap_or("tool");
                let value = serde_json::json!({ "value": m.content });
                out.push_str(&format!(
                    "<|tool_response>response:{name}{}<tool_response|>",
                    to_gemma_syntax(&value)
                ));
                awaiting_tool_result = false;
            }
        }
    }
    if awaiting_tool_result {
        // A call without its result yet: the model's next output is the tool response.
        out.push_str("<|tool_response>");
    } else if options.add_generation_prompt && !model_turn_open {
        out.push_str("<|turn>model\n");
        if !options.enable_thinking {
            // Google's template closes an empty thought channel so the model answers directly.
            out.push_str("<|channel>thought\n<channel|>");
        }
    }
    Ok(out)
}
