//! Speculative decoding's bookkeeping within one generation (`generate.rs`'s decode loop):
//! which drafts of the last verify pass are still pending, their logits (and hidden states),
//! the drafter's proposals and the counters the stats report.

use std::collections::VecDeque;

use super::draft::{DraftInput, DraftLength, Drafter};
use crate::error::{GemmaError, Result};
use crate::model::gemma::MAX_VERIFY_TOKENS;
use crate::model::{GemmaModel, KvCache};

/// Speculative decoding's state in one generation: the drafter, the drafts of the last verify
/// pass not yet sampled (each with the logits of the position after it), and the counters.
pub(super) struct Speculation {
    drafter: Option<(Box<dyn Drafter>, DraftLength)>,
    /// Per pending draft: the token, the logits after it and (for drafters that ask) the
    /// target's hidden state of that row.
    pending: VecDeque<(u32, Vec<f32>, Option<Vec<f32>>)>,
    /// Tokens drafted in the current round.
    round: usize,
    pub(super) drafted: usize,
    pub(super) accepted: usize,
    pub(super) rounds: usize,
}

impl Speculation {
    pub(super) fn new(drafter: Option<(Box<dyn Drafter>, DraftLength)>) -> Self {
        Speculation {
            drafter,
            pending: VecDeque::new(),
            round: 0,
            drafted: 0,
            accepted: 0,
            rounds: 0,
        }
    }

    /// Whether a drafter proposes tokens (verify passes need every row's logits).
    pub(super) fn is_active(&self) -> bool {
        self.drafter.is_some()
    }

    /// Whether the drafter needs the target's hidden states.
    pub(super) fn needs_hidden(&self) -> bool {
        self.drafter.as_ref().is_some_and(|(d, _)| d.needs_hidden())
    }

    /// The logits (and hidden state) after the next pending draft, if `step` (what the loop
    /// sampled, with any forced tokens) is exactly that draft.
    pub(super) fn take_accepted(&mut self, step: &[u32]) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
        match (step, self.pending.front()) {
            ([id], Some((draft, ..))) if id == draft => {
                self.accepted += 1;
                self.pending
                    .pop_front()
                    .map(|(_, row, hidden)| (row, hidden))
            }
            _ => None,
        }
    }

    /// Ends the current round: the drafts not taken leave the cache (back to `len` positions),
    /// and the draft length learns how the round went.
    pub(super) fn end_round(&mut self, cache: &mut KvCache, len: usize) -> Result<()> {
        if self.round == 0 {
            return Ok(());
        }
        let kept = self.round - self.pending.len();
        if let Some((_, length)) = &mut self.drafter {
            length.update(self.round, kept);
        }
        self.round = 0;
        self.pending.clear();
        if !cache.truncate(len) {
            // Unreachable: drafts are far shorter than the sliding rings' rollback slack.
            return Err(GemmaError::Unsupported(
                "the KV cache cannot roll back the rejected drafts".into(),
            ));
        }
        Ok(())
    }

    /// Up to `room` draft tokens to follow `context` + `step`; `hidden`: the target's hidden
    /// state of the row that gave `step`, `cache` holding `context`.
    pub(super) fn propose(
        &mut self,
        context: &[u32],
        step: &[u32],
        room: usize,
        hidden: Option<&[f32]>,
        target: &GemmaModel,
        cache: &KvCache,
    ) -> Result<Vec<u32>> {
        let Some((drafter, length)) = &mut self.drafter else {
            return Ok(Vec::new());
        };
        let max = length
            .get()
            .min(room)
            .min(MAX_VERIFY_TOKENS.saturating_sub(step.len()));
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut history = Vec::with_capacity(context.len() + step.len());
        history.extend_from_slice(context);
        history.extend_from_slice(step);
        let input = DraftInput {
            history: &history,
            // The hidden state belongs to the row that gave step[0]; after forced tokens it
            // is not the last token's.
            hidden: hidden.filter(|_| step.len() == 1),
            target,
            cache,
        };
        drafter.propose(&input, max)
    }

    /// Starts a round from the verify pass's `rows` (and `hidden` rows, when kept) over
    /// `step` + `drafts`: returns the logits (and hidden state) after `step` and keeps one row
    /// per draft.
    pub(super) fn start_round(
        &mut self,
        rows: &[f32],
        hidden: Option<&[f32]>,
        step: usize,
        drafts: Vec<u32>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let n = step + drafts.len();
        if step == 0 || rows.len() % n != 0 || hidden.is_some_and(|h| h.len() % n != 0) {
            return Err(GemmaError::InvalidArgument(
                "verify pass returned the wrong number of rows".into(),
            ));
        }
        let vocab = rows.len() / n;
        let mut rows = rows.chunks_exact(vocab).skip(step - 1);
        let next = rows.next().map(<[f32]>::to_vec).unwrap_or_default();
        let mut hidden_rows: Vec<Option<Vec<f32>>> = match hidden {
            Some(h) => h
                .chunks_exact((h.len() / n).max(1))
                .skip(step - 1)
                .map(|r| Some(r.to_vec()))
                .collect(),
            None => vec![None; n + 1 - step],
        };
        let next_hidden = hidden_rows.remove(0);
        self.round = drafts.len();
        self.drafted += drafts.len();
        self.rounds += 1;
        self.pending = drafts
            .into_iter()
            .zip(rows.map(<[f32]>::to_vec))
            .zip(hidden_rows)
            .map(|((d, r), h)| (d, r, h))
            .collect();
        Ok((next, next_hidden))
    }
}
