//! The kernels as a burn backend extension: one trait, implemented for burn's CubeCL backend
//! (the wgpu device), called on ordinary `Tensor`s through burn's `Dispatch`. Custom ops are
//! opaque to burn: they run in stream order between burn's own kernels.

use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor, tensor::IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor};
use cubecl::prelude::*;

use super::kernels;
use super::pack::QuantLayout;
use crate::kernels::attention::{AttentionCall, DecodeAttentionOps};

/// Units per cube: a power of two (the reductions halve it), small enough for every GPU and
/// for CPU adapters.
pub const CUBE_SIZE: usize = 64;
/// Tokens one cube computes together in a prefill product (each weight word is decoded once
/// per tile).
pub const PREFILL_TILE: usize = 8;
/// wgpu's limit on workgroups per grid dimension.
const MAX_GRID_DIM: usize = 65535;
/// Binding offsets must be multiples of this (Vulkan's worst-case minStorageBufferOffsetAlignment).
const OFFSET_ALIGN: u64 = 256;

/// Where one chunk of a weight product writes: `out[t, out_col + row]` in a `[tokens,
/// out_stride]` output.
#[derive(Debug, Clone, Copy)]
pub struct ChunkCall {
    pub rows: usize,
    pub out_col: usize,
    pub out_stride: usize,
}

#[backend_extension(Cube)]
pub trait GpuKernelOps: Backend {
    /// Writes `x · Wᵀ` for one chunk of quantized rows into `out` (in place) and returns it.
    fn quant_matmul_into(
        out: FloatTensor<Self>,
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        mins: FloatTensor<Self>,
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
}

/// `tensor` as a kernel can bind it: contiguous rows, starting at an aligned offset.
fn bindable(tensor: CubeTensor) -> CubeTensor {
    let aligned = tensor.handle.offset_start.unwrap_or(0) % OFFSET_ALIGN == 0;
    if tensor.is_contiguous() && aligned {
        return tensor;
    }
    copy_contiguous(tensor)
}

fn copy_contiguous(tensor: CubeTensor) -> CubeTensor {
    let shape = tensor.meta.shape().clone();
    let out = empty_f32(&tensor, shape);
    let client = tensor.client.clone();
    cubecl::std::tensor::copy_into(
        &client,
        tensor.binding(),
        out.clone().binding(),
        f32::elem_type_native(),
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

fn check_f32(name: &str, t: &CubeTensor) {
    assert_eq!(
        t.dtype.size(),
        4,
        "{name}: expected 32-bit elements, got {:?}",
        t.dtype
    );
}

impl GpuKernelOps for CubeBackend {
    fn quant_matmul_into(
        out: CubeTensor,
        x: CubeTensor,
        words: CubeTensor,
        scales: CubeTensor,
        mins: CubeTensor,
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
        let client = x.client.clone();
        kernels::packed_matmul::launch(
            &client,
            matmul_grid(call.rows, tokens, tile),
            CubeDim::new_1d(CUBE_SIZE as u32),
            4,
            buffer(x),
            buffer(words),
            buffer(scales),
            buffer(mins),
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
            tile,
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
}

impl DecodeAttentionOps for CubeBackend {
    fn decode_attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        visible: CubeTensor,
        call: AttentionCall,
    ) -> CubeTensor {
        let q = bindable(q);
        let qdims = q.meta.shape().clone();
        let (heads, head_dim) = (qdims[0], qdims[1]);
        let slots = k.meta.shape()[1];
        let unit_stride = |t: &CubeTensor| {
            let s = t.meta.strides();
            let aligned = t.handle.offset_start.unwrap_or(0) % OFFSET_ALIGN == 0;
            s[2] == 1 && aligned
        };
        let k = if unit_stride(&k) {
            k
        } else {
            copy_contiguous(k)
        };
        let v = if unit_stride(&v) {
            v
        } else {
            copy_contiguous(v)
        };
        let (ks, vs) = (k.meta.strides().clone(), v.meta.strides().clone());
        let visible = bindable(visible);
        let out = empty_f32(&q, Shape::new([heads, head_dim]));
        let scores = empty_f32(&q, Shape::new([heads, slots.max(1)]));
        let client = q.client.clone();
        kernels::decode_attention::launch(
            &client,
            CubeCount::Static(heads as u32, 1, 1),
            CubeDim::new_1d(CUBE_SIZE as u32),
            buffer(q),
            buffer(k),
            buffer(v),
            buffer(visible),
            buffer(scores),
            buffer(out.clone()),
            slots as u32,
            call.groups as u32,
            ks[0] as u32,
            ks[1] as u32,
            vs[0] as u32,
            vs[1] as u32,
            call.scale,
            head_dim,
            CUBE_SIZE,
        );
        out
    }
}

/// [`GpuKernelOps::quant_matmul_into`] on tensors.
pub fn quant_matmul_into(
    out: Tensor<2>,
    x: Tensor<2>,
    words: &Tensor<1, Int>,
    scales: &Tensor<1>,
    mins: &Tensor<1>,
    layout: QuantLayout,
    call: ChunkCall,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::quant_matmul_into(
        out.into_dispatch(),
        x.into_dispatch(),
        words.clone().into_dispatch(),
        scales.clone().into_dispatch(),
        mins.clone().into_dispatch(),
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
