//! Records and enums crossing the FFI, and their conversions to and from the engine's types.
//! Sizes and counts (`usize` in the engine) are `u32`/`u64` here; JSON values are JSON text.
//!
//! Field defaults repeat the engine's `Default` impls (uniffi needs literals); the JVM tests
//! check them against `default_generate_options()` / `default_engine_options()`, which convert
//! the engine's own defaults.

use std::collections::HashMap;

use gemmakit::BackendKind as CoreBackendKind;
use gemmakit::chat::tools::ToolCall as CoreToolCall;
use gemmakit::chat::{Message, Part, Role as CoreRole};
use gemmakit::conversation::ContextPolicy as CoreContextPolicy;
use gemmakit::engine::{
    self, BackendChoice as CoreBackendChoice, ChatFormat as CoreChatFormat, KvType as CoreKvType,
};
use gemmakit::generate::{self, StopReason as CoreStopReason};
use gemmakit::kernels::cpu::{ActivationPrecision as CoreActivationPrecision, Activations};
use gemmakit::media::{AudioInput, ImageInput, Media, VideoFrame, VideoInput};
use gemmakit::model::audio::AttentionWindow;
use gemmakit::sampling;

use crate::error::GemmaKitError;

// ---------------------------------------------------------------- engine options

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum BackendChoice {
    /// A hardware GPU when there is one, else the CPU; the reason is reported.
    Auto,
    Cpu,
    Gpu,
}

/// Which cores the CPU workers run on (process-wide: the first engine loaded decides).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum CpuCores {
    /// The big cores of a big.LITTLE CPU, one worker each; every core where they are alike.
    Auto,
    /// Every core, unpinned.
    All,
    /// These cores (as the kernel numbers them).
    Only { cores: Vec<u32> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChatFormat {
    /// The model file's template; a built-in Gemma format for instruction-tuned files without
    /// one; plain continuation for base models.
    Auto,
    /// Never apply a template: the conversation is plain text continuation.
    PlainText,
}

/// The KV cache's element type (keys and values are chosen separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum KvType {
    F32,
    F16,
    /// 8-bit blocks (llama.cpp's q8_0).
    Q8_0,
    /// TurboQuant at 4, 3 or 2 bits a value (rotation + Lloyd-Max codebook).
    Tq4,
    Tq3,
    Tq2,
}

impl From<KvType> for CoreKvType {
    fn from(t: KvType) -> Self {
        match t {
            KvType::F32 => CoreKvType::F32,
            KvType::F16 => CoreKvType::F16,
            KvType::Q8_0 => CoreKvType::Q8_0,
            KvType::Tq4 => CoreKvType::Tq(4),
            KvType::Tq3 => CoreKvType::Tq(3),
            KvType::Tq2 => CoreKvType::Tq(2),
        }
    }
}

impl From<CoreKvType> for KvType {
    fn from(t: CoreKvType) -> Self {
        match t {
            CoreKvType::F32 => KvType::F32,
            CoreKvType::F16 => KvType::F16,
            CoreKvType::Q8_0 => KvType::Q8_0,
            CoreKvType::Tq(4) => KvType::Tq4,
            CoreKvType::Tq(3) => KvType::Tq3,
            CoreKvType::Tq(_) => KvType::Tq2,
        }
    }
}

/// How to load a model. Every field has a default: `EngineOptions()` in Kotlin and Swift.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct EngineOptions {
    /// `null`/`nil`: the engine's default (`Auto`).
    #[uniffi(default = None)]
    pub backend: Option<BackendChoice>,
    /// Maximum positions per conversation.
    #[uniffi(default = 4096)]
    pub context_len: u32,
    /// CPU worker threads (`null`: one per core). Process-wide: the first engine loaded sets it.
    #[uniffi(default = None)]
    pub threads: Option<u32>,
    /// Where the CPU workers run (`null`: `Auto`, the big cores of a big.LITTLE CPU).
    #[uniffi(default = None)]
    pub cpu_cores: Option<CpuCores>,
    /// Bytes the app may use (Android: `ActivityManager.MemoryInfo.availMem`; iOS:
    /// `os_proc_available_memory()`); `null`: the device's `MemAvailable` where there is one.
    /// A model whose estimate is larger is refused (`MemoryBudgetExceeded`) before loading.
    #[uniffi(default = None)]
    pub memory_budget: Option<u64>,
    /// Load even when the memory check refuses.
    #[uniffi(default = false)]
    pub ignore_memory_check: bool,
    /// Count the vision/audio towers in the memory check.
    #[uniffi(default = false)]
    pub memory_for_media: bool,
    /// `null`/`nil`: the engine's default (`Auto`).
    #[uniffi(default = None)]
    pub chat_format: Option<ChatFormat>,
    /// llama.cpp's vision/audio GGUF for a GGUF model (`null`: an `mmproj*.gguf` next to it).
    #[uniffi(default = None)]
    pub mmproj_path: Option<String>,
    /// Audio attention window: `false` = transformers' 12 keys (default), `true` = JAX's 13.
    #[uniffi(default = false)]
    pub audio_jax_window: bool,
    /// CPU prefill activations (`null`/`nil`: the engine's default, `Exact`): `Int8` is faster
    /// where the CPU has integer dot instructions (llama.cpp's numerics class).
    #[uniffi(default = None)]
    pub prefill_activations: Option<ActivationPrecision>,
    /// CPU decode activations (`null`/`nil`: the engine's default, `Exact`), as for prefill.
    #[uniffi(default = None)]
    pub decode_activations: Option<ActivationPrecision>,
    /// KV cache element type of keys (`null`/`nil`: the backend's default, f16 on the CPU and
    /// on a GPU; every type runs on both).
    #[uniffi(default = None)]
    pub kv_type_k: Option<KvType>,
    /// KV cache element type of values (as `kv_type_k`).
    #[uniffi(default = None)]
    pub kv_type_v: Option<KvType>,
}

/// How the CPU multiplies activations with weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ActivationPrecision {
    /// f32 activations times exactly dequantized weights.
    Exact,
    /// Activations rounded to 8 bits per 32 values (runs `Exact` where the CPU has no fast
    /// int8 kernel for the phase; `Engine.activations()` says what runs).
    Int8,
}

impl From<ActivationPrecision> for CoreActivationPrecision {
    fn from(p: ActivationPrecision) -> Self {
        match p {
            ActivationPrecision::Exact => CoreActivationPrecision::Exact,
            ActivationPrecision::Int8 => CoreActivationPrecision::Int8,
        }
    }
}

impl From<CoreActivationPrecision> for ActivationPrecision {
    fn from(p: CoreActivationPrecision) -> Self {
        match p {
            CoreActivationPrecision::Exact => ActivationPrecision::Exact,
            CoreActivationPrecision::Int8 => ActivationPrecision::Int8,
        }
    }
}

/// The CPU activation numerics that run, per phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ActivationReport {
    pub prefill: ActivationPrecision,
    pub decode: ActivationPrecision,
}

impl From<Activations> for ActivationReport {
    fn from(a: Activations) -> Self {
        ActivationReport {
            prefill: a.prefill.into(),
            decode: a.decode.into(),
        }
    }
}

impl From<CpuCores> for engine::CpuCores {
    fn from(c: CpuCores) -> Self {
        match c {
            CpuCores::Auto => engine::CpuCores::Auto,
            CpuCores::All => engine::CpuCores::All,
            CpuCores::Only { cores } => {
                engine::CpuCores::Only(cores.into_iter().map(|c| c as usize).collect())
            }
        }
    }
}

impl From<engine::CpuCores> for CpuCores {
    fn from(c: engine::CpuCores) -> Self {
        match c {
            engine::CpuCores::Auto => CpuCores::Auto,
            engine::CpuCores::All => CpuCores::All,
            engine::CpuCores::Only(cores) => CpuCores::Only {
                cores: cores.into_iter().map(saturating_u32).collect(),
            },
        }
    }
}

impl From<BackendChoice> for CoreBackendChoice {
    fn from(b: BackendChoice) -> Self {
        match b {
            BackendChoice::Auto => CoreBackendChoice::Auto,
            BackendChoice::Cpu => CoreBackendChoice::Cpu,
            BackendChoice::Gpu => CoreBackendChoice::Gpu,
        }
    }
}

impl From<CoreBackendChoice> for BackendChoice {
    fn from(b: CoreBackendChoice) -> Self {
        match b {
            CoreBackendChoice::Auto => BackendChoice::Auto,
            CoreBackendChoice::Cpu => BackendChoice::Cpu,
            CoreBackendChoice::Gpu => BackendChoice::Gpu,
        }
    }
}

impl From<ChatFormat> for CoreChatFormat {
    fn from(f: ChatFormat) -> Self {
        match f {
            ChatFormat::Auto => CoreChatFormat::Auto,
            ChatFormat::PlainText => CoreChatFormat::PlainText,
        }
    }
}

impl From<CoreChatFormat> for ChatFormat {
    fn from(f: CoreChatFormat) -> Self {
        match f {
            CoreChatFormat::Auto => ChatFormat::Auto,
            CoreChatFormat::PlainText => ChatFormat::PlainText,
        }
    }
}

impl From<EngineOptions> for engine::EngineOptions {
    fn from(o: EngineOptions) -> Self {
        let d = engine::EngineOptions::default();
        engine::EngineOptions {
            backend: o.backend.map_or(d.backend, Into::into),
            context_len: o.context_len as usize,
            threads: o.threads.map(|t| t as usize),
            cpu_cores: o.cpu_cores.map_or(d.cpu_cores, Into::into),
            memory_budget: o.memory_budget,
            ignore_memory_check: o.ignore_memory_check,
            memory_for_media: o.memory_for_media,
            chat_format: o.chat_format.map_or(d.chat_format, Into::into),
            mmproj: o.mmproj_path.map(Into::into),
            audio_window: if o.audio_jax_window {
                AttentionWindow::Jax
            } else {
                AttentionWindow::Transformers
            },
            prefill_activations: o
                .prefill_activations
                .map_or(d.prefill_activations, Into::into),
            decode_activations: o
                .decode_activations
                .map_or(d.decode_activations, Into::into),
            kv_type_k: o.kv_type_k.map(Into::into),
            kv_type_v: o.kv_type_v.map(Into::into),
        }
    }
}

impl From<engine::EngineOptions> for EngineOptions {
    fn from(o: engine::EngineOptions) -> Self {
        EngineOptions {
            backend: Some(o.backend.into()),
            context_len: saturating_u32(o.context_len),
            threads: o.threads.map(saturating_u32),
            cpu_cores: Some(o.cpu_cores.into()),
            memory_budget: o.memory_budget,
            ignore_memory_check: o.ignore_memory_check,
            memory_for_media: o.memory_for_media,
            chat_format: Some(o.chat_format.into()),
            mmproj_path: o.mmproj.map(|p| p.display().to_string()),
            audio_jax_window: o.audio_window == AttentionWindow::Jax,
            prefill_activations: Some(o.prefill_activations.into()),
            decode_activations: Some(o.decode_activations.into()),
            kv_type_k: o.kv_type_k.map(Into::into),
            kv_type_v: o.kv_type_v.map(Into::into),
        }
    }
}

// ---------------------------------------------------------------- media

/// A piece of a multimodal user message. Media are decoded when the message is sent; a bad
/// file fails that call with `InvalidImage` / `InvalidAudio`.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum MessagePart {
    Text {
        text: String,
    },
    /// JPEG, PNG or WebP bytes (EXIF orientation applied). `max_soft_tokens`: 70, 140, 280
    /// (default), 560 or 1120.
    Image {
        bytes: Vec<u8>,
        max_soft_tokens: Option<u32>,
    },
    /// A WAV file's bytes (16/24/32-bit PCM or float, any rate and channel count).
    AudioWav {
        bytes: Vec<u8>,
    },
    /// Interleaved float samples in [-1, 1] (e.g. from AudioRecord / AVAudioEngine).
    AudioPcm {
        samples: Vec<f32>,
        sample_rate: u32,
        channels: u16,
    },
    /// Video frames (JPEG/PNG/WebP bytes each) with their timestamps in seconds.
    Video {
        frames: Vec<Vec<u8>>,
        timestamps_secs: Vec<f64>,
        max_soft_tokens_per_frame: Option<u32>,
    },
}

impl MessagePart {
    pub(crate) fn into_core(self) -> gemmakit::Result<Part> {
        Ok(match self {
            MessagePart::Text { text } => Part::Text(text),
            MessagePart::Image {
                bytes,
                max_soft_tokens,
            } => {
                let mut image = ImageInput::from_bytes(&bytes)?;
                if let Some(n) = max_soft_tokens {
                    image = image.with_max_soft_tokens(n as usize)?;
                }
                Part::Media(Media::Image(image))
            }
            MessagePart::AudioWav { bytes } => {
                Part::Media(Media::Audio(AudioInput::from_wav_bytes(&bytes)?))
            }
            MessagePart::AudioPcm {
                samples,
                sample_rate,
                channels,
            } => Part::Media(Media::Audio(AudioInput::from_pcm_f32(
                &samples,
                sample_rate,
                channels,
            )?)),
            MessagePart::Video {
                frames,
                timestamps_secs,
                max_soft_tokens_per_frame,
            } => {
                if frames.len() != timestamps_secs.len() {
                    return Err(gemmakit::GemmaError::InvalidArgument(format!(
                        "{} frames but {} timestamps",
                        frames.len(),
                        timestamps_secs.len()
                    )));
                }
                let frames = frames
                    .iter()
                    .zip(timestamps_secs)
                    .map(|(bytes, t)| {
                        Ok(VideoFrame {
                            image: ImageInput::from_bytes(bytes)?,
                            timestamp_secs: t,
                        })
                    })
                    .collect::<gemmakit::Result<Vec<_>>>()?;
                let mut video = VideoInput::from_frames(frames)?;
                if let Some(n) = max_soft_tokens_per_frame {
                    video = video.with_max_soft_tokens_per_frame(n as usize)?;
                }
                Part::Media(Media::Video(video))
            }
        })
    }
}

// ---------------------------------------------------------------- engine facts

/// The backend that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum BackendKind {
    /// burn-flex on the CPU.
    Cpu,
    /// burn-wgpu (Vulkan, Metal).
    Gpu,
}

/// Which backend runs, and why.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct BackendReport {
    pub backend: BackendKind,
    pub device: String,
    pub reason: String,
}

impl From<&engine::BackendReport> for BackendReport {
    fn from(r: &engine::BackendReport) -> Self {
        BackendReport {
            backend: match r.backend {
                CoreBackendKind::Cpu => BackendKind::Cpu,
                CoreBackendKind::Gpu => BackendKind::Gpu,
            },
            device: r.device.clone(),
            reason: r.reason.clone(),
        }
    }
}

/// Facts about a loaded model.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: String,
    pub layers: u32,
    pub hidden_size: u32,
    pub vocab_size: u32,
    pub max_context: u64,
    /// Tensor element type → bytes of weights of that type.
    pub weight_types: HashMap<String, u64>,
    pub file_bytes: u64,
    /// Estimated resident memory at the engine's context length (weights read + KV cache).
    pub estimated_memory_bytes: u64,
    pub kv_cache_bytes: u64,
    /// Which chat format conversations use; `null`/`nil`: plain continuation.
    pub chat_template: Option<String>,
}

impl From<&engine::ModelInfo> for ModelInfo {
    fn from(i: &engine::ModelInfo) -> Self {
        ModelInfo {
            architecture: i.architecture.clone(),
            name: i.name.clone(),
            layers: saturating_u32(i.layers),
            hidden_size: saturating_u32(i.hidden_size),
            vocab_size: saturating_u32(i.vocab_size),
            max_context: i.max_context as u64,
            weight_types: i
                .weight_types
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            file_bytes: i.file_bytes,
            estimated_memory_bytes: i.estimated_memory_bytes,
            kv_cache_bytes: i.kv_cache_bytes,
            chat_template: i.chat_template.clone(),
        }
    }
}

// ---------------------------------------------------------------- generation options

/// A logit bias: added to `token_id`'s logit before anything else.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LogitBias {
    pub token_id: u32,
    pub bias: f32,
}

/// How the next token is chosen. The defaults are greedy decoding; see
/// `gemma_recommended_sampling()` for Gemma's own settings.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SamplingOptions {
    /// 0 = greedy.
    #[uniffi(default = 0.0)]
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    #[uniffi(default = 0)]
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probabilities sum to at least `top_p`; 1 = off.
    #[uniffi(default = 1.0)]
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely token's probability; 0 = off.
    #[uniffi(default = 0.0)]
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of tokens seen in the window; 1 = off.
    #[uniffi(default = 1.0)]
    pub repetition_penalty: f32,
    #[uniffi(default = 0.0)]
    pub presence_penalty: f32,
    #[uniffi(default = 0.0)]
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at; 0 = the whole history.
    #[uniffi(default = 64)]
    pub penalty_window: u32,
    #[uniffi(default)]
    pub logit_bias: Vec<LogitBias>,
    /// `null`/`nil` draws a seed from the OS.
    #[uniffi(default = None)]
    pub seed: Option<u64>,
}

impl From<SamplingOptions> for sampling::SamplingOptions {
    fn from(o: SamplingOptions) -> Self {
        sampling::SamplingOptions {
            temperature: o.temperature,
            top_k: o.top_k as usize,
            top_p: o.top_p,
            min_p: o.min_p,
            repetition_penalty: o.repetition_penalty,
            presence_penalty: o.presence_penalty,
            frequency_penalty: o.frequency_penalty,
            penalty_window: o.penalty_window as usize,
            logit_bias: o
                .logit_bias
                .into_iter()
                .map(|b| (b.token_id, b.bias))
                .collect(),
            seed: o.seed,
        }
    }
}

impl From<sampling::SamplingOptions> for SamplingOptions {
    fn from(o: sampling::SamplingOptions) -> Self {
        SamplingOptions {
            temperature: o.temperature,
            top_k: saturating_u32(o.top_k),
            top_p: o.top_p,
            min_p: o.min_p,
            repetition_penalty: o.repetition_penalty,
            presence_penalty: o.presence_penalty,
            frequency_penalty: o.frequency_penalty,
            penalty_window: saturating_u32(o.penalty_window),
            logit_bias: o
                .logit_bias
                .into_iter()
                .map(|(token_id, bias)| LogitBias { token_id, bias })
                .collect(),
            seed: o.seed,
        }
    }
}

/// One generation's settings. `GenerateOptions()` in Kotlin and Swift: greedy, 256 tokens.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerateOptions {
    #[uniffi(default)]
    pub sampling: SamplingOptions,
    /// Upper bound on generated tokens.
    #[uniffi(default = 256)]
    pub max_tokens: u32,
    /// Generation stops before any of these strings; they are not part of the output.
    #[uniffi(default)]
    pub stop_strings: Vec<String>,
    /// Extra stop ids, on top of the model's end-of-turn ids.
    #[uniffi(default)]
    pub stop_token_ids: Vec<u32>,
    /// The shape the answer must take; `null`/`nil`: free text.
    #[uniffi(default)]
    pub constraint: Option<Constraint>,
    /// Speculative decoding (the output is unchanged); `null`/`nil`: plain decoding.
    #[uniffi(default)]
    pub draft: Option<Draft>,
}

/// Who drafts tokens for speculative decoding.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Draft {
    /// Prompt lookup: the last `n` tokens (down to 1) matched earlier in the conversation
    /// propose up to `m` tokens; `adaptive` shrinks `m` while drafts are rejected.
    Ngram { n: u32, m: u32, adaptive: bool },
    /// Gemma 4's MTP assistant made for the model at `path` (checkpoint directory or
    /// `gemma4-assistant` GGUF); an assistant of another model is `InvalidConfig`.
    Mtp { path: String },
}

/// `None`: plain decoding.
fn core_draft(d: Option<Draft>) -> generate::Draft {
    match d {
        None => generate::Draft::None,
        Some(Draft::Ngram { n, m, adaptive }) => generate::Draft::Ngram {
            ngram: n as usize,
            max_tokens: m as usize,
            adaptive,
        },
        Some(Draft::Mtp { path }) => generate::Draft::Mtp(path.into()),
    }
}

fn ffi_draft(d: generate::Draft) -> Option<Draft> {
    match d {
        generate::Draft::None => None,
        generate::Draft::Ngram {
            ngram,
            max_tokens,
            adaptive,
        } => Some(Draft::Ngram {
            n: saturating_u32(ngram),
            m: saturating_u32(max_tokens),
            adaptive,
        }),
        generate::Draft::Mtp(path) => Some(Draft::Mtp {
            path: path.display().to_string(),
        }),
    }
}

/// The shape the answer must take (the thought channel stays free).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Constraint {
    /// JSON valid under this JSON schema (the schema's text).
    JsonSchema { schema: String },
    /// Text that fully matches this regular expression.
    Regex { pattern: String },
    /// Text of this Lark grammar (llguidance's dialect, `start` is the root).
    Lark { grammar: String },
    /// Exactly one of these strings.
    Choice { options: Vec<String> },
}

impl TryFrom<Constraint> for generate::Constraint {
    type Error = gemmakit::GemmaError;
    fn try_from(c: Constraint) -> Result<Self, Self::Error> {
        Ok(match c {
            Constraint::JsonSchema { schema } => generate::Constraint::json_schema_text(&schema)?,
            Constraint::Regex { pattern } => generate::Constraint::Regex(pattern),
            Constraint::Lark { grammar } => generate::Constraint::Lark(grammar),
            Constraint::Choice { options } => generate::Constraint::Choice(options),
        })
    }
}

impl From<generate::Constraint> for Constraint {
    fn from(c: generate::Constraint) -> Self {
        match c {
            generate::Constraint::JsonSchema(schema) => Constraint::JsonSchema {
                schema: schema.to_string(),
            },
            generate::Constraint::Regex(pattern) => Constraint::Regex { pattern },
            generate::Constraint::Lark(grammar) => Constraint::Lark { grammar },
            generate::Constraint::Choice(options) => Constraint::Choice { options },
        }
    }
}

impl TryFrom<GenerateOptions> for generate::GenerateOptions {
    type Error = gemmakit::GemmaError;
    fn try_from(o: GenerateOptions) -> Result<Self, Self::Error> {
        Ok(generate::GenerateOptions {
            sampling: o.sampling.into(),
            max_tokens: o.max_tokens as usize,
            stop_strings: o.stop_strings,
            stop_token_ids: o.stop_token_ids,
            constraint: o.constraint.map(TryInto::try_into).transpose()?,
            draft: core_draft(o.draft),
        })
    }
}

impl From<generate::GenerateOptions> for GenerateOptions {
    fn from(o: generate::GenerateOptions) -> Self {
        GenerateOptions {
            sampling: o.sampling.into(),
            max_tokens: saturating_u32(o.max_tokens),
            stop_strings: o.stop_strings,
            stop_token_ids: o.stop_token_ids,
            constraint: o.constraint.map(Into::into),
            draft: ffi_draft(o.draft),
        }
    }
}

// ---------------------------------------------------------------- generation results

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum StopReason {
    /// The model ended its turn (an end-of-turn or stop token id).
    EndOfTurn,
    StopString,
    MaxTokens,
    /// The context is full; the conversation stays consistent.
    ContextFull,
    /// `cancel()` was called.
    Cancelled,
    /// The sink returned `Stop`.
    CallbackStopped,
    /// The model called a tool and waits for its result (`send_tool_result`).
    ToolCall,
}

impl From<CoreStopReason> for StopReason {
    fn from(r: CoreStopReason) -> Self {
        match r {
            CoreStopReason::EndOfTurn => StopReason::EndOfTurn,
            CoreStopReason::StopString => StopReason::StopString,
            CoreStopReason::MaxTokens => StopReason::MaxTokens,
            CoreStopReason::ContextFull => StopReason::ContextFull,
            CoreStopReason::Cancelled => StopReason::Cancelled,
            CoreStopReason::CallbackStopped => StopReason::CallbackStopped,
            CoreStopReason::ToolCall => StopReason::ToolCall,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerationStats {
    /// Tokens of the whole prompt (conversation so far).
    pub prompt_tokens: u32,
    /// Prompt tokens actually run (the rest came from the KV cache).
    pub prefilled_tokens: u32,
    pub generated_tokens: u32,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub time_to_first_token_ms: f64,
    pub stop_reason: StopReason,
    /// Speculative decoding: tokens drafted, drafted tokens kept, verify passes.
    pub drafted: u32,
    pub accepted: u32,
    pub rounds: u32,
}

impl From<generate::GenerationStats> for GenerationStats {
    fn from(s: generate::GenerationStats) -> Self {
        GenerationStats {
            prompt_tokens: saturating_u32(s.prompt_tokens),
            prefilled_tokens: saturating_u32(s.prefilled_tokens),
            generated_tokens: saturating_u32(s.generated_tokens),
            prefill_tok_s: s.prefill_tok_s,
            decode_tok_s: s.decode_tok_s,
            time_to_first_token_ms: s.time_to_first_token_ms,
            stop_reason: s.stop_reason.into(),
            drafted: saturating_u32(s.drafted),
            accepted: saturating_u32(s.accepted),
            rounds: saturating_u32(s.rounds),
        }
    }
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ToolCall {
    pub name: String,
    /// The arguments, a JSON object, as JSON text.
    pub arguments_json: String,
}

impl From<CoreToolCall> for ToolCall {
    fn from(c: CoreToolCall) -> Self {
        ToolCall {
            name: c.name,
            arguments_json: c.arguments.to_string(),
        }
    }
}

/// Everything a finished turn produced.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenerationResult {
    /// The visible answer.
    pub text: String,
    /// The thought channel (Gemma 4 thinking).
    pub thought: String,
    pub tool_calls: Vec<ToolCall>,
    /// Every generated token id.
    pub token_ids: Vec<u32>,
    pub stats: GenerationStats,
}

impl From<generate::GenerationOutput> for GenerationResult {
    fn from(o: generate::GenerationOutput) -> Self {
        GenerationResult {
            text: o.text,
            thought: o.thought,
            tool_calls: o.tool_calls.into_iter().map(Into::into).collect(),
            token_ids: o.tokens,
            stats: o.stats.into(),
        }
    }
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Chunk {
    /// Visible answer text (whole UTF-8 characters; concatenated, the result's `text`).
    Text { text: String },
    /// Text of the thought channel.
    Thought { text: String },
    /// A complete tool call.
    Tool { call: ToolCall },
}

/// What the sink wants after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SinkFlow {
    Continue,
    Stop,
}

impl From<SinkFlow> for generate::Flow {
    fn from(f: SinkFlow) -> Self {
        match f {
            SinkFlow::Continue => generate::Flow::Continue,
            SinkFlow::Stop => generate::Flow::Stop,
        }
    }
}

// ---------------------------------------------------------------- conversations

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call.
    Tool,
}

impl From<CoreRole> for Role {
    fn from(r: CoreRole) -> Self {
        match r {
            CoreRole::System => Role::System,
            CoreRole::User => Role::User,
            CoreRole::Assistant => Role::Assistant,
            CoreRole::Tool => Role::Tool,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// Calls made by an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For `Role.TOOL`: which tool produced `content`.
    pub tool_name: Option<String>,
}

impl From<Message> for ChatMessage {
    fn from(m: Message) -> Self {
        ChatMessage {
            role: m.role.into(),
            content: m.content,
            tool_calls: m.tool_calls.into_iter().map(Into::into).collect(),
            tool_name: m.tool_name,
        }
    }
}

/// What happens when a conversation no longer fits in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ContextPolicy {
    /// Fail the turn with `ContextOverflow`; the conversation is unchanged.
    Error,
    /// Drop the oldest user/model exchanges (never the system prompt) until the prompt fits.
    DropOldestTurns,
}

impl From<ContextPolicy> for CoreContextPolicy {
    fn from(p: ContextPolicy) -> Self {
        match p {
            ContextPolicy::Error => CoreContextPolicy::Error,
            ContextPolicy::DropOldestTurns => CoreContextPolicy::DropOldestTurns,
        }
    }
}

/// Tool declarations arrive as JSON text (OpenAI function format).
pub(crate) fn parse_tool_declarations(
    tools: Vec<String>,
) -> Result<Vec<serde_json::Value>, GemmaKitError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::from_str(t).map_err(|e| {
                GemmaKitError::from(gemmakit::GemmaError::InvalidArgument(format!(
                    "tool declaration {i} is not valid JSON: {e}"
                )))
            })
        })
        .collect()
}

fn saturating_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
