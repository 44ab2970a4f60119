#![no_main]
//! See checks/tokenizer_json.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::tokenizer_json::run(data);
});
