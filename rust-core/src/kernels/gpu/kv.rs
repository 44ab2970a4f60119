//! The KV cache on the GPU for every KV type but all-f32 (which stays f32 tensors): rows are the
//! CPU codec's bytes (`kernels::kv`), little-endian in u32 words and padded to a whole word, in
//! Int tensors `[kv_heads, slots, words]`, and attention reads them directly
//! (`kv_kernels::encoded_attention`); no decoded copy of the cache exists.
//!
//! - Rows are encoded on the device by `kv_kernels::encode_kv_rows` (f16: round to nearest even,
//!   as `half::f16::from_f32`; q8_0 and TurboQuant: the CPU codec's arithmetic step for step),
//!   so a row's bytes are the CPU's (tested byte for byte); appending a token reads nothing
//!   back. The same kernel applies a key's norm and RoPE or a value's norm first
//!   ([`RowPrep`]): one dispatch a plane and step.
//! - TurboQuant keys: the query is rotated once per head (signs, then one shared normalized
//!   Hadamard matrix per head dimension, as a matmul); TurboQuant values are summed in the
//!   rotated domain and the sum rotated back once per head. The signs, codebook and Hadamard
//!   matrix are the codec's own (`KvCodec::signs`, `levels`, `kv::hadamard`), uploaded once.

use std::sync::{Arc, Mutex, OnceLock};

use burn::backend::Dispatch;
use burn::tensor::{Device, Int, Tensor};

use super::kv_kernels::{KV_F16, KV_F32, KV_Q8_0, KV_TQ};
use super::ops::{EncodePrep, GpuKernelOps};
use crate::device::from_host;
use crate::kernels::kv::{KvCodec, KvType, hadamard};

/// How the kernels read one KV type's rows.
#[derive(Debug, Clone, Copy)]
pub struct KvLayout {
    pub ty: KvType,
    /// `kv_kernels::KV_F32` … `KV_TQ`.
    pub kind: u32,
    /// TurboQuant's bits a coordinate (0 otherwise).
    pub bits: u32,
}

impl KvLayout {
    pub fn of(ty: KvType) -> Self {
        let (kind, bits) = match ty {
            KvType::F32 => (KV_F32, 0),
            KvType::F16 => (KV_F16, 0),
            KvType::Q8_0 => (KV_Q8_0, 0),
            KvType::Tq(bits) => (KV_TQ, u32::from(bits)),
        };
        KvLayout { ty, kind, bits }
    }

    /// u32 words of one row of `d` values (the codec's bytes, rounded up to a word).
    pub fn words_per_row(self, d: usize) -> usize {
        self.ty.row_bytes(d).div_ceil(4)
    }
}

/// The scalars of one [`GpuKernelOps::encoded_attention`] call.
#[derive(Debug, Clone, Copy)]
pub struct EncodedCall {
    /// Query heads per KV head.
    pub groups: usize,
    pub scale: f32,
    /// A key at `k` is visible to a query at `q` when `k ≤ q < k + window` (full layers: a
    /// window beyond any position).
    pub window: f32,
    pub k: KvLayout,
    pub v: KvLayout,
    /// With the norm's epsilon, the kernel RMS-norms and rotates the raw queries itself (the
    /// norm weight and RoPE tables are bound); without, the queries come prepared.
    pub q_eps: Option<f32>,
}

/// One layer's encoded keys or values on the device, with their codec.
#[derive(Clone)]
pub struct DeviceRows {
    pub codec: Arc<KvCodec>,
    /// `[kv_heads, slots, words]`.
    pub words: Tensor<3, Int>,
}

/// A codec's tables on the device, uploaded on first use.
pub struct DeviceTables {
    /// The codebook (one zero for types without one: the kernels bind something).
    levels: Tensor<1>,
    /// `[kv_heads, d]` ±1 (TurboQuant only).
    signs: Option<Tensor<2>>,
}

impl std::fmt::Debug for DeviceTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTables")
    }
}

impl DeviceTables {
    pub fn new(codec: &KvCodec, device: &Device) -> Self {
        let levels = match codec.levels() {
            [] => vec![0.0],
            l => l.to_vec(),
        };
        let n = levels.len();
        let signs = codec
            .is_rotated()
            .then(|| from_host(codec.signs().to_vec(), [codec.kv_heads(), codec.d], device));
        DeviceTables {
            levels: from_host(levels, [n], device),
            signs,
        }
    }
}

/// The normalized Hadamard matrix of size `d` (symmetric; column `j` is `kv::hadamard` of the
/// unit vector `e_j`), one per head dimension and process.
fn hadamard_matrix(d: usize, device: &Device) -> Tensor<2> {
    static MATRICES: OnceLock<Mutex<Vec<(usize, Tensor<2>)>>> = OnceLock::new();
    let mut cache = MATRICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, h)) = cache.iter().find(|(n, h)| *n == d && h.device() == *device) {
        return h.clone();
    }
    let mut m = vec![0.0f32; d * d];
    let mut column = vec![0.0f32; d];
    for j in 0..d {
        column.fill(0.0);
        column[j] = 1.0;
        hadamard(&mut column);
        for (i, v) in column.iter().enumerate() {
            m[i * d + j] = *v;
        }
    }
    let h = from_host(m, [d, d], device);
    cache.push((d, h.clone()));
    h
}

/// What a step's keys or values go through on their way into the cache, done by the encode
/// kernel itself: Gemma's RMS norm (a key's with its weight, a value's without) and a key's
/// RoPE. The default prepares nothing (the rows are already normed and roped).
#[derive(Debug, Clone, Default)]
pub struct RowPrep {
    /// The norm's epsilon, where rows are RMS-normed.
    pub norm: Option<f32>,
    /// The norm's weight `[d]` (any shape of `d` elements).
    pub weight: Option<Tensor<3>>,
    /// RoPE tables `cos`, `sin` `[tokens, 1, d/2]` for the rows' tokens.
    pub rope: Option<(Tensor<3>, Tensor<3>)>,
}

impl RowPrep {
    /// The preparation of tokens `range` of the step alone.
    pub fn tokens(&self, range: std::ops::Range<usize>) -> Self {
        let narrow = |t: &Tensor<3>| t.clone().narrow(0, range.start, range.len());
        RowPrep {
            rope: self.rope.as_ref().map(|(c, s)| (narrow(c), narrow(s))),
            ..self.clone()
        }
    }
}

/// `x` `[kv_heads, tokens, d]` prepared as `prep` says and encoded as rows of `codec`'s type,
/// on the device (no read-back).
pub fn encode(codec: &KvCodec, x: Tensor<3>, prep: &RowPrep) -> Tensor<3, Int> {
    let [kv_heads, tokens, d] = x.dims();
    let words = KvLayout::of(codec.ty).words_per_row(d);
    let plane = Tensor::<3, Int>::empty([kv_heads, tokens, words], &x.device());
    encode_into(codec, plane, x, prep, 0)
}

/// [`encode`] written straight into slots `first_slot..first_slot + tokens` of a cache plane
/// `[kv_heads, slots, words]` (one dispatch where norm, RoPE, encoding and copying took
/// four); the plane is written in place unless something else holds it (then a copy is
/// written and returned).
pub fn encode_into(
    codec: &KvCodec,
    plane: Tensor<3, Int>,
    x: Tensor<3>,
    prep: &RowPrep,
    first_slot: usize,
) -> Tensor<3, Int> {
    let tables = codec.device_tables(&x.device());
    // Unused bindings (a kernel binds every argument) are the levels.
    let unused = || tables.levels.clone().into_dispatch();
    // Types without a rotation bind the levels in the signs' place.
    let signs = match &tables.signs {
        Some(signs) => signs.clone().into_dispatch(),
        None => unused(),
    };
    let bind = |t: Option<&Tensor<3>>| t.map_or_else(unused, |t| t.clone().into_dispatch());
    let call = EncodePrep {
        eps: prep.norm.unwrap_or(0.0),
        normed: prep.norm.is_some(),
        weighted: prep.norm.is_some() && prep.weight.is_some(),
        roped: prep.rope.is_some(),
    };
    Tensor::from_dispatch(<Dispatch as GpuKernelOps>::encode_kv_rows_into(
        plane.into_dispatch(),
        x.into_dispatch(),
        bind(prep.weight.as_ref()),
        bind(prep.rope.as_ref().map(|(c, _)| c)),
        bind(prep.rope.as_ref().map(|(_, s)| s)),
        call,
        signs,
        unused(),
        KvLayout::of(codec.ty),
        first_slot,
    ))
}

/// The queries of one attention call: which keys each sees, and the score scale.
#[derive(Debug, Clone, Copy)]
pub struct Queries<'a> {
    /// The position of each key slot (`None`: an empty slot).
    pub key_pos: &'a [Option<usize>],
    /// The position of each query token.
    pub q_pos: &'a [usize],
    /// A sliding layer's window (`None`: every earlier key).
    pub window: Option<usize>,
    pub scale: f32,
    /// The queries' norm and RoPE, for the attention kernel to apply to raw queries (a
    /// [`RowPrep`] with a norm, its weight and RoPE tables); not with rotated (TurboQuant)
    /// keys, whose queries are rotated after their norm and RoPE.
    pub prep: Option<&'a RowPrep>,
}

/// Attention of `q` `[tokens, heads, d]` over encoded `k`, `v`; returns `[tokens, heads·d]`.
pub fn attend(q: Tensor<3>, rows: (&DeviceRows, &DeviceRows), queries: Queries<'_>) -> Tensor<2> {
    attend_in_blocks(q, rows, queries, SCORES_BYTES)
}

/// [`attend`] with at most `scores_bytes` of scores a launch (tests force many blocks).
pub(crate) fn attend_in_blocks(
    q: Tensor<3>,
    (k, v): (&DeviceRows, &DeviceRows),
    queries: Queries<'_>,
    scores_bytes: usize,
) -> Tensor<2> {
    let Queries {
        key_pos,
        q_pos,
        window,
        scale,
        prep,
    } = queries;
    let [tokens, heads, d] = q.dims();
    let device = q.device();
    let kv_heads = k.words.dims()[0];
    let groups = heads / kv_heads.max(1);
    let (kt, vt) = (
        k.codec.device_tables(&device),
        v.codec.device_tables(&device),
    );
    let q = match &kt.signs {
        Some(signs) => {
            debug_assert!(prep.is_none(), "rotated keys take prepared queries");
            rotate(q, signs, kv_heads, &hadamard_matrix(d, &device))
        }
        None => q,
    };
    // The kernel's query norm weight and RoPE tables (unread without a preparation).
    let (q_eps, q_norm, rope) = match prep {
        Some(RowPrep {
            norm: Some(eps),
            weight: Some(w),
            rope: Some((cos, sin)),
        }) => (Some(*eps), w.clone(), Some((cos.clone(), sin.clone()))),
        _ => (None, kt.levels.clone().reshape([1, 1, -1]), None),
    };
    let positions: Vec<f32> = key_pos
        .iter()
        .map(|p| p.map_or(-1.0, |p| p as f32))
        .collect();
    let key_pos = from_host(positions, [key_pos.len()], &device);
    let call = EncodedCall {
        groups,
        scale,
        window: window.map_or(f32::MAX, |w| w as f32),
        k: KvLayout::of(k.codec.ty),
        v: KvLayout::of(v.codec.ty),
        q_eps,
    };
    // Query blocks bound the scores scratch (`[block·heads, slots]` f32).
    let block = (scores_bytes / (4 * heads * key_pos.dims()[0].max(1))).clamp(1, tokens.max(1));
    let mut outs = Vec::with_capacity(tokens.div_ceil(block));
    for start in (0..tokens).step_by(block) {
        let n = block.min(tokens - start);
        let at: Vec<f32> = q_pos[start..start + n].iter().map(|&p| p as f32).collect();
        let (cos, sin) = match &rope {
            Some((cos, sin)) => (
                cos.clone().narrow(0, start, n),
                sin.clone().narrow(0, start, n),
            ),
            None => (q_norm.clone(), q_norm.clone()),
        };
        outs.push(Tensor::<3>::from_dispatch(
            <Dispatch as GpuKernelOps>::encoded_attention(
                q.clone().narrow(0, start, n).into_dispatch(),
                q_norm.clone().into_dispatch(),
                cos.into_dispatch(),
                sin.into_dispatch(),
                k.words.clone().into_dispatch(),
                v.words.clone().into_dispatch(),
                key_pos.clone().into_dispatch(),
                from_host(at, [n], &device).into_dispatch(),
                kt.levels.clone().into_dispatch(),
                vt.levels.clone().into_dispatch(),
                call,
            ),
        ));
    }
    let out = if outs.len() == 1 {
        outs.pop().expect("one block")
    } else {
        Tensor::cat(outs, 0)
    };
    let out = match &vt.signs {
        Some(signs) => unrotate(out, signs, kv_heads, &hadamard_matrix(d, &device)),
        None => out,
    };
    out.reshape([tokens, heads * d])
}

/// Bytes of scores one attention launch may use.
const SCORES_BYTES: usize = 64 << 20;

/// `q` `[tokens, heads, d]` ↦ Π·q per head with its KV head's rotation: H·(signs ∘ q).
fn rotate(q: Tensor<3>, signs: &Tensor<2>, kv_heads: usize, h: &Tensor<2>) -> Tensor<3> {
    let [tokens, heads, d] = q.dims();
    let signed = q.reshape([tokens, kv_heads, heads / kv_heads, d])
        * signs.clone().reshape([1, kv_heads, 1, d]);
    // Rows times H, which is symmetric: each row's H·x.
    signed
        .reshape([tokens * heads, d])
        .matmul(h.clone())
        .reshape([tokens, heads, d])
}

/// The inverse of [`rotate`]: Πᵀ·y = signs ∘ (H·y).
fn unrotate(y: Tensor<3>, signs: &Tensor<2>, kv_heads: usize, h: &Tensor<2>) -> Tensor<3> {
    let [tokens, heads, d] = y.dims();
    (y.reshape([tokens * heads, d]).matmul(h.clone()).reshape([
        tokens,
        kv_heads,
        heads / kv_heads,
        d,
    ]) * signs.clone().reshape([1, kv_heads, 1, d]))
    .reshape([tokens, heads, d])
}
