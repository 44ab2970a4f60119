#!/usr/bin/env python3
"""Reference renderings of the Gemma 3 / Gemma 4 chat templates by Hugging Face transformers.

Run from the repo root (no network, no model, no GPU; about 5 s, mostly the transformers import):

    .venv-ref/bin/python scripts/reference/chat_template_ref.py   # -> tests/fixtures/templates/chat_reference.json
    .venv-ref/bin/python scripts/reference/chat_template_ref.py --check   # re-render, compare with the file

Templates (read from tests/fixtures/templates/):
  gemma3.jinja  the official google/gemma-3-*-it `chat_template` (see NOTES.md for its provenance)
  gemma4.jinja  llama.cpp's copy of Google's Gemma 4 template (models/templates/google-gemma-4-31B-it.jinja)

Renderer: transformers' own `transformers.utils.chat_template_utils.render_jinja_template`, called the way
`PreTrainedTokenizerBase.apply_chat_template(..., tokenize=False)` calls it in transformers 5.24:
  * every conversation first goes through `_normalize_chat_messages` (message keys whose value is None are DROPPED),
  * the template variables are the tokenizer's `special_tokens_map` (bos_token='<bos>', eos_token='<eos>',
    unk_token='<unk>', pad_token='<pad>') overlaid with the call's extra kwargs (e.g. enable_thinking),
    plus messages, tools, documents (None) and add_generation_prompt,
  * render_jinja_template converts everything to plain JSON types and aliases the reasoning fields
    (`reasoning` / `thinking` / `reasoning_content`: when any is set, `reasoning_content` and `thinking` are
    filled with it) before rendering with an ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
    extensions=[loopcontrols]) and the globals raise_exception, strftime_now, dict, namespace and the
    `tojson` filter override (json.dumps, ensure_ascii=False).
Every case is also rendered through a real (tiny, in-memory) tokenizer's `apply_chat_template(tokenize=False)` and
must match byte-for-byte (same error message for the error cases).

Each case in the output: template ("gemma3" | "gemma4"), name, description, messages (as given, before the None-key
drop), tools (or null), add_generation_prompt, kwargs (extra template variables, e.g. {"enable_thinking": true}),
rendered (string, or null when the template raised) and error (null, or the exception message).
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "tests" / "fixtures" / "templates"
OUT = TEMPLATE_DIR / "chat_reference.json"

SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}

TEMPLATE_SOURCES = {
    "gemma3": "official google/gemma-3-*-it tokenizer_config.json `chat_template` (reconstructed: no HF access; "
              "matches several independent public copies of it, see NOTES.md)",
    "gemma4": "llama.cpp models/templates/google-gemma-4-31B-it.jinja (vendored in llama-cpp-python 0.3.36), "
              "copied unchanged",
}

# ----------------------------------------------------------------------------------------------- tools

TOOL_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name, e.g. Paris"},
                "days": {"type": "integer", "description": "Number of forecast days"},
                "unit": {"type": "string", "description": "Temperature unit", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}
TOOL_TIME = {  # no parameters at all (no "parameters" key)
    "type": "function",
    "function": {"name": "get_current_time", "description": "Get the current UTC time."},
}
TOOL_TIME_EMPTY_OBJECT = {  # "no parameters" spelled the other common way
    "type": "function",
    "function": {"name": "get_current_time", "description": "Get the current UTC time.",
                 "parameters": {"type": "object", "properties": {}}},
}
TOOL_COMPLEX = {  # exercises the rest of format_parameters / format_function_declaration
    "type": "function",
    "function": {
        "name": "search_products",
        "description": "Search the catalog.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Free-text query"},
                "max_price": {"type": "number", "description": "Upper price bound", "nullable": True},
                "in_stock": {"type": "boolean"},
                "tags": {"type": "array", "description": "Tags to match", "items": {"type": "string"}},
                "filters": {
                    "type": "object",
                    "description": "Extra filters",
                    "properties": {
                        "brand": {"type": "string"},
                        "rating": {"type": "integer", "description": "Minimum stars"},
                    },
                    "required": ["brand"],
                },
                "sort": {"type": "string", "enum": ["price", "rating"]},
            },
            "required": ["query"],
        },
        "response": {"type": "object", "description": "Matching products"},
    },
}

WEATHER_CALL = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}}

# ----------------------------------------------------------------------------------------------- cases


def case(template, name, description, messages, tools=None, add_generation_prompt=True, **kwargs):
    return {"template": template, "name": name, "description": description, "messages": messages, "tools": tools,
            "add_generation_prompt": add_generation_prompt, "kwargs": kwargs}


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def s(text):
    return {"role": "system", "content": text}


MULTI = [u("What is the capital of France?"), a("The capital of France is Paris."), u("And of Germany?")]
WS = [s("  \n You are terse.\t\n"), u("\n\n  Hello   there  \n"), a("  Hi!  \n\n"), u("\t What's  up? \n ")]


def gemma3_cases():
    t = "gemma3"
    return [
        case(t, "single_user", "one user turn", [u("Hello, who are you?")]),
        case(t, "system_user", "system text is prefixed (untrimmed) + '\\n\\n' to the first user turn",
             [s("You are a helpful assistant."), u("Hi!")]),
        case(t, "multi_turn", "user/assistant/user; assistant is written 'model'", MULTI),
        case(t, "whitespace", "string contents are trimmed (|trim); the system prefix is NOT trimmed; inner "
             "whitespace kept", WS),
        case(t, "unicode_whitespace", "|trim is Python str.strip(): strips U+00A0, U+3000, U+2028 and the ASCII "
             "separators U+001C..U+001F (Rust str::trim does not strip U+001C..U+001F); U+200B is not whitespace",
             [u("\u00a0\u3000Hi\u2028\u001f"), a("\u001c ok \u200b")]),
        case(t, "content_parts", "list contents: text parts trimmed and concatenated with no separator, image -> "
             "<start_of_image>, other part types (audio) silently dropped; a list-form system prompt uses only its "
             "first part's text (untrimmed)",
             [{"role": "system", "content": [{"type": "text", "text": "Be brief. "}, {"type": "text", "text": "x"}]},
              {"role": "user", "content": [{"type": "text", "text": " Look at this: "}, {"type": "image"},
                                           {"type": "text", "text": "What is it?\n"}, {"type": "audio"}]},
              {"role": "assistant", "content": [{"type": "text", "text": " A cat. "}]},
              {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                           {"type": "text", "text": "And these?"}]}]),
        case(t, "no_generation_prompt", "add_generation_prompt=False, conversation ending with the assistant",
             [u("Hi"), a("Hello! How can I help?")], add_generation_prompt=False),
        case(t, "no_generation_prompt_user_last", "add_generation_prompt=False, conversation ending with the user",
             [u("Hi")], add_generation_prompt=False),
        case(t, "system_only", "only a system message: loop_messages is empty, the system text is lost",
             [s("You are a helpful assistant.")]),
        case(t, "content_none", "content=None: apply_chat_template drops the key, `message['content']` is undefined, "
             "which Jinja2 treats as `iterable` (empty) -> empty turn, no error",
             [u("Hi"), {"role": "assistant", "content": None}, u("Again")]),
        case(t, "error_roles_not_alternating", "two user turns in a row", [u("Hi"), u("Hello?")]),
        case(t, "error_starts_with_assistant", "first non-system message is an assistant",
             [s("sys"), a("Hello"), u("Hi")]),
        case(t, "error_tool_role", "tool role is not supported (counts as a non-user role at an even index)",
             [u("Hi"), a("Calling"), {"role": "tool", "content": "42"}]),
        case(t, "error_invalid_content_type", "content that is neither a string nor iterable", [u(42)]),
    ]


def gemma4_cases():
    t = "gemma4"
    weather_tool_msg = {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
                        "content": '{"temperature": 15, "condition": "sunny"}'}
    return [
        # (1)-(6)
        case(t, "single_user", "one user turn; with thinking off the generation prompt ends with an empty "
             "thought channel", [u("Hello, who are you?")]),
        case(t, "system_user", "leading system message becomes the system turn (trimmed)",
             [s("You are a helpful assistant."), u("Hi!")]),
        case(t, "multi_turn", "user/assistant/user", MULTI),
        case(t, "whitespace", "system/user contents |trim; assistant contents go through strip_thinking (|trim)", WS),
        case(t, "unicode_whitespace", "|trim is Python str.strip() (see the gemma3 case of the same name)",
             [u("\u00a0\u3000Hi\u2028\u001f"), a("\u001c ok \u200b")]),
        case(t, "content_parts", "list contents: text parts trimmed, concatenated with no separator; image -> "
             "<|image|>, audio -> <|audio|>, video -> <|video|> (no newlines around them)",
             [{"role": "user", "content": [{"type": "text", "text": " Describe this image: "}, {"type": "image"},
                                           {"type": "text", "text": " and this audio: "}, {"type": "audio"},
                                           {"type": "text", "text": "and this clip:"}, {"type": "video"}]},
              {"role": "assistant", "content": [{"type": "text", "text": " A cat, a bird song and a dog. "}]},
              {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                           {"type": "text", "text": "Compare."}]}]),
        case(t, "no_generation_prompt", "add_generation_prompt=False: nothing after the last <turn|>",
             [u("Hi"), a("Hello! How can I help?")], add_generation_prompt=False),
        case(t, "enable_thinking_false", "enable_thinking=False explicitly: same as not passing it",
             [u("Hi")], enable_thinking=False),
        # (7)-(8) thinking
        case(t, "thinking_with_system", "enable_thinking=True: <|think|> opens the system turn, no empty thought "
             "channel after the generation prompt", [s("You are a helpful assistant."), u("What is 17*23?")],
             enable_thinking=True),
        case(t, "thinking_without_system", "enable_thinking=True and no system message: a system turn holding only "
             "<|think|>", [u("What is 17*23?")], enable_thinking=True),
        case(t, "thinking_multi_turn", "enable_thinking=True; the earlier assistant turn's thought channel is stripped",
             [u("What is 2+2?"), a("<|channel>thought\nEasy: 4.<channel|>4"), u("And 3+3?")], enable_thinking=True),
        case(t, "thinking_no_generation_prompt", "enable_thinking=True, add_generation_prompt=False",
             [u("Hi"), a("Hello")], add_generation_prompt=False, enable_thinking=True),
        # (9) tool declarations
        case(t, "tools", "two tool declarations (string+integer+enum with required; no parameters)",
             [u("What's the weather in Paris?")], tools=[TOOL_WEATHER, TOOL_TIME]),
        case(t, "tools_with_system_and_thinking", "system text, then the declarations, in the one system turn; "
             "<|think|> first", [s("You are a weather bot."), u("Weather in Paris?")],
             tools=[TOOL_WEATHER, TOOL_TIME_EMPTY_OBJECT], enable_thinking=True),
        case(t, "tool_parameters_without_type", "parameters with properties but no \"type\": the closing '}' of "
             "parameters is only written in the type branch, so the braces come out unbalanced (template bug)",
             [u("Hi")], tools=[{"type": "function", "function": {
                 "name": "ping", "description": "Ping a host.",
                 "parameters": {"properties": {"host": {"type": "string"}}, "required": ["host"]}}}]),
        case(t, "tools_complex_schema", "number/nullable/boolean/array items/nested object/required/response",
             [u("Find shoes")], tools=[TOOL_COMPLEX]),
        # (10) tool round trips
        case(t, "tool_round_trip", "user, assistant tool_calls (arguments dict), tool result (string), generation "
             "prompt: the tool response is appended inside the model turn and no new <|turn>model is emitted",
             [u("What's the weather in Paris?"), {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
              weather_tool_msg], tools=[TOOL_WEATHER, TOOL_TIME]),
        case(t, "tool_round_trip_complete", "round trip, then the assistant's final answer (same model turn), then a "
             "new user turn", [u("What's the weather in Paris?"), {"role": "assistant", "tool_calls": [WEATHER_CALL]},
                               weather_tool_msg, a("It is 15 degrees and sunny in Paris."), u("Thanks!")],
             tools=[TOOL_WEATHER]),
        case(t, "error_tool_response_mapping", "tool content given as a dict: a dict passes `is sequence`, so the "
             "content-parts branch iterates its keys and calls .get on a str -> error (mappings only work via the "
             "legacy `tool_responses` field)",
             [u("Weather?"), {"role": "assistant", "tool_calls": [WEATHER_CALL]},
              {"role": "tool", "tool_call_id": "call_1", "content": {"temperature": 15, "condition": "sunny",
                                                                     "wind": {"speed": 3.5, "gusts": None}}}]),
        case(t, "tool_calls_parallel", "two calls in one message; two tool messages resolved by tool_call_id (the "
             "second has no name); one tool content given as text parts",
             [u("Weather in Paris and the time?"),
              {"role": "assistant", "content": None, "tool_calls": [
                  WEATHER_CALL,
                  {"id": "call_2", "type": "function", "function": {"name": "get_current_time", "arguments": {}}}]},
              weather_tool_msg,
              {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"},
                                                                     {"type": "text", "text": " UTC"}]}],
             tools=[TOOL_WEATHER, TOOL_TIME]),
        case(t, "tool_call_arguments_json_string", "OpenAI wire format: arguments as a JSON string are pasted "
             "verbatim between the call braces", [u("Weather?"), {"role": "assistant", "tool_calls": [
                 {"id": "call_1", "type": "function",
                  "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]),
        case(t, "tool_call_argument_types", "format_argument on str (with quotes), int, float, bool, None (renders "
             "Python's 'None'), list, nested dict; floats use Python repr (1e-05); dictsort is "
             "CASE-INSENSITIVE (b < Big < d)",
             [u("Go"), {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
                 "name": "do", "arguments": {"s": 'say "hi"', "Big": 7, "i": -3, "e": 1e-05, "f": 2.5, "b": True,
                                             "n": None,
                                             "l": [1, "two", False], "d": {"z": 1, "a": {"k": "v"}}}}}]}]),
        case(t, "tool_call_pending", "assistant tool call with no tool message yet: ends with <|tool_response> "
             "(the generation-stop token) and no generation prompt",
             [u("Weather?"), {"role": "assistant", "tool_calls": [WEATHER_CALL]}]),
        case(t, "tool_responses_legacy", "Gemma-native `tool_responses` list on the assistant message",
             [u("Weather?"), {"role": "assistant", "tool_calls": [WEATHER_CALL],
                              "tool_responses": [{"name": "get_weather", "response": {"temperature": 15}}]}]),
        # (11) thought channel in assistant content
        case(t, "strip_thought_channel", "assistant content with <|channel>thought...<channel|> is stripped (string "
             "content and text parts; text before a channel is kept)",
             [u("Hi"), a("<|channel>thought\nThe user greets me.<channel|>Hello!"), u("What is 2+2?"),
              {"role": "assistant", "content": [{"type": "text", "text": "Sure. <|channel>thought\nadd<channel|> 4"}]},
              u("Thanks")]),
        # (12) other special handling
        case(t, "reasoning_content_with_tool_calls", "reasoning_content on an assistant message with tool_calls after "
             "the last user message is rendered as a thought channel",
             [u("Weather?"), {"role": "assistant", "reasoning_content": "I need the weather tool.",
                              "tool_calls": [WEATHER_CALL]}, weather_tool_msg], tools=[TOOL_WEATHER],
             enable_thinking=True),
        case(t, "reasoning_field_alias", "`reasoning` (aliased by transformers) behaves like reasoning_content",
             [u("Weather?"), {"role": "assistant", "reasoning": "Use the tool.", "tool_calls": [WEATHER_CALL]}]),
        case(t, "reasoning_content_dropped", "reasoning_content without tool_calls, or before the last user message, "
             "is not rendered",
             [u("Hi"), {"role": "assistant", "reasoning_content": "greet back", "content": "Hello"}, u("Weather?"),
              {"role": "assistant", "reasoning_content": "final", "content": "Sunny."}], add_generation_prompt=False),
        case(t, "developer_role", "a leading `developer` message is the system turn; a later system/developer "
             "message is an ordinary turn with its own role name",
             [{"role": "developer", "content": " Answer in French. "}, u("Hi"), a("Bonjour"),
              s("Now answer in German."), u("Hi again")]),
        case(t, "consecutive_assistant", "an assistant message right after another (tool messages ignored) gets no "
             "<|turn>model header of its own, even without tools",
             [u("Hi"), a("Hello."), a("How can I help?"), u("Bye")]),
        case(t, "system_content_parts_quirk", "a list-form system prompt is rendered with `| trim` on the LIST, i.e. "
             "Python's repr of it (template bug; documented, not something to copy)",
             [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, u("Hi")]),
    ]


# ----------------------------------------------------------------------------------------------- rendering


def render_reference(template_src, c):
    """transformers' renderer, as apply_chat_template(tokenize=False) calls it. Returns (rendered, error)."""
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[_normalize_chat_messages(c["messages"])],
            tools=c["tools"],
            chat_template=template_src,
            add_generation_prompt=c["add_generation_prompt"],
            **{**SPECIAL_TOKENS, **c["kwargs"]},
        )
        return rendered[0], None
    except Exception as e:  # noqa: BLE001 - the template's raise_exception -> jinja2 TemplateError
        return None, f"{type(e).__name__}: {e}"


def tiny_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tk, **SPECIAL_TOKENS)


def render_via_tokenizer(tok, template_src, c):
    try:
        out = tok.apply_chat_template(c["messages"], tools=c["tools"], chat_template=template_src,
                                      add_generation_prompt=c["add_generation_prompt"], tokenize=False, **c["kwargs"])
        return out, None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------------------------------------- template features


def template_features(env, src):
    """Filters, tests, globals, python methods and syntax a template uses (from the Jinja2 AST)."""
    from jinja2 import nodes

    ast = env.parse(src)
    macros = sorted({m.name for m in ast.find_all(nodes.Macro)})
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "store"}
    filters = sorted({f.name for f in ast.find_all(nodes.Filter)})
    tests = sorted({t.name for t in ast.find_all(nodes.Test)})
    methods, functions = set(), set()
    for call in ast.find_all(nodes.Call):
        if isinstance(call.node, nodes.Getattr):
            methods.add("." + call.node.attr + "()")
        elif isinstance(call.node, nodes.Name):
            (functions if call.node.name not in macros else set()).add(call.node.name)
    loop_attrs = sorted({"loop." + g.attr for g in ast.find_all(nodes.Getattr)
                         if isinstance(g.node, nodes.Name) and g.node.name == "loop"})
    ns_attrs = sorted({g.attr for g in ast.find_all(nodes.NSRef)})
    syntax = set()
    if any(isinstance(g.arg, nodes.Slice) for g in ast.find_all(nodes.Getitem)):
        syntax.add("slicing x[a:b]")
    if list(ast.find_all(nodes.CondExpr)):
        syntax.add("inline if/else")
    for cmp in ast.find_all(nodes.Compare):
        for op in cmp.ops:
            if op.op in ("in", "notin"):
                syntax.add("`in` / `not in` (str and list)")
    if list(ast.find_all(nodes.Mod)):
        syntax.add("% modulo")
    if list(ast.find_all(nodes.Concat)):
        syntax.add("~ concat")
    if list(ast.find_all(nodes.Add)):
        syntax.add("+ on strings")
    if ns_attrs:
        syntax.add("namespace() + `set ns.attr = ...`")
    if macros:
        syntax.add("macros (recursive, keyword/default args, output piped through filters)")
    if any(isinstance(f.node, nodes.Call) for f in ast.find_all(nodes.Filter)):
        syntax.add("filter applied to a call result")
    if any(isinstance(n, nodes.Neg) for n in ast.find_all(nodes.Neg)):
        syntax.add("unary minus (range(i, -1, -1))")
    if list(ast.find_all(nodes.Tuple)) and any(isinstance(f.target, nodes.Tuple) for f in ast.find_all(nodes.For)):
        syntax.add("tuple unpacking in for (key, value in x | dictsort)")
    return {
        "filters": filters,
        "tests": tests,
        "functions": sorted(functions - set(macros)),
        "python_methods": sorted(methods),
        "macros": macros,
        "loop_attributes": loop_attrs,
        "syntax": sorted(syntax),
        "variables_read": sorted(__import__("jinja2").meta.find_undeclared_variables(ast) - assigned),
    }


# ----------------------------------------------------------------------------------------------- main


def build():
    import jinja2
    import transformers
    from transformers.utils.chat_template_utils import _compile_jinja_template

    templates, feats = {}, {}
    for name in ("gemma3", "gemma4"):
        path = TEMPLATE_DIR / f"{name}.jinja"
        raw = path.read_bytes()
        templates[name] = raw.decode("utf-8")
        env = _compile_jinja_template(templates[name]).environment
        feats[name] = {"path": str(path.relative_to(ROOT)), "sha256": hashlib.sha256(raw).hexdigest(),
                       "bytes": len(raw), "source": TEMPLATE_SOURCES[name],
                       "features": template_features(env, templates[name])}

    tok = tiny_tokenizer()
    cases = []
    for c in gemma3_cases() + gemma4_cases():
        rendered, error = render_reference(templates[c["template"]], c)
        via_tok = render_via_tokenizer(tok, templates[c["template"]], c)
        if (rendered, error) != via_tok:
            raise SystemExit(f"{c['template']}/{c['name']}: render_jinja_template and apply_chat_template differ:\n"
                             f"{(rendered, error)!r}\n{via_tok!r}")
        if c["name"].startswith("error_") != (error is not None):
            raise SystemExit(f"{c['template']}/{c['name']}: unexpected outcome {error!r}")
        cases.append({**c, "rendered": rendered, "error": error})

    names = [(c["template"], c["name"]) for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return {
        "generator": "scripts/reference/chat_template_ref.py",
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "python_version": sys.version.split()[0],
        "api": "transformers.utils.chat_template_utils.render_jinja_template(conversations=[_normalize_chat_messages("
               "messages)], tools=tools, chat_template=src, add_generation_prompt=agp, **{**special_tokens, **kwargs}) "
               "-- cross-checked against PreTrainedTokenizerFast.apply_chat_template(tokenize=False)",
        "environment": "jinja2 ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, "
                       "extensions=[loopcontrols]); globals raise_exception, strftime_now, dict, namespace; "
                       "filter tojson=json.dumps(ensure_ascii=False)",
        "special_tokens": SPECIAL_TOKENS,
        "input_normalization": "message keys whose value is None are dropped before rendering; if any of "
                               "reasoning_content/thinking/reasoning is set, reasoning_content and thinking are "
                               "set to it; error strings are '<ExceptionType>: <message>'",
        "templates": feats,
        "cases": cases,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the existing --out file instead of writing")
    args = ap.parse_args()

    data = build()
    text = json.dumps(data, indent=1, ensure_ascii=True) + "\n"
    if args.check:
        old = args.out.read_text()
        if old != text:
            raise SystemExit(f"{args.out} differs from a fresh rendering")
        print(f"{args.out}: up to date ({len(data['cases'])} cases)")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text)} bytes, {len(data['cases'])} cases)")
    for c in data["cases"]:
        status = "ERR " + c["error"] if c["error"] else f"{len(c['rendered'])} chars"
        print(f"  {c['template']:7s} {c['name']:34s} {status}")


if __name__ == "__main__":
    main()
