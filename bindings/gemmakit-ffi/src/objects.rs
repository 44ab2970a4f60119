//! The two objects: `Engine` and `Conversation` (Arc handles; `AutoCloseable` in Kotlin), and
//! the streaming sink implemented in Kotlin/Swift.

use std::path::Path;
use std::sync::Arc;

use gemmakit::conversation::Conversation as CoreConversation;
use gemmakit::engine::Engine as CoreEngine;
use gemmakit::generate::{self, Event, Flow, GenerationOutput};
use gemmakit::media::{AudioInput, ImageInput};

use crate::error::{GemmaKitError, guard};
use crate::types::{
    ActivationReport, BackendReport, ChatMessage, Chunk, ContextPolicy, EngineOptions,
    GenerateOptions, GenerationResult, GenerationStats, MessagePart, ModelInfo, SinkFlow,
    parse_tool_declarations,
};

/// Receives a generation as it is produced. Called synchronously on the thread that called
/// `send`, in order: chunks, then `on_done` once. Throwing stops generation; `send` then throws
/// `GemmaKitError.Callback` (or the `GemmaKitError` thrown).
#[uniffi::export(foreign)]
pub trait GenerationSink: Send + Sync {
    /// `Stop` ends generation after this chunk (stop reason `CallbackStopped`).
    fn on_chunk(&self, chunk: Chunk) -> Result<SinkFlow, GemmaKitError>;
    fn on_done(&self, stats: GenerationStats) -> Result<(), GemmaKitError>;
}

/// A loaded model. Load once, then open conversations. Thread-safe.
#[derive(uniffi::Object)]
pub struct Engine {
    inner: CoreEngine,
}

#[uniffi::export]
impl Engine {
    /// Loads a `.gguf` file or a Hugging Face checkpoint directory. Blocking (seconds for a
    /// real model): call it off the main thread.
    #[uniffi::constructor]
    pub fn load(path: String, options: EngineOptions) -> Result<Arc<Self>, GemmaKitError> {
        guard(|| {
            let inner = CoreEngine::load(Path::new(&path), options.into())?;
            Ok(Arc::new(Engine { inner }))
        })
    }

    /// Which backend runs, and why.
    pub fn backend(&self) -> BackendReport {
        self.inner.backend().into()
    }

    /// The CPU activation numerics that run (`Exact` on a GPU, or where the CPU lacks a fast
    /// int8 kernel for the phase).
    pub fn activations(&self) -> ActivationReport {
        self.inner.activations().into()
    }

    pub fn info(&self) -> ModelInfo {
        self.inner.info().into()
    }

    /// Maximum positions per conversation.
    pub fn context_len(&self) -> u32 {
        u32::try_from(self.inner.context_len()).unwrap_or(u32::MAX)
    }

    /// Prepares constrained decoding for this model (about a second for a 262k vocabulary);
    /// otherwise done by the first constrained request. Call it off the main thread.
    pub fn prepare_constraints(&self) -> Result<(), GemmaKitError> {
        guard(|| Ok(self.inner.prepare_constraints()?))
    }

    /// Runs a short scratch generation so the first real one does not pay the backend's
    /// first-use costs (GPU pipeline compilation: seconds on some phones). Returns the
    /// milliseconds it took. Call it off the main thread after loading.
    pub fn warm_up(&self) -> Result<f64, GemmaKitError> {
        guard(|| Ok(self.inner.warm_up()?))
    }

    /// Describes an image (JPEG/PNG/WebP bytes) with Google's captioning prompt.
    pub fn caption(
        &self,
        image: Vec<u8>,
        options: GenerateOptions,
        sink: Option<Arc<dyn GenerationSink>>,
    ) -> Result<GenerationResult, GemmaKitError> {
        let options = generate::GenerateOptions::try_from(options)?;
        guard(|| {
            let image = ImageInput::from_bytes(&image)?;
            run_turn(sink, |on_event| {
                self.inner.caption(image, &options, on_event)
            })
        })
    }

    /// Transcribes a WAV file's speech in `language` (e.g. "English"); audio longer than 30 s
    /// is transcribed clip by clip and the texts joined.
    pub fn transcribe_wav(
        &self,
        wav: Vec<u8>,
        language: String,
        options: GenerateOptions,
    ) -> Result<String, GemmaKitError> {
        let options = generate::GenerateOptions::try_from(options)?;
        guard(|| {
            let audio = AudioInput::from_wav_bytes(&wav)?;
            let (text, _) = self
                .inner
                .transcribe(audio, &language, &options, &mut |_| Flow::Continue)?;
            Ok(text)
        })
    }

    pub fn conversation(&self) -> Result<Arc<Conversation>, GemmaKitError> {
        guard(|| {
            Ok(Arc::new(Conversation {
                inner: self.inner.conversation(),
            }))
        })
    }
}

/// A multi-turn chat over one engine, with its own KV cache. Thread-safe: turns on one
/// conversation run one at a time; different conversations may run from different threads.
#[derive(uniffi::Object)]
pub struct Conversation {
    inner: CoreConversation,
}

#[uniffi::export]
impl Conversation {
    /// Adds a user message and generates the answer, streaming it to `sink`. Blocks the calling
    /// thread until the turn ends; the sink is called on that thread.
    pub fn send(
        &self,
        text: String,
        options: GenerateOptions,
        sink: Option<Arc<dyn GenerationSink>>,
    ) -> Result<GenerationResult, GemmaKitError> {
        let options = generate::GenerateOptions::try_from(options)?;
        guard(|| run_turn(sink, |on_event| self.inner.send(&text, &options, on_event)))
    }

    /// Adds a user message of text and media parts in order (images, audio, video frames) and
    /// generates the answer. The model's vision/audio towers load on first use.
    pub fn send_parts(
        &self,
        parts: Vec<MessagePart>,
        options: GenerateOptions,
        sink: Option<Arc<dyn GenerationSink>>,
    ) -> Result<GenerationResult, GemmaKitError> {
        let options = generate::GenerateOptions::try_from(options)?;
        guard(|| {
            let parts = parts
                .into_iter()
                .map(MessagePart::into_core)
                .collect::<gemmakit::Result<Vec<_>>>()?;
            run_turn(sink, |on_event| {
                self.inner.send_parts(parts, &options, on_event)
            })
        })
    }

    /// Answers the model's tool call with its result and lets the model continue.
    pub fn send_tool_result(
        &self,
        tool_name: String,
        content: String,
        options: GenerateOptions,
        sink: Option<Arc<dyn GenerationSink>>,
    ) -> Result<GenerationResult, GemmaKitError> {
        let options = generate::GenerateOptions::try_from(options)?;
        guard(|| {
            run_turn(sink, |on_event| {
                self.inner
                    .send_tool_result(&tool_name, &content, &options, on_event)
            })
        })
    }

    /// Stops the running generation within one token, from any thread (stop reason `Cancelled`).
    pub fn cancel(&self) {
        self.inner.cancel()
    }

    /// An independent copy sharing the KV cache copy-on-write (no prefill).
    pub fn fork(&self) -> Result<Arc<Conversation>, GemmaKitError> {
        guard(|| {
            Ok(Arc::new(Conversation {
                inner: self.inner.fork(),
            }))
        })
    }

    /// Forgets every message (the system prompt too) and the cache.
    pub fn reset(&self) -> Result<(), GemmaKitError> {
        guard(|| {
            self.inner.reset();
            Ok(())
        })
    }

    /// Sets, or with `null`/`nil` removes, the system prompt.
    pub fn set_system_prompt(&self, text: Option<String>) {
        self.inner.set_system_prompt(text.as_deref())
    }

    /// Gemma 4 thinking mode (thoughts arrive as `Chunk.Thought`).
    pub fn set_thinking(&self, enabled: bool) {
        self.inner.set_thinking(enabled)
    }

    /// Tool declarations offered to the model, each a JSON object in OpenAI function format.
    pub fn set_tools(&self, tools_json: Vec<String>) -> Result<(), GemmaKitError> {
        guard(|| {
            self.inner.set_tools(parse_tool_declarations(tools_json)?);
            Ok(())
        })
    }

    pub fn set_context_policy(&self, policy: ContextPolicy) {
        self.inner.set_context_policy(policy.into())
    }

    /// The transcript after the last finished turn (never waits for a running one).
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.inner.messages().into_iter().map(Into::into).collect()
    }

    /// Positions held in the KV cache after the last finished turn (never waits).
    pub fn cached_tokens(&self) -> u32 {
        u32::try_from(self.inner.cached_tokens()).unwrap_or(u32::MAX)
    }

    /// The statistics of the last finished turn (never waits).
    pub fn last_stats(&self) -> Option<GenerationStats> {
        self.inner.last_stats().map(Into::into)
    }

    /// Whether turns are rendered with a chat template (false: plain text continuation).
    pub fn uses_chat_template(&self) -> bool {
        self.inner.uses_chat_template()
    }
}

/// Runs one turn, forwarding engine events to the sink. A sink error stops generation and is
/// what the turn returns.
fn run_turn(
    sink: Option<Arc<dyn GenerationSink>>,
    turn: impl FnOnce(&mut dyn FnMut(Event) -> Flow) -> gemmakit::Result<GenerationOutput>,
) -> Result<GenerationResult, GemmaKitError> {
    let mut sink_error: Option<GemmaKitError> = None;
    let mut on_event = |event: Event| -> Flow {
        let Some(sink) = &sink else {
            return Flow::Continue;
        };
        if sink_error.is_some() {
            return Flow::Stop;
        }
        let answer = match event {
            Event::Text(text) => sink.on_chunk(Chunk::Text { text }),
            Event::Thought(text) => sink.on_chunk(Chunk::Thought { text }),
            Event::ToolCall(call) => sink.on_chunk(Chunk::Tool { call: call.into() }),
            Event::Done(stats) => sink.on_done(stats.into()).map(|()| SinkFlow::Continue),
        };
        answer
            .unwrap_or_else(|e| {
                sink_error = Some(e);
                SinkFlow::Stop
            })
            .into()
    };
    let output = turn(&mut on_event);
    if let Some(e) = sink_error {
        return Err(e);
    }
    Ok(output?.into())
}
