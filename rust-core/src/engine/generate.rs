//! The decode loop: prefill, then sample → stream → feed, until a stop condition.
//!
//! Speculative decoding (`GenerateOptions::draft`): after a token is sampled, a drafter
//! (`draft.rs`) guesses the tokens after it and one verify pass feeds them all; the loop then
//! samples from each verified row in turn, exactly as it would from a plain decode step, and a
//! draft is kept while the sampled token equals it. At the first disagreement the sampled token
//! stands and the drafts after it are rolled back from the cache. Stop conditions, constraints,
//! tool calls and cancel see every token one by one as without drafting.
//!
//! Output routing: visible text is streamed in UTF-8-safe chunks, held back while it could
//! still turn into a stop string; Gemma 4's thought channel (`<|channel>thought\n…<channel|>`)
//! is streamed separately; tool calls (`<|tool_call>call:NAME{…}<tool_call|>`) are parsed into
//! structured calls. Other control tokens are never shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::Value;

use super::EngineInner;
pub use super::draft::Draft;
use super::draft::drafter;
use super::guide::Guide;
use super::speculation::Speculation;
use crate::chat::tools::{ToolCall, parse_tool_call};
pub use crate::constraint::Constraint;
use crate::error::Result;
use crate::model::{KvCache, LogitsFor, SoftTokens};
use crate::sampling::{Sampler, SamplingOptions};
use crate::tokenizer::Tokenizer;
use crate::tokenizer::stream::StreamDecoder;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub sampling: SamplingOptions,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop_strings: Vec<String>,
    /// Extra stop ids, on top of the model's end-of-turn ids.
    pub stop_token_ids: Vec<u32>,
    /// The shape the answer must take (the thought channel stays free). A bad schema, regex or
    /// grammar is an error before any token is generated.
    pub constraint: Option<Constraint>,
    /// Speculative decoding: who drafts tokens for the model to verify several at a time.
    /// The output is the same as without (token for token with the same seed).
    pub draft: Draft,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingOptions::greedy(),
            max_tokens: 256,
            stop_strings: Vec::new(),
            stop_token_ids: Vec::new(),
            constraint: None,
            draft: Draft::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (an end-of-turn or stop token id).
    EndOfTurn,
    StopString,
    MaxTokens,
    /// The context is full; the cache is left consistent.
    ContextFull,
    /// `cancel()` was called.
    Cancelled,
    /// The event callback asked to stop.
    CallbackStopped,
    /// The model called a tool and waits for its result (Gemma 4: `<|tool_response>`).
    ToolCall,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStats {
    /// Tokens of the whole prompt (conversation so far).
    pub prompt_tokens: usize,
    /// Prompt tokens that were actually run (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub time_to_first_token_ms: f64,
    pub stop_reason: StopReason,
    /// Speculative decoding: tokens drafted, drafted tokens kept, verify passes run.
    pub drafted: usize,
    pub accepted: usize,
    pub rounds: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Visible answer text.
    Text(String),
    /// Text of the model's thought channel (Gemma 4 thinking).
    Thought(String),
    ToolCall(ToolCall),
    Done(GenerationStats),
}

/// What the event callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Everything a finished generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub thought: String,
    pub tool_calls: Vec<ToolCall>,
    pub stats: GenerationStats,
}

/// Token ids with a routing meaning, looked up by their text in the vocabulary.
struct Markers {
    channel_open: Option<u32>,
    channel_close: Option<u32>,
    tool_call_open: Option<u32>,
    tool_call_close: Option<u32>,
    tool_response_open: Option<u32>,
}

impl Markers {
    fn new(tok: &Tokenizer) -> Self {
        Markers {
            channel_open: tok.token_id("<|channel>"),
            channel_close: tok.token_id("<channel|>"),
            tool_call_open: tok.token_id("<|tool_call>"),
            tool_call_close: tok.token_id("<tool_call|>"),
            tool_response_open: tok.token_id("<|tool_response>"),
        }
    }
}

#[derive(PartialEq)]
enum Section {
    Answer,
    /// Inside `<|channel>`: the channel name runs to the first newline.
    ChannelName,
    Thought,
    ToolCall,
}

/// Routes decoded tokens to answer text (with stop-string hold-back), thoughts and tool calls.
struct OutputRouter<'a> {
    tok: &'a Tokenizer,
    markers: Markers,
    stop_strings: &'a [String],
    section: Section,
    answer_bytes: StreamDecoder,
    side_bytes: StreamDecoder,
    answer: String,
    emitted: usize,
    thought: String,
    tool_text: String,
    tool_calls: Vec<ToolCall>,
    channel_name: String,
}

enum Routed {
    Continue,
    StopString,
}

impl<'a> OutputRouter<'a> {
    fn new(tok: &'a Tokenizer, stop_strings: &'a [String]) -> Self {
        OutputRouter {
            tok,
            markers: Markers::new(tok),
            stop_strings,
            section: Section::Answer,
            answer_bytes: StreamDecoder::new(),
            side_bytes: StreamDecoder::new(),
            answer: String::new(),
            emitted: 0,
            thought: String::new(),
            tool_text: String::new(),
            tool_calls: Vec::new(),
            channel_name: String::new(),
        }
    }

    fn push(&mut self, id: u32, events: &mut Vec<Event>) -> Routed {
        let m = &self.markers;
        let is = |marker: Option<u32>| marker == Some(id);
        if is(m.channel_open) {
            self.section = Section::ChannelName;
            self.channel_name.clear();
            return Routed::Continue;
        }
        if is(m.channel_close) {
            self.flush_side(events);
            self.section = Section::Answer;
            return Routed::Continue;
        }
        if is(m.tool_call_open) {
            self.section = Section::ToolCall;
            self.tool_text.clear();
            return Routed::Continue;
        }
        if is(m.tool_call_close) {
            self.tool_text.push_str(&self.side_bytes.finish());
            match parse_tool_call(&self.tool_text) {
                Ok(call) => {
                    self.tool_calls.push(call.clone());
                    events.push(Event::ToolCall(call));
                }
                Err(e) => log::warn!("unparseable tool call `{}`: {e}", self.tool_text),
            }
            self.section = Section::Answer;
            return Routed::Continue;
        }
        if self.tok.is_control(id) && self.section != Section::ToolCall {
            return Routed::Continue;
        }
        match self.section {
            Section::Answer => {
                let text = self.answer_bytes.push(self.tok, id);
                self.answer.push_str(&text);
                self.emit_answer(events)
            }
            Section::ChannelName => {
                let text = self.side_bytes.push(self.tok, id);
                match text.split_once('\n') {
                    Some((name, rest)) => {
                        self.channel_name.push_str(name);
                        self.section = Section::Thought;
                        self.push_thought(rest.to_string(), events);
                    }
                    None => self.channel_name.push_str(&text),
                }
                Routed::Continue
            }
            Section::Thought => {
                let text = self.side_bytes.push(self.tok, id);
                self.push_thought(text, events);
                Routed::Continue
            }
            Section::ToolCall => {
                // `<|"|>` delimits strings inside tool syntax: keep its text for the parser.
                let text = self.side_bytes.push(self.tok, id);
                self.tool_text.push_str(&text);
                Routed::Continue
            }
        }
    }

    fn push_thought(&mut self, text: String, events: &mut Vec<Event>) {
        if !text.is_empty() {
            self.thought.push_str(&text);
            events.push(Event::Thought(text));
        }
    }

    fn flush_side(&mut self, events: &mut Vec<Event>) {
        let rest = self.side_bytes.finish();
        if self.section == Section::Thought {
            self.push_thought(rest, events);
        }
    }

    /// Emits answer text that can no longer become part of a stop string.
    fn emit_answer(&mut self, events: &mut Vec<Event>) -> Routed {
        let longest = self.stop_strings.iter().map(String::len).max().unwrap_or(0);
        if longest > 0 {
            let mut from = self.emitted.saturating_sub(longest);
            while !self.answer.is_char_boundary(from) {
                from -= 1;
            }
            let found = self
                .stop_strings
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| self.answer[from..].find(s.as_str()).map(|p| from + p))
                .min();
            if let Some(at) = found {
                if at > self.emitted {
                    events.push(Event::Text(self.answer[self.emitted..at].to_string()));
                }
                self.answer.truncate(at);
                self.emitted = at;
                return Routed::StopString;
            }
        }
        let mut safe = self.answer.len();
        for s in self.stop_strings {
            // Hold back the longest tail that is a proper prefix of a stop string.
            for k in (1..s.len().min(self.answer.len() + 1)).rev() {
                if s.is_char_boundary(k) && self.answer.ends_with(&s[..k]) {
                    safe = safe.min(self.answer.len() - k);
                    break;
                }
            }
        }
        if safe > self.emitted {
            events.push(Event::Text(self.answer[self.emitted..safe].to_string()));
            self.emitted = safe;
        }
        Routed::Continue
    }

    fn finish(&mut self, events: &mut Vec<Event>) {
        let rest = self.answer_bytes.finish();
        self.answer.push_str(&rest);
        if self.answer.len() > self.emitted {
            events.push(Event::Text(self.answer[self.emitted..].to_string()));
            self.emitted = self.answer.len();
        }
        self.flush_side(events);
    }
}

/// A conversation's cancellation: `cancel()` stops every turn that began before it, whether
/// that turn is running or still waiting for the conversation.
#[derive(Debug, Default)]
pub(crate) struct CancelState {
    /// Turns begun so far (each takes the next number as its ticket).
    started: AtomicU64,
    /// Every turn with a ticket up to this one is cancelled.
    cancelled_through: AtomicU64,
}

impl CancelState {
    pub(crate) fn cancel(&self) {
        let started = self.started.load(Ordering::SeqCst);
        self.cancelled_through.fetch_max(started, Ordering::SeqCst);
    }

    /// Registers a turn that begins now (before it waits for anything).
    pub(crate) fn begin_turn(self: &Arc<Self>) -> TurnCancel {
        let ticket = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        TurnCancel {
            state: self.clone(),
            ticket,
        }
    }
}

/// One turn's view of its conversation's cancellation.
pub(crate) struct TurnCancel {
    state: Arc<CancelState>,
    ticket: u64,
}

impl TurnCancel {
    /// A turn nothing can cancel.
    pub(crate) fn never() -> Self {
        TurnCancel {
            state: Arc::default(),
            ticket: u64::MAX,
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.cancelled_through.load(Ordering::SeqCst) >= self.ticket
    }
}

/// Prompt positions per forward pass: attention scores of one pass are
/// `[heads, chunk, keys]`, so a long prompt in one pass would need hundreds of megabytes
/// (8 heads × 4096² × 4 B = 512 MiB at 4k); chunks keep that to `[heads, 512, keys]`.
pub const PREFILL_CHUNK: usize = 512;

/// The largest top-k the GPU picks for a draw (`GemmaModel::forward_top_k`).
#[cfg(feature = "gpu")]
const MAX_DEVICE_TOP_K: usize = crate::kernels::gpu::ops::MAX_TOP_K;
#[cfg(not(feature = "gpu"))]
const MAX_DEVICE_TOP_K: usize = 0;

/// Runs `tokens` (with their soft tokens) through `forward` in chunks of [`PREFILL_CHUNK`],
/// soft-token positions re-based per chunk; returns the last chunk's result (its logits).
pub(crate) fn prefill_in_chunks<T>(
    tokens: &[u32],
    soft: SoftTokens<'_>,
    mut forward: impl FnMut(&[u32], SoftTokens<'_>) -> Result<T>,
) -> Result<T> {
    let hidden = if soft.positions.is_empty() {
        0
    } else {
        soft.values.len() / soft.positions.len()
    };
    let mut last = None;
    let mut done = 0;
    let mut next_soft = 0;
    for chunk in tokens.chunks(PREFILL_CHUNK) {
        let end = done + chunk.len();
        let n = soft.positions[next_soft..]
            .iter()
            .take_while(|&&p| p < end)
            .count();
        let positions: Vec<usize> = soft.positions[next_soft..next_soft + n]
            .iter()
            .map(|p| p - done)
            .collect();
        let values = &soft.values[next_soft * hidden..(next_soft + n) * hidden];
        last = Some(forward(
            chunk,
            SoftTokens {
                positions: &positions,
                values,
            },
        )?);
        next_soft += n;
        done = end;
    }
    last.ok_or_else(|| crate::error::GemmaError::InvalidArgument("nothing to prefill".into()))
}

/// What a pass leaves for the sampler: the logits of its last row, or (plain greedy decoding,
/// `GemmaModel::forward_greedy`) the token the model already picked, or (a top-k draw on a
/// GPU, `GemmaModel::forward_top_k`) the top-k tokens with their logits.
enum Scores {
    Logits(Vec<f32>),
    Picked(u32),
    Top(Vec<(u32, f32)>),
}

impl Scores {
    /// The logits, for a constraint to mask (a constrained generation never asks the model
    /// to pick).
    fn logits_mut(&mut self) -> Result<&mut Vec<f32>> {
        match self {
            Scores::Logits(logits) => Ok(logits),
            Scores::Picked(_) | Scores::Top(_) => Err(crate::error::GemmaError::InvalidArgument(
                "a constrained generation needs the logits, not a picked token".into(),
            )),
        }
    }
}

/// One generation over a cache. `context` holds the ids already in `cache`; `new_tokens` are
/// prefilled first. On return `context` holds every id that was fed to the model.
#[allow(clippy::too_many_arguments)]
/// One sequence being decoded: a KV cache and the ids it holds.
#[derive(Clone)]
pub struct Sequence {
    cache: KvCache,
    /// The ids held by `cache`, in order.
    tokens: Vec<u32>,
}

impl Sequence {
    /// An empty sequence over `cache`.
    pub fn new(cache: KvCache) -> Self {
        Sequence {
            cache,
            tokens: Vec::new(),
        }
    }

    /// The ids the cache holds.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Keeps the first `len` ids; `false` (and nothing changed) when the cache cannot roll back
    /// that far.
    pub fn truncate(&mut self, len: usize) -> bool {
        let ok = self.cache.truncate(len);
        if ok {
            self.tokens.truncate(len);
        }
        ok
    }
}

/// The ids to run next, with image/audio soft tokens at their placeholder offsets.
#[derive(Clone, Copy)]
pub(crate) struct NewTokens<'a> {
    pub ids: &'a [u32],
    pub soft: SoftTokens<'a>,
}

/// Prefills `input` after `sequence`, then samples until a stop condition, streaming events.
/// `tools`: the declarations offered to the model (strict ones constrain its calls).
pub(crate) fn generate(
    engine: &EngineInner,
    sequence: &mut Sequence,
    input: NewTokens<'_>,
    options: &GenerateOptions,
    tools: &[Value],
    cancel: &TurnCancel,
    on_event: &mut dyn FnMut(Event) -> Flow,
) -> Result<GenerationOutput> {
    let EngineInner {
        model,
        tokenizer,
        compute,
        end_of_turn_ids,
        ..
    } = engine;
    let Sequence {
        cache,
        tokens: context,
    } = sequence;
    let (new_tokens, soft_tokens) = (input.ids, input.soft);
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let start = Instant::now();
    // A verify pass returns every row's logits and, when `hidden` (the drafter asks), the
    // target's hidden states of the same rows.
    type Rows = (Vec<f32>, Option<Vec<f32>>);
    let verify = |cache: &mut KvCache, tokens: &[u32], hidden: bool| -> Result<Rows> {
        let _turn = compute.lock().unwrap_or_else(|e| e.into_inner());
        if hidden {
            let (logits, h) = model.verify_with_hidden(cache, tokens)?;
            Ok((logits, Some(h)))
        } else {
            Ok((model.verify(cache, tokens)?, None))
        }
    };

    if new_tokens.is_empty() {
        return Err(crate::error::GemmaError::InvalidArgument(
            "nothing to prefill".into(),
        ));
    }
    let stop_ids: Vec<u32> = end_of_turn_ids
        .iter()
        .chain(&options.stop_token_ids)
        .copied()
        .collect();
    // Before the prefill: a bad constraint or drafter is an error that costs nothing.
    let mut guide = Guide::new(engine, options, tools, &stop_ids)?;
    let mut spec = Speculation::new(drafter(&options.draft, &|path| engine.assistant(path))?);
    let want_hidden = spec.needs_hidden();
    // Plain greedy decoding (nothing reads the logits but the argmax): the model picks the
    // token where the logits are, so a GPU step reads back a few hundred bytes, not the
    // vocabulary's logits.
    let pick_in_model = sampler.is_plain_greedy() && guide.is_none() && !spec.is_active();
    // A top-k draw on a GPU without constraint or drafter: only the top-k logits come back
    // (the same draw; `Sampler::sample_top`). The CPU's logits are in host memory already.
    let top_in_model = sampler.top_k_bound().filter(|&k| {
        k <= MAX_DEVICE_TOP_K && guide.is_none() && !spec.is_active() && !model.device().is_host()
    });
    // A pass returns its scores and, when `hidden`, the target's hidden state of its last row.
    type Scored = (Scores, Option<Vec<f32>>);
    let forward = |cache: &mut KvCache,
                   tokens: &[u32],
                   soft: SoftTokens<'_>,
                   hidden: bool|
     -> Result<Scored> {
        let _turn = compute.lock().unwrap_or_else(|e| e.into_inner());
        if hidden {
            let (logits, h) = model.forward_with_hidden(cache, tokens, soft, LogitsFor::Last)?;
            Ok((Scores::Logits(logits), Some(h)))
        } else if pick_in_model {
            Ok((
                Scores::Picked(model.forward_greedy(cache, tokens, soft)?),
                None,
            ))
        } else if let Some(k) = top_in_model {
            Ok((
                Scores::Top(model.forward_top_k(cache, tokens, soft, k)?),
                None,
            ))
        } else {
            Ok((
                Scores::Logits(model.forward_with_soft_tokens(
                    cache,
                    tokens,
                    soft,
                    LogitsFor::Last,
                )?),
                None,
            ))
        }
    };
    if cancel.is_cancelled() {
        // Cancelled while waiting for the conversation: nothing runs.
        let stats = GenerationStats {
            prompt_tokens: context.len() + new_tokens.len(),
            prefilled_tokens: 0,
            generated_tokens: 0,
            prefill_tok_s: 0.0,
            decode_tok_s: 0.0,
            time_to_first_token_ms: 0.0,
            stop_reason: StopReason::Cancelled,
            drafted: 0,
            accepted: 0,
            rounds: 0,
        };
        on_event(Event::Done(stats.clone()));
        return Ok(GenerationOutput {
            tokens: Vec::new(),
            text: String::new(),
            thought: String::new(),
            tool_calls: Vec::new(),
            stats,
        });
    }
    let mut hidden = None;
    let mut scores = prefill_in_chunks(new_tokens, soft_tokens, |tokens, soft| {
        let (scores, h) = forward(cache, tokens, soft, want_hidden)?;
        hidden = h;
        Ok(scores)
    })?;
    context.extend_from_slice(new_tokens);
    let prompt_tokens = context.len();
    let prefill_time = start.elapsed().as_secs_f64();

    let mut router = OutputRouter::new(tokenizer, &options.stop_strings);
    let mut generated = Vec::new();
    let mut events = Vec::new();
    let mut ttft = None;
    let decode_start = Instant::now();
    let tool_response = router.markers.tool_response_open;
    let stop_reason = 'decode: loop {
        if cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        if generated.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        let mut next = match &scores {
            Scores::Picked(id) => *id,
            Scores::Top(top) => sampler.sample_top(top),
            Scores::Logits(logits) => sampler.sample(logits, context),
        };
        let mut forced = Vec::new();
        if let Some(guide) = &mut guide {
            // The sampled token is checked first; only a rejected one costs a full mask, and
            // the draw from the masked logits follows the constrained distribution.
            if !guide.allows(next)? {
                let logits = scores.logits_mut()?;
                guide.mask(logits)?;
                next = sampler.sample(logits, context);
                if !guide.allows(next)? {
                    return Err(crate::error::GemmaError::InvalidConstraint(
                        "no token can continue the constrained text".into(),
                    ));
                }
            }
        }
        ttft.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1e3);
        if Some(next) == tool_response && !router.tool_calls.is_empty() {
            break StopReason::ToolCall;
        }
        if stop_ids.contains(&next) {
            break StopReason::EndOfTurn;
        }
        let mut budget_spent = false;
        if let Some(guide) = &mut guide {
            forced = guide.advance(next)?;
            // Forced tokens count against the budget like sampled ones.
            let room = options.max_tokens.saturating_sub(generated.len() + 1);
            budget_spent = forced.len() > room;
            forced.truncate(room);
        }
        let step: Vec<u32> = std::iter::once(next).chain(forced).collect();
        let mut flow = Flow::Continue;
        for &id in &step {
            generated.push(id);
            let routed = router.push(id, &mut events);
            for event in events.drain(..) {
                if on_event(event) == Flow::Stop {
                    flow = Flow::Stop;
                }
            }
            if matches!(routed, Routed::StopString) {
                break 'decode StopReason::StopString;
            }
        }
        if flow == Flow::Stop {
            break StopReason::CallbackStopped;
        }
        if budget_spent {
            break StopReason::MaxTokens;
        }
        if guide.as_ref().is_some_and(Guide::finished) {
            break StopReason::EndOfTurn;
        }
        if generated.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        if let Some((row, h)) = spec.take_accepted(&step) {
            // A draft the sampler agreed with: already in the cache, its logits verified.
            scores = Scores::Logits(row);
            hidden = h;
            context.extend_from_slice(&step);
            continue;
        }
        // No draft waiting, or the sampler disagreed: drop the unverified drafts.
        spec.end_round(cache, context.len())?;
        if cache.len() + step.len() > cache.max_len() {
            break StopReason::ContextFull;
        }
        let room = (cache.max_len() - cache.len() - step.len())
            .min(options.max_tokens.saturating_sub(generated.len() + 1));
        let drafts = {
            let _turn = compute.lock().unwrap_or_else(|e| e.into_inner());
            spec.propose(context, &step, room, hidden.as_deref(), model, cache)?
        };
        if drafts.is_empty() {
            // Forced tokens go in with the sampled one: one pass, like a short prefill.
            (scores, hidden) = forward(cache, &step, SoftTokens::NONE, want_hidden)?;
        } else {
            let fed: Vec<u32> = step.iter().chain(&drafts).copied().collect();
            let (rows, hidden_rows) = verify(cache, &fed, want_hidden)?;
            let (logits, row_hidden) =
                spec.start_round(&rows, hidden_rows.as_deref(), step.len(), drafts)?;
            (scores, hidden) = (Scores::Logits(logits), row_hidden);
        }
        context.extend_from_slice(&step);
    };
    // Drafts nobody sampled leave the cache, which then holds exactly `context`.
    spec.end_round(cache, context.len())?;
    router.finish(&mut events);
    for event in events.drain(..) {
        on_event(event);
    }
    let decode_time = decode_start.elapsed().as_secs_f64();
    let stats = GenerationStats {
        prompt_tokens,
        prefilled_tokens: new_tokens.len(),
        generated_tokens: generated.len(),
        prefill_tok_s: new_tokens.len() as f64 / prefill_time.max(1e-9),
        decode_tok_s: generated.len().saturating_sub(1) as f64 / decode_time.max(1e-9),
        time_to_first_token_ms: ttft.unwrap_or(0.0),
        stop_reason,
        drafted: spec.drafted,
        accepted: spec.accepted,
        rounds: spec.rounds,
    };
    on_event(Event::Done(stats.clone()));
    Ok(GenerationOutput {
        tokens: generated,
        text: router.answer,
        thought: router.thought,
        tool_calls: router.tool_calls,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::tools::ToolCall;

    /// A word-level vocabulary with Gemma 4's routing tokens as special tokens.
    fn tokenizer() -> Tokenizer {
        let words = [
            "<|channel>",
            "<channel|>",
            "<|tool_call>",
            "<tool_call|>",
            "<|\"|>",
            "<turn|>",
            "thought",
            "\n",
            "Let",
            "\u{2581}me",
            "\u{2581}think",
            "The",
            "\u{2581}answer",
            "\u{2581}is",
            "\u{2581}42",
            "call:f{x:",
            "Paris",
            "}",
            "\u{2581}STOP",
            "<0xF0>",
            "<0x9F>",
            "<0x99>",
            "<0x82>",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
            .collect();
        let added: Vec<serde_json::Value> = words[..6]
            .iter()
            .enumerate()
            .map(|(i, w)| {
                serde_json::json!({"id": i, "content": w, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "Let"}
        });
        Tokenizer::from_json_str(&json.to_string()).unwrap()
    }

    /// The text pieces of `events`, in order.
    fn texts(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn route(
        tok: &Tokenizer,
        ids: &[u32],
        stops: &[String],
    ) -> (Vec<Event>, String, String, Vec<ToolCall>, bool) {
        let mut router = OutputRouter::new(tok, stops);
        let mut events = Vec::new();
        let mut stopped = false;
        for &id in ids {
            if let Routed::StopString = router.push(id, &mut events) {
                stopped = true;
                break;
            }
        }
        if !stopped {
            router.finish(&mut events);
        }
        (
            events,
            router.answer.clone(),
            router.thought.clone(),
            router.tool_calls.clone(),
            stopped,
        )
    }

    #[test]
    fn prefill_chunks_rebase_soft_tokens() {
        // 1,100 tokens, soft tokens at 3, 511, 512 and 1,099 (width 2).
        let tokens: Vec<u32> = (0..1100).collect();
        let positions = [3usize, 511, 512, 1099];
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let mut calls = Vec::new();
        prefill_in_chunks(
            &tokens,
            SoftTokens {
                positions: &positions,
                values: &values,
            },
            |t, s| {
                calls.push((t[0], t.len(), s.positions.to_vec(), s.values.to_vec()));
                Ok(vec![t.len() as f32])
            },
        )
        .unwrap();
        assert_eq!(
            calls,
            vec![
                (0, 512, vec![3, 511], vec![0.0, 1.0, 2.0, 3.0]),
                (512, 512, vec![0], vec![4.0, 5.0]),
                (1024, 76, vec![75], vec![6.0, 7.0]),
            ]
        );
    }

    #[test]
    fn thoughts_and_answer_are_separated() {
        let tok = tokenizer();
        // <|channel>thought\nLet me think<channel|>The answer is 42
        let (events, answer, thought, _, _) =
            route(&tok, &[0, 6, 7, 8, 9, 10, 1, 11, 12, 13, 14], &[]);
        assert_eq!(thought, "Let me think");
        assert_eq!(answer, "The answer is 42");
        let streamed: String = texts(&events).concat();
        assert_eq!(streamed, answer);
        assert!(events.iter().any(|e| matches!(e, Event::Thought(_))));
    }

    #[test]
    fn tool_calls_are_parsed_from_the_token_stream() {
        let tok = tokenizer();
        // <|tool_call>call:f{x:<|"|>Paris<|"|>}<tool_call|>
        let (events, answer, _, calls, _) = route(&tok, &[2, 15, 4, 16, 4, 17, 3], &[]);
        assert_eq!(answer, "");
        assert_eq!(
            calls,
            vec![ToolCall {
                name: "f".into(),
                arguments: serde_json::json!({"x": "Paris"})
            }]
        );
        assert!(events.iter().any(|e| matches!(e, Event::ToolCall(_))));
    }

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let tok = tokenizer();
        let stops = vec![" is 4".to_string()];
        // "The answer is 42": " is" is held back (a prefix of the stop string), then cut.
        let (events, answer, _, _, stopped) = route(&tok, &[11, 12, 13, 14], &stops);
        assert!(stopped);
        assert_eq!(answer, "The answer");
        let streamed: String = texts(&events).concat();
        assert_eq!(streamed, "The answer");
    }

    #[test]
    fn a_character_split_over_byte_tokens_is_emitted_whole() {
        let tok = tokenizer();
        // U+1F642 as four byte-fallback tokens.
        let (events, answer, _, _, _) = route(&tok, &[19, 20, 21, 22], &[]);
        assert_eq!(answer, "\u{1F642}");
        assert_eq!(texts(&events), ["\u{1F642}"]);
    }
}
