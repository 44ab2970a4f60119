//! Speculative decoding's drafters: cheap guesses of the next few tokens, which the target
//! model then checks in one verify pass ([`crate::model::GemmaModel::verify`]); the decode loop
//! (`generate.rs`) keeps the longest prefix the target's own sampler agrees with.
//!
//! Drafting never changes the output: every token is still drawn by the target's sampler from
//! the target's logits, and a draft is kept only when the draw equals it. For a deterministic
//! draft (probability 1 on the proposed token) that *is* speculative rejection sampling: the
//! draft is accepted with probability p(x), and on rejection the draw is distributed as p with
//! x removed and renormalised.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{GemmaError, Result};
use crate::model::gemma::MAX_VERIFY_TOKENS;
use crate::model::{AssistantModel, GemmaModel, KvCache};

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
    /// Gemma 4's multi-token-prediction assistant made for the model (`gemma-4-E2B-it-assistant`
    /// for E2B, …): a checkpoint directory or a `gemma4-assistant` GGUF at this path. It drafts
    /// greedily from the model's last hidden state and KV cache, up to
    /// [`MAX_DRAFT_TOKENS`] tokens a round, adaptively. An assistant of another model is a
    /// [`GemmaError::DraftModelMismatch`].
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

/// What a drafter may look at.
pub(crate) struct DraftInput<'a> {
    /// Every id of the sequence so far; the last one is not in `cache` yet.
    pub history: &'a [u32],
    /// The target's hidden state (final norm output) of the row whose logits gave the last
    /// token, when the loop has it (only for drafters that ask, and only when that token was
    /// sampled alone, not followed by forced tokens).
    pub hidden: Option<&'a [f32]>,
    pub target: &'a GemmaModel,
    /// The target's cache: the positions before the last sampled step (with `hidden` given,
    /// every position of `history` but the last).
    pub cache: &'a KvCache,
}

/// The MTP drafter's first draft length (then adaptive): vLLM's recipe recommends 2 to 4 for
/// E2B / E4B (shared/spec/gemma4-mtp.md §2).
pub const MTP_DRAFT_TOKENS: usize = 3;

/// Proposes the next few tokens of a sequence.
pub(crate) trait Drafter: Send {
    /// Whether the loop must keep the target's hidden states for [`DraftInput::hidden`].
    fn needs_hidden(&self) -> bool {
        false
    }

    /// Up to `max` tokens likely to follow `input.history`.
    fn propose(&mut self, input: &DraftInput<'_>, max: usize) -> Result<Vec<u32>>;
}

/// Gemma 4's MTP assistant: greedy drafts from the target's hidden state and cache.
pub(crate) struct MtpDrafter {
    assistant: Arc<AssistantModel>,
}

impl Drafter for MtpDrafter {
    fn needs_hidden(&self) -> bool {
        true
    }

    fn propose(&mut self, input: &DraftInput<'_>, max: usize) -> Result<Vec<u32>> {
        let (Some(hidden), Some((&token, before))) = (input.hidden, input.history.split_last())
        else {
            return Ok(Vec::new());
        };
        self.assistant
            .draft(input.target, input.cache, token, hidden, before.len(), max)
    }
}

/// Model-free prompt lookup (transformers' `prompt_lookup_num_tokens`, llama.cpp's
/// `ngram-simple`, searching backwards for the most recent match like the latter).
pub(crate) struct NgramDrafter {
    ngram: usize,
}

impl Drafter for NgramDrafter {
    fn propose(&mut self, input: &DraftInput<'_>, max: usize) -> Result<Vec<u32>> {
        Ok(self.lookup(input.history, max))
    }
}

impl NgramDrafter {
    /// Up to `max` tokens that followed the most recent earlier occurrence of the longest
    /// suffix of `history` (up to `ngram` tokens).
    fn lookup(&self, history: &[u32], max: usize) -> Vec<u32> {
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
/// an assistant that `assistant` cannot load are typed errors (before anything runs).
pub(crate) fn drafter(
    draft: &Draft,
    assistant: &dyn Fn(&Path) -> Result<Arc<AssistantModel>>,
) -> Result<Option<(Box<dyn Drafter>, DraftLength)>> {
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
        Draft::Mtp(path) => Ok(Some((
            Box::new(MtpDrafter {
                assistant: assistant(path)?,
            }),
            DraftLength {
                max: MAX_DRAFT_TOKENS,
                current: MTP_DRAFT_TOKENS,
                adaptive: true,
            },
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn propose(ngram: usize, history: &[u32], max: usize) -> Vec<u32> {
        NgramDrafter { ngram }.lookup(history, max)
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
    fn bad_parameters_and_a_missing_assistant_are_typed_errors() {
        let drafter = |draft: &Draft| {
            drafter(draft, &|path: &Path| {
                Err(GemmaError::io(
                    path,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ))
            })
        };
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
            Err(GemmaError::Io { .. })
        ));
        assert!(drafter(&Draft::None).unwrap().is_none());
    }
}
