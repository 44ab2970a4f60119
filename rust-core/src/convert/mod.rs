//! `gemmakit convert`: checkpoints → GGUF in llama.cpp's layout, and full-size random-weight
//! GGUFs for benchmarking.
