//! Speculative decoding's drafters: cheap guesses of the next few tokens, which the target
//! model then checks in one verify pass ([`crate::model::GemmaModel::verify`]); the decode loop
//! (`generate.rs`) keeps the longest prefix the target's own sampler agrees with.
//!
//! Drafting never changes the output: every token is still drawn by the target's sampler from
//! the target's logits, and a draft is kept only when the draw equals it. For a deterministic
//! draft (probability 1 on the proposed token) that *is* speculative rejection sampling: the
//! draft is accepted with probability p(x), and on rejection the draw is distributed as p with
//! x removed and renormalised.

use std::path::PathBuf;

use crate::error::{GemmaError, Result};
use crate::model::gemma::MAX_VERIFY_TOKENS;

/// Which drafter proposes tokens for speculative decoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Draft {
    /// Plain decoding: one token per pass.
    #[default]
    None,
    /// Prompt lookup (model-free): the longest suffix of the sequence (up to `ngram` tokens,
    /// down to 1) that occurred before proposes the up to `max_tokens` tokens that followed
    /// its most recent earlier occurrence. Pays off when the answer copies its context
    /// (editing, extraction, summaries, code).
    Ngram {
        ngram: usize,
        max_tokens: usize,
        /// Shrink the draft length when drafts are rejected, grow it back when they are taken.
        adaptive: bool,
    },
    /// Gemma 4's multi-token-prediction assistant checkpoint at this path (not supported yet:
    /// a typed error).
    Mtp(PathBuf),
}

impl Draft {
    /// Prompt lookup with the defaults: 3-token n-grams, up to 7 tokens, adaptive.
    pub fn ngram() -> Self {
        Draft::Ngram {
            ngram: 3,
            max_tokens: MAX_DRAFT_TOKENS,
            adaptive: true,
        }
    }
}

/// Longest n-gram the options accept (bounds the search).
pub const MAX_NGRAM: usize = 16;
/// Longest draft: the sampled token and its drafts make one verify pass at decode cost.
pub const MAX_DRAFT_TOKENS: usize = MAX_VERIFY_TOKENS - 1;

/// Proposes the next few tokens of a sequence.
pub(crate) trait Drafter: Send {
    /// Up to `max` tokens likely to follow `history` (every id of the sequence so far).
    fn propose(&mut self, history: &[u32], max: usize) -> Vec<u32>;
}

/// Model-free prompt lookup (transformers' `prompt_lookup_num_tokens`, llama.cpp's
/// `ngram-simple`, searching backwards for the most recent match like the latter).
pub(crate) struct NgramDrafter {
    ngram: usize,
}

impl Drafter for NgramDrafter {
    fn propose(&mut self, history: &[u32], max: usize) -> Vec<u32> {
        let len = history.len();
        for n in (1..=self.ngram.min(len.saturating_sub(1))).rev() {
            let pattern = &history[len - n..];
            // Earlier occurrences, most recent first, with at least one token after them.
            let found = (0..len - n)
                .rev()
                .find(|&start| &history[start..start + n] == pattern);
            if let Some(start) = found {
                let from = start + n;
                return history[from..(from + max).min(len)].to_vec();
            }
        }
        Vec::new()
    }
}

/// How many tokens to draft next: fixed, or adaptive (halved after a round that kept less than
/// half of its draft, one more after a round that kept all of it).
pub(crate) struct DraftLength {
    max: usize,
    current: usize,
    adaptive: bool,
}

impl DraftLength {
    pub(crate) fn get(&self) -> usize {
        self.current
    }

    /// Records a verify round: `drafted` tokens proposed, the first `accepted` kept.
    pub(crate) fn update(&mut self, drafted: usize, accepted: usize) {
        if !self.adaptive || drafted == 0 {
            return;
        }
        if accepted == drafted {
            self.current = (self.current + 1).min(self.max);
        } else if 2 * accepted < drafted {
            self.current = (self.current / 2).max(1);
        }
    }
}

/// The drafter and draft length for `draft`; `None` for plain decoding. Bad parameters and
/// drafters not implemented yet are typed errors (before anything runs).
pub(crate) fn drafter(draft: &Draft) -> Result<Option<(Box<dyn Drafter>, DraftLength)>> {
    match draft {
        Draft::None => Ok(None),
        &Draft::Ngram {
            ngram,
            max_tokens,
            adaptive,
        } => {
            if !(1..=MAX_NGRAM).contains(&ngram) {
                return Err(GemmaError::InvalidArgument(format!(
                    "draft n-gram size {ngram}: expected 1 to {MAX_NGRAM}"
                )));
            }
            if !(1..=MAX_DRAFT_TOKENS).contains(&max_tokens) {
                return Err(GemmaError::InvalidArgument(format!(
                    "draft length {max_tokens}: expected 1 to {MAX_DRAFT_TOKENS}"
                )));
            }
            Ok(Some((
                Box::new(NgramDrafter { ngram }),
                DraftLength {
                    max: max_tokens,
                    current: max_tokens,
                    adaptive,
                },
            )))
        }
        Draft::Mtp(path) => Err(GemmaError::Unsupported(format!(
            "MTP drafter {}: Gemma 4's assistant model is not supported yet (use prompt lookup)",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn propose(ngram: usize, history: &[u32], max: usize) -> Vec<u32> {
        NgramDrafter { ngram }.propose(history, max)
    }

    #[test]
    fn the_most_recent_longest_match_proposes_what_followed_it() {
        // "1 2 3 9 … 1 2 3 7 8 … 2 3": the 2-gram "2 3" last occurred before "7 8".
        let h = [1, 2, 3, 9, 5, 1, 2, 3, 7, 8, 4, 2, 3];
        assert_eq!(propose(3, &h, 2), vec![7, 8]);
        assert_eq!(propose(3, &h, 10), vec![7, 8, 4, 2, 3]);
        // A 3-gram match wins over a more recent 1-gram match.
        let h = [5, 6, 7, 1, 7, 9, 5, 6, 7];
        assert_eq!(propose(3, &h, 2), vec![1, 7]);
        assert_eq!(propose(1, &h, 2), vec![9, 5]);
    }

    #[test]
    fn no_match_proposes_nothing() {
        assert!(propose(3, &[1, 2, 3, 4], 4).is_empty());
        assert!(propose(3, &[1], 4).is_empty());
        assert!(propose(3, &[], 4).is_empty());
    }

    #[test]
    fn adaptive_length_shrinks_and_grows_within_bounds() {
        let mut l = DraftLength {
            max: 4,
            current: 4,
            adaptive: true,
        };
        l.update(4, 1);
        assert_eq!(l.get(), 2);
        l.update(2, 0);
        l.update(1, 0);
        assert_eq!(l.get(), 1);
        l.update(1, 1);
        l.update(2, 2);
        l.update(3, 3);
        l.update(4, 4);
        assert_eq!(l.get(), 4);
        let mut fixed = DraftLength {
            max: 4,
            current: 4,
            adaptive: false,
        };
        fixed.update(4, 0);
        assert_eq!(fixed.get(), 4);
    }

    #[test]
    fn bad_parameters_and_mtp_are_typed_errors() {
        let ngram = |ngram, max_tokens| Draft::Ngram {
            ngram,
            max_tokens,
            adaptive: false,
        };
        assert!(matches!(
            drafter(&ngram(0, 4)),
            Err(GemmaError::InvalidArgument(_))
        ));
        assert!(matches!(
            drafter(&ngram(3, 0)),
            Err(GemmaError::InvalidArgument(_))
        ));
        assert!(matches!(
            drafter(&ngram(3, 99)),
            Err(GemmaError::InvalidArgument(_))
        ));
        assert!(matches!(
            drafter(&Draft::Mtp("a.gguf".into())),
            Err(GemmaError::Unsupported(_))
        ));
        assert!(drafter(&Draft::None).unwrap().is_none());
    }
}
