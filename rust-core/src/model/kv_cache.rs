//! Key/value caches. Full-attention layers keep every position (the buffer grows by doubling);
//! sliding layers keep a ring of `window` slots; KV-shared layers own nothing and read their
//! producer's view of the current step.
//!
//! f32 caches are burn tensors (on either device); the other KV types
//! ([`crate::kernels::kv::KvType`]) are encoded rows on the host, encoded once on append and
//! read by attention without decoding the cache. Both are copy on write: tensors are immutable
//! values and encoded rows sit behind an `Arc`, so a forked cache shares them until it writes.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, s};

use crate::error::Result;
use crate::kernels::kv::{EncodedRows, KvCodec, KvType};

use super::ops::to_host;

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
}

impl StepKv {
    pub fn kv_heads(&self) -> usize {
        match &self.rows {
            KvRows::Dense { k, .. } => k.dims()[0],
            KvRows::Encoded { k, .. } => k.kv_heads,
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

/// Cloning is cheap and safe: burn tensors are immutable values, so a clone and its original
/// diverge on their next write (copy on write).
#[derive(Clone)]
pub struct LayerCache {
    storage: Storage,
    kv_heads: usize,
    head_dim: usize,
    k: Option<Tensor<3>>,
    v: Option<Tensor<3>>,
    /// Encoded keys and values instead of `k`/`v` (any type but f32 for both).
    encoded: Option<(Arc<EncodedRows>, Arc<EncodedRows>)>,
    slot_pos: Vec<Option<usize>>,
}

impl LayerCache {
    pub fn growing(kv_heads: usize, head_dim: usize, max_len: usize) -> Self {
        Self::with_storage(Storage::Growing { max_len }, kv_heads, head_dim)
    }

    pub fn ring(window: usize, slack: usize, kv_heads: usize, head_dim: usize) -> Self {
        let capacity = window + slack;
        Self::with_storage(Storage::Ring { window, capacity }, kv_heads, head_dim)
    }

    fn with_storage(storage: Storage, kv_heads: usize, head_dim: usize) -> Self {
        LayerCache {
            storage,
            kv_heads,
            head_dim,
            k: None,
            v: None,
            encoded: None,
            slot_pos: Vec::new(),
        }
    }

    /// This cache with keys and values encoded by `codecs` (`None`, or f32 for both: tensors).
    pub fn encoded_with(mut self, codecs: Option<&(Arc<KvCodec>, Arc<KvCodec>)>) -> Self {
        self.encoded = codecs
            .filter(|(k, v)| (k.ty, v.ty) != (KvType::F32, KvType::F32))
            .map(|(k, v)| {
                (
                    Arc::new(EncodedRows::new(k.clone(), self.kv_heads)),
                    Arc::new(EncodedRows::new(v.clone(), self.kv_heads)),
                )
            });
        self
    }

    /// Adds `k`, `v` (`[kv_heads, T, head_dim]`, already normed and roped) for the consecutive
    /// `positions`, and returns what this step's queries attend over.
    pub fn append(&mut self, k: Tensor<3>, v: Tensor<3>, positions: &[usize]) -> Result<StepKv> {
        if self.encoded.is_some() {
            return self.append_encoded(k, v, positions);
        }
        Ok(match self.storage {
            Storage::Growing { max_len } => self.append_growing(k, v, positions, max_len),
            Storage::Ring { capacity, .. } => self.append_ring(capacity, k, v, positions),
        })
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

    fn zeros(&self, slots: usize, device: &Device) -> Tensor<3> {
        Tensor::zeros([self.kv_heads, slots, self.head_dim], device)
    }

    fn append_growing(
        &mut self,
        k: Tensor<3>,
        v: Tensor<3>,
        positions: &[usize],
        max_len: usize,
    ) -> StepKv {
        let t = positions.len();
        let len = self.slot_pos.len();
        let needed = len + t;
        let device = k.device();
        let capacity = self.k.as_ref().map_or(0, |c| c.dims()[1]);
        if capacity < needed {
            let new_capacity = (capacity * 2).max(64).min(max_len).max(needed);
            let mut grown_k = self.zeros(new_capacity, &device);
            let mut grown_v = self.zeros(new_capacity, &device);
            if let (Some(old_k), Some(old_v)) = (self.k.take(), self.v.take()) {
                grown_k = grown_k.slice_assign(s![.., 0..len, ..], old_k.slice(s![.., 0..len, ..]));
                grown_v = grown_v.slice_assign(s![.., 0..len, ..], old_v.slice(s![.., 0..len, ..]));
            }
            self.k = Some(grown_k);
            self.v = Some(grown_v);
        }
        let cache_k = self
            .k
            .take()
            .expect("allocated above")
            .slice_assign(s![.., len..needed, ..], k);
        let cache_v = self
            .v
            .take()
            .expect("allocated above")
            .slice_assign(s![.., len..needed, ..], v);
        self.slot_pos.extend(positions.iter().map(|&p| Some(p)));
        let step = StepKv {
            rows: KvRows::Dense {
                k: cache_k.clone().slice(s![.., 0..needed, ..]),
                v: cache_v.clone().slice(s![.., 0..needed, ..]),
            },
            key_pos: self.slot_pos.clone(),
        };
        self.k = Some(cache_k);
        self.v = Some(cache_v);
        step
    }

    /// `window` here is the ring's capacity (window + slack); the attention mask enforces the
    /// real window.
    fn append_ring(
        &mut self,
        window: usize,
        k: Tensor<3>,
        v: Tensor<3>,
        positions: &[usize],
    ) -> StepKv {
        let device = k.device();
        if self.k.is_none() {
            self.k = Some(self.zeros(window, &device));
            self.v = Some(self.zeros(window, &device));
            self.slot_pos = vec![None; window];
        }
        let t = positions.len();
        // A single new token can overwrite its slot first: the slot held position p - window,
        // which the window already excludes. A longer step's early queries may still need the
        // entries its later tokens overwrite, so they attend over ring + new keys.
        let step = if t == 1 {
            None
        } else {
            let mut key_pos = self.slot_pos.clone();
            key_pos.extend(positions.iter().map(|&p| Some(p)));
            Some(StepKv {
                rows: KvRows::Dense {
                    k: Tensor::cat(vec![self.k.clone().expect("ring"), k.clone()], 1),
                    v: Tensor::cat(vec![self.v.clone().expect("ring"), v.clone()], 1),
                },
                key_pos,
            })
        };
        let keep = t.min(window);
        let mut ring_k = self.k.take().expect("ring");
        let mut ring_v = self.v.take().expect("ring");
        let mut i = t - keep;
        while i < t {
            // Consecutive positions map to consecutive slots until the ring wraps.
            let slot = positions[i] % window;
            let run = (window - slot).min(t - i);
            ring_k = ring_k.slice_assign(
                s![.., slot..slot + run, ..],
                k.clone().slice(s![.., i..i + run, ..]),
            );
            ring_v = ring_v.slice_assign(
                s![.., slot..slot + run, ..],
                v.clone().slice(s![.., i..i + run, ..]),
            );
            for j in 0..run {
                self.slot_pos[slot + j] = Some(positions[i + j]);
            }
            i += run;
        }
        self.k = Some(ring_k);
        self.v = Some(ring_v);
        step.unwrap_or_else(|| StepKv {
            rows: KvRows::Dense {
                k: self.k.clone().expect("ring"),
                v: self.v.clone().expect("ring"),
            },
            key_pos: self.slot_pos.clone(),
        })
    }
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

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
