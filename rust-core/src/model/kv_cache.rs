//! Key/value caches. Full-attention layers keep every position (the buffer grows by doubling);
//! sliding layers keep a ring of `window` slots; KV-shared layers own nothing and read their
//! producer's view of the current step.
//!
//! f32 caches are burn tensors (on either device); the other KV types
//! ([`crate::kernels::kv::KvType`]) are encoded rows, encoded once on append and read by
//! attention without decoding the cache: on the CPU host rows behind an `Arc`, on a GPU the
//! same rows in u32 words in burn Int tensors (`kernels::gpu::kv`), which grow and wrap as the
//! f32 tensors do (one piece of ring/growth logic, generic over the tensor kind). All are copy
//! on write: tensors are immutable values and host rows sit behind an `Arc`, so a forked cache
//! shares them until it writes.

use std::sync::Arc;

use burn::tensor::kind::Basic;
use burn::tensor::{Int, Tensor, s};

use crate::error::Result;
#[cfg(feature = "gpu")]
use crate::kernels::gpu::kv::{self as gpu_kv, DeviceRows};
use crate::kernels::kv::{EncodedRows, KvCodec, KvType};

use super::ops::{rms_norm, to_host};
use super::rope::RopeTables;

/// The keys and values one step attends over, with the absolute position of each key slot
/// (`None`: an empty slot, always masked).
#[derive(Clone)]
pub struct StepKv {
    pub rows: KvRows,
    pub key_pos: Vec<Option<usize>>,
}

/// One step's keys and values, slot `i` of which is at `key_pos[i]`.
#[derive(Clone)]
pub enum KvRows {
    /// f32 tensors `[kv_heads, keys, head_dim]`.
    Dense { k: Tensor<3>, v: Tensor<3> },
    /// Encoded rows on the host (any other KV type, or f32 paired with one).
    Encoded {
        k: Arc<EncodedRows>,
        v: Arc<EncodedRows>,
    },
    /// Encoded rows on a GPU (the same types; `kernels::gpu::kv`).
    #[cfg(feature = "gpu")]
    Device { k: DeviceRows, v: DeviceRows },
}

impl StepKv {
    pub fn kv_heads(&self) -> usize {
        match &self.rows {
            KvRows::Dense { k, .. } => k.dims()[0],
            KvRows::Encoded { k, .. } => k.kv_heads,
            #[cfg(feature = "gpu")]
            KvRows::Device { k, .. } => k.words.dims()[0],
        }
    }
}

#[derive(Clone)]
enum Storage {
    /// Doubles as positions come, never beyond `max_len` (the context): the memory check
    /// counts a full layer at exactly the context length.
    Growing { max_len: usize },
    /// `capacity` = window + rollback slack: the extra slots keep positions that have left the
    /// window, so a conversation can roll back a few tokens (a re-tokenized answer) without
    /// rebuilding the cache.
    Ring { window: usize, capacity: usize },
}

/// Positions a sliding-layer ring keeps beyond its window, so the cache can be rolled back by
/// up to this many tokens.
pub const ROLLBACK_SLACK: usize = 128;

/// A layer's keys and values as two tensors `[kv_heads, slots, width]`: f32 values (`Float`),
/// or encoded rows in u32 words on a GPU (`Int`). Growing and ring logic is the same for both.
#[derive(Clone)]
struct Planes<K: Basic> {
    k: Option<Tensor<3, K>>,
    v: Option<Tensor<3, K>>,
}

impl<K: Basic> Default for Planes<K> {
    fn default() -> Self {
        Planes { k: None, v: None }
    }
}

/// Cloning is cheap and safe: burn tensors are immutable values, so a clone and its original
/// diverge on their next write (copy on write).
#[derive(Clone)]
pub struct LayerCache {
    storage: Storage,
    kv_heads: usize,
    /// f32 keys and values (both types f32).
    dense: Planes<burn::tensor::Float>,
    /// Encoded keys and values on the host instead (any type but f32 for both, CPU).
    encoded: Option<(Arc<EncodedRows>, Arc<EncodedRows>)>,
    /// Encoded keys and values on a GPU instead, with their codecs.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    device: Option<(Arc<KvCodec>, Arc<KvCodec>)>,
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    words: Planes<Int>,
    slot_pos: Vec<Option<usize>>,
}

impl LayerCache {
    pub fn growing(kv_heads: usize, max_len: usize) -> Self {
        Self::with_storage(Storage::Growing { max_len }, kv_heads)
    }

    pub fn ring(window: usize, slack: usize, kv_heads: usize) -> Self {
        let capacity = window + slack;
        Self::with_storage(Storage::Ring { window, capacity }, kv_heads)
    }

    fn with_storage(storage: Storage, kv_heads: usize) -> Self {
        LayerCache {
            storage,
            kv_heads,
            dense: Planes::default(),
            encoded: None,
            device: None,
            words: Planes::default(),
            slot_pos: Vec::new(),
        }
    }

    /// This cache with keys and values encoded by `codecs` (`None`, or f32 for both: tensors),
    /// as host rows (`on_host`) or as rows on the GPU.
    pub fn encoded_with(
        mut self,
        codecs: Option<&(Arc<KvCodec>, Arc<KvCodec>)>,
        on_host: bool,
    ) -> Self {
        let codecs = codecs.filter(|(k, v)| (k.ty, v.ty) != (KvType::F32, KvType::F32));
        if !on_host {
            self.device = codecs.cloned();
            return self;
        }
        self.encoded = codecs.map(|(k, v)| {
            (
                Arc::new(EncodedRows::new(k.clone(), self.kv_heads)),
                Arc::new(EncodedRows::new(v.clone(), self.kv_heads)),
            )
        });
        self
    }

    /// Adds a step's raw keys and values `[T, kv_heads, head_dim]` for the consecutive
    /// `positions` after preparing them (norm, RoPE), and returns what this step's queries
    /// attend over. On a GPU cache of encoded rows the encode kernel prepares them as it
    /// writes their slots (one dispatch a plane); elsewhere they are prepared first.
    pub fn append_prepared(
        &mut self,
        k: Tensor<3>,
        v: Tensor<3>,
        (k_prep, v_prep): (RowPrep<'_>, RowPrep<'_>),
        positions: &[usize],
    ) -> Result<StepKv> {
        #[cfg(feature = "gpu")]
        if self.encoded.is_none() && self.device.is_some() {
            return self.append_on_device(
                k.swap_dims(0, 1),
                v.swap_dims(0, 1),
                (k_prep.on_device(), v_prep.on_device()),
                positions,
            );
        }
        let (k, v) = (k_prep.apply(k), v_prep.apply(v));
        self.append(k.swap_dims(0, 1), v.swap_dims(0, 1), positions)
    }

    /// Adds `k`, `v` (`[kv_heads, T, head_dim]`, already normed and roped) for the consecutive
    /// `positions`, and returns what this step's queries attend over.
    pub fn append(&mut self, k: Tensor<3>, v: Tensor<3>, positions: &[usize]) -> Result<StepKv> {
        if self.encoded.is_some() {
            return self.append_encoded(k, v, positions);
        }
        #[cfg(feature = "gpu")]
        if self.device.is_some() {
            let none = gpu_kv::RowPrep::default();
            return self.append_on_device(k, v, (none.clone(), none), positions);
        }
        let (k, v, key_pos) = self.append_planes(|c| &mut c.dense, &k, &v, positions);
        Ok(StepKv {
            rows: KvRows::Dense { k, v },
            key_pos,
        })
    }

    /// [`append`](Self::append) to a GPU cache of encoded rows: `k`, `v` `[kv_heads, T,
    /// head_dim]` are prepared and encoded straight into their slots, one kernel a plane.
    #[cfg(feature = "gpu")]
    fn append_on_device(
        &mut self,
        k: Tensor<3>,
        v: Tensor<3>,
        (k_prep, v_prep): (gpu_kv::RowPrep, gpu_kv::RowPrep),
        positions: &[usize],
    ) -> Result<StepKv> {
        {
            let Some((kc, vc)) = self.device.clone() else {
                return Err(crate::error::GemmaError::InvalidArgument(
                    "not a GPU cache of encoded rows".into(),
                ));
            };
            let new_k = Unencoded {
                codec: &kc,
                x: k,
                prep: k_prep,
            };
            let new_v = Unencoded {
                codec: &vc,
                x: v,
                prep: v_prep,
            };
            let (k, v, key_pos) = self.append_planes(|c| &mut c.words, &new_k, &new_v, positions);
            return Ok(StepKv {
                rows: KvRows::Device {
                    k: DeviceRows {
                        codec: kc,
                        words: k,
                    },
                    v: DeviceRows {
                        codec: vc,
                        words: v,
                    },
                },
                key_pos,
            });
        }
    }

    /// Appends to the dense or the word planes, returning the step's keys, values and key
    /// positions.
    fn append_planes<K: Basic>(
        &mut self,
        which: fn(&mut Self) -> &mut Planes<K>,
        k: &impl NewRows<K>,
        v: &impl NewRows<K>,
        positions: &[usize],
    ) -> (Tensor<3, K>, Tensor<3, K>, Vec<Option<usize>>) {
        let (storage, kv_heads) = (self.storage.clone(), self.kv_heads);
        let mut slot_pos = std::mem::take(&mut self.slot_pos);
        let planes = which(self);
        let step = match storage {
            Storage::Growing { max_len } => {
                append_growing(planes, &mut slot_pos, kv_heads, k, v, positions, max_len)
            }
            Storage::Ring { capacity, .. } => {
                append_ring(planes, &mut slot_pos, kv_heads, capacity, k, v, positions)
            }
        };
        self.slot_pos = slot_pos;
        step
    }

    /// [`append`](Self::append) for encoded rows: the new tokens are encoded once; a full
    /// layer appends them, a ring copies them into their slots (after a longer step has been
    /// given the ring and the new rows to attend over, as in [`append_ring`](Self::append_ring)).
    fn append_encoded(
        &mut self,
        k: Tensor<3>,
        v: Tensor<3>,
        positions: &[usize],
    ) -> Result<StepKv> {
        let t = positions.len();
        let Some((ring_k, ring_v)) = self.encoded.as_mut() else {
            return Err(crate::error::GemmaError::InvalidArgument(
                "not an encoded cache".into(),
            ));
        };
        let encode = |x: Tensor<3>, like: &EncodedRows| -> Result<EncodedRows> {
            let host = to_host(x)?;
            let mut rows = EncodedRows::new(like.codec.clone(), like.kv_heads);
            rows.grow_to(t);
            for i in 0..t {
                rows.write(i, &host, t, i);
            }
            Ok(rows)
        };
        let (new_k, new_v) = (encode(k, ring_k)?, encode(v, ring_v)?);
        let step = match self.storage {
            Storage::Growing { max_len } => {
                let len = self.slot_pos.len();
                for (cache, new) in [(&mut *ring_k, &new_k), (&mut *ring_v, &new_v)] {
                    let rows = Arc::make_mut(cache);
                    let sb = rows.slot_bytes();
                    if rows.data.capacity() < (len + t) * sb {
                        // Doubling, never beyond the context (as the f32 buffer).
                        let slots = (rows.data.capacity() / sb.max(1) * 2)
                            .max(64)
                            .min(max_len)
                            .max(len + t);
                        rows.data.reserve_exact(slots * sb - rows.data.len());
                    }
                    rows.data.truncate(len * sb);
                    rows.data.extend_from_slice(&new.data);
                }
                self.slot_pos.extend(positions.iter().map(|&p| Some(p)));
                None
            }
            Storage::Ring { capacity, .. } => {
                if self.slot_pos.is_empty() {
                    Arc::make_mut(ring_k).grow_to(capacity);
                    Arc::make_mut(ring_v).grow_to(capacity);
                    self.slot_pos = vec![None; capacity];
                }
                let step = (t > 1).then(|| {
                    let joined = |ring: &EncodedRows, new: &EncodedRows| {
                        let mut rows = ring.clone();
                        rows.data.extend_from_slice(&new.data);
                        Arc::new(rows)
                    };
                    let mut key_pos = self.slot_pos.clone();
                    key_pos.extend(positions.iter().map(|&p| Some(p)));
                    StepKv {
                        rows: KvRows::Encoded {
                            k: joined(ring_k, &new_k),
                            v: joined(ring_v, &new_v),
                        },
                        key_pos,
                    }
                });
                for i in t - t.min(capacity)..t {
                    let slot = positions[i] % capacity;
                    for (cache, new) in [(&mut *ring_k, &new_k), (&mut *ring_v, &new_v)] {
                        let rows = Arc::make_mut(cache);
                        let sb = rows.slot_bytes();
                        rows.data[slot * sb..(slot + 1) * sb]
                            .copy_from_slice(&new.data[i * sb..(i + 1) * sb]);
                    }
                    self.slot_pos[slot] = Some(positions[i]);
                }
                step
            }
        };
        Ok(step.unwrap_or_else(|| StepKv {
            rows: KvRows::Encoded {
                k: ring_k.clone(),
                v: ring_v.clone(),
            },
            key_pos: self.slot_pos.clone(),
        }))
    }

    /// Every key and value held now, read without writing (`None` while empty).
    fn view(&self) -> Option<StepKv> {
        let len = self.slot_pos.len();
        if len == 0 {
            return None;
        }
        // A growing buffer holds capacity beyond its `len` filled slots; a ring is all slots.
        let slots = |t: &Tensor<3>| match self.storage {
            Storage::Growing { .. } => t.clone().slice(s![.., 0..len, ..]),
            Storage::Ring { .. } => t.clone(),
        };
        let key_pos = self.slot_pos.clone();
        if let Some((k, v)) = &self.encoded {
            return Some(StepKv {
                rows: KvRows::Encoded {
                    k: k.clone(),
                    v: v.clone(),
                },
                key_pos,
            });
        }
        #[cfg(feature = "gpu")]
        if let (Some((kc, vc)), Some(k), Some(v)) = (&self.device, &self.words.k, &self.words.v) {
            let words = |t: &Tensor<3, Int>| match self.storage {
                Storage::Growing { .. } => t.clone().slice(s![.., 0..len, ..]),
                Storage::Ring { .. } => t.clone(),
            };
            return Some(StepKv {
                rows: KvRows::Device {
                    k: DeviceRows {
                        codec: kc.clone(),
                        words: words(k),
                    },
                    v: DeviceRows {
                        codec: vc.clone(),
                        words: words(v),
                    },
                },
                key_pos,
            });
        }
        let (k, v) = (self.dense.k.as_ref()?, self.dense.v.as_ref()?);
        Some(StepKv {
            rows: KvRows::Dense {
                k: slots(k),
                v: slots(v),
            },
            key_pos,
        })
    }

    /// Whether the cache can go back to its first `len` positions: a ring that has wrapped
    /// past `len` has overwritten positions the shorter sequence needs.
    fn can_truncate(&self, current: usize, len: usize) -> bool {
        match self.storage {
            Storage::Growing { .. } => true,
            Storage::Ring { window, capacity } => {
                current.saturating_sub(capacity) <= len.saturating_sub(window)
            }
        }
    }

    /// Forgets every position ≥ `len` (check [`can_truncate`](Self::can_truncate) first).
    fn truncate(&mut self, len: usize) {
        match self.storage {
            Storage::Growing { .. } => {
                self.slot_pos.truncate(len);
                if let Some((k, v)) = self.encoded.as_mut() {
                    for rows in [k, v] {
                        let bytes = len * rows.slot_bytes();
                        Arc::make_mut(rows).data.truncate(bytes);
                    }
                }
            }
            Storage::Ring { .. } => self
                .slot_pos
                .iter_mut()
                .filter(|p| p.is_some_and(|p| p >= len))
                .for_each(|p| *p = None),
        }
    }
}

/// What a step's raw keys or values go through before they are cached: Gemma's RMS norm (a
/// key's with its weight; a value's, where the model norms values, without) and a key's RoPE.
#[derive(Clone, Copy, Default)]
pub struct RowPrep<'a> {
    /// The norm's epsilon, where rows are RMS-normed.
    pub norm: Option<f32>,
    /// The norm's weight `[1, 1, head_dim]`.
    pub weight: Option<&'a Tensor<3>>,
    pub rope: Option<&'a RopeTables>,
}

impl RowPrep<'_> {
    /// A weighted norm and RoPE (a query's or a key's preparation).
    pub fn is_norm_and_rope(&self) -> bool {
        self.norm.is_some() && self.weight.is_some() && self.rope.is_some()
    }

    /// The prepared rows of `x` `[T, heads, head_dim]` (a fused kernel each on the GPU).
    pub fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        match (self.norm, self.rope) {
            (Some(eps), Some(rope)) => match self.weight {
                Some(w) => rope.apply_normed(x, w, eps),
                None => rope.apply(rms_norm(x, None, eps)),
            },
            (Some(eps), None) => rms_norm(x, self.weight, eps),
            (None, Some(rope)) => rope.apply(x),
            (None, None) => x,
        }
    }

    /// The same preparation for the GPU kernels.
    #[cfg(feature = "gpu")]
    pub fn on_device(&self) -> gpu_kv::RowPrep {
        gpu_kv::RowPrep {
            norm: self.norm,
            weight: self.weight.cloned(),
            rope: self.rope.map(|r| (r.cos.clone(), r.sin.clone())),
        }
    }
}

/// A step's new keys or values `[kv_heads, T, width]` as a plane of element kind `K` takes them.
trait NewRows<K: Basic> {
    /// A zero plane of `slots` rows a head, of the rows' width.
    fn zeros(&self, kv_heads: usize, slots: usize) -> Tensor<3, K>;
    /// New rows `rows` written into slots `slot..slot + rows.len()` of `plane`.
    fn write(&self, plane: Tensor<3, K>, slot: usize, rows: std::ops::Range<usize>)
    -> Tensor<3, K>;
    /// Every new row, as the plane holds them (a ring's longer step attends over them).
    fn all(&self) -> Tensor<3, K>;
}

/// Rows already in the plane's form (f32 tensors, or encoded rows).
impl<K: Basic> NewRows<K> for Tensor<3, K> {
    fn zeros(&self, kv_heads: usize, slots: usize) -> Tensor<3, K> {
        let width = self.dims()[2];
        Tensor::zeros([kv_heads, slots, width], (&self.device(), self.dtype()))
    }

    fn write(
        &self,
        plane: Tensor<3, K>,
        slot: usize,
        rows: std::ops::Range<usize>,
    ) -> Tensor<3, K> {
        let n = rows.len();
        plane.slice_assign(
            s![.., slot..slot + n, ..],
            self.clone().slice(s![.., rows, ..]),
        )
    }

    fn all(&self) -> Tensor<3, K> {
        self.clone()
    }
}

/// f32 rows for a GPU plane of encoded rows: encoded as they are written
/// (`kernels::gpu::kv::encode_into`), one kernel where encoding and copying took two.
#[cfg(feature = "gpu")]
struct Unencoded<'a> {
    codec: &'a crate::kernels::kv::KvCodec,
    x: Tensor<3>,
    prep: gpu_kv::RowPrep,
}

#[cfg(feature = "gpu")]
impl NewRows<Int> for Unencoded<'_> {
    fn zeros(&self, kv_heads: usize, slots: usize) -> Tensor<3, Int> {
        let d = self.x.dims()[2];
        let words = gpu_kv::KvLayout::of(self.codec.ty).words_per_row(d);
        Tensor::zeros([kv_heads, slots, words], &self.x.device())
    }

    fn write(
        &self,
        plane: Tensor<3, Int>,
        slot: usize,
        rows: std::ops::Range<usize>,
    ) -> Tensor<3, Int> {
        if rows == (0..self.x.dims()[1]) {
            return gpu_kv::encode_into(self.codec, plane, self.x.clone(), &self.prep, slot);
        }
        let x = self.x.clone().slice(s![.., rows.clone(), ..]);
        gpu_kv::encode_into(self.codec, plane, x, &self.prep.tokens(rows), slot)
    }

    fn all(&self) -> Tensor<3, Int> {
        gpu_kv::encode(self.codec, self.x.clone(), &self.prep)
    }
}

/// A full layer's append: the buffer doubles (never beyond `max_len`) and the step sees every
/// slot so far.
fn append_growing<K: Basic>(
    planes: &mut Planes<K>,
    slot_pos: &mut Vec<Option<usize>>,
    kv_heads: usize,
    k: &impl NewRows<K>,
    v: &impl NewRows<K>,
    positions: &[usize],
    max_len: usize,
) -> (Tensor<3, K>, Tensor<3, K>, Vec<Option<usize>>) {
    let t = positions.len();
    let len = slot_pos.len();
    let needed = len + t;
    let capacity = planes.k.as_ref().map_or(0, |c| c.dims()[1]);
    if capacity < needed {
        let new_capacity = (capacity * 2).max(64).min(max_len).max(needed);
        let mut grown_k = k.zeros(kv_heads, new_capacity);
        let mut grown_v = v.zeros(kv_heads, new_capacity);
        if let (Some(old_k), Some(old_v)) = (planes.k.take(), planes.v.take()) {
            grown_k = grown_k.slice_assign(s![.., 0..len, ..], old_k.slice(s![.., 0..len, ..]));
            grown_v = grown_v.slice_assign(s![.., 0..len, ..], old_v.slice(s![.., 0..len, ..]));
        }
        planes.k = Some(grown_k);
        planes.v = Some(grown_v);
    }
    let cache_k = k.write(planes.k.take().expect("allocated above"), len, 0..t);
    let cache_v = v.write(planes.v.take().expect("allocated above"), len, 0..t);
    slot_pos.extend(positions.iter().map(|&p| Some(p)));
    let step = (
        cache_k.clone().slice(s![.., 0..needed, ..]),
        cache_v.clone().slice(s![.., 0..needed, ..]),
        slot_pos.clone(),
    );
    planes.k = Some(cache_k);
    planes.v = Some(cache_v);
    step
}

/// A sliding layer's append; `window` here is the ring's capacity (window + slack); the
/// attention mask enforces the real window.
fn append_ring<K: Basic>(
    planes: &mut Planes<K>,
    slot_pos: &mut Vec<Option<usize>>,
    kv_heads: usize,
    window: usize,
    k: &impl NewRows<K>,
    v: &impl NewRows<K>,
    positions: &[usize],
) -> (Tensor<3, K>, Tensor<3, K>, Vec<Option<usize>>) {
    if planes.k.is_none() {
        planes.k = Some(k.zeros(kv_heads, window));
        planes.v = Some(v.zeros(kv_heads, window));
        *slot_pos = vec![None; window];
    }
    let t = positions.len();
    // A single new token can overwrite its slot first: the slot held position p - window,
    // which the window already excludes. A longer step's early queries may still need the
    // entries its later tokens overwrite, so they attend over ring + new keys.
    let step = if t == 1 {
        None
    } else {
        let mut key_pos = slot_pos.clone();
        key_pos.extend(positions.iter().map(|&p| Some(p)));
        Some((
            Tensor::cat(vec![planes.k.clone().expect("ring"), k.all()], 1),
            Tensor::cat(vec![planes.v.clone().expect("ring"), v.all()], 1),
            key_pos,
        ))
    };
    let keep = t.min(window);
    let mut ring_k = planes.k.take().expect("ring");
    let mut ring_v = planes.v.take().expect("ring");
    let mut i = t - keep;
    while i < t {
        // Consecutive positions map to consecutive slots until the ring wraps.
        let slot = positions[i] % window;
        let run = (window - slot).min(t - i);
        ring_k = k.write(ring_k, slot, i..i + run);
        ring_v = v.write(ring_v, slot, i..i + run);
        for j in 0..run {
            slot_pos[slot + j] = Some(positions[i + j]);
        }
        i += run;
    }
    planes.k = Some(ring_k);
    planes.v = Some(ring_v);
    step.unwrap_or_else(|| {
        (
            planes.k.clone().expect("ring"),
            planes.v.clone().expect("ring"),
            slot_pos.clone(),
        )
    })
}

/// The cache of one sequence: one entry per layer (`None` for KV-shared layers).
#[derive(Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<LayerCache>>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub(crate) fn new(layers: Vec<Option<LayerCache>>, max_len: usize) -> Self {
        KvCache {
            layers,
            len: 0,
            max_len,
        }
    }

    /// Number of positions processed so far (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rolls the sequence back to its first `len` positions, if every layer still holds what
    /// that needs (a sliding ring that has wrapped past `len` cannot). Returns whether it did.
    pub fn truncate(&mut self, len: usize) -> bool {
        if len >= self.len {
            return len == self.len;
        }
        let current = self.len;
        if !self
            .layers
            .iter()
            .flatten()
            .all(|l| l.can_truncate(current, len))
        {
            return false;
        }
        self.layers
            .iter_mut()
            .flatten()
            .for_each(|l| l.truncate(len));
        self.len = len;
        true
    }

    /// Layer `layer`'s keys and values as they stand, read-only: what Gemma 4's MTP assistant
    /// attends over (its layers read the target's cache and write nothing).
    pub fn view(&self, layer: usize) -> Result<StepKv> {
        self.layers
            .get(layer)
            .and_then(Option::as_ref)
            .and_then(LayerCache::view)
            .ok_or_else(|| {
                crate::error::GemmaError::InvalidArgument(format!(
                    "layer {layer} holds no keys and values to read"
                ))
            })
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
