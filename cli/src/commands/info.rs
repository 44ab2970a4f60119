//! `gemmakit info`: architecture, sizes, weight types and a memory estimate.

use clap::Args;
use gemmakit::Result;
use gemmakit::engine::ChatFormat;

use crate::args::ModelArgs;
use crate::loading::load_engine;

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    json: bool,
}

pub fn execute(args: InfoArgs) -> Result<()> {
    let InfoArgs { model, json } = args;
    let engine = load_engine(&model, ChatFormat::Auto, json)?;
    let i = engine.info();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "architecture": i.architecture, "name": i.name, "layers": i.layers,
                "hidden_size": i.hidden_size, "vocab_size": i.vocab_size, "max_context": i.max_context,
                "weight_types": i.weight_types, "file_bytes": i.file_bytes,
                "estimated_memory_bytes": i.estimated_memory_bytes, "kv_cache_bytes": i.kv_cache_bytes,
                "chat_template": i.chat_template, "backend": engine.backend().backend.to_string(),
                "backend_reason": engine.backend().reason,
            })
        );
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("name            {}", i.name);
    println!(
        "architecture    {} ({} layers, hidden {}, vocab {})",
        i.architecture, i.layers, i.hidden_size, i.vocab_size
    );
    println!("max context     {}", i.max_context);
    println!("file            {:.1} MiB", mib(i.file_bytes));
    for (ty, bytes) in &i.weight_types {
        println!("  {ty:<6}        {:.1} MiB", mib(*bytes));
    }
    println!(
        "memory estimate {:.1} MiB at context {} (KV cache {:.1} MiB)",
        mib(i.estimated_memory_bytes),
        engine.context_len(),
        mib(i.kv_cache_bytes)
    );
    println!(
        "chat template   {}",
        i.chat_template
            .as_deref()
            .unwrap_or("none (base model: plain continuation)")
    );
    println!(
        "backend         {} ({}; {})",
        engine.backend().backend,
        engine.backend().device,
        engine.backend().reason
    );
    Ok(())
}
