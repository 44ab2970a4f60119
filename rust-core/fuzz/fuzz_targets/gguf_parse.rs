#![no_main]
//! See checks/gguf_parse.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::gguf_parse::run(data);
});
