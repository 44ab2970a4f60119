//! The Gemma 4 vision tower and its `embed_vision` projector (transformers' `Gemma4VisionModel`): patch embedding,
//! learned x/y position tables, 2-D RoPE, bidirectional encoder layers with clipped linears,
//! 3×3 average pooling, `sqrt(d)` scaling, then RMSNorm and a projection to the text width.
//!
//! Weights come from a Hugging Face checkpoint (`model.vision_tower.*`, `model.embed_vision.*`)
//! or from llama.cpp's mmproj GGUF (`v.*`, `mm.input_projection`), whose names are translated
//! to the Hugging Face ones so that one loader serves both.
//!
//! Only the real patches run through the encoder. transformers also runs the padding rows, but
//! they are masked out as keys and zeroed before pooling, so the soft tokens are the same and
//! attention costs grow with the image, not with the budget.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use serde_json::Value;

use super::config::RopeParams;
use super::gguf::GgufModelFile;
use super::linear::{ClippedLinear, Linear};
use super::names::{VISION, VISION_PROJECTOR as PROJECTOR, VISION_TOWER as TOWER};
use super::ops::{from_host, gelu_tanh, norm_weight, rms_norm, to_host};
use super::rope::{RopeTables, inverse_frequencies};
use crate::device::ComputeDevice;
use crate::error::{GemmaError, Result};
use crate::weights::{self, MappedTensor, WeightStore};

/// Attention scores are computed for at most this many (head, query, key) triples at a time,
/// which bounds the score buffer (64 MiB in f32) whatever the image budget.
const MAX_SCORE_ELEMENTS: usize = 16 << 20;

/// Hyper-parameters of the vision tower and its projector.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub patch_size: usize,
    pub pooling_kernel: usize,
    /// Rows of each of the two (x, y) position tables.
    pub position_embedding_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f32,
    pub use_clipped_linears: bool,
    /// Pooled features are standardised with learned bias/scale (26B/31B only).
    pub standardize: bool,
    /// Width of the text model the projector maps into.
    pub text_hidden_size: usize,
}

impl VisionConfig {
    /// From a Hugging Face `config.json` (`vision_config` and `text_config.hidden_size`).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| GemmaError::InvalidConfig(format!("config.json: {e}")))?;
        let v = root
            .get("vision_config")
            .filter(|v| v.is_object())
            .ok_or_else(|| GemmaError::Unsupported("the model has no vision_config".into()))?;
        let uint = |obj: &Value, key: &str| -> Result<usize> {
            obj.get(key)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| GemmaError::InvalidConfig(format!("vision_config.{key} is missing")))
        };
        let text_hidden_size = root
            .get("text_config")
            .map(|t| uint(t, "hidden_size"))
            .unwrap_or_else(|| uint(&root, "hidden_size"))?;
        let hidden_size = uint(v, "hidden_size")?;
        let num_heads = uint(v, "num_attention_heads")?;
        let head_dim = uint(v, "head_dim").unwrap_or(hidden_size / num_heads.max(1));
        let rope_theta = v
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| v.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(100.0);
        if let Some(kind) = v
            .get("rope_parameters")
            .and_then(|r| r.get("rope_type"))
            .and_then(Value::as_str)
            && kind != "axial"
        {
            return Err(GemmaError::Unsupported(format!(
                "vision RoPE type `{kind}`"
            )));
        }
        let cfg = VisionConfig {
            hidden_size,
            intermediate_size: uint(v, "intermediate_size")?,
            num_layers: uint(v, "num_hidden_layers")?,
            num_heads,
            num_kv_heads: uint(v, "num_key_value_heads").unwrap_or(num_heads),
            head_dim,
            patch_size: uint(v, "patch_size").unwrap_or(16),
            pooling_kernel: uint(v, "pooling_kernel_size").unwrap_or(3),
            position_embedding_size: uint(v, "position_embedding_size").unwrap_or(10240),
            rope_theta,
            rms_norm_eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6) as f32,
            use_clipped_linears: v
                .get("use_clipped_linears")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            standardize: v
                .get("standardize")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            text_hidden_size,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// From an mmproj GGUF written by llama.cpp's converter (`clip.vision.*`). Values the
    /// converter does not write are fixed by llama.cpp for `gemma4v`: RoPE θ 100, pooling 3
    /// (unless `clip.vision.projector.scale_factor` says otherwise); the position-table size
    /// comes from the tensor itself.
    pub fn from_mmproj(file: &GgufModelFile) -> Result<Self> {
        let g = &file.gguf;
        let meta = |e: weights::gguf::GgufError| GemmaError::InvalidConfig(e.to_string());
        let arch = g.get_str("general.architecture").map_err(meta)?;
        let projector = g.get_str("clip.vision.projector_type").unwrap_or("");
        if arch != "clip" || projector != "gemma4v" {
            return Err(GemmaError::Unsupported(format!(
                "mmproj with architecture `{arch}` and vision projector `{projector}` \
                 (expected clip / gemma4v)"
            )));
        }
        let uint = |k: &str| -> Result<usize> { Ok(g.get_uint(k).map_err(meta)? as usize) };
        let hidden_size = uint("clip.vision.embedding_length")?;
        let num_heads = uint("clip.vision.attention.head_count")?;
        let pos = g
            .require_tensor("v.position_embd.weight")
            .map_err(meta)?
            .shape_row_major();
        let position_embedding_size = match pos.as_slice() {
            [2, n, d] if *d as usize == hidden_size => *n as usize,
            other => {
                return Err(GemmaError::InvalidConfig(format!(
                    "v.position_embd.weight has shape {other:?}, expected [2, n, {hidden_size}]"
                )));
            }
        };
        let eps = match g.get("clip.vision.attention.layer_norm_epsilon") {
            Some(weights::gguf::MetaValue::F32(e)) => *e,
            Some(weights::gguf::MetaValue::F64(e)) => *e as f32,
            _ => 1e-6,
        };
        let cfg = VisionConfig {
            hidden_size,
            intermediate_size: uint("clip.vision.feed_forward_length")?,
            num_layers: uint("clip.vision.block_count")?,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: hidden_size / num_heads.max(1),
            patch_size: uint("clip.vision.patch_size")?,
            pooling_kernel: g
                .get_uint("clip.vision.projector.scale_factor")
                .map(|v| v as usize)
                .unwrap_or(3),
            position_embedding_size,
            rope_theta: 100.0,
            rms_norm_eps: eps,
            use_clipped_linears: g.tensor("v.blk.0.attn_q.input_min").is_some(),
            standardize: g.tensor("v.std_bias").is_some(),
            text_hidden_size: uint("clip.vision.projection_dim")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GemmaError::InvalidConfig(format!("vision: {m}")));
        if self.hidden_size == 0 || self.num_heads == 0 || self.num_layers == 0 {
            return bad("zero-sized tower".into());
        }
        if self.num_kv_heads == 0 || self.num_heads % self.num_kv_heads != 0 {
            return bad(format!(
                "{} heads do not group over {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        // 2-D RoPE splits each head into an x half and a y half, each rotate-half.
        if self.head_dim == 0 || self.head_dim % 4 != 0 {
            return bad(format!("head_dim {} is not a multiple of 4", self.head_dim));
        }
        if self.patch_size == 0 || self.pooling_kernel == 0 || self.position_embedding_size == 0 {
            return bad("zero patch size, pooling kernel or position table".into());
        }
        Ok(())
    }
}

struct VisionLayer {
    input_norm: Tensor<2>,
    q: ClippedLinear,
    k: ClippedLinear,
    v: ClippedLinear,
    o: ClippedLinear,
    q_norm: Tensor<3>,
    k_norm: Tensor<3>,
    post_attention_norm: Tensor<2>,
    pre_feedforward_norm: Tensor<2>,
    gate: ClippedLinear,
    up: ClippedLinear,
    down: ClippedLinear,
    post_feedforward_norm: Tensor<2>,
}

/// How the patch-embedding matrix orders its input features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchLayout {
    /// Hugging Face `input_proj [d, p·p·3]`: (row, col, channel), channel fastest — the order
    /// of the processor's patches.
    RowColChannel,
    /// llama.cpp's conv kernel `[d, 3, p, p]`: (channel, row, col).
    ChannelRowCol,
}

/// One preprocessed image as the tower takes it (media::image::PreprocessedImage::patches).
#[derive(Debug, Clone, Copy)]
pub struct ImagePatches<'a> {
    /// `[num_patches, 3·p²]` row-major (more rows may follow: padding), each patch
    /// `(row, col, channel)` with channel fastest, values in [0, 1].
    pub pixel_values: &'a [f32],
    /// Per patch its position `(x, y)` = (column, row), raster order.
    pub position_ids: &'a [[i64; 2]],
    /// Real (unpadded) patches.
    pub num_patches: usize,
    /// Patch grid `(rows, columns)`.
    pub patch_grid: (usize, usize),
    /// The patch size the image was cut with.
    pub patch_size: usize,
}

/// Activations of one [`VisionTower::encode_traced`] call, row-major on the host.
#[derive(Debug, Clone, Default)]
pub struct VisionTrace {
    /// `[num_patches, d]`: the encoder's output for the real patches (no pooling).
    pub encoder_last_hidden: Vec<f32>,
    /// `[num_soft_tokens, d]`: pooled and scaled (and standardised, where the model does so).
    pub tower_out: Vec<f32>,
    /// `[num_soft_tokens, text_hidden]`: after the projector.
    pub soft_tokens: Vec<f32>,
}

pub struct VisionTower {
    config: VisionConfig,
    device: ComputeDevice,
    /// `[p·p·3, d]` in the processor's (row, col, channel) order.
    patch_embedding: Tensor<2>,
    /// `[2, position_embedding_size, d]`, gathered row by row for each image.
    position_table: MappedTensor,
    layers: Vec<VisionLayer>,
    /// `[d]` bias and scale applied after pooling (26B/31B).
    standardize: Option<(Tensor<2>, Tensor<2>)>,
    projection: Linear,
    rope_inv_freq: Vec<f32>,
}

impl VisionTower {
    /// Loads the tower from a Hugging Face checkpoint directory (`config.json` +
    /// `*.safetensors`), mapping only the vision tensors.
    pub fn load_hf_dir(dir: &Path, device: &ComputeDevice) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
        let config = VisionConfig::from_hf_json(&text)?;
        let shards = weights::safetensors::shard_paths(dir)?;
        let store = weights::safetensors::open(&shards, &[TOWER, PROJECTOR])?;
        Self::load(&store, &config, device)
    }

    /// Builds the tower from a store holding the Hugging Face names (`model.vision_tower.*`,
    /// `model.embed_vision.*`); other tensors in the store are ignored.
    pub fn load(
        store: &WeightStore,
        config: &VisionConfig,
        device: &ComputeDevice,
    ) -> Result<Self> {
        Self::build(store, config, device, PatchLayout::RowColChannel)
    }

    /// Loads the tower from llama.cpp's mmproj GGUF.
    pub fn load_mmproj(path: &Path, device: &ComputeDevice) -> Result<Self> {
        let file = GgufModelFile::open(path)?;
        let config = VisionConfig::from_mmproj(&file)?;
        let store = mmproj_store(&file)?;
        Self::build(&store, &config, device, PatchLayout::ChannelRowCol)
    }

    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    fn build(
        store: &WeightStore,
        c: &VisionConfig,
        device: &ComputeDevice,
        layout: PatchLayout,
    ) -> Result<Self> {
        let dev = &device.device;
        let (d, ffn, p) = (c.hidden_size, c.intermediate_size, c.patch_size);
        let q_out = c.num_heads * c.head_dim;
        let kv_out = c.num_kv_heads * c.head_dim;
        let tensor =
            |name: &str, shape: &[usize]| store.get_shaped(&format!("{TOWER}{name}"), shape);
        let vector =
            |name: &str, len: usize| -> Result<Vec<f32>> { Ok(tensor(name, &[len])?.to_f32_vec()) };
        let clipped = |name: &str, out: usize, inp: usize| -> Result<ClippedLinear> {
            ClippedLinear::load(
                store,
                &format!("{TOWER}{name}"),
                [out, inp],
                c.use_clipped_linears,
                device,
            )
        };

        let patch_len = 3 * p * p;
        let w = match layout {
            PatchLayout::RowColChannel => {
                tensor("patch_embedder.input_proj.weight", &[d, patch_len])?
            }
            PatchLayout::ChannelRowCol => {
                tensor("patch_embedder.input_proj.weight", &[d, 3, p, p])?
            }
        }
        .to_f32_vec();
        // To [in, out] with `in` in the processor's (row, col, channel) order.
        let mut patch_embedding = vec![0.0f32; patch_len * d];
        for o in 0..d {
            for r in 0..p {
                for col in 0..p {
                    for ch in 0..3 {
                        let i = (r * p + col) * 3 + ch;
                        let src = match layout {
                            PatchLayout::RowColChannel => o * patch_len + i,
                            PatchLayout::ChannelRowCol => o * patch_len + (ch * p + r) * p + col,
                        };
                        patch_embedding[i * d + o] = w[src];
                    }
                }
            }
        }
        let patch_embedding = from_host(patch_embedding, [patch_len, d], dev);
        let position_table = tensor(
            "patch_embedder.position_embedding_table",
            &[2, c.position_embedding_size, d],
        )?
        .clone();
        if !matches!(
            position_table.dtype(),
            weights::GgmlType::F32 | weights::GgmlType::F16 | weights::GgmlType::BF16
        ) {
            return Err(GemmaError::UnsupportedDtype {
                name: position_table.name().to_string(),
                dtype: position_table.dtype().to_string(),
            });
        }

        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let l = |s: &str| format!("encoder.layers.{i}.{s}");
            layers.push(VisionLayer {
                input_norm: norm_weight(vector(&l("input_layernorm.weight"), d)?, dev),
                q: clipped(&l("self_attn.q_proj"), q_out, d)?,
                k: clipped(&l("self_attn.k_proj"), kv_out, d)?,
                v: clipped(&l("self_attn.v_proj"), kv_out, d)?,
                o: clipped(&l("self_attn.o_proj"), d, q_out)?,
                q_norm: norm_weight(vector(&l("self_attn.q_norm.weight"), c.head_dim)?, dev),
                k_norm: norm_weight(vector(&l("self_attn.k_norm.weight"), c.head_dim)?, dev),
                post_attention_norm: norm_weight(
                    vector(&l("post_attention_layernorm.weight"), d)?,
                    dev,
                ),
                pre_feedforward_norm: norm_weight(
                    vector(&l("pre_feedforward_layernorm.weight"), d)?,
                    dev,
                ),
                gate: clipped(&l("mlp.gate_proj"), ffn, d)?,
                up: clipped(&l("mlp.up_proj"), ffn, d)?,
                down: clipped(&l("mlp.down_proj"), d, ffn)?,
                post_feedforward_norm: norm_weight(
                    vector(&l("post_feedforward_layernorm.weight"), d)?,
                    dev,
                ),
            });
        }
        let standardize = if c.standardize {
            Some((
                norm_weight(vector("std_bias", d)?, dev),
                norm_weight(vector("std_scale", d)?, dev),
            ))
        } else {
            None
        };
        let projection = Linear::load(
            store.get_shaped(
                &format!("{PROJECTOR}embedding_projection.weight"),
                &[c.text_hidden_size, d],
            )?,
            device,
        )?;
        // Axial RoPE: each half of a head rotates by one coordinate with frequencies
        // θ^(−2j/(head_dim/2)), j < head_dim/4.
        let rope_inv_freq = inverse_frequencies(
            RopeParams {
                theta: c.rope_theta,
                partial_rotary_factor: 1.0,
                scaling_factor: 1.0,
            },
            c.head_dim / 2,
        );
        Ok(VisionTower {
            config: c.clone(),
            device: device.clone(),
            patch_embedding,
            position_table,
            layers,
            standardize,
            projection,
            rope_inv_freq,
        })
    }

    /// Soft tokens `[num_soft_tokens, text_hidden]`, row-major, ready to replace the image
    /// placeholders of the prompt.
    pub fn encode(&self, img: ImagePatches<'_>) -> Result<Vec<f32>> {
        self.run(img, None)
    }

    /// [`encode`](Self::encode) that also returns the encoder output and the pooled tower
    /// output, for parity tests.
    pub fn encode_traced(&self, img: ImagePatches<'_>) -> Result<VisionTrace> {
        let mut trace = VisionTrace::default();
        trace.soft_tokens = self.run(img, Some(&mut trace))?;
        Ok(trace)
    }

    /// Checks that a preprocessed image fits this tower, returning its real patch positions.
    fn positions(&self, img: ImagePatches<'_>) -> Result<Vec<(usize, usize)>> {
        let c = &self.config;
        let bad = |m: String| Err(GemmaError::InvalidImage(m));
        let patch_len = 3 * c.patch_size * c.patch_size;
        let (rows, cols) = img.patch_grid;
        let n = img.num_patches;
        let k = c.pooling_kernel;
        if img.patch_size != c.patch_size {
            return bad(format!(
                "preprocessed with patch size {}, the tower uses {}",
                img.patch_size, c.patch_size
            ));
        }
        if n == 0 || rows * cols != n || rows % k != 0 || cols % k != 0 {
            return bad(format!(
                "patch grid {rows}×{cols} ({n} patches) does not tile into {k}×{k} pooling windows"
            ));
        }
        if img.pixel_values.len() < n * patch_len || img.position_ids.len() < n {
            return bad("pixel values are shorter than the patch count".into());
        }
        if rows.max(cols) > c.position_embedding_size {
            return bad(format!(
                "{rows}×{cols} patches exceed the position table ({})",
                c.position_embedding_size
            ));
        }
        let mut out = Vec::with_capacity(n);
        for (i, &[x, y]) in img.position_ids[..n].iter().enumerate() {
            if x != (i % cols) as i64 || y != (i / cols) as i64 {
                return bad(format!(
                    "patch {i} has position ({x}, {y}), not raster order"
                ));
            }
            out.push((x as usize, y as usize));
        }
        Ok(out)
    }

    fn run(&self, img: ImagePatches<'_>, mut trace: Option<&mut VisionTrace>) -> Result<Vec<f32>> {
        let c = &self.config;
        let dev = &self.device.device;
        let positions = self.positions(img)?;
        let n = positions.len();
        let d = c.hidden_size;
        let patch_len = 3 * c.patch_size * c.patch_size;
        let eps = c.rms_norm_eps;

        // Patch embedding: pixels to [−1, 1], project, add the x and y position rows.
        let pixels = from_host(
            img.pixel_values[..n * patch_len].to_vec(),
            [n, patch_len],
            dev,
        );
        let pixels = (pixels - 0.5) * 2.0;
        let mut h = pixels.matmul(self.patch_embedding.clone());
        h = h + from_host(self.position_rows(&positions)?, [n, d], dev);

        let xs: Vec<usize> = positions.iter().map(|p| p.0).collect();
        let ys: Vec<usize> = positions.iter().map(|p| p.1).collect();
        let rope_x = RopeTables::new(&self.rope_inv_freq, &xs, dev);
        let rope_y = RopeTables::new(&self.rope_inv_freq, &ys, dev);
        let rope = |t: Tensor<3>| -> Tensor<3> {
            let half = c.head_dim / 2;
            let tx = rope_x.apply(t.clone().narrow(2, 0, half));
            let ty = rope_y.apply(t.narrow(2, half, half));
            Tensor::cat(vec![tx, ty], 2)
        };

        for layer in &self.layers {
            let a = rms_norm(h.clone(), Some(&layer.input_norm), eps);
            let q = layer
                .q
                .forward(a.clone())?
                .reshape([n, c.num_heads, c.head_dim]);
            let q = rope(rms_norm(q, Some(&layer.q_norm), eps));
            let k = layer
                .k
                .forward(a.clone())?
                .reshape([n, c.num_kv_heads, c.head_dim]);
            let k = rope(rms_norm(k, Some(&layer.k_norm), eps));
            let v = layer.v.forward(a)?.reshape([n, c.num_kv_heads, c.head_dim]);
            let v = rms_norm(v, None, eps);
            let attn = self.attention(q, k, v);
            let o = layer.o.forward(attn)?;
            h = h + rms_norm(o, Some(&layer.post_attention_norm), eps);

            let f = rms_norm(h.clone(), Some(&layer.pre_feedforward_norm), eps);
            let f = gelu_tanh(layer.gate.forward(f.clone())?) * layer.up.forward(f)?;
            let f = layer.down.forward(f)?;
            h = h + rms_norm(f, Some(&layer.post_feedforward_norm), eps);
        }
        if let Some(trace) = trace.as_deref_mut() {
            trace.encoder_last_hidden = to_host(h.clone())?;
        }

        // Average non-overlapping k×k patch windows; windows come out in raster order.
        let (rows, cols) = img.patch_grid;
        let k = c.pooling_kernel;
        let pooled = h
            .reshape([rows / k, k, cols / k, k, d])
            .sum_dim(3)
            .sum_dim(1)
            .reshape([(rows / k) * (cols / k), d]);
        let mut pooled = pooled * ((1.0 / (k * k) as f64) as f32) * ((d as f64).sqrt() as f32);
        if let Some((bias, scale)) = &self.standardize {
            pooled = (pooled - bias.clone()) * scale.clone();
        }
        if let Some(trace) = trace.as_deref_mut() {
            trace.tower_out = to_host(pooled.clone())?;
        }
        self.projection.forward_to_host(rms_norm(pooled, None, eps))
    }

    /// `pos_table[0][x] + pos_table[1][y]` per patch, `[n, d]`, read from the mapped table.
    fn position_rows(&self, positions: &[(usize, usize)]) -> Result<Vec<f32>> {
        let d = self.config.hidden_size;
        let table = &self.position_table;
        let size = self.config.position_embedding_size;
        let dtype = table.dtype();
        let row_bytes = dtype
            .bytes_for(d as u64)
            .ok_or_else(|| GemmaError::InvalidArgument("position table row size".into()))?
            as usize;
        let bytes = table.bytes();
        let row = |axis: usize, index: usize| -> Vec<f32> {
            let start = (axis * size + index) * row_bytes;
            let mut out = vec![0.0f32; d];
            weights::decode_f32(&bytes[start..start + row_bytes], dtype, &mut out);
            out
        };
        let mut cache_x: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut cache_y: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut out = Vec::with_capacity(positions.len() * d);
        for &(x, y) in positions {
            let ex = cache_x.entry(x).or_insert_with(|| row(0, x));
            let ey = cache_y.entry(y).or_insert_with(|| row(1, y));
            out.extend(ex.iter().zip(ey.iter()).map(|(a, b)| a + b));
        }
        Ok(out)
    }

    /// Bidirectional attention over all `n` patches, scale 1 (q and k are normed), queries in
    /// blocks so the score buffer stays bounded. `q`: `[n, heads, hd]`, `k`/`v`:
    /// `[n, kv_heads, hd]`; returns `[n, heads·hd]`.
    fn attention(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<2> {
        let [n, heads, hd] = q.dims();
        let kv_heads = k.dims()[1];
        let groups = heads / kv_heads;
        let k_t = k.swap_dims(0, 1).swap_dims(1, 2); // [kvh, hd, n]
        let v = v.swap_dims(0, 1); // [kvh, n, hd]
        let block = (MAX_SCORE_ELEMENTS / (heads * n).max(1)).clamp(1, n);
        let mut outs = Vec::with_capacity(n.div_ceil(block));
        let mut start = 0;
        while start < n {
            let rows = block.min(n - start);
            // [rows, H, hd] → [H, rows, hd] → [kvh, G·rows, hd]: heads kv·G.. share KV head kv.
            let qb = q.clone().narrow(0, start, rows).swap_dims(0, 1).reshape([
                kv_heads,
                groups * rows,
                hd,
            ]);
            let probs = softmax(qb.matmul(k_t.clone()), 2);
            let ob = probs
                .matmul(v.clone())
                .reshape([heads, rows, hd])
                .swap_dims(0, 1)
                .reshape([rows, heads * hd]);
            outs.push(ob);
            start += rows;
        }
        if outs.len() == 1 {
            outs.pop().expect("one block")
        } else {
            Tensor::cat(outs, 0)
        }
    }

    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }
}

/// The vision tensors of an mmproj GGUF under their Hugging Face names, still memory-mapped.
fn mmproj_store(file: &GgufModelFile) -> Result<WeightStore> {
    super::gguf::mapped_store(file, |name| VISION.to_hf(name))
}
