//! Scoring a token sequence: the logits of every position, for parity checks from outside the
//! test suite (`gemmakit eval`), and perplexity with a KV type and activation numerics against
//! an f32 cache with exact activations (`gemmakit perplexity`).

use std::path::Path;

use crate::device::Activations;
use crate::engine::media::MediaEncoder;
use crate::error::{GemmaError, Result};
use crate::kernels::kv::KvTypes;
use crate::media::Media;
use crate::media::layout::{self, PlaceholderIds, SegmentCounts};
use crate::model::audio::AttentionWindow;
use crate::model::kv_cache::{KvCache, ROLLBACK_SLACK};
use crate::model::{GemmaModel, LogitsFor, SoftTokens};
use crate::source::ModelSource;

/// Logits `[tokens.len(), vocab]` of every position, in one uncached pass.
pub fn all_logits(model: &GemmaModel, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(&mut cache, tokens, LogitsFor::All)
}

/// The media placeholder ids of the model at `path` ([`ModelSource::placeholder_ids`]).
pub fn placeholder_ids(path: &Path) -> Result<PlaceholderIds> {
    required_placeholder_ids(&ModelSource::open(path)?)
}

fn required_placeholder_ids(source: &ModelSource) -> Result<PlaceholderIds> {
    source.placeholder_ids(None)?.ok_or_else(|| {
        GemmaError::Unsupported("the model has no multimodal placeholder tokens".into())
    })
}

/// Logits of every position of `tokens`, whose placeholder runs are filled with the soft
/// tokens of `media` in order (images and video frames through the vision tower, audio
/// through the audio tower of `source`, the model's file). The runs must hold exactly the
/// media's soft tokens.
pub fn all_logits_with_media(
    model: &GemmaModel,
    source: &ModelSource,
    mmproj: Option<&Path>,
    window: AttentionWindow,
    tokens: &[u32],
    media: &[Media],
) -> Result<Vec<f32>> {
    if media.is_empty() {
        return all_logits(model, tokens);
    }
    let placeholders = required_placeholder_ids(source)?;
    let encoder = MediaEncoder::for_source(source, mmproj, model.device().clone(), window)?;
    let counts: Vec<SegmentCounts> = media
        .iter()
        .map(|m| encoder.segment_counts(m))
        .collect::<Result<_>>()?;
    layout::check_placeholders(tokens, &placeholders, media, &counts)?;
    let slots = layout::assign_slots(tokens, &placeholders, media, &counts);
    let (positions, values) = encoder.soft_tokens(media, &slots, 0, model.config().hidden_size)?;
    let mut cache = model.new_cache(tokens.len());
    model.forward_with_soft_tokens(
        &mut cache,
        tokens,
        SoftTokens {
            positions: &positions,
            values: &values,
        },
        LogitsFor::All,
    )
}

/// What [`perplexity`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    pub kv_types: KvTypes,
    /// The scored model's activation numerics (the reference's are exact).
    pub activations: Activations,
    /// Positions per forward call in the scored halves ([`Numerics::step`]).
    pub step: usize,
    pub ctx: usize,
    pub chunks: usize,
    /// Tokens scored (the second half of every chunk).
    pub tokens: usize,
    /// exp(mean negative log-likelihood) with `kv_types`.
    pub perplexity: f64,
    /// The same with an f32 cache and exact activations (the reference).
    pub perplexity_f32: f64,
    /// Mean KL(p_ref ‖ p) over the scored positions, in nats.
    pub kl_vs_f32: f64,
    /// Share of the scored positions whose most likely next token is the reference's.
    pub top1_vs_f32: f64,
}

/// Positions run per forward call: bounds the logits held at once to `[64, vocab]`.
pub const PIECE: usize = 64;

/// The numerics a perplexity run compares with its reference.
#[derive(Clone, Copy)]
pub struct Numerics<'a> {
    /// Exact activations: runs the reference (f32 cache).
    pub reference: &'a GemmaModel,
    /// The model scored with each KV type: `reference` itself, or the same weights loaded with
    /// other activation numerics.
    pub scored: &'a GemmaModel,
    /// Positions per forward call in the scored half of a chunk, reference and scored alike:
    /// [`PIECE`] runs them as prefill, 1 through the decode path as generation does (where
    /// the decode activations apply).
    pub step: usize,
}

impl<'a> Numerics<'a> {
    /// One model, scored as prefill pieces.
    pub fn single(model: &'a GemmaModel) -> Self {
        Numerics {
            reference: model,
            scored: model,
            step: PIECE,
        }
    }
}

/// Perplexity of `tokens` (BOS first) as llama.cpp's `llama-perplexity` computes it:
/// non-overlapping chunks of `ctx` tokens, each run from an empty cache with its first token
/// replaced by `bos`, scoring only the second half of each chunk (every position there has at
/// least `ctx/2` tokens of context). The same chunks also run with an f32 cache, giving the KL
/// divergence and top-1 agreement of `kv_types` against f32.
pub fn perplexity(
    model: &GemmaModel,
    tokens: &[u32],
    bos: u32,
    ctx: usize,
    kv_types: KvTypes,
) -> Result<PerplexityReport> {
    perplexities(Numerics::single(model), tokens, bos, ctx, &[kv_types])?
        .pop()
        .ok_or_else(|| GemmaError::InvalidArgument("no KV type given".into()))
}

/// [`perplexity`] for several KV types at once (the reference pass runs once per chunk), with
/// `numerics.scored`'s activations against `numerics.reference`'s exact ones.
pub fn perplexities(
    numerics: Numerics<'_>,
    tokens: &[u32],
    bos: u32,
    ctx: usize,
    kv_types: &[KvTypes],
) -> Result<Vec<PerplexityReport>> {
    let chunks = tokens.len() / ctx.max(1);
    if ctx < 4 || chunks == 0 {
        return Err(GemmaError::InvalidArgument(format!(
            "perplexity needs ctx ≥ 4 and at least one chunk of ctx tokens ({} tokens, ctx {ctx})",
            tokens.len()
        )));
    }
    let Numerics {
        reference: model,
        scored: scored_model,
        step,
    } = numerics;
    let step = step.clamp(1, PIECE);
    let vocab = model.config().vocab_size;
    let first = ctx / 2;
    // Per type: Σ nll, Σ KL, top-1 agreements; and Σ nll of f32.
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); kv_types.len()];
    let (mut nll_f32, mut scored) = (0.0f64, 0usize);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        chunk[0] = bos;
        let mut reference = model.new_cache_typed(ctx, ROLLBACK_SLACK, KvTypes::F32)?;
        let mut typed = kv_types
            .iter()
            .map(|&t| scored_model.new_cache_typed(ctx, ROLLBACK_SLACK, t))
            .collect::<Result<Vec<KvCache>>>()?;
        let mut start = 0;
        while start < ctx {
            // Pieces end at `first`, so unscored pieces need only their last row's logits.
            let end = match start < first {
                true => first.min(start + PIECE),
                false => ctx.min(start + step),
            };
            let which = if start < first {
                LogitsFor::Last
            } else {
                LogitsFor::All
            };
            let piece = &chunk[start..end];
            let want = model.forward(&mut reference, piece, which)?;
            let rows: Vec<usize> = (start..end.min(ctx - 1)).filter(|&j| j >= first).collect();
            let mut ref_rows = Vec::with_capacity(rows.len());
            for (r, &j) in rows.iter().enumerate() {
                let p = &want[r * vocab..(r + 1) * vocab];
                let (lse, top) = log_sum_exp(p);
                nll_f32 += lse - p[chunk[j + 1] as usize] as f64;
                ref_rows.push((lse, top));
            }
            scored += rows.len();
            for ((cache, &types), sum) in typed.iter_mut().zip(kv_types).zip(&mut sums) {
                if types == KvTypes::F32 && std::ptr::eq(scored_model, model) {
                    *sum = (
                        sum.0
                            + ref_rows
                                .iter()
                                .zip(&rows)
                                .enumerate()
                                .map(|(r, ((lse, _), &j))| {
                                    lse - want[r * vocab + chunk[j + 1] as usize] as f64
                                })
                                .sum::<f64>(),
                        sum.1,
                        sum.2 + rows.len(),
                    );
                    continue;
                }
                let got = scored_model.forward(cache, piece, which)?;
                for (r, (&j, &(lse_p, top_p))) in rows.iter().zip(&ref_rows).enumerate() {
                    let p = &want[r * vocab..(r + 1) * vocab];
                    let q = &got[r * vocab..(r + 1) * vocab];
                    let (lse_q, top_q) = log_sum_exp(q);
                    sum.0 += lse_q - q[chunk[j + 1] as usize] as f64;
                    sum.1 += p
                        .iter()
                        .zip(q)
                        .map(|(&a, &b)| {
                            let lp = a as f64 - lse_p;
                            lp.exp() * (lp - (b as f64 - lse_q))
                        })
                        .sum::<f64>();
                    sum.2 += usize::from(top_p == top_q);
                }
            }
            start = end;
        }
    }
    let n = scored.max(1) as f64;
    Ok(kv_types
        .iter()
        .zip(sums)
        .map(|(&kv_types, (nll, kl, agree))| PerplexityReport {
            kv_types,
            activations: scored_model.device().activations,
            step,
            ctx,
            chunks,
            tokens: scored,
            perplexity: (nll / n).exp(),
            perplexity_f32: (nll_f32 / n).exp(),
            kl_vs_f32: kl / n,
            top1_vs_f32: agree as f64 / n,
        })
        .collect())
}

/// log Σ e^x (in f64) and the index of the largest `x`.
fn log_sum_exp(x: &[f32]) -> (f64, usize) {
    let (top, max) =
        x.iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |(i, m), (j, &v)| if v > m { (j, v) } else { (i, m) },
        );
    let sum: f64 = x.iter().map(|&v| (v as f64 - max as f64).exp()).sum();
    (max as f64 + sum.ln(), top)
}
