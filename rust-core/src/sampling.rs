//! Choosing the next token from logits.
//!
//! Order of operations (that of Hugging Face `generate`, in which Gemma's recommended settings
//! are given): logit bias → repetition / presence / frequency penalties over a window of recent
//! tokens → temperature → top-k → top-p → min-p → a draw from the remaining distribution.
//! Temperature 0 is greedy (argmax after bias and penalties). A seed makes draws reproducible
//! (ChaCha8: the same stream on every platform).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{GemmaError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities sum to at least `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely token's probability; 0 = off.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of tokens seen in the window; 1 = off.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token seen in the window.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at; 0 = the whole history.
    pub penalty_window: usize,
    /// Added to the logits of the given tokens before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    /// `None` draws a seed from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingOptions {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Gemma's recommended sampling (generation_config.json): T 1.0, top-k 64, top-p 0.95.
    pub fn gemma_default() -> Self {
        SamplingOptions {
            temperature: 1.0,
            top_k: 64,
            top_p: 0.95,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(GemmaError::InvalidArgument(what.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty must be a finite number > 0");
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence and frequency penalties must be finite");
        }
        if self.logit_bias.iter().any(|(_, b)| b.is_nan()) {
            return bad("logit bias must not be NaN");
        }
        Ok(())
    }
}

pub struct Sampler {
    options: SamplingOptions,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(options: SamplingOptions) -> Result<Self> {
        options.validate()?;
        let rng = match options.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        Ok(Sampler { options, rng })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// Greedy with nothing that adjusts the logits (no bias, no penalty): the pick is
    /// `argmax` of the raw logits, which the model can make where they are
    /// (`GemmaModel::forward_greedy`).
    pub fn is_plain_greedy(&self) -> bool {
        let o = &self.options;
        o.temperature == 0.0
            && o.logit_bias.is_empty()
            && o.repetition_penalty == 1.0
            && o.presence_penalty == 0.0
            && o.frequency_penalty == 0.0
    }

    /// A draw whose candidates are the raw logits' `top_k` largest, with nothing that adjusts
    /// the logits (no bias, no penalty): `Some(top_k)`, and the model may hand over just those
    /// logits (`GemmaModel::forward_top_k`, found on the device) for
    /// [`sample_top`](Self::sample_top).
    pub fn top_k_bound(&self) -> Option<usize> {
        let o = &self.options;
        let unadjusted = o.logit_bias.is_empty()
            && o.repetition_penalty == 1.0
            && o.presence_penalty == 0.0
            && o.frequency_penalty == 0.0;
        (o.temperature > 0.0 && o.top_k > 0 && unadjusted).then_some(o.top_k)
    }

    /// Picks the next token. `history` is every token of the sequence so far (prompt included).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let adjusted = self.adjusted_logits(logits, history);
        if self.options.temperature == 0.0 {
            return argmax(&adjusted);
        }
        let candidates = self.truncated_distribution(&adjusted);
        self.draw(&candidates).unwrap_or_else(|| argmax(&adjusted))
    }

    /// [`sample`](Self::sample) for a sampler with a [`top_k_bound`](Self::top_k_bound), from
    /// the `(token, logit)` pairs of the `top_k` largest logits (any order): the same
    /// distribution and the same draw as from all the logits, since top-k keeps those
    /// alone (up to logits that scaling by the temperature rounds to one value, which the
    /// full path orders by token id).
    pub fn sample_top(&mut self, top: &[(u32, f32)]) -> u32 {
        let candidates = self.truncate(self.scaled(top.iter().copied()));
        let best = top.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        self.draw(&candidates)
            .unwrap_or_else(|| best.map_or(0, |c| c.0))
    }

    /// One draw from a truncated distribution (`None` when it is empty).
    fn draw(&mut self, candidates: &[(u32, f32)]) -> Option<u32> {
        let draw: f32 = self.rng.random::<f32>();
        let mut cumulative = 0.0;
        for &(id, p) in candidates {
            cumulative += p;
            if draw < cumulative {
                return Some(id);
            }
        }
        candidates.last().map(|c| c.0)
    }

    /// Logits after bias and penalties.
    pub fn adjusted_logits(&self, logits: &[f32], history: &[u32]) -> Vec<f32> {
        let o = &self.options;
        let mut out = logits.to_vec();
        for &(id, bias) in &o.logit_bias {
            if let Some(l) = out.get_mut(id as usize) {
                *l += bias;
            }
        }
        let penalised =
            o.repetition_penalty != 1.0 || o.presence_penalty != 0.0 || o.frequency_penalty != 0.0;
        if penalised {
            let window = if o.penalty_window == 0 {
                history
            } else {
                &history[history.len().saturating_sub(o.penalty_window)..]
            };
            let mut counts: Vec<(u32, u32)> = Vec::new();
            for &id in window {
                match counts.iter_mut().find(|(t, _)| *t == id) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((id, 1)),
                }
            }
            for (id, n) in counts {
                if let Some(l) = out.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / o.repetition_penalty
                    } else {
                        *l * o.repetition_penalty
                    };
                    *l -= o.presence_penalty + o.frequency_penalty * n as f32;
                }
            }
        }
        out
    }

    /// The distribution a draw is made from: `(token, probability)`, most likely first,
    /// probabilities summing to 1. Exposed so the truncation rules can be checked directly.
    pub fn truncated_distribution(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        let candidates = logits.iter().enumerate().map(|(i, &l)| (i as u32, l));
        self.truncate(self.scaled(candidates))
    }

    /// The finite logits of `candidates`, divided by the temperature.
    fn scaled(&self, candidates: impl Iterator<Item = (u32, f32)>) -> Vec<(u32, f32)> {
        let inv_t = 1.0 / self.options.temperature.max(f32::MIN_POSITIVE);
        candidates
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i, l * inv_t))
            .collect()
    }

    /// Top-k, softmax, top-p and min-p over scaled candidates.
    fn truncate(&self, mut candidates: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
        let o = &self.options;
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if o.top_k > 0 && o.top_k < candidates.len() {
            candidates.select_nth_unstable_by(o.top_k - 1, by_logit);
            candidates.truncate(o.top_k);
        }
        candidates.sort_unstable_by(by_logit);
        softmax_in_place(&mut candidates);
        if o.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = candidates.len();
            for (i, &(_, p)) in candidates.iter().enumerate() {
                cumulative += p;
                if cumulative >= o.top_p {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep.max(1));
            renormalise(&mut candidates);
        }
        if o.min_p > 0.0
            && let Some(&(_, p_max)) = candidates.first()
        {
            let threshold = o.min_p * p_max;
            candidates.retain(|&(_, p)| p >= threshold);
            renormalise(&mut candidates);
        }
        candidates
    }
}

pub use crate::kernels::cpu::activation::argmax;

fn softmax_in_place(candidates: &mut [(u32, f32)]) {
    let max = candidates
        .iter()
        .map(|c| c.1)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for c in candidates.iter_mut() {
        c.1 = (c.1 - max).exp();
        sum += c.1 as f64;
    }
    for c in candidates.iter_mut() {
        c.1 = (c.1 as f64 / sum) as f32;
    }
}

fn renormalise(candidates: &mut [(u32, f32)]) {
    let sum: f64 = candidates.iter().map(|c| c.1 as f64).sum();
    for c in candidates.iter_mut() {
        c.1 = (c.1 as f64 / sum) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits whose softmax (at T = 1) is exactly `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn sampler(options: SamplingOptions) -> Sampler {
        Sampler::new(SamplingOptions {
            seed: Some(7),
            ..options
        })
        .unwrap()
    }

    fn sampled(options: SamplingOptions) -> SamplingOptions {
        SamplingOptions {
            temperature: 1.0,
            ..options
        }
    }

    #[test]
    fn greedy_takes_the_argmax_after_bias() {
        let mut s = sampler(SamplingOptions {
            logit_bias: vec![(2, 10.0)],
            ..SamplingOptions::greedy()
        });
        assert_eq!(s.sample(&[1.0, 5.0, 0.0], &[]), 2);
    }

    #[test]
    fn top_k_keeps_the_k_most_likely() {
        let s = sampler(sampled(SamplingOptions {
            top_k: 2,
            ..Default::default()
        }));
        let d = s.truncated_distribution(&logits_of(&[0.1, 0.4, 0.2, 0.3]));
        let ids: Vec<u32> = d.iter().map(|c| c.0).collect();
        assert_eq!(ids, [1, 3]);
        // Renormalised: 0.4 / 0.7 and 0.3 / 0.7.
        assert!((d[0].1 - 4.0 / 7.0).abs() < 1e-6 && (d[1].1 - 3.0 / 7.0).abs() < 1e-6);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let probs = [0.05, 0.5, 0.15, 0.3];
        let s = sampler(sampled(SamplingOptions {
            top_p: 0.75,
            ..Default::default()
        }));
        let ids: Vec<u32> = s
            .truncated_distribution(&logits_of(&probs))
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, [1, 3], "0.5 + 0.3 reaches 0.75");
        let s = sampler(sampled(SamplingOptions {
            top_p: 0.81,
            ..Default::default()
        }));
        let ids: Vec<u32> = s
            .truncated_distribution(&logits_of(&probs))
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, [1, 3, 2]);
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        let s = sampler(sampled(SamplingOptions {
            min_p: 0.25,
            ..Default::default()
        }));
        // Best is 0.4: threshold 0.1 keeps 0.4, 0.3, 0.2 and drops 0.1 - ε and 0.05.
        let d = s.truncated_distribution(&logits_of(&[0.3, 0.0999, 0.4, 0.2, 0.0501]));
        let ids: Vec<u32> = d.iter().map(|c| c.0).collect();
        assert_eq!(ids, [2, 0, 3]);
    }

    #[test]
    fn a_draw_from_the_top_k_logits_alone_is_the_draw_from_all_of_them() {
        // Gemma's settings (top-k 64, top-p 0.95) and harsher ones, over 2000 logits with
        // ties and non-finite values: the same seed draws the same tokens from the 64 (or k)
        // largest logits, in any order, as from all of them.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut logits: Vec<f32> = (0..2000).map(|_| rng.random_range(-3.0f32..6.0)).collect();
        logits[5] = f32::NAN;
        logits[6] = f32::NEG_INFINITY;
        for i in 0..20 {
            logits[300 + i * 37] = 5.5;
        }
        for options in [
            SamplingOptions {
                seed: Some(11),
                ..SamplingOptions::gemma_default()
            },
            SamplingOptions {
                temperature: 0.7,
                top_k: 5,
                top_p: 0.5,
                min_p: 0.1,
                seed: Some(12),
                ..Default::default()
            },
        ] {
            let k = sampler(options.clone())
                .top_k_bound()
                .expect("a top-k draw");
            let mut top = crate::kernels::cpu::activation::top_k(&logits, k);
            top.reverse();
            let (mut all, mut from_top) = (sampler(options.clone()), sampler(options));
            let want: Vec<u32> = (0..200).map(|_| all.sample(&logits, &[])).collect();
            let got: Vec<u32> = (0..200).map(|_| from_top.sample_top(&top)).collect();
            assert_eq!(got, want);
            assert!(want.iter().collect::<std::collections::HashSet<_>>().len() > 1);
        }
        // Greedy, a bias or a penalty: the draw needs every logit.
        for options in [
            SamplingOptions::greedy(),
            SamplingOptions {
                logit_bias: vec![(1, 0.0)],
                ..SamplingOptions::gemma_default()
            },
            SamplingOptions {
                repetition_penalty: 1.1,
                ..SamplingOptions::gemma_default()
            },
        ] {
            assert_eq!(sampler(options).top_k_bound(), None);
        }
    }

    #[test]
    fn temperature_sharpens_the_distribution() {
        let s = sampler(SamplingOptions {
            temperature: 0.5,
            ..Default::default()
        });
        let d = s.truncated_distribution(&logits_of(&[0.25, 0.75]));
        // p ∝ p^(1/T) = p²: 0.5625 / 0.625 = 0.9.
        assert!((d[0].1 - 0.9).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn draws_follow_the_distribution_and_respect_top_k() {
        let mut s = sampler(sampled(SamplingOptions {
            top_k: 3,
            ..Default::default()
        }));
        let logits = logits_of(&[0.1, 0.2, 0.3, 0.4]);
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[s.sample(&logits, &[]) as usize] += 1;
        }
        assert_eq!(counts[0], 0, "token outside top-k was drawn");
        for (id, expected) in [(1usize, 2.0 / 9.0), (2, 3.0 / 9.0), (3, 4.0 / 9.0)] {
            let freq = counts[id] as f64 / 20_000.0;
            assert!(
                (freq - expected).abs() < 0.02,
                "token {id}: {freq} vs {expected}"
            );
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingOptions {
                seed: Some(seed),
                ..SamplingOptions::gemma_default()
            })
            .unwrap();
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn penalties_apply_within_the_window_only() {
        let s = sampler(SamplingOptions {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            penalty_window: 3,
            ..Default::default()
        });
        // History: token 0 long ago (outside the window), then 1, 1, 2.
        let out = s.adjusted_logits(&[4.0, 4.0, -4.0, 4.0], &[0, 1, 1, 2]);
        assert_eq!(out[0], 4.0);
        assert_eq!(out[1], 4.0 / 2.0 - 0.5 - 0.25 * 2.0);
        assert_eq!(out[2], -4.0 * 2.0 - 0.5 - 0.25);
        assert_eq!(out[3], 4.0);
    }

    #[test]
    fn invalid_options_are_rejected() {
        for bad in [
            SamplingOptions {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingOptions {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingOptions {
                min_p: 1.5,
                ..Default::default()
            },
            SamplingOptions {
                repetition_penalty: 0.0,
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(bad).is_err());
        }
    }
}
