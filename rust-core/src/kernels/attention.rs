//! One query token's attention over the KV cache — the decode hot op besides the weight
//! products — as a burn backend extension: a CubeCL kernel on the GPU (`gpu::ops`) and a
//! split-over-keys host kernel on burn-flex (`cpu::attention`), so the model graph calls one
//! function on either device.

use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::{DType, Shape, Tensor};

use super::cpu::attention::{KvView, attend_one};

#[derive(Debug, Clone, Copy)]
pub struct AttentionCall {
    /// Query heads per KV head.
    pub groups: usize,
    pub scale: f32,
}

#[cfg_attr(feature = "gpu", backend_extension(Cube, Flex))]
#[cfg_attr(not(feature = "gpu"), backend_extension(Flex))]
pub trait DecodeAttentionOps: Backend {
    /// One query token's attention: `q` `[heads, d]`, `k`/`v` `[kv_heads, slots, d]`,
    /// `visible` `[slots]` (1 or 0); returns `[heads, d]`.
    fn decode_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        visible: FloatTensor<Self>,
        call: AttentionCall,
    ) -> FloatTensor<Self>;
}

/// [`DecodeAttentionOps::decode_attention`] on tensors: `q` `[heads, d]` → `[heads, d]`.
pub fn decode_attention(
    q: Tensor<2>,
    k: Tensor<3>,
    v: Tensor<3>,
    visible: Tensor<1>,
    call: AttentionCall,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DecodeAttentionOps>::decode_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        visible.into_dispatch(),
        call,
    ))
}

fn kv_view(t: &FlexTensor) -> KvView<'_> {
    let l = t.layout();
    KvView::F32 {
        data: &t.storage::<f32>()[l.start_offset()..],
        head_stride: l.strides()[0] as usize,
        slot_stride: l.strides()[1] as usize,
    }
}

/// `t` with unit stride along its last axis and no negative strides (a copy only if not).
fn unit_inner(t: FlexTensor) -> FlexTensor {
    let l = t.layout();
    if l.has_positive_strides() && l.strides().last().is_none_or(|&s| s == 1) {
        t
    } else {
        t.to_contiguous()
    }
}

impl DecodeAttentionOps for Flex {
    fn decode_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        visible: FlexTensor,
        call: AttentionCall,
    ) -> FlexTensor {
        let (q, visible) = (q.to_contiguous(), visible.to_contiguous());
        let (k, v) = (unit_inner(k), unit_inner(v));
        let shape = q.layout().shape().clone();
        let (heads, d) = (shape[0], shape[1]);
        let mut out = vec![0.0f32; heads * d];
        attend_one(
            q.as_slice::<f32>().expect("contiguous"),
            d,
            kv_view(&k),
            kv_view(&v),
            visible.as_slice::<f32>().expect("contiguous"),
            call,
            &mut out,
        );
        FlexTensor::new(
            burn::tensor::Bytes::from_elems(out),
            burn::backend::flex::Layout::contiguous(Shape::new([heads, d])),
            DType::F32,
        )
    }
}
