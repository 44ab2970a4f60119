#![no_main]
//! See checks/image_input.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::image_input::run(data);
});
