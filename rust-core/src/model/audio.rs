//! The Gemma 4 audio tower (USM-style conformer, as transformers' `Gemma4AudioModel`) and its `embed_audio` projector:
//! log-mel features → soft tokens in the text model's hidden size.
//!
//! ```text
//! SSCP: 2 × [mask time · Conv2d 3×3 s2 p1 · LayerNorm(channels) · ReLU] · flatten · Linear
//! N ×  conformer layer: ½·FFN · local attention · light conv · ½·FFN · RMSNorm
//! output_proj (Linear + bias) · embed_audio: RMSNorm(—) · Linear → valid rows only
//! ```
//! Weights come from a Hugging Face checkpoint (`model.audio_tower.*`, `model.embed_audio.*`)
//! or from llama.cpp's mmproj GGUF (`a.*`, `mm.a.*`, renamed to the Hugging Face names here).
//! Everything runs in f32 on burn tensors, so the same graph serves the CPU and wgpu devices.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid, silu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use serde::Deserialize;

use super::gguf::GgufModelFile;
use super::linear::{ClippedLinear, Linear};
use super::names::{AUDIO, AUDIO_PROJECTOR as PROJECTOR, AUDIO_TOWER as TOWER};
use super::ops::{from_host, norm_weight, rms_norm, to_host};
use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::weights::gguf::{GgufFile, MetaValue};
use crate::weights::{self, MappedTensor, WeightStore};

/// Most mel frames one call accepts: a 30-second clip gives 2999.
pub const MAX_FRAMES: usize = 3000;

/// Which keys a query of the chunked local attention sees (transformers keeps 12 keys per chunk, Google's JAX reference 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionWindow {
    /// transformers 5.24: the query and `context_left − 2` earlier frames (12 keys).
    #[default]
    Transformers,
    /// Google's JAX reference: the query and `context_left − 1` earlier frames (13 keys,
    /// matching the 13 relative positions).
    Jax,
}

/// Hyper-parameters of the audio tower (transformers' `Gemma4AudioConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct AudioConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: String,
    pub subsampling_conv_channels: [usize; 2],
    pub conv_kernel_size: usize,
    pub residual_weight: f32,
    pub attention_chunk_size: usize,
    pub attention_context_left: usize,
    pub attention_context_right: usize,
    pub attention_logit_cap: f32,
    pub attention_invalid_logits_value: f32,
    pub use_clipped_linears: bool,
    pub rms_norm_eps: f32,
    pub output_proj_dims: usize,
    /// Mel bins of the input features (not in transformers' config: the feature extractor's
    /// `feature_size`).
    pub num_mel_bins: usize,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            hidden_size: 1024,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            hidden_act: "silu".into(),
            subsampling_conv_channels: [128, 32],
            conv_kernel_size: 5,
            residual_weight: 0.5,
            attention_chunk_size: 12,
            attention_context_left: 13,
            attention_context_right: 0,
            attention_logit_cap: 50.0,
            attention_invalid_logits_value: -1.0e9,
            use_clipped_linears: true,
            rms_norm_eps: 1e-6,
            output_proj_dims: 1536,
            num_mel_bins: 128,
        }
    }
}

impl AudioConfig {
    /// The `audio_config` object of a Gemma 4 `config.json`, and the text hidden size the
    /// projector maps to (`text_config.hidden_size`).
    pub fn from_model_config_json(text: &str) -> Result<(AudioConfig, usize)> {
        let bad = |m: String| GemmaError::InvalidConfig(format!("config.json: {m}"));
        let root: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let audio = root
            .get("audio_config")
            .filter(|v| !v.is_null())
            .ok_or_else(|| GemmaError::Unsupported("this model has no audio tower".into()))?;
        let config: AudioConfig =
            serde_json::from_value(audio.clone()).map_err(|e| bad(format!("audio_config: {e}")))?;
        let text_hidden = root
            .get("text_config")
            .and_then(|t| t.get("hidden_size"))
            .and_then(|h| h.as_u64())
            .ok_or_else(|| bad("text_config.hidden_size is missing".into()))?
            as usize;
        config.validate()?;
        Ok((config, text_hidden))
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(GemmaError::InvalidConfig(format!("audio_config: {m}")));
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || self.hidden_size % self.num_attention_heads != 0
        {
            return bad("hidden_size must be a multiple of num_attention_heads");
        }
        if self.attention_chunk_size == 0 || self.attention_context_left == 0 {
            return bad("attention_chunk_size and attention_context_left must be positive");
        }
        if self.conv_kernel_size == 0 || self.num_mel_bins == 0 || self.output_proj_dims == 0 {
            return bad("zero-sized dimension");
        }
        if self.hidden_act != "silu" {
            return Err(GemmaError::Unsupported(format!(
                "audio activation `{}`",
                self.hidden_act
            )));
        }
        Ok(())
    }

    /// Keys before the query inside one block's context (`context_left − 1`).
    fn max_past(&self) -> usize {
        self.attention_context_left - 1
    }

    /// Keys one block of queries attends over.
    fn context_size(&self) -> usize {
        self.attention_chunk_size + self.max_past() + self.attention_context_right
    }

    /// Rows of the relative-position table (distances `context/2 … 0`).
    fn relative_positions(&self) -> usize {
        self.context_size() / 2 + 1
    }

    /// Mel bins left after the two stride-2 convolutions.
    fn subsampled_bins(&self) -> usize {
        self.num_mel_bins.div_ceil(2).div_ceil(2)
    }
}

struct FeedForward {
    pre_norm: Tensor<2>,
    up: ClippedLinear,
    down: ClippedLinear,
    post_norm: Tensor<2>,
}

struct LocalAttention {
    q: ClippedLinear,
    k: ClippedLinear,
    v: ClippedLinear,
    post: ClippedLinear,
    /// `[1, heads·head_dim]`: `head_dim^-½ / ln 2 · softplus(per_dim_scale)`, tiled per head.
    q_scale: Tensor<2>,
    /// `[heads, head_dim, positions]`: the projected relative-position table.
    relative_keys: Tensor<3>,
}

struct LightConv {
    pre_norm: Tensor<2>,
    start: ClippedLinear,
    /// `[kernel, hidden]`: tap `k` of every channel's causal filter in row `k`.
    depthwise: Tensor<2>,
    conv_norm: Tensor<2>,
    end: ClippedLinear,
}

struct ConformerLayer {
    ffn1: FeedForward,
    norm_pre_attn: Tensor<2>,
    attention: LocalAttention,
    norm_post_attn: Tensor<2>,
    lconv: LightConv,
    ffn2: FeedForward,
    norm_out: Tensor<2>,
}

/// Log-mel features of one clip (media::audio::FeatureExtractor makes them): `[num_frames, num_mel_bins]` row-major, masked frames zeroed.
#[derive(Debug, Clone)]
pub struct AudioFeatures {
    pub features: Vec<f32>,
    /// Per frame: whether its window lies in real audio.
    pub mask: Vec<bool>,
    pub num_frames: usize,
    pub num_mel_bins: usize,
}

/// Intermediate results of one [`AudioTower::encode_traced`] call, row-major on the host.
#[derive(Debug, Clone)]
pub struct AudioTrace {
    /// `[T/4, hidden]` after the subsampling convolutions and input projection.
    pub sscp_out: Vec<f32>,
    /// `[T/4, output_proj_dims]` after the conformer and output projection (all rows).
    pub tower_out: Vec<f32>,
    /// `[T/4]`: which rows are real audio.
    pub mask: Vec<bool>,
    /// `[m, text_hidden]`: the projected valid rows.
    pub soft_tokens: Vec<f32>,
}

/// How `per_dim_scale` is stored: raw (transformers) or already through softplus (llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PerDimScale {
    Raw,
    Softplus,
}

pub struct AudioTower {
    config: AudioConfig,
    text_hidden: usize,
    device: ComputeDevice,
    /// `[out, in, 3, 3]` each.
    conv: [Tensor<4>; 2],
    /// `[1, 1, 1, channels]` LayerNorm scales.
    conv_norm: [Tensor<4>; 2],
    input_proj: Linear,
    layers: Vec<ConformerLayer>,
    output_proj: Linear,
    output_bias: Tensor<2>,
    embed: Linear,
}

impl AudioTower {
    /// Loads the tower and projector from a Hugging Face checkpoint directory.
    pub fn load_hf_dir(dir: &Path, device: ComputeDevice) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
        let (config, text_hidden) = AudioConfig::from_model_config_json(&text)?;
        let shards = weights::safetensors::shard_paths(dir)?;
        let store = weights::safetensors::open(&shards, &[TOWER, PROJECTOR])?;
        Self::load(&store, &config, text_hidden, device)
    }

    /// Builds the tower from a store holding the Hugging Face tensor names.
    pub fn load(
        store: &WeightStore,
        config: &AudioConfig,
        text_hidden: usize,
        device: ComputeDevice,
    ) -> Result<Self> {
        Self::build(store, config, text_hidden, device, PerDimScale::Raw)
    }

    /// Loads the audio half of a llama.cpp mmproj GGUF (`clip.audio.projector_type` `gemma4a`).
    pub fn load_mmproj(path: &Path, device: ComputeDevice) -> Result<Self> {
        let file = GgufModelFile::open(path)?;
        let store = mmproj_store(&file)?;
        let (config, text_hidden) = config_from_mmproj(&file.gguf, &store)?;
        Self::build(&store, &config, text_hidden, device, PerDimScale::Softplus)
    }

    pub fn config(&self) -> &AudioConfig {
        &self.config
    }

    /// Hidden size of the soft tokens (the text model's).
    pub fn text_hidden(&self) -> usize {
        self.text_hidden
    }

    fn build(
        store: &WeightStore,
        config: &AudioConfig,
        text_hidden: usize,
        device: ComputeDevice,
        per_dim_scale: PerDimScale,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let dev = &device.device;
        let d = c.hidden_size;
        let [ch0, ch1] = c.subsampling_conv_channels;
        let tensor = |name: &str, shape: &[usize]| -> Result<&MappedTensor> {
            store.get_shaped(&format!("{TOWER}{name}"), shape)
        };
        // Shapes differ only in unit axes between the formats (e.g. the depthwise kernel is
        // [C, 1, K] in transformers and [C, K] in GGUF): check the element count.
        let values = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{TOWER}{name}");
            let t = store.get(&full)?;
            if t.num_elements() != shape.iter().product::<usize>() {
                return Err(GemmaError::ShapeMismatch {
                    name: full,
                    expected: shape.to_vec(),
                    found: t.shape().to_vec(),
                });
            }
            Ok(t.to_f32_vec())
        };
        let norm =
            |name: &str| -> Result<Tensor<2>> { Ok(norm_weight::<2>(values(name, &[d])?, dev)) };
        let clipped = |module: &str, out: usize, inp: usize| -> Result<ClippedLinear> {
            ClippedLinear::load(
                store,
                &format!("{TOWER}{module}"),
                [out, inp],
                c.use_clipped_linears,
                &device,
            )
        };

        let conv = [
            from_host(
                values(
                    "subsample_conv_projection.layer0.conv.weight",
                    &[ch0, 1, 3, 3],
                )?,
                [ch0, 1, 3, 3],
                dev,
            ),
            from_host(
                values(
                    "subsample_conv_projection.layer1.conv.weight",
                    &[ch1, ch0, 3, 3],
                )?,
                [ch1, ch0, 3, 3],
                dev,
            ),
        ];
        let conv_norm = [
            norm_weight::<4>(
                values("subsample_conv_projection.layer0.norm.weight", &[ch0])?,
                dev,
            ),
            norm_weight::<4>(
                values("subsample_conv_projection.layer1.norm.weight", &[ch1])?,
                dev,
            ),
        ];
        let input_proj = Linear::load(
            tensor(
                "subsample_conv_projection.input_proj_linear.weight",
                &[d, c.subsampled_bins() * ch1],
            )?,
            &device,
        )?;

        let (heads, head_dim) = (c.num_attention_heads, c.head_dim());
        let positions = c.relative_positions();
        let position_table = relative_position_table(positions, d);
        let position_table = from_host(position_table, [positions, d], dev);
        let q_base = (head_dim as f64).powf(-0.5) / std::f64::consts::LN_2;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = |name: &str| format!("layers.{i}.{name}");
            let ffn = |which: &str| -> Result<FeedForward> {
                Ok(FeedForward {
                    pre_norm: norm(&l(&format!("{which}.pre_layer_norm.weight")))?,
                    up: clipped(&l(&format!("{which}.ffw_layer_1")), 4 * d, d)?,
                    down: clipped(&l(&format!("{which}.ffw_layer_2")), d, 4 * d)?,
                    post_norm: norm(&l(&format!("{which}.post_layer_norm.weight")))?,
                })
            };
            let raw_scale = values(&l("self_attn.per_dim_scale"), &[head_dim])?;
            let q_scale: Vec<f32> = (0..heads)
                .flat_map(|_| raw_scale.iter())
                .map(|&s| {
                    let sp = match per_dim_scale {
                        PerDimScale::Raw => softplus(s),
                        PerDimScale::Softplus => s as f64,
                    };
                    (q_base * sp) as f32
                })
                .collect();
            let relative_k = Linear::load(
                tensor(&l("self_attn.relative_k_proj.weight"), &[d, d])?,
                &device,
            )?;
            // [positions, heads·dim] → [heads, dim, positions]
            let relative_keys = relative_k
                .forward(position_table.clone())?
                .reshape([positions, heads, head_dim])
                .permute([1, 2, 0]);
            let kernel = c.conv_kernel_size;
            let dw = values(&l("lconv1d.depthwise_conv1d.weight"), &[d, kernel])?;
            let dw_t = crate::kernels::cpu::transpose(&dw, d, kernel);
            layers.push(ConformerLayer {
                ffn1: ffn("feed_forward1")?,
                norm_pre_attn: norm(&l("norm_pre_attn.weight"))?,
                attention: LocalAttention {
                    q: clipped(&l("self_attn.q_proj"), d, d)?,
                    k: clipped(&l("self_attn.k_proj"), d, d)?,
                    v: clipped(&l("self_attn.v_proj"), d, d)?,
                    post: clipped(&l("self_attn.post"), d, d)?,
                    q_scale: from_host(q_scale, [1, d], dev),
                    relative_keys,
                },
                norm_post_attn: norm(&l("norm_post_attn.weight"))?,
                lconv: LightConv {
                    pre_norm: norm(&l("lconv1d.pre_layer_norm.weight"))?,
                    start: clipped(&l("lconv1d.linear_start"), 2 * d, d)?,
                    depthwise: from_host(dw_t, [kernel, d], dev),
                    conv_norm: norm(&l("lconv1d.conv_norm.weight"))?,
                    end: clipped(&l("lconv1d.linear_end"), d, d)?,
                },
                ffn2: ffn("feed_forward2")?,
                norm_out: norm(&l("norm_out.weight"))?,
            });
        }
        let out = c.output_proj_dims;
        let output_proj = Linear::load(tensor("output_proj.weight", &[out, d])?, &device)?;
        let output_bias = from_host(values("output_proj.bias", &[out])?, [1, out], dev);
        let embed = Linear::load(
            store.get_shaped(
                &format!("{PROJECTOR}embedding_projection.weight"),
                &[text_hidden, out],
            )?,
            &device,
        )?;
        Ok(AudioTower {
            config: config.clone(),
            text_hidden,
            device,
            conv,
            conv_norm,
            input_proj,
            layers,
            output_proj,
            output_bias,
            embed,
        })
    }

    /// Soft tokens `[m, text_hidden]` row-major for the valid rows of one clip.
    pub fn encode(&self, features: &AudioFeatures, window: AttentionWindow) -> Result<Vec<f32>> {
        Ok(self.run(features, window, false)?.soft_tokens)
    }

    /// [`encode`](Self::encode) keeping the intermediate results.
    pub fn encode_traced(
        &self,
        features: &AudioFeatures,
        window: AttentionWindow,
    ) -> Result<AudioTrace> {
        self.run(features, window, true)
    }

    fn run(
        &self,
        features: &AudioFeatures,
        window: AttentionWindow,
        trace: bool,
    ) -> Result<AudioTrace> {
        let c = &self.config;
        let dev = &self.device.device;
        let (t, bins) = (features.num_frames, features.num_mel_bins);
        if bins != c.num_mel_bins {
            return Err(GemmaError::InvalidAudio(format!(
                "features have {bins} mel bins, the tower expects {}",
                c.num_mel_bins
            )));
        }
        if t == 0 || t > MAX_FRAMES {
            return Err(GemmaError::InvalidAudio(format!(
                "{t} feature frames (expected 1..={MAX_FRAMES}, one clip of at most 30 s)"
            )));
        }
        if features.features.len() != t * bins || features.mask.len() != t {
            return Err(GemmaError::InvalidAudio(
                "feature and mask lengths do not match the frame count".into(),
            ));
        }

        // --- subsampling convolutions, on [1, channels, time, freq]
        let mut mask = features.mask.clone();
        let mut x: Tensor<4> = from_host(features.features.clone(), [1, 1, t, bins], dev);
        for layer in 0..2 {
            let time = mask.len();
            let m: Vec<f32> = mask.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect();
            x = x * from_host::<4>(m, [1, 1, time, 1], dev);
            x = conv2d(
                x,
                self.conv[layer].clone(),
                None,
                ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
            );
            // LayerNorm over channels (scale only).
            let xc = x.permute([0, 2, 3, 1]);
            let mean = xc.clone().mean_dim(3);
            let centred = xc - mean;
            let var = (centred.clone() * centred.clone()).mean_dim(3);
            let normed =
                centred * (var + c.rms_norm_eps).powf_scalar(-0.5) * self.conv_norm[layer].clone();
            x = relu(normed).permute([0, 3, 1, 2]);
            mask = mask.iter().step_by(2).copied().collect();
        }
        let [_, ch, t4, f4] = x.dims();
        debug_assert_eq!(t4, mask.len());
        let x = x.permute([0, 2, 3, 1]).reshape([t4, f4 * ch]);
        let mut x = self.input_proj.forward(x)?;
        let sscp_out = if trace {
            to_host(x.clone())?
        } else {
            Vec::new()
        };

        // --- conformer
        let blocks = BlockLayout::new(c, t4, &mask, window, dev);
        for layer in &self.layers {
            x = self.feed_forward(&layer.ffn1, x)?;
            let residual = x.clone();
            let h = rms_norm(x, Some(&layer.norm_pre_attn), c.rms_norm_eps);
            let h = self.attention(&layer.attention, h, &blocks)?;
            x = rms_norm(h, Some(&layer.norm_post_attn), c.rms_norm_eps) + residual;
            x = self.light_conv(&layer.lconv, x)?;
            x = self.feed_forward(&layer.ffn2, x)?;
            x = rms_norm(x, Some(&layer.norm_out), c.rms_norm_eps);
        }
        let tower = self.output_proj.forward(x)? + self.output_bias.clone();
        let tower_out = if trace {
            to_host(tower.clone())?
        } else {
            Vec::new()
        };

        // --- projector, valid rows only (the mask is a prefix for features of one clip, but
        // any pattern is handled)
        let valid: Vec<usize> = (0..t4).filter(|&i| mask[i]).collect();
        let soft = if valid.is_empty() {
            Vec::new()
        } else {
            let rows = if valid.len() == valid[valid.len() - 1] + 1 {
                tower.narrow(0, 0, valid.len())
            } else {
                let host = to_host(tower)?;
                let out = c.output_proj_dims;
                let picked: Vec<f32> = valid
                    .iter()
                    .flat_map(|&i| host[i * out..(i + 1) * out].iter().copied())
                    .collect();
                from_host(picked, [valid.len(), out], dev)
            };
            let normed = rms_norm(rows, None, c.rms_norm_eps);
            self.embed.forward_to_host(normed)?
        };
        Ok(AudioTrace {
            sscp_out,
            tower_out,
            mask,
            soft_tokens: soft,
        })
    }

    /// `x + w · RMSNorm(down(silu(up(RMSNorm(x)))))`.
    fn feed_forward(&self, f: &FeedForward, x: Tensor<2>) -> Result<Tensor<2>> {
        let eps = self.config.rms_norm_eps;
        let h = rms_norm(x.clone(), Some(&f.pre_norm), eps);
        let h = f.down.forward(silu(f.up.forward(h)?))?;
        let h = rms_norm(h, Some(&f.post_norm), eps);
        Ok(x + h * self.config.residual_weight)
    }

    /// `x + end(silu(RMSNorm(causal_depthwise_conv(GLU(start(RMSNorm(x)))))))`.
    fn light_conv(&self, l: &LightConv, x: Tensor<2>) -> Result<Tensor<2>> {
        let eps = self.config.rms_norm_eps;
        let [t, d] = x.dims();
        let h = l
            .start
            .forward(rms_norm(x.clone(), Some(&l.pre_norm), eps))?;
        let h = h.clone().narrow(1, 0, d) * sigmoid(h.narrow(1, d, d));
        let kernel = self.config.conv_kernel_size;
        let padded = pad_front(h, kernel - 1);
        let mut conv = padded.clone().narrow(0, 0, t) * l.depthwise.clone().narrow(0, 0, 1);
        for k in 1..kernel {
            conv = conv + padded.clone().narrow(0, k, t) * l.depthwise.clone().narrow(0, k, 1);
        }
        let h = silu(rms_norm(conv, Some(&l.conv_norm), eps));
        Ok(l.end.forward(h)? + x)
    }

    /// Chunked local attention with relative positions and a logit softcap, laid out in blocks
    /// exactly as transformers does (so even masked rows come out the same).
    fn attention(&self, a: &LocalAttention, x: Tensor<2>, b: &BlockLayout) -> Result<Tensor<2>> {
        let c = &self.config;
        let [t, d] = x.dims();
        let (heads, dim) = (c.num_attention_heads, c.head_dim());
        let (chunk, ctx, nb) = (c.attention_chunk_size, c.context_size(), b.blocks);
        let positions = c.relative_positions();
        let key_scale = ((1.0 + std::f64::consts::E).ln() / std::f64::consts::LN_2) as f32;
        let q = a.q.forward(x.clone())? * a.q_scale.clone();
        let k = a.k.forward(x.clone())? * key_scale;
        let v = a.v.forward(x)?;
        let device = q.device();

        // Queries: [T, D] → [heads, blocks, chunk, dim].
        let q = pad_rows(q, nb * chunk)
            .reshape([nb, chunk, heads, dim])
            .permute([2, 0, 1, 3]);
        // Keys/values: each block's context window of `ctx` positions starting `max_past`
        // before the block → [heads, blocks, ctx, dim].
        let windows = |m: Tensor<2>| -> Tensor<4> {
            let shifts = ctx.div_ceil(chunk);
            let total = (shifts - 1 + nb) * chunk;
            let padded = pad_rows(pad_front(m, c.max_past()), total);
            let parts: Vec<Tensor<3>> = (0..shifts)
                .map(|s| {
                    padded
                        .clone()
                        .narrow(0, s * chunk, nb * chunk)
                        .reshape([nb, chunk, d])
                })
                .collect();
            Tensor::cat(parts, 1)
                .narrow(1, 0, ctx)
                .reshape([nb, ctx, heads, dim])
                .permute([2, 0, 1, 3])
        };
        let (k, v) = (windows(k), windows(v));

        let content = q.clone().matmul(k.swap_dims(2, 3));
        // Relative term: q · R[δ], then the Transformer-XL shift turns position columns into
        // context columns (pad to ctx+1 columns, flatten, drop the tail, re-view).
        let rel = q
            .reshape([heads, nb * chunk, dim])
            .matmul(a.relative_keys.clone())
            .reshape([heads, nb, chunk, positions]);
        let rel = Tensor::cat(
            vec![
                rel,
                Tensor::zeros([heads, nb, chunk, ctx + 1 - positions], &device),
            ],
            3,
        )
        .reshape([heads, nb, chunk * (ctx + 1)])
        .narrow(2, 0, chunk * ctx)
        .reshape([heads, nb, chunk, ctx]);

        let cap = c.attention_logit_cap;
        let logits = ((content + rel) / cap).tanh() * cap;
        // Masked logits are replaced (not offset) by the invalid value, as transformers does.
        let logits = logits * b.visible.clone() + b.hidden_bias.clone();
        let probs = softmax(logits, 3);
        let out = probs
            .matmul(v)
            .permute([1, 2, 0, 3])
            .reshape([nb * chunk, d])
            .narrow(0, 0, t);
        a.post.forward(out)
    }
}

/// Pads `[rows, d]` with zero rows up to `total` rows.
fn pad_rows(x: Tensor<2>, total: usize) -> Tensor<2> {
    let [rows, d] = x.dims();
    if rows >= total {
        return x;
    }
    let zeros = Tensor::zeros([total - rows, d], &x.device());
    Tensor::cat(vec![x, zeros], 0)
}

/// Prepends `rows` zero rows to `[n, d]`.
fn pad_front(x: Tensor<2>, rows: usize) -> Tensor<2> {
    if rows == 0 {
        return x;
    }
    let [_, d] = x.dims();
    let zeros = Tensor::zeros([rows, d], &x.device());
    Tensor::cat(vec![zeros, x], 0)
}

/// Which context slot each query of each block may attend to: `[1, blocks, chunk, ctx]` as a
/// 0/1 factor and the matching additive invalid value.
struct BlockLayout {
    blocks: usize,
    visible: Tensor<4>,
    hidden_bias: Tensor<4>,
}

impl BlockLayout {
    fn new(
        c: &AudioConfig,
        t: usize,
        key_valid: &[bool],
        window: AttentionWindow,
        device: &burn::tensor::Device,
    ) -> Self {
        let (chunk, ctx, past) = (c.attention_chunk_size, c.context_size(), c.max_past());
        let future = c.attention_context_right;
        let blocks = t.div_ceil(chunk);
        let sees = |dist: isize| -> bool {
            match window {
                AttentionWindow::Transformers => {
                    (dist >= 0 && dist < past as isize) || (dist < 0 && -dist < future as isize)
                }
                AttentionWindow::Jax => {
                    (dist >= 0 && dist <= past as isize) || (dist < 0 && -dist <= future as isize)
                }
            }
        };
        let mut visible = vec![0.0f32; blocks * chunk * ctx];
        for b in 0..blocks {
            for i in 0..chunk {
                let q = b * chunk + i;
                if q >= t {
                    continue;
                }
                for s in 0..ctx {
                    let key = (b * chunk + s) as isize - past as isize;
                    if key < 0 || key as usize >= t || !key_valid[key as usize] {
                        continue;
                    }
                    if sees(q as isize - key) {
                        visible[(b * chunk + i) * ctx + s] = 1.0;
                    }
                }
            }
        }
        let hidden: Vec<f32> = visible
            .iter()
            .map(|&v| (1.0 - v) * c.attention_invalid_logits_value)
            .collect();
        BlockLayout {
            blocks,
            visible: from_host(visible, [1, blocks, chunk, ctx], device),
            hidden_bias: from_host(hidden, [1, blocks, chunk, ctx], device),
        }
    }
}

/// Sinusoids for distances `positions−1 … 0`: row `p` is `[sin(δ·w_j)…, cos(δ·w_j)…]` with
/// `δ = positions−1−p`, `w_j = exp(−j·ln(10⁴)/(d/2 − 1))` (f32, as transformers computes it).
fn relative_position_table(positions: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let increment = (10_000f64).ln() / (half.max(2) - 1) as f64;
    let inv: Vec<f32> = (0..half)
        .map(|j| ((j as f32) * -(increment as f32)).exp())
        .collect();
    let mut table = vec![0.0f32; positions * d];
    for p in 0..positions {
        let dist = (positions - 1 - p) as f32;
        for j in 0..half {
            let angle = dist * inv[j];
            table[p * d + j] = angle.sin();
            table[p * d + half + j] = angle.cos();
        }
    }
    table
}

/// torch's `softplus` (β = 1, threshold 20).
fn softplus(x: f32) -> f64 {
    let x = x as f64;
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

// ------------------------------------------------------------------------------------------------
// mmproj GGUF
// ------------------------------------------------------------------------------------------------

fn mmproj_store(file: &GgufModelFile) -> Result<WeightStore> {
    let gguf = &file.gguf;
    let has_audio = matches!(
        gguf.get("clip.has_audio_encoder"),
        Some(MetaValue::Bool(true))
    );
    let projector = gguf.get_str("clip.audio.projector_type").ok();
    if !has_audio || projector != Some("gemma4a") {
        return Err(GemmaError::Unsupported(format!(
            "this mmproj file has no Gemma 4 audio encoder (clip.audio.projector_type = {:?})",
            projector
        )));
    }
    super::gguf::mapped_store(file, |name| AUDIO.to_hf(name))
}

/// Hyper-parameters of an mmproj's audio tower. The metadata carries sizes and counts; the
/// attention geometry (chunk 12, context 13/0, cap 50) is fixed in llama.cpp's graph
/// (`tools/mtmd/models/gemma4a.cpp`) and taken from transformers' defaults here, and the
/// remaining sizes are read off the tensor shapes.
fn config_from_mmproj(gguf: &GgufFile, store: &WeightStore) -> Result<(AudioConfig, usize)> {
    let meta_err = |e: crate::weights::gguf::GgufError| GemmaError::InvalidConfig(e.to_string());
    let uint = |key: &str| -> Result<usize> { Ok(gguf.get_uint(key).map_err(meta_err)? as usize) };
    let shape = |name: &str| -> Result<Vec<usize>> { Ok(store.get(name)?.shape().to_vec()) };
    let conv0 = shape(&format!(
        "{TOWER}subsample_conv_projection.layer0.conv.weight"
    ))?;
    let conv1 = shape(&format!(
        "{TOWER}subsample_conv_projection.layer1.conv.weight"
    ))?;
    let out = shape(&format!("{TOWER}output_proj.weight"))?;
    let embed = shape(&format!("{PROJECTOR}embedding_projection.weight"))?;
    let dw = store.get(&format!("{TOWER}layers.0.lconv1d.depthwise_conv1d.weight"))?;
    let hidden = uint("clip.audio.embedding_length")?;
    let eps = match gguf.get("clip.audio.attention.layer_norm_epsilon") {
        Some(MetaValue::F32(v)) => *v,
        Some(MetaValue::F64(v)) => *v as f32,
        _ => 1e-6,
    };
    let config = AudioConfig {
        hidden_size: hidden,
        num_hidden_layers: uint("clip.audio.block_count")?,
        num_attention_heads: uint("clip.audio.attention.head_count")?,
        subsampling_conv_channels: [conv0[0], conv1[0]],
        conv_kernel_size: dw.num_elements() / hidden.max(1),
        use_clipped_linears: true,
        rms_norm_eps: eps,
        output_proj_dims: out[0],
        num_mel_bins: gguf
            .get_uint("clip.audio.num_mel_bins")
            .map(|v| v as usize)
            .unwrap_or(128),
        ..AudioConfig::default()
    };
    Ok((config, embed[0]))
}
