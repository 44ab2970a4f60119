//! `gemmakit chat`: an interactive conversation on stdin/stdout.

use std::io::BufRead;

use clap::Args;
use gemmakit::engine::ChatFormat;
use gemmakit::generate::StopReason;
use gemmakit::{GemmaError, Result};

use super::stream_to_stdout;
use crate::args::{ModelArgs, SamplingArgs};
use crate::loading::load_engine;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    system: Option<String>,
    #[arg(long)]
    think: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn execute(args: ChatArgs) -> Result<()> {
    let ChatArgs {
        model,
        system,
        think,
        sampling,
    } = args;
    let engine = load_engine(&model, ChatFormat::Auto, false)?;
    let chat = engine.conversation();
    if !chat.uses_chat_template() {
        eprintln!(
            "gemmakit: this model has no chat template (a base model): each line is continued as plain text"
        );
    }
    chat.set_system_prompt(system.as_deref());
    chat.set_thinking(think);
    let options = sampling.options()?;
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| GemmaError::io("stdin", e))?
            == 0
        {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line == "/reset" {
            chat.reset();
            chat.set_system_prompt(system.as_deref());
            eprintln!("(history cleared)");
            continue;
        }
        if let Some(text) = line.strip_prefix("/system") {
            chat.reset();
            chat.set_system_prompt(Some(text.trim()));
            eprintln!("(system prompt set; history cleared)");
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let text = if chat.uses_chat_template() {
            line.to_string()
        } else {
            format!("{line}\n")
        };
        match chat.send(&text, &options, &mut stream_to_stdout) {
            Ok(out) => {
                println!();
                if out.stats.stop_reason == StopReason::ContextFull {
                    eprintln!("(context full: /reset to start over)");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}
