//! Arbitrary conversations (roles, contents full of template and turn markers, tool calls with
//! arbitrary JSON arguments, tool results, tool declarations parsed from arbitrary JSON, options)
//! rendered through the built-in Gemma 3 and Gemma 4 formats and the released Jinja templates
//! (the fixtures the chat-template tests compare against transformers).

use gemmakit::GemmaError;
use gemmakit::chat::tools::ToolCall;
use gemmakit::chat::{ChatTemplate, Message, RenderOptions, Role};
use serde_json::Value;

use super::{Bytes, Outcome};

const GEMMA3: &str = include_str!("../../../tests/fixtures/templates/gemma3.jinja");
const GEMMA4: &str = include_str!("../../../tests/fixtures/templates/gemma4.jinja");

pub fn run(data: &[u8]) -> Outcome {
    let mut b = Bytes(data);
    let jinja = |source: &str| ChatTemplate::Jinja {
        source: source.into(),
        bos: "<bos>".into(),
        eos: "<eos>".into(),
    };
    let template = match b.up_to(3) {
        0 => ChatTemplate::BuiltinGemma3,
        1 => ChatTemplate::BuiltinGemma4,
        2 => jinja(GEMMA3),
        _ => jinja(GEMMA4),
    };
    let mut messages = Vec::new();
    for _ in 0..b.up_to(6) {
        let role = *b.pick(&[Role::System, Role::User, Role::Assistant, Role::Tool]);
        let mut m = Message::new(role, text(&mut b));
        if role == Role::Assistant {
            for _ in 0..b.up_to(2) {
                m.tool_calls.push(ToolCall {
                    name: text(&mut b),
                    arguments: json(&mut b),
                });
            }
        }
        if role == Role::Tool || b.up_to(7) == 0 {
            m.tool_name = Some(text(&mut b));
        }
        messages.push(m);
    }
    let tools = (0..b.up_to(2)).map(|_| json(&mut b)).collect();
    let options = RenderOptions {
        add_generation_prompt: b.flag(),
        enable_thinking: b.flag(),
        tools,
    };
    match template.render(&messages, &options) {
        Ok(_) => Outcome::Accepted,
        Err(e @ (GemmaError::InvalidArgument(_) | GemmaError::ChatTemplateLimit { .. })) => {
            Outcome::Rejected(e.to_string())
        }
        Err(e) => panic!(
            "a conversation a template rejects is InvalidArgument or ChatTemplateLimit, got {e:?}"
        ),
    }
}

/// Text made of markers the templates and the model's turn syntax care about, and free text.
fn text(b: &mut Bytes) -> String {
    let markers = [
        "<start_of_turn>",
        "<end_of_turn>",
        "<|turn>",
        "<turn|>",
        "<|\"|>",
        "<|tool_call>",
        "<tool_call|>",
        "<|image|>",
        "<|audio|>",
        "{{",
        "}}",
        "{%",
        "\n",
        " ",
        "call:",
        "<|channel>thought",
        "get_weather",
    ];
    let mut s = String::new();
    for _ in 0..b.up_to(4) {
        if b.up_to(2) == 0 {
            s.push_str(&b.text());
        } else {
            s.push_str(*b.pick(&markers));
        }
    }
    s
}

/// A JSON value: arbitrary text parsed as JSON when it is, else a tool-like object around it.
fn json(b: &mut Bytes) -> Value {
    let raw = b.text();
    match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(_) if b.flag() => serde_json::json!({"type": "function", "function": {"name": raw,
            "parameters": {"type": "object", "properties": {raw.clone(): {"type": "string"}}}}}),
        Err(_) => serde_json::json!({ raw.clone(): raw }),
    }
}
