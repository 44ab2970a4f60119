//! The public entry point: load a model once, then talk to it through conversations.
//!
//! ```no_run
//! use gemmakit::engine::{Engine, EngineOptions};
//! use gemmakit::generate::{Event, Flow, GenerateOptions};
//! let engine = Engine::load("model.gguf".as_ref(), EngineOptions::default())?;
//! let chat = engine.conversation();
//! chat.send("Hello!", &GenerateOptions::default(), &mut |event| {
//!     if let Event::Text(t) = event { print!("{t}") }
//!     Flow::Continue
//! })?;
//! # Ok::<(), gemmakit::GemmaError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub mod auto;
pub mod conversation;
mod draft;
pub mod generate;
mod guide;
pub mod media;
pub mod memory;
mod speculation;

use self::auto::AutoPolicy;
use self::conversation::Conversation;
use self::generate::{
    Event, Flow, GenerateOptions, GenerationOutput, NewTokens, Sequence, generate,
};
use self::media::MediaEncoder;
use self::memory::MemoryEstimate;
use crate::chat::ChatTemplate;
use crate::chat::Part;
use crate::constraint::ConstraintCompiler;
pub use crate::device::cores::CpuCores;
use crate::device::{ActivationPrecision, Activations};
use crate::device::{BackendKind, ComputeDevice};
use crate::error::{GemmaError, Result};
pub use crate::kernels::kv::{KvType, KvTypes};
use crate::media::layout::PlaceholderIds;
use crate::media::{AudioInput, ImageInput, Media};
use crate::model::audio::AttentionWindow;
use crate::model::config::Architecture;
use crate::model::{AssistantModel, GemmaModel, SoftTokens};
use crate::source::ModelSource;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The faster of CPU and GPU by a short measured decode (cached per model file and
    /// device); the CPU when there is no GPU or only a software one. The reason is reported.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// Which chat format conversations use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatFormat {
    /// The model file's template; a built-in Gemma format for instruction-tuned files without
    /// one; none (plain continuation) for base models.
    #[default]
    Auto,
    /// Never apply a template: the conversation is plain text continuation.
    PlainText,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    pub backend: BackendChoice,
    /// Maximum positions per conversation.
    pub context_len: usize,
    /// CPU worker threads (`None`: one per core of `cpu_cores`). The pool is process-wide:
    /// the first engine loaded sets it.
    pub threads: Option<usize>,
    /// Which cores the CPU workers run on (default: the big cores of a big.LITTLE CPU, see
    /// [`CpuCores`]). Process-wide, like `threads`.
    pub cpu_cores: CpuCores,
    /// Bytes this process may use (Android: `ActivityManager.MemoryInfo.availMem`; iOS:
    /// `os_proc_available_memory()`). `None`: the device's available memory where the
    /// platform reports it (Linux and Android: `MemAvailable`). A model whose estimate
    /// ([`memory::MemoryEstimate`]) is larger is refused before it is loaded.
    pub memory_budget: Option<u64>,
    /// Load even when the memory check refuses (the app takes the risk).
    pub ignore_memory_check: bool,
    /// Count the vision/audio towers in the memory check (they are loaded on first use).
    pub memory_for_media: bool,
    pub chat_format: ChatFormat,
    /// llama.cpp's vision/audio GGUF for a GGUF text model (default: an `mmproj*.gguf` next to
    /// the model file). Checkpoint directories carry their towers.
    pub mmproj: Option<PathBuf>,
    /// Which keys the audio tower's local attention sees (transformers' 12, the default, or
    /// Google's JAX reference's 13).
    pub audio_window: AttentionWindow,
    /// CPU prefill numerics (chunks of at least `kernels::cpu::TILED_MIN_TOKENS` tokens):
    /// exact f32 (default) or 8-bit activations, faster on CPUs with integer dot
    /// instructions and llama.cpp's numerics class (see kernels::cpu::int8). A CPU without a
    /// fast int8 kernel runs exact ([`Engine::activations`] says what runs).
    pub prefill_activations: ActivationPrecision,
    /// CPU decode numerics (decode steps, speculative verify, prompts shorter than a prefill
    /// chunk): exact f32 (default) or 8-bit activations, as for prefill.
    pub decode_activations: ActivationPrecision,
    /// The KV cache's element type for keys and for values (`None`: the backend's default,
    /// [`default_kv_type`]). Every type runs on both backends (on a GPU as encoded rows in
    /// device memory, `kernels::gpu::kv`).
    pub kv_type_k: Option<KvType>,
    pub kv_type_v: Option<KvType>,
}

/// The KV type a backend uses when the options name none: f16 on either (perplexity within
/// 0.1 % of f32, BENCHMARKS.md "KV cache precision"; the GPU's kernels read f16 rows
/// directly, `kernels::gpu::kv`).
pub fn default_kv_type(backend: BackendKind) -> KvType {
    match backend {
        BackendKind::Cpu | BackendKind::Gpu => KvType::F16,
    }
}

impl EngineOptions {
    /// The CPU activation numerics these options ask for.
    pub fn cpu_activations(&self) -> Activations {
        Activations {
            prefill: self.prefill_activations,
            decode: self.decode_activations,
        }
    }

    /// The KV types on `backend`.
    pub fn kv_types(&self, backend: BackendKind) -> KvTypes {
        KvTypes {
            k: self.kv_type_k.unwrap_or(default_kv_type(backend)),
            v: self.kv_type_v.unwrap_or(default_kv_type(backend)),
        }
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: BackendChoice::Auto,
            context_len: 4096,
            threads: None,
            cpu_cores: CpuCores::Auto,
            memory_budget: None,
            ignore_memory_check: false,
            memory_for_media: false,
            chat_format: ChatFormat::Auto,
            mmproj: None,
            audio_window: AttentionWindow::default(),
            prefill_activations: ActivationPrecision::Exact,
            decode_activations: ActivationPrecision::Exact,
            kv_type_k: None,
            kv_type_v: None,
        }
    }
}

/// Which backend runs, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    pub backend: BackendKind,
    pub device: String,
    pub reason: String,
}

/// Facts about a loaded model, for `gemmakit info` and app UIs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: String,
    pub layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub max_context: usize,
    /// Tensor element types and how many bytes of weights each holds.
    pub weight_types: BTreeMap<String, u64>,
    pub file_bytes: u64,
    /// Estimated peak resident memory at `context_len` (see [`memory::MemoryEstimate`]).
    pub estimated_memory_bytes: u64,
    pub kv_cache_bytes: u64,
    pub chat_template: Option<String>,
}

pub(crate) struct EngineInner {
    pub model: GemmaModel,
    /// Shared with the constraint compiler's token environment.
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    /// Ids that end a model turn (`<eos>`, `<end_of_turn>` / `<turn|>`, …).
    pub end_of_turn_ids: Vec<u32>,
    pub context_len: usize,
    /// Forward passes of all conversations take turns (one device, one thread pool).
    pub compute: Mutex<()>,
    pub info: ModelInfo,
    pub backend: BackendReport,
    /// Image/audio/video support: the towers (loaded on first use) and the placeholder ids;
    /// `Err` says why the model has none.
    pub media: std::result::Result<(MediaEncoder, PlaceholderIds), String>,
    /// The constraint compiler, built on the first constrained request; `Err` says why it
    /// cannot be.
    pub constraints: OnceLock<std::result::Result<Arc<ConstraintCompiler>, String>>,
    /// The MTP assistant last asked for (`Draft::Mtp`), loaded on first use and kept.
    pub assistant: Mutex<Option<(PathBuf, Arc<AssistantModel>)>>,
    /// The load's memory options, which the assistant's load is checked against too.
    pub memory_budget: Option<u64>,
    pub ignore_memory_check: bool,
}

impl EngineInner {
    /// The MTP assistant at `path`, fitted to this model: loaded on first use, then kept
    /// (another path replaces it).
    pub(crate) fn assistant(&self, path: &Path) -> Result<Arc<AssistantModel>> {
        let mut slot = self.assistant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((loaded, model)) = slot.as_ref()
            && loaded == path
        {
            return Ok(model.clone());
        }
        // The assistant's weights come on top of the model's estimate: within the app's budget
        // what the model leaves, without one the memory the device has now.
        let assistant_bytes = crate::source::assistant_file_bytes(path)?;
        memory::check(
            &MemoryEstimate {
                weights: assistant_bytes,
                kv_cache: 0,
                towers: 0,
                runtime: 0,
            },
            self.memory_budget
                .map(|budget| budget.saturating_sub(self.info.estimated_memory_bytes)),
            self.ignore_memory_check,
        )?;
        let start = std::time::Instant::now();
        let model = Arc::new(crate::source::load_assistant(
            path,
            self.model.config(),
            self.model.device().clone(),
        )?);
        log::info!(
            "MTP assistant {} loaded in {:.0} ms",
            path.display(),
            start.elapsed().as_secs_f64() * 1e3
        );
        *slot = Some((path.to_path_buf(), model.clone()));
        Ok(model)
    }

    /// An empty sequence with a cache for the whole context.
    pub(crate) fn new_sequence(&self) -> Sequence {
        Sequence::new(self.model.new_cache(self.context_len))
    }

    /// The constraint compiler, built now if this is the first request that needs it.
    pub(crate) fn constraint_compiler(&self) -> Result<&ConstraintCompiler> {
        let built = self.constraints.get_or_init(|| {
            let start = std::time::Instant::now();
            let compiler = ConstraintCompiler::new(self.tokenizer.clone(), &self.end_of_turn_ids);
            log::info!(
                "constrained decoding prepared in {:.0} ms",
                start.elapsed().as_secs_f64() * 1e3
            );
            compiler.map(Arc::new).map_err(|e| e.to_string())
        });
        match built {
            Ok(compiler) => Ok(compiler),
            Err(why) => Err(GemmaError::InvalidConstraint(why.clone())),
        }
    }

    pub(crate) fn media_support(&self) -> Result<(&MediaEncoder, &PlaceholderIds)> {
        match &self.media {
            Ok((encoder, ids)) => Ok((encoder, ids)),
            Err(why) => Err(GemmaError::Unsupported(format!("media input: {why}"))),
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

/// The device to load on, why, and (Auto, after measuring) the model already loaded there.
fn choose_backend(
    choice: BackendChoice,
    source: &ModelSource,
    cpu_activations: Activations,
) -> Result<(ComputeDevice, String, Option<GemmaModel>)> {
    match choice {
        BackendChoice::Cpu => Ok((
            ComputeDevice {
                activations: crate::kernels::cpu::int8::effective(cpu_activations),
                ..ComputeDevice::open(BackendKind::Cpu)?
            },
            "requested".into(),
            None,
        )),
        BackendChoice::Gpu => Ok((
            ComputeDevice::open(BackendKind::Gpu)?,
            "requested".into(),
            None,
        )),
        BackendChoice::Auto => {
            let policy = AutoPolicy {
                cpu_activations,
                ..AutoPolicy::from_env()
            };
            let auto = auto::choose_auto(source, &policy)?;
            Ok((auto.device, auto.reason, auto.model))
        }
    }
}

/// Sizes and places the process-wide CPU workers (rayon's pool and the matvec helpers, which
/// start on first use): `threads` workers (default: one per chosen core) pinned to the chosen
/// cores. Only the first engine of a process gets to decide; later requests are logged.
pub fn start_cpu_workers(threads: Option<usize>, cores: &CpuCores) -> Result<()> {
    let cores = crate::device::cores::resolve(cores)?;
    let threads = threads.or(cores.as_ref().map(Vec::len));
    crate::device::cores::set_process_cores(cores);
    if let Some(n) = threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .start_handler(|_| crate::device::cores::pin_worker())
            .build_global()
        && rayon::current_num_threads() != n.max(1)
    {
        log::warn!("thread count not applied ({e}); the process-wide pool already exists");
    }
    Ok(())
}

impl Engine {
    /// Loads a `.gguf` file or a Hugging Face checkpoint directory (see [`ModelSource`]).
    pub fn load(path: &Path, options: EngineOptions) -> Result<Self> {
        if options.context_len == 0 {
            return Err(GemmaError::InvalidArgument(
                "context_len must be at least 1".into(),
            ));
        }
        start_cpu_workers(options.threads, &options.cpu_cores)?;
        let source = ModelSource::open(path)?;
        let context_len = options
            .context_len
            .min(source.config().max_position_embeddings);
        let towers = match options.memory_for_media {
            true => Some(source.tower_files(options.mmproj.as_deref())?),
            false => None,
        };
        let planned_backend = match options.backend {
            BackendChoice::Gpu => BackendKind::Gpu,
            // Auto measures on the CPU first, with the weights mapped as the CPU maps them.
            BackendChoice::Cpu | BackendChoice::Auto => BackendKind::Cpu,
        };
        // Auto may still choose a GPU: count the KV types it would use.
        let planned_kv = match options.backend {
            BackendChoice::Auto => options.kv_types(BackendKind::Gpu),
            _ => options.kv_types(planned_backend),
        };
        let estimate = MemoryEstimate::for_source(
            &source,
            context_len,
            planned_backend,
            planned_kv,
            towers.as_ref(),
        )?;
        memory::check(
            &estimate,
            options.memory_budget,
            options.ignore_memory_check,
        )?;
        let (device, reason, preloaded) =
            choose_backend(options.backend, &source, options.cpu_activations())?;
        let backend = BackendReport {
            backend: device.kind,
            device: device.description.clone(),
            reason,
        };
        let kv_types = options.kv_types(device.kind);
        let mut model = match preloaded {
            Some(model) => model,
            None => source.load_model(device)?,
        };
        model.set_kv_types(kv_types)?;
        let tokenizer = source.tokenizer()?;

        let architecture = model.config().architecture;
        let template = match (options.chat_format, source.chat_template()) {
            (ChatFormat::PlainText, _) => None,
            (ChatFormat::Auto, Some(source)) => Some(ChatTemplate::Jinja {
                source,
                bos: tokenizer
                    .bos_id
                    .map(|id| String::from_utf8_lossy(tokenizer.token_bytes(id)).into_owned())
                    .unwrap_or_default(),
                eos: tokenizer
                    .eos_id
                    .map(|id| String::from_utf8_lossy(tokenizer.token_bytes(id)).into_owned())
                    .unwrap_or_default(),
            }),
            (ChatFormat::Auto, None) if source.instruction_tuned() => Some(match architecture {
                Architecture::Gemma3 => ChatTemplate::BuiltinGemma3,
                Architecture::Gemma4 => ChatTemplate::BuiltinGemma4,
            }),
            (ChatFormat::Auto, None) => None,
        };

        let mut end_of_turn_ids: Vec<u32> = model.config().eos_token_ids.clone();
        for marker in ["<end_of_turn>", "<turn|>", "<eos>"] {
            if let Some(id) = tokenizer.token_id(marker)
                && !end_of_turn_ids.contains(&id)
            {
                end_of_turn_ids.push(id);
            }
        }

        let info = model_info(
            &model,
            source.name().to_string(),
            source.file_bytes(),
            &estimate,
            template.as_ref(),
        );
        let media = match (architecture, source.placeholder_ids(Some(&tokenizer))?) {
            (Architecture::Gemma3, _) => Err("Gemma 3 models are text-only here".to_string()),
            (_, None) => Err("the vocabulary has no <|image|>/<|audio|>/<|video|> tokens".into()),
            (_, Some(ids)) => MediaEncoder::for_source(
                &source,
                options.mmproj.as_deref(),
                model.device().clone(),
                options.audio_window,
            )
            .map(|encoder| (encoder, ids))
            .map_err(|e| e.to_string()),
        };
        log::info!(
            "backend {} ({}): {}",
            backend.backend,
            backend.device,
            backend.reason
        );
        Ok(Engine {
            inner: Arc::new(EngineInner {
                model,
                tokenizer: Arc::new(tokenizer),
                template,
                end_of_turn_ids,
                context_len,
                compute: Mutex::new(()),
                info,
                backend,
                media,
                constraints: OnceLock::new(),
                assistant: Mutex::new(None),
                memory_budget: options.memory_budget,
                ignore_memory_check: options.ignore_memory_check,
            }),
        })
    }

    pub fn backend(&self) -> &BackendReport {
        &self.inner.backend
    }

    /// The activation numerics that run: what the options asked for where this CPU has a
    /// fast int8 kernel for the phase, exact otherwise (and always exact on a GPU).
    pub fn activations(&self) -> Activations {
        match self.inner.backend.backend {
            BackendKind::Cpu => self.inner.model.device().activations,
            BackendKind::Gpu => Activations::EXACT,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    pub fn model(&self) -> &GemmaModel {
        &self.inner.model
    }

    /// The chat template in use; `None` for a base model (plain continuation).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.inner.template.as_ref()
    }

    pub fn context_len(&self) -> usize {
        self.inner.context_len
    }

    /// Continues `prompt` (token ids fed as they are: no template, no BOS added) with a fresh
    /// cache.
    pub fn generate_from_tokens(
        &self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<GenerationOutput> {
        if prompt.len() >= self.inner.context_len {
            return Err(GemmaError::ContextOverflow {
                requested: prompt.len() + 1,
                context_len: self.inner.context_len,
            });
        }
        let never = generate::TurnCancel::never();
        generate(
            &self.inner,
            &mut self.inner.new_sequence(),
            NewTokens {
                ids: prompt,
                soft: SoftTokens::NONE,
            },
            options,
            &[],
            &never,
            on_event,
        )
    }

    /// Builds what constrained decoding needs for this model (the token trie of its
    /// vocabulary: about a second and tens of MB for a 262k vocabulary). It is otherwise built
    /// on the first constrained request; an app calls this on a background thread to keep that
    /// request's first token fast.
    pub fn prepare_constraints(&self) -> Result<()> {
        self.inner.constraint_compiler().map(|_| ())
    }

    /// Runs what a first request runs — a short prompt, a greedy step and a step that reads
    /// its logits (sampled decoding) — on a scratch cache, so the backend's first-use costs are
    /// paid now rather than by the first message: on a GPU, compiling every pipeline a
    /// generation launches (seconds on some phones); on the CPU, paging in the weights. Returns
    /// the milliseconds it took. An app calls it on a background thread after loading;
    /// conversations are not touched. Compiled pipelines live as long as the process (the
    /// driver's shader cache is what may persist across launches).
    pub fn warm_up(&self) -> Result<f64> {
        let start = std::time::Instant::now();
        let model = &self.inner.model;
        let _turn = self.inner.compute.lock().unwrap_or_else(|e| e.into_inner());
        // Long enough for the tiled prefill kernels (8 tokens a tile on the GPU).
        let vocab = model.config().vocab_size.max(1) as u32;
        let prompt: Vec<u32> = (1..=12).map(|id| id % vocab).collect();
        let mut cache = model.new_cache(prompt.len() + 2);
        let next = model.forward_greedy(&mut cache, &prompt, SoftTokens::NONE)?;
        let next = model.forward_greedy(&mut cache, &[next], SoftTokens::NONE)?;
        model.forward(&mut cache, &[next], crate::model::LogitsFor::Last)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        log::info!("warmed up in {ms:.0} ms");
        Ok(ms)
    }

    /// Where image/audio input would be encoded, or why this model takes none.
    pub fn media_support(&self) -> std::result::Result<String, String> {
        match &self.inner.media {
            Ok((encoder, _)) => Ok(encoder.describe()),
            Err(why) => Err(why.clone()),
        }
    }

    /// Describes an image with Google's captioning prompt, in a fresh conversation.
    pub fn caption(
        &self,
        image: ImageInput,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<GenerationOutput> {
        self.conversation().send_parts(
            vec![
                Part::Media(Media::Image(image)),
                Part::Text(CAPTION_PROMPT.into()),
            ],
            options,
            on_event,
        )
    }

    /// Transcribes speech in `language` (e.g. "English") with Google's recommended ASR prompt,
    /// each 30-second clip in its own fresh conversation; returns the clips' texts joined by
    /// spaces (one [`GenerationOutput`] per clip).
    pub fn transcribe(
        &self,
        audio: AudioInput,
        language: &str,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<(String, Vec<GenerationOutput>)> {
        let clips = audio.clip_inputs()?;
        let mut outputs = Vec::with_capacity(clips.len());
        for clip in clips {
            let output = self.conversation().send_parts(
                vec![
                    Part::Text(transcription_prompt(language)),
                    Part::Media(Media::Audio(clip)),
                ],
                options,
                on_event,
            )?;
            outputs.push(output);
        }
        let text = outputs
            .iter()
            .map(|o| o.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Ok((text, outputs))
    }

    /// A new, empty conversation.
    pub fn conversation(&self) -> Conversation {
        Conversation::new(self.inner.clone())
    }
}

/// Google's captioning request (Gemma image-understanding docs).
pub const CAPTION_PROMPT: &str = "Describe this image.";

/// Google's ASR prompt for Gemma 3n/4 audio (Gemma audio-understanding docs).
pub fn transcription_prompt(language: &str) -> String {
    format!(
        "Transcribe the following speech segment in {language} into {language} text.\n\n\
         Follow these specific instructions for formatting the answer:\n\
         * Only output the transcription, with no newlines.\n\
         * When transcribing numbers, write the digits, i.e. write 1.7 and not one point \
         seven, and write 3 instead of three."
    )
}

fn model_info(
    model: &GemmaModel,
    name: String,
    file_bytes: u64,
    estimate: &MemoryEstimate,
    template: Option<&ChatTemplate>,
) -> ModelInfo {
    let c = model.config();
    let mut weight_types = BTreeMap::new();
    for t in model.weights().tensors() {
        *weight_types.entry(t.dtype().to_string()).or_insert(0) += t.byte_len() as u64;
    }
    ModelInfo {
        architecture: format!("{:?}", c.architecture).to_lowercase(),
        name,
        layers: c.num_layers(),
        hidden_size: c.hidden_size,
        vocab_size: c.vocab_size,
        max_context: c.max_position_embeddings,
        weight_types,
        file_bytes,
        estimated_memory_bytes: estimate.total(),
        kv_cache_bytes: estimate.kv_cache,
        chat_template: template.map(|t| t.name().to_string()),
    }
}
