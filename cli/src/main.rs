//! The `gemmakit` command-line tool. One module per command under `commands/`; the options
//! several commands share are in `args.rs`.

mod args;
mod commands;
mod loading;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{bench, chat, convert, eval, info, models, perplexity, pull, run, tokenize};

#[derive(Parser)]
#[command(name = "gemmakit", version, about = "Offline Gemma inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The doc comments here are the commands' help text; the argument structs carry none, so they
// cannot override it.
#[derive(Subcommand)]
enum Command {
    /// Generates an answer to one prompt (chat template applied unless --raw), streamed to stdout.
    Run(run::RunArgs),
    /// Interactive chat; /reset clears the history, /system TEXT sets the system prompt.
    Chat(chat::ChatArgs),
    /// Architecture, sizes, weight types and a memory estimate.
    Info(info::InfoArgs),
    /// Token ids of a text. No BOS is added unless the model's tokenizer adds one
    /// (tokenizer.ggml.add_bos_token; Gemma: yes); special-token text is parsed.
    Tokenize(tokenize::TokenizeArgs),
    /// Writes the logits of every position of a token sequence as a float32 .npy array of
    /// shape [positions, vocab] (a developer command for parity checks).
    Eval(eval::EvalArgs),
    /// llama-perplexity's perplexity of a text (chunks of --ctx tokens, second halves
    /// scored), with the KL divergence and top-1 agreement of --kv-type against an f32 cache.
    Perplexity(perplexity::PerplexityArgs),
    /// Writes a GGUF in llama.cpp's `gemma4` layout: a Hugging Face Gemma 4 checkpoint's text
    /// model (--hf DIR), or full-size random weights for benchmarks (--random e2b|e4b).
    Convert(convert::ConvertArgs),
    /// llama-bench-style measurements: prefill and decode tok/s at depths, time to first
    /// token, load time, peak RSS.
    Bench(bench::BenchArgs),
    /// Downloads a catalogue model or a URL into $GEMMAKIT_HOME/models (resumable, sha256
    /// verified); prints the file's path last on stdout.
    Pull(pull::PullArgs),
    /// The model cache: list, path NAME, delete NAME, catalogue.
    Models(models::ModelsArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Command::Run(args) => run::execute(args),
        Command::Chat(args) => chat::execute(args),
        Command::Info(args) => info::execute(args),
        Command::Tokenize(args) => tokenize::execute(args),
        Command::Eval(args) => eval::execute(args),
        Command::Perplexity(args) => perplexity::execute(args),
        Command::Convert(args) => convert::execute(args),
        Command::Bench(args) => bench::execute(args),
        Command::Pull(args) => pull::execute(args),
        Command::Models(args) => models::execute(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
