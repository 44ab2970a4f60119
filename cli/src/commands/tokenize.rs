//! `gemmakit tokenize`: the token ids of a text.

use clap::Args;
use gemmakit::Result;
use gemmakit::engine::ChatFormat;

use crate::args::ModelArgs;
use crate::loading::load_engine;

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    text: String,
    #[arg(long)]
    json: bool,
}

pub fn execute(args: TokenizeArgs) -> Result<()> {
    let TokenizeArgs { model, text, json } = args;
    // Tokenizing needs no GPU: the CPU loads faster and never measures backends.
    let model = ModelArgs {
        backend: "cpu".into(),
        ..model
    };
    let engine = load_engine(&model, ChatFormat::PlainText, true)?;
    let ids = engine.tokenizer().encode_prompt(&text, true)?;
    if json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        for id in ids {
            println!(
                "{id}\t{:?}",
                String::from_utf8_lossy(engine.tokenizer().token_bytes(id))
            );
        }
    }
    Ok(())
}
