//! Arbitrary text as a model file's Jinja chat template (`ChatTemplate::Jinja`), rendered with a
//! conversation that touches every message field a template can read: system, user, assistant
//! with a tool call, tool result, tools, thinking. A bad template is a typed error.

use gemmakit::GemmaError;
use gemmakit::chat::tools::ToolCall;
use gemmakit::chat::{ChatTemplate, Message, RenderOptions};
use serde_json::json;

use super::Outcome;

pub fn run(data: &[u8]) -> Outcome {
    let Ok(source) = std::str::from_utf8(data) else {
        return Outcome::NotApplicable;
    };
    let template = ChatTemplate::Jinja {
        source: source.to_string(),
        bos: "<bos>".into(),
        eos: "<eos>".into(),
    };
    let mut call = Message::assistant("");
    call.tool_calls.push(ToolCall {
        name: "get_weather".into(),
        arguments: json!({"city": "Paris", "days": 3, "units": ["c", null, 1.5e-5]}),
    });
    let messages = [
        Message::system("Be brief."),
        Message::user("Weather in Paris?"),
        call,
        Message::tool_result("get_weather", "{\"temp\": 21}"),
        Message::assistant("21 degrees."),
    ];
    let tools = vec![
        json!({"type": "function", "function": {"name": "get_weather",
        "description": "Weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
    ];
    let mut outcome = Outcome::Accepted;
    for (add_generation_prompt, enable_thinking, tools) in
        [(true, false, tools), (false, true, vec![])]
    {
        let options = RenderOptions {
            add_generation_prompt,
            enable_thinking,
            tools,
        };
        match template.render(&messages, &options) {
            Ok(_) => {}
            Err(e @ (GemmaError::InvalidArgument(_) | GemmaError::ChatTemplateLimit { .. })) => {
                outcome = Outcome::Rejected(e.to_string())
            }
            Err(e) => panic!("a bad template is InvalidArgument or ChatTemplateLimit, got {e:?}"),
        }
    }
    outcome
}
