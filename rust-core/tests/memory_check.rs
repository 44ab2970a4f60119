//! The memory check in `Engine::load`: a budget below the estimate refuses before loading,
//! naming both numbers; the estimate itself is what a loaded engine reports; the override
//! loads anyway. (How close the estimate is to measured peak RSS: BENCHMARKS.md.)

mod common;

use gemmakit::GemmaError;
use gemmakit::engine::{BackendChoice, Engine, EngineOptions};

fn options(budget: Option<u64>, ignore: bool) -> EngineOptions {
    EngineOptions {
        backend: BackendChoice::Cpu,
        context_len: 256,
        memory_budget: budget,
        ignore_memory_check: ignore,
        ..EngineOptions::default()
    }
}

#[test]
fn a_budget_below_the_estimate_refuses_and_the_override_loads() {
    let path = common::tiny_gguf();
    let fits = Engine::load(&path, options(None, false)).expect("the tiny model fits");
    let estimate = fits.info().estimated_memory_bytes;
    assert!(estimate > fits.info().kv_cache_bytes);
    drop(fits);

    match Engine::load(&path, options(Some(estimate - 1), false)) {
        Err(GemmaError::MemoryBudgetExceeded { needed, budget }) => {
            assert_eq!((needed, budget), (estimate, estimate - 1));
        }
        Err(other) => panic!("expected MemoryBudgetExceeded, got {other}"),
        Ok(_) => panic!("loaded over budget"),
    }
    assert!(Engine::load(&path, options(Some(estimate), false)).is_ok());
    assert!(
        Engine::load(&path, options(Some(1), true)).is_ok(),
        "the override"
    );
}
