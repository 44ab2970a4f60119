//! Options shared by several commands, and their conversion into engine options.

use std::path::PathBuf;

use clap::Args;
use gemmakit::engine::{BackendChoice, EngineOptions, KvType};
use gemmakit::generate::{Constraint, Draft, GenerateOptions};
use gemmakit::kernels::cpu::{ActivationPrecision, Activations};
use gemmakit::media::{AudioInput, ImageInput, Media, VideoInput};
use gemmakit::model::audio::AttentionWindow;
use gemmakit::sampling::SamplingOptions;
use gemmakit::{GemmaError, Result};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, a Hugging Face checkpoint directory, or a catalogue name pulled into
    /// $GEMMAKIT_HOME (`gemmakit models`). Default: the demo model (Gemma 3 270M, fetched into
    /// $GEMMAKIT_HOME on first use).
    #[arg(long)]
    pub model: Option<String>,
    /// cpu, gpu or auto.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    #[arg(long, default_value_t = 4096)]
    pub context: usize,
    /// CPU threads (default: one per core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Cores the CPU workers run on: auto (the big cores of a big.LITTLE CPU), all, or a list
    /// such as 4-7 or 0,2,5.
    #[arg(long, default_value = "auto")]
    pub cpu_cores: String,
    /// llama.cpp's vision/audio GGUF for a GGUF model (default: mmproj*.gguf next to it).
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// Audio tower attention window: transformers (12 keys) or jax (13).
    #[arg(long, default_value = "transformers")]
    pub audio_window: AudioWindowArg,
    #[command(flatten)]
    pub activations: ActivationArgs,
    /// Bytes the model may use (default: the system's MemAvailable); a larger estimate refuses
    /// to load.
    #[arg(long)]
    pub memory_budget: Option<u64>,
    /// Load even when the memory check says the model does not fit.
    #[arg(long)]
    pub ignore_memory_check: bool,
    #[command(flatten)]
    pub kv: KvTypeArgs,
}

/// CPU activation numerics per phase (`run`, `chat`, `bench`, `perplexity`).
#[derive(Args, Clone, Default)]
pub struct ActivationArgs {
    /// CPU decode (and speculative verify) activations: exact (f32) or int8 (rounded to 8 bits
    /// per 32 values, llama.cpp's numerics class; runs exact on CPUs without AVX2).
    #[arg(long, value_name = "exact|int8")]
    pub decode_activations: Option<ActivationPrecision>,
    /// CPU prefill activations: exact or int8 (runs exact on CPUs without AVX-512 VNNI).
    #[arg(long, value_name = "exact|int8")]
    pub prefill_activations: Option<ActivationPrecision>,
    /// Alias of `--prefill-activations int8`.
    #[arg(long)]
    pub int8_prefill: bool,
}

impl ActivationArgs {
    /// What was asked for; unset phases keep the engine's defaults.
    pub fn activations(&self) -> Activations {
        let default = EngineOptions::default().cpu_activations();
        Activations {
            prefill: match (self.prefill_activations, self.int8_prefill) {
                (Some(p), _) => p,
                (None, true) => ActivationPrecision::Int8,
                (None, false) => default.prefill,
            },
            decode: self.decode_activations.unwrap_or(default.decode),
        }
    }
}

/// The KV cache's element types, as llama.cpp's `-ctk`/`-ctv`.
#[derive(Args, Clone, Default)]
pub struct KvTypeArgs {
    /// KV cache element type for keys and values: f32, f16, q8_0, tq4, tq3, tq2 (default: f16,
    /// on the CPU and on a GPU).
    #[arg(long)]
    pub kv_type: Option<String>,
    /// Keys only (overrides --kv-type).
    #[arg(long, visible_alias = "ctk")]
    pub kv_type_k: Option<String>,
    /// Values only (overrides --kv-type).
    #[arg(long, visible_alias = "ctv")]
    pub kv_type_v: Option<String>,
}

impl KvTypeArgs {
    /// (keys, values); `None`: the backend's default.
    pub fn types(&self) -> Result<(Option<KvType>, Option<KvType>)> {
        let parse = |t: &Option<String>| t.as_deref().map(str::parse::<KvType>).transpose();
        let both = parse(&self.kv_type)?;
        Ok((
            parse(&self.kv_type_k)?.or(both),
            parse(&self.kv_type_v)?.or(both),
        ))
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AudioWindowArg {
    Transformers,
    Jax,
}

impl From<AudioWindowArg> for AttentionWindow {
    fn from(w: AudioWindowArg) -> Self {
        match w {
            AudioWindowArg::Transformers => AttentionWindow::Transformers,
            AudioWindowArg::Jax => AttentionWindow::Jax,
        }
    }
}

/// Images, audio and video frames given on the command line.
#[derive(Args, Clone, Default)]
pub struct MediaArgs {
    /// An image (JPEG, PNG, WebP); repeatable, placed in order before the prompt text.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Soft tokens per image: 70, 140, 280, 560 or 1120.
    #[arg(long, default_value_t = 280)]
    image_tokens: usize,
    /// A WAV file; repeatable, placed after the images.
    #[arg(long = "audio")]
    audios: Vec<PathBuf>,
    /// A video frame image; repeatable, in order: together they form one video.
    #[arg(long = "frame")]
    frames: Vec<PathBuf>,
    /// Frame rate of --frame images (frame i is at i/fps seconds).
    #[arg(long, default_value_t = 1.0)]
    fps: f64,
}

impl MediaArgs {
    pub fn load(&self) -> Result<Vec<Media>> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| GemmaError::io(p, e));
        let mut media = Vec::new();
        for p in &self.images {
            let image =
                ImageInput::from_bytes(&read(p)?)?.with_max_soft_tokens(self.image_tokens)?;
            media.push(Media::Image(image));
        }
        for p in &self.audios {
            let audio = AudioInput::from_wav_bytes(&read(p)?)?;
            if audio.clips().was_split() {
                eprintln!(
                    "gemmakit: {} is {:.1} s: encoded as {} clips of at most 30 s",
                    p.display(),
                    audio.duration_secs(),
                    audio.clips().clips.len()
                );
            }
            media.push(Media::Audio(audio));
        }
        if !self.frames.is_empty() {
            let frames = self
                .frames
                .iter()
                .map(|p| ImageInput::from_bytes(&read(p)?))
                .collect::<Result<Vec<_>>>()?;
            media.push(Media::Video(VideoInput::from_frames_at_fps(
                frames, self.fps,
            )?));
        }
        Ok(media)
    }
}

#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// The answer is JSON valid under the JSON schema in this file.
    #[arg(long, value_name = "FILE", group = "constraint")]
    json_schema: Option<PathBuf>,
    /// The answer fully matches this regular expression.
    #[arg(long, value_name = "REGEX", group = "constraint")]
    regex: Option<String>,
    /// The answer follows the Lark grammar in this file (llguidance's dialect).
    #[arg(long, value_name = "FILE.lark", group = "constraint")]
    grammar: Option<PathBuf>,
    /// The answer is exactly one of these strings (repeatable).
    #[arg(long = "choice", value_name = "TEXT", group = "constraint")]
    choices: Vec<String>,
    #[command(flatten)]
    draft: DraftArgs,
}

/// Speculative decoding (`run`, `chat`, `bench`).
#[derive(Args, Clone)]
pub struct DraftArgs {
    /// Drafter: `none` or `ngram` (prompt lookup). Output is unchanged; copying answers
    /// decode faster.
    #[arg(long, default_value = "none", value_name = "none|ngram")]
    draft: String,
    /// Prompt lookup: longest n-gram matched.
    #[arg(long, default_value_t = 3)]
    draft_ngram: usize,
    /// Most tokens drafted per verify pass.
    #[arg(long, default_value_t = 7)]
    draft_max: usize,
    /// Draft `--draft-max` tokens every time instead of adapting to the acceptance.
    #[arg(long)]
    draft_fixed: bool,
    /// Gemma 4's MTP assistant made for the model (`gemma-4-E2B-it-assistant` for E2B, …): its
    /// checkpoint directory or a `gemma4-assistant` GGUF. It drafts from the model's hidden
    /// state and KV cache; output is unchanged. With `bench --verify-cost`: also its cost.
    #[arg(long, value_name = "PATH", conflicts_with = "draft")]
    draft_model: Option<PathBuf>,
}

impl DraftArgs {
    pub fn draft(&self) -> Result<Draft> {
        if let Some(path) = &self.draft_model {
            return Ok(Draft::Mtp(path.clone()));
        }
        match self.draft.as_str() {
            "none" => Ok(Draft::None),
            "ngram" => Ok(Draft::Ngram {
                ngram: self.draft_ngram,
                max_tokens: self.draft_max,
                adaptive: !self.draft_fixed,
            }),
            other => Err(GemmaError::InvalidArgument(format!(
                "unknown drafter `{other}` (none, ngram; --draft-model PATH for MTP)"
            ))),
        }
    }
}

impl SamplingArgs {
    pub fn options(&self) -> Result<GenerateOptions> {
        let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| GemmaError::io(p, e));
        let constraint = if let Some(path) = &self.json_schema {
            Some(Constraint::json_schema_text(&read(path)?)?)
        } else if let Some(rx) = &self.regex {
            Some(Constraint::Regex(rx.clone()))
        } else if let Some(path) = &self.grammar {
            Some(Constraint::Lark(read(path)?))
        } else if !self.choices.is_empty() {
            Some(Constraint::Choice(self.choices.clone()))
        } else {
            None
        };
        Ok(GenerateOptions {
            sampling: SamplingOptions {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                seed: self.seed,
                ..SamplingOptions::default()
            },
            max_tokens: self.max_tokens,
            stop_strings: self.stop.clone(),
            stop_token_ids: Vec::new(),
            constraint,
            draft: self.draft.draft()?,
        })
    }
}

/// The `--backend` of `run`, `chat`, `info`, `tokenize` and `bench`.
pub fn backend_choice(name: &str) -> Result<BackendChoice> {
    match name {
        "auto" => Ok(BackendChoice::Auto),
        "cpu" => Ok(BackendChoice::Cpu),
        "gpu" => Ok(BackendChoice::Gpu),
        other => Err(GemmaError::InvalidArgument(format!(
            "unknown backend `{other}` (cpu, gpu, auto)"
        ))),
    }
}

/// Parses `2,17,301` into token ids (`run --prompt-tokens`, `eval --tokens`).
pub fn parse_token_list(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| GemmaError::InvalidArgument(format!("`{s}` is not a token id")))
        })
        .collect()
}
