//! The kernels as a burn backend extension: one trait, implemented for burn's CubeCL backend
//! (the wgpu device), called on ordinary `Tensor`s through burn's `Dispatch`. Custom ops are
//! opaque to burn: they run in stream order between burn's own kernels.

use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor, tensor::IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor};
use cubecl::prelude::*;

use super::kv::{EncodedCall, KvLayout};
use super::pack::QuantLayout;
use super::{kernels, kv_kernels};
use crate::kernels::attention::{AttentionCall, DecodeAttentionOps};

/// Units per cube: a power of two (the reductions halve it), small enough for every GPU and
/// for CPU adapters.
pub const CUBE_SIZE: usize = 64;
/// Tokens one cube computes together in a prefill product (each weight word is decoded once
/// per tile).
pub const PREFILL_TILE: usize = 8;
/// Output rows a cube of a one-token quantized product computes.
pub const DECODE_ROWS_PER_CUBE: usize = 4;
/// wgpu's limit on workgroups per grid dimension.
const MAX_GRID_DIM: usize = 65535;
/// Binding offsets must be multiples of this (Vulkan's worst-case minStorageBufferOffsetAlignment).
const OFFSET_ALIGN: u64 = 256;

/// Where one chunk of a weight product writes: `out[t, out_col + row]` in a `[tokens,
/// out_stride]` output.
#[derive(Debug, Clone, Copy)]
pub struct ChunkCall {
    /// Output rows (with `glu`, half the chunk's weight rows).
    pub rows: usize,
    pub out_col: usize,
    pub out_stride: usize,
    /// The chunk's rows are a gated MLP's gate and up rows interleaved; the output is
    /// `gelu_tanh(gate) · up` (`kernels::packed_matmul`).
    pub glu: bool,
    /// The output is `gelu_tanh(x · Wᵀ) · mul`, `mul` laid out as the output (quantized
    /// layouts; `kernels::packed_matmul`).
    pub gelu_times: bool,
}

/// Logits one cube of [`GpuKernelOps::argmax_blocks_into`] scans.
pub const ARGMAX_BLOCK: usize = 4096;

/// Candidates one cube of [`GpuKernelOps::top_k_blocks_into`] keeps (in registers:
/// `TOP_K_BLOCK / CUBE_SIZE` a unit).
pub const TOP_K_BLOCK: usize = 1024;

/// The largest `k` the device picks (`GpuLinear::top_k_rows`); a merge pass must shrink its
/// candidates, so `k` stays well under [`TOP_K_BLOCK`].
pub const MAX_TOP_K: usize = 64;

/// Where one call's block picks go (see `kernels::top_k_blocks`).
#[derive(Debug, Clone, Copy)]
pub struct TopKCall {
    /// Candidates a token.
    pub n: usize,
    /// Added to a candidate's index to give its id (without `pairs`).
    pub first_id: usize,
    /// The call's first block among the token's blocks.
    pub block_offset: usize,
    /// Blocks a token over every call writing `best`.
    pub total_blocks: usize,
    pub k: usize,
    /// The candidates are (value, id) pairs from an earlier call.
    pub pairs: bool,
}

/// Where one chunk of logits' block maxima go (see `kernels::argmax_blocks`).
#[derive(Debug, Clone, Copy)]
pub struct ArgmaxCall {
    /// The chunk's first row in the whole output (added to the indices).
    pub first_row: usize,
    /// The chunk's first block among the token's blocks.
    pub block_offset: usize,
    /// Blocks per token over every chunk.
    pub total_blocks: usize,
}

/// What [`GpuKernelOps::encode_kv_rows_into`] does to each row before encoding it.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodePrep {
    pub eps: f32,
    /// RMS-normed (a key's or a value's norm).
    pub normed: bool,
    /// Times the norm's weight (a key's norm has one).
    pub weighted: bool,
    /// Rotated by RoPE (keys).
    pub roped: bool,
}

/// What [`GpuKernelOps::rms_norm`] computes besides the norm.
#[derive(Debug, Clone, Copy)]
pub struct NormCall {
    pub eps: f32,
    /// The result's factor (Gemma 4's layer scalar; 1 otherwise).
    pub scale: f32,
    pub weighted: bool,
    pub add_residual: bool,
    /// Also the result RMS-normed again with a second weight, as a second plane.
    pub then_norm: bool,
}

#[backend_extension(Cube)]
pub trait GpuKernelOps: Backend {
    /// Writes `x · Wᵀ` for one chunk of quantized rows into `out` (in place) and returns it.
    /// `mul` (the output's layout) is read only with `call.gelu_times`.
    #[allow(clippy::too_many_arguments)]
    fn quant_matmul_into(
        out: FloatTensor<Self>,
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        mins: FloatTensor<Self>,
        mul: FloatTensor<Self>,
        layout: QuantLayout,
        call: ChunkCall,
    ) -> FloatTensor<Self>;

    /// Writes `x · Wᵀ` for one chunk of dense f32 rows into `out` (in place) and returns it.
    fn dense_matmul_into(
        out: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        call: ChunkCall,
    ) -> FloatTensor<Self>;

    /// f32 rows `[kv_heads, tokens, d]`, prepared as `prep` says (RMS norm with the weight
    /// `norm_w` `[d]`, RoPE with tables `cos`, `sin` `[tokens, d/2]`; unused ones are not
    /// read), encoded as KV rows of any layout (`kv_kernels::encode_kv_rows`; q8_0 and TurboQuant
    /// read the codec's `signs` `[kv_heads, d]` and `levels`, other layouts ignore them) and
    /// written into slots `first_slot..first_slot + tokens` of `plane` `[kv_heads, slots,
    /// words]` (in place where nothing else holds it, else into a copy), which is returned.
    #[allow(clippy::too_many_arguments)]
    fn encode_kv_rows_into(
        plane: IntTensor<Self>,
        x: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        prep: EncodePrep,
        signs: FloatTensor<Self>,
        levels: FloatTensor<Self>,
        layout: KvLayout,
        first_slot: usize,
    ) -> IntTensor<Self>;

    /// RMS norm of each row of `x` over its last axis (`kernels::rms_norm_rows`), times `w`
    /// (the row's length) when `norm.weighted`, plus `residual` (`x`'s shape) when
    /// `norm.add_residual`, times `norm.scale`; returns `x`'s shape, or with `norm.then_norm`
    /// `[2, x's elements]`: that result, then it RMS-normed again with weight `w2`.
    fn rms_norm(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        norm: NormCall,
    ) -> FloatTensor<Self>;

    /// Rotary embedding of `x` `[tokens, heads, d]` with tables `[tokens, 1, d/2]`
    /// (`kernels::rope_rows`).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// [`rope`](Self::rope) of `x`'s rows RMS-normed with weight `w` `[d]`
    /// (`kernels::rms_norm_rope_rows`).
    fn rms_norm_rope(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// The largest logit of each block of [`ARGMAX_BLOCK`] of each token's row of `logits`
    /// `[tokens, rows]`, with its index, written into `best` `[tokens, total_blocks · 2]` (in
    /// place; `kernels::argmax_blocks`) and returned.
    fn argmax_blocks_into(
        best: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        call: ArgmaxCall,
    ) -> FloatTensor<Self>;

    /// The `call.k` largest candidates of each block of [`TOP_K_BLOCK`] of each token's
    /// `call.n` candidates in `input` (`[tokens, n]` values, or with `call.pairs` `[tokens,
    /// n · 2]` (value, id) pairs), as pairs written into `best` `[tokens, total_blocks · k ·
    /// 2]` (in place; `kernels::top_k_blocks`) and returned.
    fn top_k_blocks_into(
        best: FloatTensor<Self>,
        input: FloatTensor<Self>,
        call: TopKCall,
    ) -> FloatTensor<Self>;

    /// `gelu_tanh(a) · b` for equal shapes (`kernels::gelu_tanh_mul`).
    fn gelu_tanh_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Attention of `q` `[tokens, heads, d]` (or `[heads, d]`: one token) over encoded KV rows
    /// `[kv_heads, slots, words]` (`kv_kernels::encoded_attention`); returns `q`'s shape. With
    /// `call.q_eps`, `q` is raw and the kernel applies the query norm `q_norm` `[d]` and RoPE
    /// (`cos`, `sin` `[tokens, d/2]`) first; otherwise those three are not read.
    #[allow(clippy::too_many_arguments)]
    fn encoded_attention(
        q: FloatTensor<Self>,
        q_norm: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        k: IntTensor<Self>,
        v: IntTensor<Self>,
        key_pos: FloatTensor<Self>,
        q_pos: FloatTensor<Self>,
        k_levels: FloatTensor<Self>,
        v_levels: FloatTensor<Self>,
        call: EncodedCall,
    ) -> FloatTensor<Self>;
}

/// `tensor` as a kernel can bind it: contiguous rows, starting at an aligned offset.
fn bindable(tensor: CubeTensor) -> CubeTensor {
    let aligned = tensor.handle.offset_start.unwrap_or(0) % OFFSET_ALIGN == 0;
    if tensor.is_contiguous() && aligned {
        return tensor;
    }
    copy_contiguous(tensor)
}

/// A contiguous copy of a tensor of 32-bit elements (bits copied as u32: encoded KV words
/// too), of the same dtype.
fn copy_contiguous(tensor: CubeTensor) -> CubeTensor {
    let shape = tensor.meta.shape().clone();
    let handle = tensor.client.empty(shape.num_elements() * 4);
    let out = CubeTensor::new_contiguous(
        tensor.client.clone(),
        tensor.device.clone(),
        shape,
        handle,
        tensor.dtype,
    );
    let client = tensor.client.clone();
    cubecl::std::tensor::copy_into(
        &client,
        tensor.binding(),
        out.clone().binding(),
        u32::elem_type_native(),
    );
    out
}

fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let handle = like.client.empty(shape.num_elements() * 4);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

fn buffer(tensor: CubeTensor) -> BufferArg {
    tensor.into_buffer_arg()
}

/// A grid with one cube per row (rows spread over x and y, since a grid dimension holds at
/// most 65535 cubes) and one per tile of tokens along z.
fn matmul_grid(rows: usize, tokens: usize, tile: usize) -> CubeCount {
    let x = rows.clamp(1, MAX_GRID_DIM);
    let y = rows.div_ceil(x).max(1);
    CubeCount::Static(x as u32, y as u32, tokens.div_ceil(tile) as u32)
}

fn tile_for(tokens: usize) -> usize {
    if tokens == 1 { 1 } else { PREFILL_TILE }
}

/// Output rows a cube of a quantized product computes: several for one token (decode: the
/// activation vector loaded for a word serves each, a quarter of the workgroups — 65,536
/// instead of 262,144 for the LM head), one for a tile of tokens (whose accumulators
/// already fill the registers).
fn rows_per_cube(tokens: usize) -> usize {
    if tokens == 1 { DECODE_ROWS_PER_CUBE } else { 1 }
}

fn check_f32(name: &str, t: &CubeTensor) {
    assert_eq!(
        t.dtype.size(),
        4,
        "{name}: expected 32-bit elements, got {:?}",
        t.dtype
    );
}

impl GpuKernelOps for CubeBackend {
    fn rms_norm(
        x: CubeTensor,
        w: CubeTensor,
        residual: CubeTensor,
        w2: CubeTensor,
        norm: NormCall,
    ) -> CubeTensor {
        check_f32("x", &x);
        let (x, w, residual, w2) = (bindable(x), bindable(w), bindable(residual), bindable(w2));
        let shape = x.meta.shape().clone();
        let n = shape[shape.num_dims() - 1];
        let rows = shape.num_elements() / n.max(1);
        let out = if norm.then_norm {
            empty_f32(&x, Shape::new([2, shape.num_elements()]))
        } else {
            empty_f32(&x, shape)
        };
        let client = x.client.clone();
        kernels::rms_norm_rows::launch(
            &client,
            matmul_grid(rows, 1, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(x),
            buffer(w),
            buffer(residual),
            buffer(w2),
            buffer(out.clone()),
            rows as u32,
            n as u32,
            norm.eps,
            norm.scale,
            norm.weighted,
            norm.add_residual,
            norm.then_norm,
            CUBE_SIZE,
        );
        out
    }

    fn rope(x: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        check_f32("x", &x);
        let (x, cos, sin) = (bindable(x), bindable(cos), bindable(sin));
        let shape = x.meta.shape().clone();
        let (heads, half) = (shape[1], shape[2] / 2);
        let pairs = shape.num_elements() / 2;
        let out = empty_f32(&x, shape);
        let client = x.client.clone();
        kernels::rope_rows::launch(
            &client,
            flat_grid(pairs),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(x),
            buffer(cos),
            buffer(sin),
            buffer(out.clone()),
            pairs as u32,
            heads as u32,
            half as u32,
        );
        out
    }

    fn rms_norm_rope(
        x: CubeTensor,
        w: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        eps: f32,
    ) -> CubeTensor {
        check_f32("x", &x);
        let (x, w, cos, sin) = (bindable(x), bindable(w), bindable(cos), bindable(sin));
        let shape = x.meta.shape().clone();
        let (heads, half) = (shape[1], shape[2] / 2);
        let rows = shape[0] * heads;
        let out = empty_f32(&x, shape);
        let client = x.client.clone();
        kernels::rms_norm_rope_rows::launch(
            &client,
            matmul_grid(rows, 1, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(x),
            buffer(w),
            buffer(cos),
            buffer(sin),
            buffer(out.clone()),
            rows as u32,
            heads as u32,
            half as u32,
            eps,
            CUBE_SIZE,
        );
        out
    }

    fn argmax_blocks_into(best: CubeTensor, logits: CubeTensor, call: ArgmaxCall) -> CubeTensor {
        check_f32("logits", &logits);
        let logits = bindable(logits);
        let dims = logits.meta.shape().clone();
        let (tokens, rows) = (dims[0], dims[1]);
        let blocks = rows.div_ceil(ARGMAX_BLOCK);
        let client = logits.client.clone();
        kernels::argmax_blocks::launch(
            &client,
            CubeCount::Static(blocks as u32, tokens as u32, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(logits),
            buffer(best.clone()),
            rows as u32,
            call.first_row as u32,
            call.block_offset as u32,
            call.total_blocks as u32,
            ARGMAX_BLOCK as u32,
            CUBE_SIZE,
        );
        best
    }

    fn top_k_blocks_into(best: CubeTensor, input: CubeTensor, call: TopKCall) -> CubeTensor {
        check_f32("input", &input);
        let input = bindable(input);
        let tokens = input.meta.shape()[0];
        let blocks = call.n.div_ceil(TOP_K_BLOCK);
        let client = input.client.clone();
        kernels::top_k_blocks::launch(
            &client,
            CubeCount::Static(blocks as u32, tokens as u32, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(input),
            buffer(best.clone()),
            call.n as u32,
            call.first_id as u32,
            call.block_offset as u32,
            call.total_blocks as u32,
            call.k as u32,
            call.pairs,
            TOP_K_BLOCK / CUBE_SIZE,
            CUBE_SIZE,
        );
        best
    }

    fn gelu_tanh_mul(a: CubeTensor, b: CubeTensor) -> CubeTensor {
        check_f32("a", &a);
        let (a, b) = (bindable(a), bindable(b));
        let shape = a.meta.shape().clone();
        let n = shape.num_elements();
        let out = empty_f32(&a, shape);
        let client = a.client.clone();
        kernels::gelu_tanh_mul::launch(
            &client,
            flat_grid(n),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(a),
            buffer(b),
            buffer(out.clone()),
            n as u32,
        );
        out
    }

    fn quant_matmul_into(
        out: CubeTensor,
        x: CubeTensor,
        words: CubeTensor,
        scales: CubeTensor,
        mins: CubeTensor,
        mul: CubeTensor,
        layout: QuantLayout,
        call: ChunkCall,
    ) -> CubeTensor {
        check_f32("x", &x);
        check_f32("words", &words);
        let x = bindable(x);
        let dims = x.meta.shape().clone();
        let (tokens, k) = (dims[0], dims[1]);
        let words_per_row = k / layout.elems_per_word();
        let tile = tile_for(tokens);
        let rows_per_cube = rows_per_cube(tokens);
        let client = x.client.clone();
        kernels::packed_matmul::launch(
            &client,
            matmul_grid(call.rows.div_ceil(rows_per_cube), tokens, tile),
            CubeDim::new_1d(CUBE_SIZE as u32),
            4,
            buffer(x),
            buffer(words),
            buffer(scales),
            buffer(mins),
            buffer(bindable(mul)),
            buffer(out.clone()),
            call.rows as u32,
            tokens as u32,
            words_per_row as u32,
            call.out_stride as u32,
            call.out_col as u32,
            layout.bits,
            layout.words_per_block() as u32,
            layout.offset,
            layout.has_min,
            call.glu,
            call.gelu_times,
            tile,
            rows_per_cube,
            CUBE_SIZE,
        );
        out
    }

    fn dense_matmul_into(
        out: CubeTensor,
        x: CubeTensor,
        weight: CubeTensor,
        call: ChunkCall,
    ) -> CubeTensor {
        check_f32("x", &x);
        let x = bindable(x);
        let dims = x.meta.shape().clone();
        let (tokens, k) = (dims[0], dims[1]);
        let lanes = if k.is_multiple_of(4) { 4 } else { 1 };
        let tile = tile_for(tokens);
        let client = x.client.clone();
        kernels::dense_matmul::launch(
            &client,
            matmul_grid(call.rows, tokens, tile),
            CubeDim::new_1d(CUBE_SIZE as u32),
            lanes,
            buffer(x),
            buffer(weight),
            buffer(out.clone()),
            call.rows as u32,
            tokens as u32,
            (k / lanes) as u32,
            call.out_stride as u32,
            call.out_col as u32,
            tile,
            CUBE_SIZE,
        );
        out
    }

    fn encode_kv_rows_into(
        plane: CubeTensor,
        x: CubeTensor,
        norm_w: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        prep: EncodePrep,
        signs: CubeTensor,
        levels: CubeTensor,
        layout: KvLayout,
        first_slot: usize,
    ) -> CubeTensor {
        check_f32("x", &x);
        let x = bindable(x);
        let dims = x.meta.shape().clone();
        let (tokens, d) = (dims[1], dims[2]);
        let rows = dims[0] * tokens;
        let words_per_row = layout.words_per_row(d);
        let slots = plane.meta.shape()[1];
        assert!(
            first_slot + tokens <= slots && plane.meta.shape()[2] == words_per_row,
            "{tokens} rows of {words_per_row} words at slot {first_slot} of a plane {:?}",
            plane.meta.shape()
        );
        // Written in place only where nothing else holds the plane (a fork shares it until
        // one side writes: copy on write, as burn's own in-place operations).
        let plane = if plane.can_mut() {
            bindable(plane)
        } else {
            copy_contiguous(plane)
        };
        let client = x.client.clone();
        kv_kernels::encode_kv_rows::launch(
            &client,
            matmul_grid(rows, 1, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(x),
            buffer(bindable(norm_w)),
            buffer(bindable(cos)),
            buffer(bindable(sin)),
            buffer(bindable(signs)),
            buffer(bindable(levels)),
            buffer(plane.clone()),
            rows as u32,
            tokens as u32,
            words_per_row as u32,
            slots as u32,
            first_slot as u32,
            prep.eps,
            // The CPU's `kv::hadamard` normalization, bit for bit.
            1.0 / (d as f32).sqrt(),
            prep.normed,
            prep.weighted,
            prep.roped,
            layout.kind,
            layout.bits,
            d,
            CUBE_SIZE,
        );
        plane
    }

    fn encoded_attention(
        q: CubeTensor,
        q_norm: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        key_pos: CubeTensor,
        q_pos: CubeTensor,
        k_levels: CubeTensor,
        v_levels: CubeTensor,
        call: EncodedCall,
    ) -> CubeTensor {
        let shape = q.meta.shape().clone();
        check_f32("q", &q);
        check_f32("k", &k);
        check_f32("v", &v);
        let q = bindable(q);
        let (heads, head_dim) = (shape[shape.num_dims() - 2], shape[shape.num_dims() - 1]);
        let tokens = shape.num_elements() / (heads * head_dim).max(1);
        let slots = k.meta.shape()[1];
        let (k, v) = (unit_inner(k), unit_inner(v));
        let (ks, vs) = (k.meta.strides().clone(), v.meta.strides().clone());
        let out = empty_f32(&q, shape);
        let scores = empty_f32(&q, Shape::new([tokens * heads, slots.max(1)]));
        let client = q.client.clone();
        kv_kernels::encoded_attention::launch(
            &client,
            CubeCount::Static(heads as u32, tokens as u32, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(q),
            buffer(bindable(q_norm)),
            buffer(bindable(cos)),
            buffer(bindable(sin)),
            buffer(k),
            buffer(v),
            buffer(bindable(key_pos)),
            buffer(bindable(q_pos)),
            buffer(bindable(k_levels)),
            buffer(bindable(v_levels)),
            buffer(scores),
            buffer(out.clone()),
            slots as u32,
            heads as u32,
            call.groups as u32,
            ks[0] as u32,
            ks[1] as u32,
            vs[0] as u32,
            vs[1] as u32,
            call.window,
            call.scale,
            call.q_eps.unwrap_or(0.0),
            call.q_eps.is_some(),
            call.k.kind,
            call.k.bits,
            call.v.kind,
            call.v.bits,
            head_dim,
            CUBE_SIZE,
        );
        out
    }
}

/// `t`'s strides if its last axis is unit-stride and it starts at a bindable offset, else
/// those of a contiguous copy.
fn unit_inner(t: CubeTensor) -> CubeTensor {
    let aligned = t.handle.offset_start.unwrap_or(0) % OFFSET_ALIGN == 0;
    if t.meta.strides().last() == Some(&1) && aligned {
        t
    } else {
        copy_contiguous(t)
    }
}

/// A grid of `n` units in cubes of [`CUBE_SIZE`], spread over x and y.
fn flat_grid(n: usize) -> CubeCount {
    let cubes = n.div_ceil(CUBE_SIZE).max(1);
    let x = cubes.min(MAX_GRID_DIM);
    CubeCount::Static(x as u32, cubes.div_ceil(x) as u32, 1)
}

impl DecodeAttentionOps for CubeBackend {
    /// The f32 cache through the encoded kernel (rows of kind f32): a visibility flag
    /// serves as a key position, seen by one query at position 1 with a window of 1 (flag 1:
    /// visible; flag 0: before the window).
    fn decode_attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        visible: CubeTensor,
        call: AttentionCall,
    ) -> CubeTensor {
        let one = q.client.create_from_slice(&1.0f32.to_le_bytes());
        crate::device::counters::count_gpu_upload(4);
        let one = CubeTensor::new_contiguous(
            q.client.clone(),
            q.device.clone(),
            Shape::new([1]),
            one,
            DType::F32,
        );
        let f32_rows = KvLayout::of(crate::kernels::kv::KvType::F32);
        let call = EncodedCall {
            groups: call.groups,
            scale: call.scale,
            window: 1.0,
            k: f32_rows,
            v: f32_rows,
            q_eps: None,
        };
        <Self as GpuKernelOps>::encoded_attention(
            q,
            one.clone(),
            one.clone(),
            one.clone(),
            k,
            v,
            visible,
            one.clone(),
            one.clone(),
            one,
            call,
        )
    }
}

/// [`GpuKernelOps::quant_matmul_into`] on tensors.
#[allow(clippy::too_many_arguments)]
pub fn quant_matmul_into(
    out: Tensor<2>,
    x: Tensor<2>,
    words: &Tensor<1, Int>,
    scales: &Tensor<1>,
    mins: &Tensor<1>,
    mul: Option<&Tensor<2>>,
    layout: QuantLayout,
    call: ChunkCall,
) -> Tensor<2> {
    // Without `gelu_times` the binding is unread: `x` stands in.
    let mul = mul.cloned().unwrap_or_else(|| x.clone());
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::quant_matmul_into(
        out.into_dispatch(),
        x.into_dispatch(),
        words.clone().into_dispatch(),
        scales.clone().into_dispatch(),
        mins.clone().into_dispatch(),
        mul.into_dispatch(),
        layout,
        call,
    ))
}

/// [`GpuKernelOps::dense_matmul_into`] on tensors.
pub fn dense_matmul_into(
    out: Tensor<2>,
    x: Tensor<2>,
    weight: &Tensor<1>,
    call: ChunkCall,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::dense_matmul_into(
        out.into_dispatch(),
        x.into_dispatch(),
        weight.clone().into_dispatch(),
        call,
    ))
}

/// [`GpuKernelOps::rms_norm`] on tensors: `(residual + x / √(mean(x²) + eps) · w) · scale`
/// over the last axis, without `w` or `residual` where they are `None`.
pub fn rms_norm<const D: usize>(
    x: Tensor<D>,
    weight: Option<&Tensor<D>>,
    residual: Option<Tensor<D>>,
    eps: f32,
    scale: f32,
) -> Tensor<D> {
    let norm = NormCall {
        eps,
        scale,
        weighted: weight.is_some(),
        add_residual: residual.is_some(),
        then_norm: false,
    };
    // Unused bindings (a kernel binds every argument) are `x` again.
    let w = weight.cloned().unwrap_or_else(|| x.clone());
    let residual = residual.unwrap_or_else(|| x.clone());
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::rms_norm(
        x.into_dispatch(),
        w.into_dispatch(),
        residual.clone().into_dispatch(),
        residual.into_dispatch(),
        norm,
    ))
}

/// `x = (residual + rms_norm(y) · w) · scale` and `rms_norm(x) · next` in one kernel
/// ([`GpuKernelOps::rms_norm`] with `then_norm`): a sub-layer's output joining the residual
/// stream, and the next sub-layer's normed input.
pub fn add_rms_norm_then_norm(
    residual: Tensor<2>,
    y: Tensor<2>,
    weight: &Tensor<2>,
    eps: f32,
    scale: f32,
    next: &Tensor<2>,
) -> (Tensor<2>, Tensor<2>) {
    let dims = y.dims();
    let norm = NormCall {
        eps,
        scale,
        weighted: true,
        add_residual: true,
        then_norm: true,
    };
    let both: Tensor<2> = Tensor::from_dispatch(<Dispatch as GpuKernelOps>::rms_norm(
        y.into_dispatch(),
        weight.clone().into_dispatch(),
        residual.into_dispatch(),
        next.clone().into_dispatch(),
        norm,
    ));
    let x = both.clone().narrow(0, 0, 1).reshape(dims);
    let normed = both.narrow(0, 1, 1).reshape(dims);
    (x, normed)
}

/// [`GpuKernelOps::rope`] on tensors: `x` `[tokens, heads, d]`, tables `[tokens, 1, d/2]`.
pub fn rope(x: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::rope(
        x.into_dispatch(),
        cos.clone().into_dispatch(),
        sin.clone().into_dispatch(),
    ))
}

/// [`GpuKernelOps::rms_norm_rope`] on tensors: `x` `[tokens, heads, d]`, `weight` `[1, 1, d]`,
/// tables `[tokens, 1, d/2]`.
pub fn rms_norm_rope(
    x: Tensor<3>,
    weight: &Tensor<3>,
    cos: &Tensor<3>,
    sin: &Tensor<3>,
    eps: f32,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::rms_norm_rope(
        x.into_dispatch(),
        weight.clone().into_dispatch(),
        cos.clone().into_dispatch(),
        sin.clone().into_dispatch(),
        eps,
    ))
}

/// [`GpuKernelOps::argmax_blocks_into`] on tensors.
pub fn argmax_blocks_into(best: Tensor<2>, logits: Tensor<2>, call: ArgmaxCall) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::argmax_blocks_into(
        best.into_dispatch(),
        logits.into_dispatch(),
        call,
    ))
}

/// [`GpuKernelOps::top_k_blocks_into`] on tensors.
pub fn top_k_blocks_into(best: Tensor<2>, input: Tensor<2>, call: TopKCall) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::top_k_blocks_into(
        best.into_dispatch(),
        input.into_dispatch(),
        call,
    ))
}

/// [`GpuKernelOps::gelu_tanh_mul`] on tensors of equal shapes.
pub fn gelu_tanh_mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::gelu_tanh_mul(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}
