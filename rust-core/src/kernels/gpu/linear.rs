//! A weight product on the GPU over packed weights uploaded once: `y = x · Wᵀ`, split by output
//! rows into chunks whose largest binding (the words) stays under the device's limit.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::ops::{self, ChunkCall};
use super::pack::{self, Layout};
use crate::device::to_host;
use crate::error::{GemmaError, Result};
use crate::weights::MappedTensor;

enum ChunkWeights {
    Dense(Tensor<1>),
    Quant {
        words: Tensor<1, Int>,
        scales: Tensor<1>,
        /// A one-element placeholder when the layout has no mins (a kernel binding is needed).
        mins: Tensor<1>,
    },
}

struct Chunk {
    rows: usize,
    first_row: usize,
    weights: ChunkWeights,
}

pub struct GpuLinear {
    layout: Layout,
    in_features: usize,
    out_features: usize,
    chunks: Vec<Chunk>,
    device_bytes: usize,
    /// Gate and up rows interleaved: the output is `gelu_tanh(gate) · up`
    /// ([`upload_gated`](Self::upload_gated)).
    gated: bool,
}

impl GpuLinear {
    /// Packs `weight` (`[out, in]`) in the layout its type maps to and uploads it in chunks of
    /// at most `max_binding_bytes` of words.
    pub fn upload(
        weight: &MappedTensor,
        max_binding_bytes: usize,
        device: &Device,
    ) -> Result<Self> {
        let layout = pack::layout_for(weight.dtype(), weight.cols());
        Self::upload_as(weight, layout, max_binding_bytes, device)
    }

    pub fn upload_as(
        weight: &MappedTensor,
        layout: Layout,
        max_binding_bytes: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::upload_chunks(
            weight,
            weight.rows(),
            layout,
            1,
            max_binding_bytes,
            device,
            |first_row, rows| pack::pack_rows(weight, layout, first_row, rows),
        )
    }

    /// Several weights of one input (`[out_i, in]`, e.g. a layer's q, k and v) as one product
    /// over their stacked rows: the output's columns are the first weight's outputs, then the
    /// second's, … `None` where they do not share a type and width: the caller multiplies them
    /// separately.
    pub fn upload_stacked(
        weights: &[&MappedTensor],
        max_binding_bytes: usize,
        device: &Device,
    ) -> Result<Option<Self>> {
        let Some(first) = weights.first() else {
            return Ok(None);
        };
        if weights
            .iter()
            .any(|w| w.dtype() != first.dtype() || w.cols() != first.cols())
        {
            return Ok(None);
        }
        let layout = pack::layout_for(first.dtype(), first.cols());
        let total = weights.iter().map(|w| w.rows()).sum();
        let linear = Self::upload_chunks(
            first,
            total,
            layout,
            1,
            max_binding_bytes,
            device,
            |first_row, rows| {
                // The stacked rows first_row..first_row + rows, weight by weight.
                let mut packed = pack::PackedRows::default();
                let mut start = 0;
                for w in weights {
                    let (lo, hi) = (
                        first_row.max(start),
                        (first_row + rows).min(start + w.rows()),
                    );
                    if lo < hi {
                        packed.append(pack::pack_rows(w, layout, lo - start, hi - lo));
                    }
                    start += w.rows();
                }
                packed
            },
        )?;
        Ok(Some(linear))
    }

    /// A gated MLP's first half, `gelu_tanh(x · Gᵀ) ⊙ (x · Uᵀ)`, as one product: `gate` and
    /// `up` (`[out, in]` each) packed with their rows interleaved, each kernel cube computing
    /// one output from both rows and applying the GELU before it writes. `None` where the two
    /// cannot share a layout (different types or shapes) or the layout is dense f32 (whose
    /// kernel has no fused form): the caller multiplies them separately.
    pub fn upload_gated(
        gate: &MappedTensor,
        up: &MappedTensor,
        max_binding_bytes: usize,
        device: &Device,
    ) -> Result<Option<Self>> {
        let layout = pack::layout_for(gate.dtype(), gate.cols());
        let same = gate.dtype() == up.dtype()
            && gate.rows() == up.rows()
            && gate.cols() == up.cols()
            && matches!(layout, Layout::Quant(_));
        if !same {
            return Ok(None);
        }
        let linear = Self::upload_chunks(
            gate,
            gate.rows(),
            layout,
            2,
            max_binding_bytes,
            device,
            |first_row, rows| {
                pack::PackedRows::interleave(
                    &pack::pack_rows(gate, layout, first_row, rows),
                    &pack::pack_rows(up, layout, first_row, rows),
                    rows,
                )
            },
        )?;
        Ok(Some(linear))
    }

    /// Uploads `out_features` output rows of `weight`'s width in chunks of at most
    /// `max_binding_bytes` of words, each output taking `rows_per_output` weight rows (2 for a
    /// gated product), packed by `pack` (first output row, output rows).
    #[allow(clippy::too_many_arguments)]
    fn upload_chunks(
        weight: &MappedTensor,
        out_features: usize,
        layout: Layout,
        rows_per_output: usize,
        max_binding_bytes: usize,
        device: &Device,
        pack: impl Fn(usize, usize) -> pack::PackedRows,
    ) -> Result<Self> {
        let in_features = weight.cols();
        let row_bytes = pack::word_bytes_per_row(layout, in_features).max(1) * rows_per_output;
        if row_bytes > max_binding_bytes {
            return Err(GemmaError::Unsupported(format!(
                "`{}`: one row ({row_bytes} bytes) exceeds the GPU's binding limit",
                weight.name()
            )));
        }
        let rows_per_chunk = (max_binding_bytes / row_bytes).clamp(1, out_features.max(1));
        let mut chunks = Vec::new();
        let mut device_bytes = 0;
        let mut first_row = 0;
        while first_row < out_features {
            let rows = rows_per_chunk.min(out_features - first_row);
            let packed = pack(first_row, rows);
            let bytes = (packed.words.len() + packed.scales.len() + packed.mins.len()) * 4;
            crate::device::counters::count_upload(device, bytes);
            device_bytes += bytes;
            let floats = |v: Vec<f32>| {
                let n = v.len();
                Tensor::<1>::from_data(TensorData::new(v, [n]), device)
            };
            let weights = match layout {
                Layout::Dense => ChunkWeights::Dense(floats(
                    packed.words.into_iter().map(f32::from_bits).collect(),
                )),
                Layout::Quant(_) => {
                    let n = packed.words.len();
                    let words: Vec<i32> = bytemuck::cast_vec(packed.words);
                    let mins = if packed.mins.is_empty() {
                        vec![0.0]
                    } else {
                        packed.mins
                    };
                    ChunkWeights::Quant {
                        words: Tensor::<1, Int>::from_data(TensorData::new(words, [n]), device),
                        scales: floats(packed.scales),
                        mins: floats(mins),
                    }
                }
            };
            chunks.push(Chunk {
                rows,
                first_row,
                weights,
            });
            first_row += rows;
        }
        Ok(GpuLinear {
            layout,
            in_features,
            out_features,
            chunks,
            device_bytes,
            gated: rows_per_output == 2,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Bytes of weights held on the device (words, scales, mins).
    pub fn device_bytes(&self) -> usize {
        self.device_bytes
    }

    /// Number of separately bound chunks.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// `mul`: with `call.gelu_times` (quantized chunks only), the tensor the GELU multiplies.
    fn run_chunk(
        &self,
        chunk: &Chunk,
        out: Tensor<2>,
        x: Tensor<2>,
        call: ChunkCall,
        mul: Option<&Tensor<2>>,
    ) -> Tensor<2> {
        match &chunk.weights {
            ChunkWeights::Dense(w) => ops::dense_matmul_into(out, x, w, call),
            ChunkWeights::Quant {
                words,
                scales,
                mins,
            } => {
                let Layout::Quant(layout) = self.layout else {
                    unreachable!("quantized chunk of a dense weight")
                };
                ops::quant_matmul_into(out, x, words, scales, mins, mul, layout, call)
            }
        }
    }

    /// One chunk's outputs alone, `[tokens, chunk.rows]`.
    fn chunk_outputs(&self, chunk: &Chunk, x: Tensor<2>) -> Tensor<2> {
        let [tokens, _] = x.dims();
        let call = ChunkCall {
            rows: chunk.rows,
            out_col: 0,
            out_stride: chunk.rows,
            glu: self.gated,
            gelu_times: false,
        };
        let out = Tensor::<2>::empty([tokens, chunk.rows], &x.device());
        self.run_chunk(chunk, out, x, call, None)
    }

    /// `x`: `[tokens, in]` → `[tokens, out]` on the device (one output buffer, every chunk
    /// writing its columns).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_into_one(x, None)
    }

    /// `gelu_tanh(x · Wᵀ) ⊙ mul` (`mul` `[tokens, out]`): on quantized rows the GELU and the
    /// product are the kernel's epilogue (one dispatch), on dense rows a second kernel.
    pub fn forward_gelu_times(&self, x: Tensor<2>, mul: Tensor<2>) -> Tensor<2> {
        match self.layout {
            Layout::Quant(_) if !self.gated => self.forward_into_one(x, Some(&mul)),
            _ => ops::gelu_tanh_mul(self.forward(x), mul),
        }
    }

    fn forward_into_one(&self, x: Tensor<2>, gelu_times: Option<&Tensor<2>>) -> Tensor<2> {
        let [tokens, _] = x.dims();
        let mut out = Tensor::<2>::empty([tokens, self.out_features], &x.device());
        for chunk in &self.chunks {
            let call = ChunkCall {
                rows: chunk.rows,
                out_col: chunk.first_row,
                out_stride: self.out_features,
                glu: self.gated,
                gelu_times: gelu_times.is_some(),
            };
            out = self.run_chunk(chunk, out, x.clone(), call, gelu_times);
        }
        out
    }

    /// The index of the largest output of each token's row (`x` `[tokens, in]`), found on the
    /// device: each chunk's outputs are scanned in blocks (`kernels::argmax_blocks`) and the
    /// blocks' maxima of every chunk come back in one read (8 bytes a block: 512 for a
    /// 262144-row LM head) instead of the outputs. Ties go to the lower index, as
    /// `kernels::cpu::activation::argmax`; NaN never wins (a row of nothing but NaN gives 0).
    pub fn argmax_rows(&self, x: Tensor<2>) -> Result<Vec<u32>> {
        let [tokens, _] = x.dims();
        let device = x.device();
        let total_blocks: usize = self
            .chunks
            .iter()
            .map(|c| c.rows.div_ceil(ops::ARGMAX_BLOCK))
            .sum();
        let mut best = Tensor::<2>::empty([tokens, total_blocks * 2], &device);
        let mut block_offset = 0;
        for chunk in &self.chunks {
            let logits = self.chunk_outputs(chunk, x.clone());
            let call = ops::ArgmaxCall {
                first_row: chunk.first_row,
                block_offset,
                total_blocks,
            };
            best = ops::argmax_blocks_into(best, logits, call);
            block_offset += chunk.rows.div_ceil(ops::ARGMAX_BLOCK);
        }
        let pairs = to_host(best)?;
        Ok(pairs
            .chunks_exact(total_blocks * 2)
            .map(|row| {
                let mut best: Option<(f32, f32)> = None;
                for pair in row.chunks_exact(2) {
                    let (value, index) = (pair[0], pair[1]);
                    // Blocks come in index order: a tie keeps the earlier one.
                    if index >= 0.0 && best.is_none_or(|(v, _)| value > v) {
                        best = Some((value, index));
                    }
                }
                best.map_or(0, |(_, index)| index as u32)
            })
            .collect())
    }

    /// The `k` largest outputs of each token's row (`x` `[tokens, in]`) with their indices,
    /// largest first, found on the device: each chunk's outputs are reduced to the `k` best of
    /// each block of [`ops::TOP_K_BLOCK`] (`kernels::top_k_blocks`), merged by the same kernel
    /// over those picks until `k` remain, and read back (8 bytes a pick: 512 for `k` = 64)
    /// instead of the outputs. Ties go to the lower index; NaN and ±∞ are never picked (a row
    /// with fewer than `k` finite outputs gives fewer). `k` ≤ [`ops::MAX_TOP_K`].
    pub fn top_k_rows(&self, x: Tensor<2>, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let k = k.clamp(1, ops::MAX_TOP_K);
        let [tokens, _] = x.dims();
        let device = x.device();
        let blocks = |n: usize| n.div_ceil(ops::TOP_K_BLOCK);
        let total_blocks: usize = self.chunks.iter().map(|c| blocks(c.rows)).sum();
        let mut picks = Tensor::<2>::empty([tokens, total_blocks * k * 2], &device);
        let mut block_offset = 0;
        for chunk in &self.chunks {
            let logits = self.chunk_outputs(chunk, x.clone());
            let call = ops::TopKCall {
                n: chunk.rows,
                first_id: chunk.first_row,
                block_offset,
                total_blocks,
                k,
                pairs: false,
            };
            picks = ops::top_k_blocks_into(picks, logits, call);
            block_offset += blocks(chunk.rows);
        }
        // Each pass leaves `k` picks a block of the previous picks (k ≤ TOP_K_BLOCK / 16).
        let mut n = total_blocks * k;
        while n > k {
            let merged = Tensor::<2>::empty([tokens, blocks(n) * k * 2], &device);
            let call = ops::TopKCall {
                n,
                first_id: 0,
                block_offset: 0,
                total_blocks: blocks(n),
                k,
                pairs: true,
            };
            picks = ops::top_k_blocks_into(merged, picks, call);
            n = blocks(n) * k;
        }
        let pairs = to_host(picks)?;
        Ok(pairs
            .chunks_exact(n * 2)
            .map(|row| {
                row.chunks_exact(2)
                    .filter(|pair| pair[1] >= 0.0)
                    .map(|pair| (pair[1] as u32, pair[0]))
                    .collect()
            })
            .collect())
    }

    /// Like [`forward`](Self::forward) but read back chunk by chunk, so a 262144-row LM head
    /// never needs one device buffer for all logits.
    pub fn forward_to_host(&self, x: Tensor<2>) -> Result<Vec<f32>> {
        let [tokens, _] = x.dims();
        let mut host = vec![0.0f32; tokens * self.out_features];
        for chunk in &self.chunks {
            let part = to_host(self.chunk_outputs(chunk, x.clone()))?;
            for t in 0..tokens {
                let dst = t * self.out_features + chunk.first_row;
                host[dst..dst + chunk.rows]
                    .copy_from_slice(&part[t * chunk.rows..(t + 1) * chunk.rows]);
            }
        }
        Ok(host)
    }
}
