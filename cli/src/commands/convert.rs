//! `gemmakit convert`: a GGUF in llama.cpp's `gemma4` layout, from a Hugging Face checkpoint or
//! random weights.

use std::path::PathBuf;

use clap::Args;
use gemmakit::convert::{QuantPlan, convert_hf, write_random};
use gemmakit::{GemmaError, Result};

#[derive(Args)]
pub struct ConvertArgs {
    #[arg(long, conflicts_with = "random", required_unless_present = "random")]
    hf: Option<PathBuf>,
    #[arg(long)]
    random: Option<String>,
    /// f32, f16, q8_0 or q4_0 for the matrices (norms and 1-D tensors stay f32).
    #[arg(long, default_value = "f16")]
    quant: String,
    /// Type of token_embd (also the tied output matrix); default: --quant.
    #[arg(long)]
    embed_quant: Option<String>,
    /// Type of the per-layer-embedding table; default: --quant.
    #[arg(long)]
    ple_quant: Option<String>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn execute(args: ConvertArgs) -> Result<()> {
    let plan = QuantPlan {
        weights: args.quant.parse()?,
        embeddings: args.embed_quant.as_deref().map(str::parse).transpose()?,
        per_layer_embeddings: args.ple_quant.as_deref().map(str::parse).transpose()?,
    };
    let out = &args.out;
    let summary = match (args.hf, args.random) {
        (Some(dir), _) => convert_hf(&dir, &plan, out)?,
        (None, Some(variant)) => write_random(variant.parse()?, &plan, args.seed, out)?,
        (None, None) => {
            return Err(GemmaError::InvalidArgument(
                "give --hf DIR or --random e2b|e4b".into(),
            ));
        }
    };
    eprintln!(
        "wrote {} ({} tensors, {:.3} B parameters, {} bytes)",
        out.display(),
        summary.tensors,
        summary.parameters as f64 / 1e9,
        summary.file_bytes
    );
    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}
