//! `gemmakit eval`: the logits of every position of a token sequence, written as `.npy`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use clap::Args;
use gemmakit::ComputeDevice;
use gemmakit::eval::all_logits_with_media;
use gemmakit::source::ModelSource;
use gemmakit::{BackendKind, GemmaError, Result};
use npyz::WriterBuilder;

use crate::args::{AudioWindowArg, MediaArgs, parse_token_list};

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids, e.g. 2,17,301. Placeholder runs (image, audio, video
    /// ids) are filled with the soft tokens of --image/--audio/--frame media in order.
    #[arg(long)]
    tokens: String,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    media: MediaArgs,
    #[arg(long)]
    mmproj: Option<PathBuf>,
    #[arg(long, default_value = "transformers")]
    audio_window: AudioWindowArg,
}

pub fn execute(args: EvalArgs) -> Result<()> {
    let tokens = parse_token_list(&args.tokens)?;
    let media = args.media.load()?;
    let source = ModelSource::open(&args.model)?;
    let model = source.load_model(ComputeDevice::open(args.backend)?)?;
    let logits = all_logits_with_media(
        &model,
        &source,
        args.mmproj.as_deref(),
        args.audio_window.into(),
        &tokens,
        &media,
    )?;
    write_npy(
        &args.out,
        &logits,
        &[tokens.len(), model.config().vocab_size],
    )?;
    eprintln!(
        "wrote logits [{}, {}] to {} ({})",
        tokens.len(),
        model.config().vocab_size,
        args.out.display(),
        model.device().description
    );
    Ok(())
}

/// Writes a float32 C-order `.npy` array (numpy reads it with `np.load`).
fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    let file = File::create(path).map_err(|e| GemmaError::io(path, e))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(|e| GemmaError::io(path, e))?;
    writer
        .extend(values.iter().copied())
        .map_err(|e| GemmaError::io(path, e))?;
    writer.finish().map_err(|e| GemmaError::io(path, e))?;
    Ok(())
}
