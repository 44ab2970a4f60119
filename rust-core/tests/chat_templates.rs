//! Chat prompts rendered byte-identical to transformers' `apply_chat_template` (references from
//! scripts/reference/chat_template_ref.py, transformers 5.24): the Gemma 3 and Gemma 4 Jinja
//! templates through minijinja, and the built-in renderers used when a model file has none.

mod common;

use gemmakit::chat::tools::ToolCall;
use gemmakit::chat::{ChatTemplate, Message, RenderOptions, Role, render_jinja_values};
use serde_json::Value;

fn reference() -> Vec<Value> {
    let path = common::fixture_dir("templates").join("chat_reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"].as_array().unwrap().clone()
}

fn template_source(name: &str) -> String {
    std::fs::read_to_string(common::fixture_dir("templates").join(format!("{name}.jinja"))).unwrap()
}

fn tools_of(case: &Value) -> Vec<Value> {
    case["tools"].as_array().cloned().unwrap_or_default()
}

#[test]
fn jinja_templates_render_like_transformers() {
    let mut failures = Vec::new();
    let cases = reference();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let template = case["template"].as_str().unwrap();
        let messages = case["messages"].as_array().unwrap();
        let kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
        let ours = render_jinja_values(
            &template_source(template),
            "<bos>",
            "<eos>",
            messages,
            &tools_of(case),
            case["add_generation_prompt"].as_bool().unwrap(),
            &kwargs,
        );
        match (case["rendered"].as_str(), ours) {
            (Some(expected), Ok(ours)) if ours == expected => {}
            (None, Err(_)) => {}
            (expected, ours) => failures.push(format!(
                "{template}/{name}:\n  transformers: {expected:?}\n  ours:         {ours:?}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The reference message dicts as our `Message`s, for the cases the built-in renderers cover
/// (plain string contents, tool calls with object arguments, tool results).
fn messages_of(case: &Value) -> Option<Vec<Message>> {
    let mut out = Vec::new();
    for m in case["messages"].as_array()? {
        let role = match m["role"].as_str()? {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        };
        let mut msg = Message::new(role, m["content"].as_str().unwrap_or_default());
        if !(m["content"].is_string() || (m["content"].is_null() && m.get("tool_calls").is_some()))
        {
            return None;
        }
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            let f = &call["function"];
            if !f["arguments"].is_object() {
                return None;
            }
            msg.tool_calls.push(ToolCall {
                name: f["name"].as_str()?.to_string(),
                arguments: f["arguments"].clone(),
            });
        }
        msg.tool_name = m["name"].as_str().map(str::to_string);
        if m.get("reasoning_content").is_some()
            || m.get("reasoning").is_some()
            || m.get("tool_call_id").is_some() && role == Role::Tool && msg.tool_name.is_none()
        {
            return None;
        }
        out.push(msg);
    }
    Some(out)
}

#[test]
fn builtin_renderers_match_the_official_templates() {
    // Cases that pin template bugs or Python-repr quirks are not reproduced by design.
    let skip = [
        "unicode_whitespace",
        "content_none",
        "tool_call_arguments_json_string",
        "tool_parameters_without_type",
        "system_content_parts_quirk",
        "developer_role",
        "tool_responses_legacy",
        "tool_call_argument_types",
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in reference() {
        let name = case["name"].as_str().unwrap();
        if skip.contains(&name) {
            continue;
        }
        let Some(messages) = messages_of(&case) else {
            continue;
        };
        let template = match case["template"].as_str().unwrap() {
            "gemma3" => ChatTemplate::BuiltinGemma3,
            _ => ChatTemplate::BuiltinGemma4,
        };
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            enable_thinking: case["kwargs"]["enable_thinking"].as_bool().unwrap_or(false),
            tools: tools_of(&case),
        };
        checked += 1;
        let ours = template.render(&messages, &options);
        match (case["rendered"].as_str(), ours) {
            (Some(expected), Ok(ours)) if ours == expected => {}
            (None, Err(_)) => {}
            (expected, ours) => failures.push(format!(
                "{name}:\n  transformers: {expected:?}\n  ours:         {ours:?}"
            )),
        }
    }
    eprintln!("checked {checked} cases");
    assert!(checked >= 20);
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
