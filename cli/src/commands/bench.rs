//! `gemmakit bench`: llama-bench-style measurements, as a markdown table or JSON lines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use gemmakit::bench::{
    BenchOptions, BenchResult, COPYING_PROMPTS, Spread, run_assistant_cost, run_bench,
    run_constrained_bench, run_draft_bench, run_verify_cost, speculative_speedup,
};
use gemmakit::generate::Constraint;
use gemmakit::generate::Draft;
use gemmakit::{GemmaError, Result};

use crate::args::{ActivationArgs, DraftArgs, KvTypeArgs, backend_choice};

// Short flags as llama-bench's, so its users can reuse their command lines.
#[derive(Args)]
pub struct BenchArgs {
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Prompt lengths, comma-separated.
    #[arg(short = 'p', long = "n-prompt", default_value = "512")]
    n_prompt: String,
    /// Generation lengths, comma-separated.
    #[arg(short = 'n', long = "n-gen", default_value = "128")]
    n_gen: String,
    /// Tokens already in the cache before each test, comma-separated.
    #[arg(short = 'd', long = "n-depth", default_value = "0")]
    depth: String,
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Cores the CPU workers run on: auto (the big cores of a big.LITTLE CPU), all, or a list
    /// such as 4-7 or 0,2,5.
    #[arg(long, default_value = "auto")]
    cpu_cores: String,
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    repetitions: usize,
    #[arg(long, default_value = "auto")]
    backend: String,
    #[command(flatten)]
    kv: KvTypeArgs,
    /// Skip the cold-load measurement.
    #[arg(long)]
    no_cold: bool,
    #[command(flatten)]
    activations: ActivationArgs,
    /// One JSON object per configuration (one per line) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure sampled decode with and without a constraint to the JSON schema in this
    /// file (same engine, prompt and seeds; up to the largest -n tokens).
    #[arg(long, value_name = "FILE")]
    json_schema: Option<PathBuf>,
    /// With `--draft ngram`: also decode copying prompts (greedy, chat template) without and
    /// with the drafter: identical output?, decode tok/s of each, drafted/accepted/rounds.
    #[command(flatten)]
    draft: DraftArgs,
    /// Speculative decoding's verify cost instead of the usual tests: one pass over 1 + k
    /// tokens ÷ one decode step, for k = 1..=K, at the first -d depth. With `--draft-model`:
    /// also the MTP assistant's cost per drafted token and the decode speed-ups these costs
    /// give at acceptance rates 0.5 to 0.8.
    #[arg(long, value_name = "K")]
    verify_cost: Option<usize>,
}

fn parse_list(what: &str, text: &str) -> Result<Vec<usize>> {
    text.split(',')
        .map(|t| {
            t.trim().parse().map_err(|_| {
                GemmaError::InvalidArgument(format!("{what}: `{t}` is not a whole number"))
            })
        })
        .collect()
}

pub fn execute(args: BenchArgs) -> Result<()> {
    let (kv_type_k, kv_type_v) = args.kv.types()?;
    let options = BenchOptions {
        model: args.model,
        n_prompt: parse_list("-p", &args.n_prompt)?,
        n_gen: parse_list("-n", &args.n_gen)?,
        depths: parse_list("-d", &args.depth)?,
        threads: args.threads,
        cpu_cores: args.cpu_cores.parse()?,
        repetitions: args.repetitions,
        backend: backend_choice(&args.backend)?,
        kv_type_k,
        kv_type_v,
        cold_load: !args.no_cold,
        cpu_activations: args.activations.activations(),
    };
    let json = args.json;
    if let Some(kmax) = args.verify_cost {
        let ks: Vec<usize> = (1..=kmax.max(1)).collect();
        if !json {
            println!("| k | decode step ms | verify 1+k ms | ratio |");
            println!("|---:|---:|---:|---:|");
        }
        let costs = run_verify_cost(&options, &ks, &mut |c| {
            if json {
                println!("{}", c.to_json());
            } else {
                println!(
                    "| {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} |",
                    c.k,
                    c.decode_ms.median,
                    c.decode_ms.stddev,
                    c.verify_ms.median,
                    c.verify_ms.stddev,
                    c.ratio()
                );
            }
        })?;
        if let Draft::Mtp(path) = args.draft.draft()? {
            let a = run_assistant_cost(&options, &path)?;
            let speedups = |acceptance: f64| -> Vec<f64> {
                costs
                    .iter()
                    .map(|c| speculative_speedup(acceptance, c.k, a.ratio(), c.ratio()))
                    .collect()
            };
            if json {
                println!("{}", a.to_json());
                for acceptance in [0.5, 0.6, 0.7, 0.8] {
                    println!(
                        "{}",
                        serde_json::json!({
                            "test": "mtp_speedup",
                            "acceptance": acceptance,
                            "k": ks,
                            "speedup": speedups(acceptance),
                        })
                    );
                }
            } else {
                println!();
                println!(
                    "MTP assistant step: {:.3} ± {:.3} ms = {:.3} decode steps ({:.2} ms) per drafted token",
                    a.draft_step_ms.median,
                    a.draft_step_ms.stddev,
                    a.ratio(),
                    a.decode_ms.median
                );
                println!();
                let head: String = ks.iter().map(|k| format!(" k={k} |")).collect();
                println!("| acceptance |{head} best |");
                println!("|---:|{}---:|", "---:|".repeat(ks.len()));
                for acceptance in [0.5, 0.6, 0.7, 0.8] {
                    let s = speedups(acceptance);
                    let best = s.iter().copied().fold(0.0f64, f64::max);
                    let row: String = s.iter().map(|x| format!(" {x:.2}× |")).collect();
                    let tok_s = 1e3 / a.decode_ms.median.max(1e-9) * best;
                    println!("| {acceptance:.1} |{row} {best:.2}× ({tok_s:.1} tok/s) |");
                }
            }
        }
        return Ok(());
    }
    let draft = args.draft.draft()?;
    if draft != Draft::None {
        for d in run_draft_bench(&options, draft, &COPYING_PROMPTS)? {
            if json {
                println!("{}", d.to_json());
            } else {
                println!(
                    "draft: {:.2} tok/s vs {:.2} plain (x{:.2}), identical output: {}, \
                     {} tokens, {} drafted, {} accepted, {} rounds  [{}…]",
                    d.draft_decode_tok_s.median,
                    d.plain_decode_tok_s.median,
                    d.speedup(),
                    d.identical,
                    d.generated_tokens,
                    d.drafted,
                    d.accepted,
                    d.rounds,
                    d.prompt.chars().take(40).collect::<String>()
                );
            }
        }
        return Ok(());
    }
    let schema = match &args.json_schema {
        Some(path) => Some(Constraint::json_schema_text(
            &std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?,
        )?),
        None => None,
    };
    let results = run_bench(&options, &mut |r| {
        if json {
            println!("{}", r.to_json());
        }
    })?;
    if !json {
        print!("{}", format_table(&results));
        if let Some(r) = results.first() {
            println!(
                "\nbackend: {} ({}; {})",
                r.backend, r.device, r.backend_reason
            );
        }
    }
    if let Some(constraint) = schema {
        let c = run_constrained_bench(&options, constraint)?;
        if json {
            println!("{}", c.to_json());
        } else {
            println!(
                "\nconstrained decode (JSON schema): {:.2} tok/s vs {:.2} free ({:+.1}%); \
                 first constrained request +{:.0} ms (vocabulary prepared once)",
                c.constrained_decode_tok_s.median,
                c.free_decode_tok_s.median,
                100.0
                    * (c.constrained_decode_tok_s.median / c.free_decode_tok_s.median.max(1e-9)
                        - 1.0),
                c.prepare_ms
            );
        }
    }
    Ok(())
}

/// A markdown table in the spirit of llama-bench's.
fn format_table(results: &[BenchResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| model | size | backend | threads | test | prefill t/s | decode t/s | ttft ms | load ms (warm / cold) | peak RSS |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---|---:|---:|---:|---:|---:|");
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    for r in results {
        let name = Path::new(&r.model)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.model.clone());
        let sp = |x: &Spread| format!("{:.2} ± {:.2}", x.median, x.stddev);
        let _ = writeln!(
            s,
            "| {name} | {:.2} GiB | {} | {} | pp{} tg{} @ d{} | {} | {} | {:.1} | {:.0} / {} | {} |",
            gib(r.model_bytes),
            r.backend,
            r.threads,
            r.n_prompt,
            r.n_gen,
            r.depth,
            sp(&r.prefill_tok_s),
            sp(&r.decode_tok_s),
            r.ttft_ms.median,
            r.load_ms,
            r.load_cold_ms
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "n/a".into()),
            r.peak_rss_bytes
                .map(|b| format!("{:.2} GiB", gib(b)))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    let gpu_rows: Vec<_> = results
        .iter()
        .filter_map(|r| Some((r, r.gpu.as_ref()?)))
        .collect();
    if !gpu_rows.is_empty() {
        let _ = writeln!(
            s,
            "\n| test | dispatches/token | bytes up/token | bytes down/token | GPU resident | pipeline compile ms |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for (r, g) in gpu_rows {
            let _ = writeln!(
                s,
                "| tg{} @ d{} | {:.1} | {:.0} | {:.0} | {:.1} MiB | {:.0} |",
                r.n_gen,
                r.depth,
                g.dispatches_per_token,
                g.bytes_uploaded_per_token,
                g.bytes_read_back_per_token,
                g.resident_bytes as f64 / (1u64 << 20) as f64,
                g.pipeline_compile_ms,
            );
        }
    }
    s
}
