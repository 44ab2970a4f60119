//! The `gemmakit` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gemmakit::BackendKind;
use gemmakit::eval::{all_logits, load_model, parse_token_list, write_npy};

#[derive(Parser)]
#[command(name = "gemmakit", version, about = "Offline Gemma inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the logits of every position of a token sequence as a float32 .npy array of
    /// shape [positions, vocab] (a developer command for parity checks).
    Eval {
        /// Checkpoint directory (config.json + *.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids, e.g. 2,17,301.
        #[arg(long)]
        tokens: String,
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval {
            model,
            tokens,
            backend,
            out,
        } => (|| {
            let tokens = parse_token_list(&tokens)?;
            let model = load_model(&model, backend)?;
            let logits = all_logits(&model, &tokens)?;
            write_npy(&out, &logits, &[tokens.len(), model.config().vocab_size])?;
            eprintln!(
                "wrote logits [{}, {}] to {} ({})",
                tokens.len(),
                model.config().vocab_size,
                out.display(),
                model.device().description
            );
            Ok::<_, gemmakit::GemmaError>(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
