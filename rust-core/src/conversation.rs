//! Multi-turn conversations over one engine.
//!
//! Each turn renders the whole transcript with the chat template, tokenizes it, and runs only
//! the ids after the longest prefix already in the KV cache (normally just the new turn). If
//! an earlier part changed (the template rewrote a past answer, or the answer re-tokenizes
//! differently), the cache is rolled back to the common prefix when it can be, and rebuilt
//! otherwise: the cache never holds ids that differ from the prompt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::chat::{Message, RenderOptions, Role};
use crate::engine::EngineInner;
use crate::error::{GemmaError, Result};
use crate::generate::{Event, Flow, GenerateOptions, GenerationOutput, generate};
use crate::model::{KvCache, SoftTokens};

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
    cache: KvCache,
    /// The ids held by `cache`, in order.
    context: Vec<u32>,
}

pub struct Conversation {
    engine: Arc<EngineInner>,
    state: Mutex<State>,
    cancel: Arc<AtomicBool>,
}

/// Cancels a conversation's running generation from any thread.
#[derive(Clone)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Conversation {
    pub(crate) fn new(engine: Arc<EngineInner>) -> Self {
        let cache = engine.model.new_cache(engine.context_len);
        Conversation {
            engine,
            state: Mutex::new(State {
                messages: Vec::new(),
                render: RenderOptions::default(),
                policy: ContextPolicy::Error,
                cache,
                context: Vec::new(),
            }),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Positions currently held in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.lock().context.len()
    }

    /// Whether turns are rendered with a chat template (false: plain text continuation).
    pub fn uses_chat_template(&self) -> bool {
        self.engine.template.is_some()
    }

    /// A handle that stops the running generation within one token, from any thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Forgets every message (the system prompt too) and the cache.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.messages.clear();
        s.context.clear();
        s.cache = self.engine.model.new_cache(self.engine.context_len);
    }

    /// An independent copy: writing to one never changes the other. The KV cache is shared
    /// copy-on-write, so forking costs no prefill.
    pub fn fork(&self) -> Conversation {
        let s = self.lock();
        Conversation {
            engine: self.engine.clone(),
            state: Mutex::new(State {
                messages: s.messages.clone(),
                render: s.render.clone(),
                policy: s.policy,
                cache: s.cache.clone(),
                context: s.context.clone(),
            }),
            cancel: Arc::new(AtomicBool::new(false)),
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
        let mut guard = self.lock();
        let s = &mut *guard;
        let saved_messages = s.messages.clone();
        s.messages.push(message);
        let ids = match self.fit_prompt(s) {
            Ok(ids) => ids,
            Err(e) => {
                s.messages = saved_messages;
                return Err(e);
            }
        };
        let reuse = self.reuse_prefix(s, &ids);
        self.cancel.store(false, Ordering::SeqCst);
        let result = generate(
            &self.engine.model,
            &self.engine.tokenizer,
            &self.engine.compute,
            &mut s.cache,
            &mut s.context,
            &ids[reuse..],
            SoftTokens::NONE,
            &self.engine.end_of_turn_ids,
            options,
            &self.cancel,
            on_event,
        );
        match result {
            Ok(output) => {
                let mut answer = Message::assistant(output.text.clone());
                answer.tool_calls = output.tool_calls.clone();
                s.messages.push(answer);
                Ok(output)
            }
            Err(e) => {
                // The cache may hold part of this turn: start the next one from scratch.
                s.messages = saved_messages;
                s.cache = self.engine.model.new_cache(self.engine.context_len);
                s.context.clear();
                Err(e)
            }
        }
    }

    /// The prompt ids for the current messages, dropping old turns if the policy allows.
    fn fit_prompt(&self, s: &mut State) -> Result<Vec<u32>> {
        loop {
            let ids = self.prompt_ids(s)?;
            // Leave room for at least one generated token.
            if ids.len() < self.engine.context_len {
                return Ok(ids);
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

    fn prompt_ids(&self, s: &State) -> Result<Vec<u32>> {
        let tok = &self.engine.tokenizer;
        match &self.engine.template {
            Some(template) => {
                let options = RenderOptions {
                    add_generation_prompt: s.messages.last().is_some_and(|m| m.role != Role::Tool),
                    ..s.render.clone()
                };
                let text = template.render(&s.messages, &options)?;
                tok.encode(&text, true)
            }
            None => {
                let text: String = s.messages.iter().map(|m| m.content.as_str()).collect();
                tok.encode_prompt(&text, false)
            }
        }
    }

    /// How many leading ids of `ids` the cache can keep; rolls the cache back to that.
    fn reuse_prefix(&self, s: &mut State, ids: &[u32]) -> usize {
        let mut common = s
            .context
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        // At least one id must run to produce logits.
        common = common.min(ids.len().saturating_sub(1));
        if common < s.context.len() {
            if s.cache.truncate(common) {
                s.context.truncate(common);
            } else {
                s.cache = self.engine.model.new_cache(self.engine.context_len);
                s.context.clear();
                common = 0;
            }
        }
        common
    }
}
