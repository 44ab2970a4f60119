//! A model file's chat template is code from the internet: rendering it is bounded in work,
//! memory, recursion and size, sees only the conversation, and a template past a limit is a
//! typed error naming the limit — while real templates on long conversations stay far inside.

mod common;

use gemmakit::GemmaError;
use gemmakit::chat::{limits, render_jinja_values};
use serde_json::{Value, json};

fn render(source: &str, messages: &[Value]) -> gemmakit::Result<String> {
    render_jinja_values(
        source,
        "<bos>",
        "<eos>",
        messages,
        &[],
        true,
        &serde_json::Map::new(),
    )
}

fn hello() -> Vec<Value> {
    vec![json!({"role": "user", "content": "hello"})]
}

fn limit_of(result: gemmakit::Result<String>) -> String {
    match result {
        Err(GemmaError::ChatTemplateLimit { limit }) => limit,
        other => panic!("expected a template limit, got {other:?}"),
    }
}

#[test]
fn a_loop_bomb_runs_out_of_fuel() {
    let bomb = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    assert!(limit_of(render(bomb, &hello())).starts_with("fuel"));
}

#[test]
fn a_string_doubling_bomb_runs_out_of_fuel() {
    // 2^64 bytes if unbounded; fuel charges every byte produced.
    let bomb = "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    assert!(limit_of(render(bomb, &hello())).starts_with("fuel"));
    let repeat = "{{ 'abc' * 1000000000 }}";
    assert!(render(repeat, &hello()).is_err());
}

#[test]
fn deep_recursion_hits_the_depth_limit() {
    let deep = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    assert!(limit_of(render(deep, &hello())).starts_with("recursion"));
}

#[test]
fn huge_sources_and_outputs_are_refused() {
    let source = format!("{{# {} #}}", "x".repeat(limits::SOURCE_BYTES + 1));
    assert!(limit_of(render(&source, &hello())).starts_with("source"));
    // Within fuel but past the output limit: one message of 5 MiB echoed.
    let big = vec![json!({"role": "user", "content": "y".repeat(limits::OUTPUT_BYTES + 1)})];
    let echo = "{% for m in messages %}{{ m.content }}{% endfor %}";
    let limit = limit_of(render(echo, &big));
    assert!(
        limit.starts_with("output") || limit.starts_with("fuel"),
        "{limit}"
    );
}

#[test]
fn a_template_sees_only_the_conversation() {
    // The process environment is read here only to know what must not leak.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let probe = "[{{ HOME }}{{ env }}{{ environ }}{{ os }}{{ config }}{{ self }}{{ range.__globals__ }}{{ namespace.__init__ }}]{{ messages[0].content }}";
    let out = render(probe, &hello()).expect("undefined names render as nothing");
    assert!(!out.contains(&home), "{out}");
    assert!(out.ends_with("hello"), "{out}");
    for include in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/hostname' as h %}",
        "{% extends 'base.html' %}",
    ] {
        assert!(render(include, &hello()).is_err(), "{include}");
    }
}

#[test]
fn the_real_gemma4_template_renders_a_long_conversation_within_the_limits() {
    let source =
        std::fs::read_to_string(common::fixture_dir("templates").join("gemma4.jinja")).unwrap();
    // 400 turns of 2 KB each with tools: ~800 KB of prompt, far more than a phone's context.
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    for i in 0..200 {
        messages
            .push(json!({"role": "user", "content": format!("question {i} {}", "q".repeat(2000))}));
        messages.push(
            json!({"role": "assistant", "content": format!("answer {i} {}", "a".repeat(2000))}),
        );
    }
    let tools = vec![
        json!({"type": "function", "function": {"name": "get_weather",
        "description": "Weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string", "description": "City"}}, "required": ["city"]}}}),
    ];
    let out = render_jinja_values(
        &source,
        "<bos>",
        "<eos>",
        &messages,
        &tools,
        true,
        &serde_json::Map::new(),
    )
    .expect("a real template on a long conversation stays within the limits");
    assert!(out.contains("answer 199"));
}
