//! Multi-turn conversations over one engine.
//!
//! Each turn renders the whole transcript with the chat template, tokenizes it, and runs only
//! the ids after the longest prefix already in the KV cache (normally just the new turn). If
//! an earlier part changed (the template rewrote a past answer, or the answer re-tokenizes
//! differently), the cache is rolled back to the common prefix when it can be, and rebuilt
//! otherwise: the cache never holds ids that differ from the prompt.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::generate::{
    CancelState, Event, Flow, GenerateOptions, GenerationOutput, GenerationStats, NewTokens,
    Sequence, generate,
};
use crate::chat::{Message, Part, RenderOptions, Role};
use crate::engine::EngineInner;
use crate::error::{GemmaError, Result};
use crate::media::Media;
use crate::media::layout::{self, SegmentCounts};
use crate::model::SoftTokens;

/// What happens when a conversation no longer fits in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextPolicy {
    /// Fail the turn with [`GemmaError::ContextOverflow`]; the conversation is unchanged.
    #[default]
    Error,
    /// Drop the oldest user/model exchanges (never the system prompt) until the prompt fits.
    DropOldestTurns,
}

struct State {
    messages: Vec<Message>,
    render: RenderOptions,
    policy: ContextPolicy,
    sequence: Sequence,
    /// Placeholder positions of `context` and the key of the media whose soft token is there:
    /// equal ids with different media behind them are not a reusable prefix.
    context_media: Vec<(usize, u64)>,
}

/// A rendered, tokenized transcript and the media behind its placeholders.
struct Prompt {
    ids: Vec<u32>,
    media: Vec<Media>,
    /// Per placeholder position: (position, media index, row of that media's soft tokens).
    slots: Vec<(usize, usize, usize)>,
}

impl Prompt {
    fn media_keys(&self) -> Vec<(usize, u64)> {
        self.slots
            .iter()
            .map(|&(pos, m, _)| (pos, self.media[m].key()))
            .collect()
    }
}

/// What readers see while a turn holds the conversation: the state after the last finished
/// operation.
#[derive(Clone, Default)]
struct Snapshot {
    messages: Arc<Vec<Message>>,
    cached_tokens: usize,
    last_stats: Option<GenerationStats>,
}

pub struct Conversation {
    engine: Arc<EngineInner>,
    state: Mutex<State>,
    snapshot: Mutex<Snapshot>,
    cancel: Arc<CancelState>,
}

/// Cancels a conversation's generation from any thread: the running turn and any turn already
/// waiting for the conversation stop (within one token); later turns are not affected.
#[derive(Clone)]
pub struct CancelHandle(Arc<CancelState>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

impl Conversation {
    pub(crate) fn new(engine: Arc<EngineInner>) -> Self {
        let sequence = engine.new_sequence();
        Conversation {
            engine,
            state: Mutex::new(State {
                messages: Vec::new(),
                render: RenderOptions::default(),
                policy: ContextPolicy::Error,
                sequence,
                context_media: Vec::new(),
            }),
            snapshot: Mutex::default(),
            cancel: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `s` to readers (called with the state lock held, after every change).
    fn publish(&self, s: &State, last_stats: Option<GenerationStats>) {
        let mut snap = self.snapshot();
        snap.messages = Arc::new(s.messages.clone());
        snap.cached_tokens = s.sequence.tokens().len();
        if last_stats.is_some() {
            snap.last_stats = last_stats;
        }
    }

    /// Sets (or with `None` removes) the system prompt.
    pub fn set_system_prompt(&self, text: Option<&str>) {
        let mut s = self.lock();
        if s.messages.first().is_some_and(|m| m.role == Role::System) {
            s.messages.remove(0);
        }
        if let Some(text) = text {
            s.messages.insert(0, Message::system(text));
        }
        self.publish(&s, None);
    }

    /// Tool declarations (OpenAI function format) offered to the model.
    pub fn set_tools(&self, tools: Vec<Value>) {
        self.lock().render.tools = tools;
    }

    /// Gemma 4 thinking mode.
    pub fn set_thinking(&self, enabled: bool) {
        self.lock().render.enable_thinking = enabled;
    }

    pub fn set_context_policy(&self, policy: ContextPolicy) {
        self.lock().policy = policy;
    }

    /// The transcript after the last finished turn; never waits for a running one.
    pub fn messages(&self) -> Vec<Message> {
        self.snapshot().messages.as_ref().clone()
    }

    /// Positions held in the KV cache after the last finished turn; never waits.
    pub fn cached_tokens(&self) -> usize {
        self.snapshot().cached_tokens
    }

    /// The statistics of the last finished turn; never waits.
    pub fn last_stats(&self) -> Option<GenerationStats> {
        self.snapshot().last_stats.clone()
    }

    /// Whether turns are rendered with a chat template (false: plain text continuation).
    pub fn uses_chat_template(&self) -> bool {
        self.engine.template.is_some()
    }

    /// A handle that stops the running generation within one token, from any thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }

    /// Stops the running turn and any turn already waiting for this conversation.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Forgets every message (the system prompt too) and the cache.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.messages.clear();
        s.sequence = self.engine.new_sequence();
        s.context_media.clear();
        self.publish(&s, None);
    }

    /// An independent copy: writing to one never changes the other. The KV cache is shared
    /// copy-on-write, so forking costs no prefill.
    pub fn fork(&self) -> Conversation {
        let s = self.lock();
        let snapshot = self.snapshot().clone();
        Conversation {
            engine: self.engine.clone(),
            state: Mutex::new(State {
                messages: s.messages.clone(),
                render: s.render.clone(),
                policy: s.policy,
                sequence: s.sequence.clone(),
                context_media: s.context_media.clone(),
            }),
            snapshot: Mutex::new(snapshot),
            cancel: Arc::default(),
        }
    }

    /// Adds a user message and generates the model's answer, streaming it to `on_event`.
    /// With no chat template (a base model), `text` is appended to the transcript as is and the
    /// model continues it.
    pub fn send(
        &self,
        text: &str,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<GenerationOutput> {
        self.turn(Message::user(text), options, on_event)
    }

    /// Adds a user message of text and media (images, audio, video) in order and generates
    /// the model's answer. Media are encoded by the model's towers, loaded on first use.
    pub fn send_parts(
        &self,
        parts: Vec<Part>,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<GenerationOutput> {
        if parts.is_empty() {
            return Err(GemmaError::InvalidArgument(
                "a message needs at least one part".into(),
            ));
        }
        self.turn(Message::user_parts(parts), options, on_event)
    }

    /// Answers the model's tool call with its result and lets the model continue.
    pub fn send_tool_result(
        &self,
        tool_name: &str,
        content: &str,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<GenerationOutput> {
        self.turn(Message::tool_result(tool_name, content), options, on_event)
    }

    fn turn(
        &self,
        message: Message,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<GenerationOutput> {
        // The ticket is taken before waiting for the conversation: a cancel() issued while
        // this turn waits is not lost.
        let cancel = self.cancel.begin_turn();
        let mut guard = self.lock();
        let s = &mut *guard;
        let saved_messages = s.messages.clone();
        s.messages.push(message);
        let prompt = match self.fit_prompt(s) {
            Ok(prompt) => prompt,
            Err(e) => {
                s.messages = saved_messages;
                return Err(e);
            }
        };
        let reuse = self.reuse_prefix(s, &prompt);
        let (soft_positions, soft_values) = match self.soft_tokens(&prompt, reuse) {
            Ok(soft) => soft,
            Err(e) => {
                s.messages = saved_messages;
                return Err(e);
            }
        };
        let ids = &prompt.ids;
        let result = generate(
            &self.engine,
            &mut s.sequence,
            NewTokens {
                ids: &ids[reuse..],
                soft: SoftTokens {
                    positions: &soft_positions,
                    values: &soft_values,
                },
            },
            options,
            &s.render.tools,
            &cancel,
            on_event,
        );
        match result {
            Ok(output) => {
                s.context_media = prompt.media_keys();
                let mut answer = Message::assistant(output.text.clone());
                answer.tool_calls = output.tool_calls.clone();
                s.messages.push(answer);
                self.publish(s, Some(output.stats.clone()));
                Ok(output)
            }
            Err(e) => {
                // The cache may hold part of this turn: start the next one from scratch.
                s.messages = saved_messages;
                s.sequence = self.engine.new_sequence();
                s.context_media.clear();
                self.publish(s, None);
                Err(e)
            }
        }
    }

    /// The prompt ids for the current messages, dropping old turns if the policy allows.
    fn fit_prompt(&self, s: &mut State) -> Result<Prompt> {
        loop {
            let prompt = self.prompt(s)?;
            let ids = &prompt.ids;
            // Leave room for at least one generated token.
            if ids.len() < self.engine.context_len {
                return Ok(prompt);
            }
            let first_turn =
                usize::from(s.messages.first().is_some_and(|m| m.role == Role::System));
            let droppable = s.messages.len().saturating_sub(first_turn + 1);
            if s.policy == ContextPolicy::Error || droppable == 0 {
                return Err(GemmaError::ContextOverflow {
                    requested: ids.len() + 1,
                    context_len: self.engine.context_len,
                });
            }
            // Drop the oldest message and anything up to the next user turn.
            s.messages.remove(first_turn);
            while s.messages.len() > first_turn + 1 && s.messages[first_turn].role != Role::User {
                s.messages.remove(first_turn);
            }
        }
    }

    fn prompt(&self, s: &State) -> Result<Prompt> {
        let tok = &self.engine.tokenizer;
        let media: Vec<Media> = s.messages.iter().flat_map(|m| m.media().cloned()).collect();
        let text = match &self.engine.template {
            Some(template) => {
                let options = RenderOptions {
                    add_generation_prompt: s.messages.last().is_some_and(|m| m.role != Role::Tool),
                    ..s.render.clone()
                };
                let text = template.render(&s.messages, &options)?;
                if media.is_empty() || layout::count_markers(&text) == media.len() {
                    text
                } else {
                    // A template that only knows string content (no `{"type": "image"}`
                    // parts): give it the text with the markers inline instead.
                    let inline: Vec<Message> = s
                        .messages
                        .iter()
                        .map(|m| Message {
                            content: m.text_with_markers(),
                            parts: Vec::new(),
                            ..m.clone()
                        })
                        .collect();
                    template.render(&inline, &options)?
                }
            }
            None => s.messages.iter().map(Message::text_with_markers).collect(),
        };
        if media.is_empty() {
            let ids = match &self.engine.template {
                Some(_) => tok.encode(&text, true)?,
                None => tok.encode_prompt(&text, false)?,
            };
            return Ok(Prompt {
                ids,
                media,
                slots: Vec::new(),
            });
        }
        let (encoder, placeholders) = self.engine.media_support()?;
        let counts: Vec<SegmentCounts> = media
            .iter()
            .map(|m| encoder.segment_counts(m))
            .collect::<Result<_>>()?;
        let mut first = true;
        let ids = layout::tokenize_with_media(&text, &media, &counts, placeholders, |run| {
            let ids = match &self.engine.template {
                Some(_) => tok.encode(run, true),
                None if first => tok.encode_prompt(run, false),
                None => tok.encode(run, false),
            };
            first = false;
            ids
        })?;
        layout::check_placeholders(&ids, placeholders, &media, &counts)?;
        let slots = layout::assign_slots(&ids, placeholders, &media, &counts);
        Ok(Prompt { ids, media, slots })
    }

    /// The soft tokens of the placeholders from `reuse` on, positions relative to `reuse`.
    fn soft_tokens(&self, prompt: &Prompt, reuse: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        if prompt.slots.iter().all(|(pos, _, _)| *pos < reuse) {
            return Ok((Vec::new(), Vec::new()));
        }
        let (encoder, _) = self.engine.media_support()?;
        encoder.soft_tokens(
            &prompt.media,
            &prompt.slots,
            reuse,
            self.engine.model.config().hidden_size,
        )
    }

    /// How many leading ids of the prompt the cache can keep; rolls the cache back to that.
    fn reuse_prefix(&self, s: &mut State, prompt: &Prompt) -> usize {
        let ids = &prompt.ids;
        let mut common = s
            .sequence
            .tokens()
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        // A placeholder is the same token whatever media it stands for: compare the media too.
        let new_keys = prompt.media_keys();
        if let Some(&(pos, _)) = s
            .context_media
            .iter()
            .filter(|(pos, _)| *pos < common)
            .find(|old| !new_keys.contains(old))
        {
            common = pos;
        }
        // At least one id must run to produce logits.
        common = common.min(ids.len().saturating_sub(1));
        if common < s.sequence.tokens().len() {
            if s.sequence.truncate(common) {
                s.context_media.retain(|(pos, _)| *pos < common);
            } else {
                s.sequence = self.engine.new_sequence();
                s.context_media.clear();
                common = 0;
            }
        }
        common
    }
}
