//! `gemmakit bench`: llama-bench-style measurements.
