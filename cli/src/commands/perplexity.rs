//! `gemmakit perplexity`: llama-perplexity's chunked perplexity of a text file, with the KL
//! divergence and top-1 agreement of the KV type and the activation numerics against an f32
//! cache with exact activations.

use std::path::PathBuf;

use clap::Args;
use gemmakit::ComputeDevice;
use gemmakit::engine::{KvType, KvTypes, default_kv_type};
use gemmakit::eval::{Numerics, PIECE, PerplexityReport, perplexities};
use gemmakit::kernels::cpu::{ActivationPrecision, Activations, int8};
use gemmakit::source::ModelSource;
use gemmakit::{BackendKind, GemmaError, Result};

use crate::args::{ActivationArgs, KvTypeArgs};

#[derive(Args)]
pub struct PerplexityArgs {
    #[arg(long)]
    model: PathBuf,
    /// The text to score (UTF-8).
    #[arg(long)]
    file: PathBuf,
    /// Tokens per chunk (llama-perplexity's -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    #[command(flatten)]
    kv: KvTypeArgs,
    /// Several K/V type pairs scored in one run (the f32 pass runs once), e.g.
    /// `f16/f16,q8_0/q8_0,tq4/tq3`; replaces --kv-type*.
    #[arg(long)]
    compare: Option<String>,
    /// The scored numerics' CPU activations; the reference stays exact. With
    /// `--decode-activations int8` the scored halves run one token per step (the decode path).
    #[command(flatten)]
    activations: ActivationArgs,
    /// Run the scored halves one token per step (the decode path, as generation does) instead
    /// of 64-token prefill pieces, for the reference and the scored numerics alike.
    #[arg(long)]
    token_by_token: bool,
    /// One JSON object (one per pair with --compare, a line each) instead of text.
    #[arg(long)]
    json: bool,
}

/// `K/V,K/V,…` → type pairs.
fn parse_pairs(list: &str) -> Result<Vec<KvTypes>> {
    list.split(',')
        .map(|pair| {
            let (k, v) = pair.trim().split_once('/').ok_or_else(|| {
                GemmaError::InvalidArgument(format!("--compare: `{pair}` is not K/V"))
            })?;
            Ok(KvTypes {
                k: k.parse::<KvType>()?,
                v: v.parse::<KvType>()?,
            })
        })
        .collect()
}

pub fn execute(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).map_err(|e| GemmaError::io(&args.file, e))?;
    let source = ModelSource::open(&args.model)?;
    let tokenizer = source.tokenizer()?;
    let bos = tokenizer
        .bos_id
        .ok_or_else(|| GemmaError::Unsupported("the vocabulary has no BOS token".into()))?;
    let mut tokens = vec![bos];
    tokens.extend(tokenizer.encode(&text, false)?);
    let device = ComputeDevice::open(args.backend)?;
    let requested = args.activations.activations();
    let activations = match args.backend {
        BackendKind::Cpu => int8::effective(requested),
        BackendKind::Gpu => Activations::EXACT,
    };
    let model = source.load_model(device.clone())?;
    let other = (activations != Activations::EXACT)
        .then(|| {
            source.load_model(ComputeDevice {
                activations,
                ..device
            })
        })
        .transpose()?;
    let numerics = Numerics {
        reference: &model,
        scored: other.as_ref().unwrap_or(&model),
        step: match args.token_by_token || requested.decode == ActivationPrecision::Int8 {
            true => 1,
            false => PIECE,
        },
    };
    let pairs = match &args.compare {
        Some(list) => parse_pairs(list)?,
        None => {
            let (k, v) = args.kv.types()?;
            let default = default_kv_type(args.backend);
            vec![KvTypes {
                k: k.unwrap_or(default),
                v: v.unwrap_or(default),
            }]
        }
    };
    for r in perplexities(numerics, &tokens, bos, args.ctx, &pairs)? {
        print_report(&args, &r);
    }
    Ok(())
}

fn print_report(args: &PerplexityArgs, r: &PerplexityReport) {
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model.display().to_string(),
                "file": args.file.display().to_string(),
                "kv_type_k": r.kv_types.k.name(),
                "kv_type_v": r.kv_types.v.name(),
                "prefill_activations": r.activations.prefill.to_string(),
                "decode_activations": r.activations.decode.to_string(),
                "positions_per_step": r.step,
                "ctx": r.ctx,
                "chunks": r.chunks,
                "tokens": r.tokens,
                "perplexity": r.perplexity,
                "perplexity_f32": r.perplexity_f32,
                "kl_vs_f32": r.kl_vs_f32,
                "top1_vs_f32": r.top1_vs_f32,
            })
        );
    } else {
        println!(
            "KV {}/{}, activations prefill {} decode {}: {} chunks of {} tokens, {} scored \
             ({} per step)\n\
             perplexity {:.4} (f32 cache, exact activations: {:.4}, {:+.3} %)\n\
             KL vs that {:.6} nats, top-1 agreement {:.2} %",
            r.kv_types.k,
            r.kv_types.v,
            r.activations.prefill,
            r.activations.decode,
            r.chunks,
            r.ctx,
            r.tokens,
            r.step,
            r.perplexity,
            r.perplexity_f32,
            100.0 * (r.perplexity / r.perplexity_f32 - 1.0),
            r.kl_vs_f32,
            100.0 * r.top1_vs_f32
        );
    }
}
