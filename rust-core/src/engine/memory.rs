//! The memory check: before a model is loaded, what it will take is compared with what the
//! device has, and the load is refused (a typed error naming both numbers) rather than letting
//! Android's low-memory killer or iOS's jetsam end the app without one.
//!
//! The estimate is the peak resident set of a conversation at the full context: the weights
//! this backend keeps resident, the KV cache at the context length, the towers when media
//! are used, and the runtime's own memory (a table calibrated against measured peak RSS, see
//! BENCHMARKS.md "Memory check").

use crate::device::BackendKind;
use crate::engine::generate::PREFILL_CHUNK;
use crate::error::{GemmaError, Result};
use crate::kernels::kv::KvTypes;
use crate::model::config::{Architecture, AttentionKind, GemmaConfig};
use crate::model::kv_cache::ROLLBACK_SLACK;
use crate::model::towers::TowerFiles;
use crate::source::ModelSource;

/// The runtime's memory beyond weights and KV cache, fitted to measured peak RSS minus weights
/// minus KV (BENCHMARKS.md "Memory check"): a fixed part (code, thread pools and stacks, the
/// tokenizer, allocator slack) and the activations of one prefill chunk, which grow with the
/// chunk's positions and the hidden size (Gemma 4's per-layer inputs and wider MLPs make its
/// factor the larger).
struct RuntimeOverhead {
    fixed: u64,
    /// f32 activations held per prefill position, per unit of hidden size.
    activation_floats_per_hidden: u64,
}

fn runtime_overhead(backend: BackendKind, architecture: Architecture) -> RuntimeOverhead {
    let activation_floats_per_hidden = match architecture {
        Architecture::Gemma3 => 30,
        Architecture::Gemma4 => 150,
    };
    match backend {
        BackendKind::Cpu => RuntimeOverhead {
            fixed: 128 << 20,
            activation_floats_per_hidden,
        },
        // Not calibrated on a GPU (none on the measuring machine): the CPU's figures plus the
        // graphics driver's own allocation.
        BackendKind::Gpu => RuntimeOverhead {
            fixed: 384 << 20,
            activation_floats_per_hidden,
        },
    }
}

/// What loading a model will take, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Weights read on every token (the per-layer-embedding table is only gathered a few rows
    /// at a time, so it is not counted).
    pub weights: u64,
    pub kv_cache: u64,
    /// The vision/audio towers, when media are used (0 otherwise).
    pub towers: u64,
    pub runtime: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.towers + self.runtime
    }

    /// The estimate for `source` at `context_len` positions on `backend`; `towers`: the tower
    /// files when media will be used.
    pub fn for_source(
        source: &ModelSource,
        context_len: usize,
        backend: BackendKind,
        kv_types: KvTypes,
        towers: Option<&TowerFiles>,
    ) -> Result<Self> {
        let weights = source
            .weights()?
            .tensors()
            .filter(|t| !t.name().ends_with("embed_tokens_per_layer.weight"))
            .map(|t| t.byte_len() as u64)
            .sum();
        let towers = match towers {
            Some(files) => tower_bytes(source, files),
            None => 0,
        };
        let config = source.config();
        let overhead = runtime_overhead(backend, config.architecture);
        let chunk = PREFILL_CHUNK.min(context_len) as u64;
        let activations =
            chunk * overhead.activation_floats_per_hidden * config.hidden_size as u64 * 4;
        Ok(MemoryEstimate {
            weights,
            kv_cache: kv_cache_bytes(config, context_len, kv_types),
            towers,
            runtime: overhead.fixed + activations,
        })
    }
}

/// The KV cache of a conversation at `context_len` positions: full-attention layers hold every
/// position, sliding layers a ring of the window plus the rollback slack (allocated whole);
/// layers that share another's KV hold none.
pub fn kv_cache_bytes(config: &GemmaConfig, context_len: usize, kv_types: KvTypes) -> u64 {
    config
        .layers
        .iter()
        .filter(|l| l.kv_source.is_none())
        .map(|l| {
            let positions = match l.kind {
                AttentionKind::Full => context_len,
                AttentionKind::Sliding => config.sliding_window + ROLLBACK_SLACK,
            };
            (kv_types.token_bytes(l.num_kv_heads, l.head_dim) * positions) as u64
        })
        .sum()
}

fn tower_bytes(source: &ModelSource, files: &TowerFiles) -> u64 {
    let file_len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    match files {
        TowerFiles::Mmproj(path) => file_len(path),
        // A checkpoint's shards hold text and towers: the towers are the rest.
        TowerFiles::Checkpoint(_) => {
            let text: u64 = source
                .weights()
                .map(|w| w.tensors().map(|t| t.byte_len() as u64).sum())
                .unwrap_or(0);
            source.file_bytes().saturating_sub(text)
        }
        TowerFiles::Missing(_) => 0,
    }
}

/// Memory the device can give this process now: Linux's and Android's `MemAvailable`
/// (/proc/meminfo), `None` where the platform has no such file (iOS, macOS: the app passes
/// `os_proc_available_memory()` as the budget).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&meminfo)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Refuses `estimate` when it exceeds `budget` (the app's figure) or, without one, the
/// device's available memory. `ignore`: the caller's override (logged, not refused).
pub fn check(estimate: &MemoryEstimate, budget: Option<u64>, ignore: bool) -> Result<()> {
    let Some(budget) = budget.or_else(available_memory) else {
        log::info!("no memory figure on this platform: the memory check is skipped");
        return Ok(());
    };
    let needed = estimate.total();
    if needed <= budget {
        return Ok(());
    }
    if ignore {
        log::warn!("the model needs about {needed} bytes, {budget} available: loading anyway");
        return Ok(());
    }
    Err(GemmaError::MemoryBudgetExceeded { needed, budget })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let meminfo =
            "MemTotal:       16384000 kB\nMemFree:  1000 kB\nMemAvailable:    8192000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(8_192_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
        #[cfg(target_os = "linux")]
        assert!(available_memory().is_some_and(|b| b > 0));
    }

    #[test]
    fn a_budget_below_the_estimate_refuses_naming_both_numbers() {
        let estimate = MemoryEstimate {
            weights: 3 << 30,
            kv_cache: 1 << 28,
            towers: 0,
            runtime: 1 << 27,
        };
        let needed = estimate.total();
        let err = check(&estimate, Some(needed - 1), false).unwrap_err();
        assert!(
            matches!(err, GemmaError::MemoryBudgetExceeded { needed: n, budget: b } if n == needed && b == needed - 1)
        );
        let text = err.to_string();
        assert!(text.contains(&needed.to_string()) && text.contains(&(needed - 1).to_string()));
        assert!(check(&estimate, Some(needed), false).is_ok());
        assert!(
            check(&estimate, Some(1), true).is_ok(),
            "the override loads anyway"
        );
    }
}
