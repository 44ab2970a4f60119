//! `gemmakit run`: one prompt, the answer streamed to stdout (or one JSON object).

use clap::Args;
use gemmakit::chat::Part;
use gemmakit::engine::ChatFormat;
use gemmakit::generate::{Event, Flow, GenerationOutput};
use gemmakit::{GemmaError, Result};

use super::stream_to_stdout;
use crate::args::{MediaArgs, ModelArgs, SamplingArgs, parse_token_list};
use crate::loading::load_engine;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, conflicts_with = "prompt_tokens")]
    prompt: Option<String>,
    /// Comma-separated token ids fed as they are (no template, no BOS added).
    #[arg(long)]
    prompt_tokens: Option<String>,
    /// Skip the chat template: the prompt is continued as plain text.
    #[arg(long)]
    raw: bool,
    #[arg(long)]
    system: Option<String>,
    /// Gemma 4 thinking mode.
    #[arg(long)]
    think: bool,
    #[command(flatten)]
    media: MediaArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object with `tokens`, `text` and `stats` instead of streaming.
    #[arg(long)]
    json: bool,
}

fn stats_json(out: &GenerationOutput) -> serde_json::Value {
    let s = &out.stats;
    serde_json::json!({
        "prompt_tokens": s.prompt_tokens,
        "prefilled_tokens": s.prefilled_tokens,
        "generated_tokens": s.generated_tokens,
        "prefill_tok_s": s.prefill_tok_s,
        "decode_tok_s": s.decode_tok_s,
        "ttft_ms": s.time_to_first_token_ms,
        "stop_reason": format!("{:?}", s.stop_reason),
        "drafted": s.drafted,
        "accepted": s.accepted,
        "rounds": s.rounds,
    })
}

pub fn execute(args: RunArgs) -> Result<()> {
    let RunArgs {
        model,
        prompt,
        prompt_tokens,
        raw,
        system,
        think,
        media,
        sampling,
        json,
    } = args;
    let media = media.load()?;
    let format = if raw || prompt_tokens.is_some() {
        ChatFormat::PlainText
    } else {
        ChatFormat::Auto
    };
    let engine = load_engine(&model, format, json)?;
    let options = sampling.options()?;
    let mut on_event = |e: Event| {
        if json {
            Flow::Continue
        } else {
            stream_to_stdout(e)
        }
    };
    let output = match (prompt, prompt_tokens) {
        (_, Some(_)) if !media.is_empty() => {
            return Err(GemmaError::InvalidArgument(
                "media go with --prompt (use `gemmakit eval` to fill placeholder ids)".into(),
            ));
        }
        (_, Some(tokens)) => {
            engine.generate_from_tokens(&parse_token_list(&tokens)?, &options, &mut on_event)?
        }
        (Some(prompt), None) => {
            let chat = engine.conversation();
            if chat.uses_chat_template() {
                chat.set_system_prompt(system.as_deref());
                chat.set_thinking(think);
            } else if !raw && !json {
                eprintln!(
                    "gemmakit: this model has no chat template (a base model): continuing the prompt as plain text"
                );
            }
            if media.is_empty() {
                chat.send(&prompt, &options, &mut on_event)?
            } else {
                let mut parts: Vec<Part> = media.into_iter().map(Part::Media).collect();
                parts.push(Part::Text(prompt));
                chat.send_parts(parts, &options, &mut on_event)?
            }
        }
        (None, None) => {
            return Err(GemmaError::InvalidArgument(
                "give --prompt or --prompt-tokens".into(),
            ));
        }
    };
    if json {
        let value = serde_json::json!({
            "tokens": output.tokens,
            "text": output.text,
            "thought": output.thought,
            "tool_calls": output.tool_calls,
            "stats": stats_json(&output),
        });
        println!("{value}");
    } else {
        println!();
        let s = &output.stats;
        eprintln!(
            "[{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token {:.0} ms; stop: {:?}]",
            s.prompt_tokens,
            s.generated_tokens,
            s.prefill_tok_s,
            s.decode_tok_s,
            s.time_to_first_token_ms,
            s.stop_reason
        );
        if s.rounds > 0 {
            eprintln!(
                "[speculative: {} drafted, {} accepted in {} verify passes]",
                s.drafted, s.accepted, s.rounds
            );
        }
    }
    Ok(())
}
