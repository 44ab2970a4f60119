#![no_main]
//! See checks/model_checkpoint.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::model_checkpoint::run(data);
});
