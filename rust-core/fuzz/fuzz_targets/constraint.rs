#![no_main]
//! See checks/constraint.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::constraint::run(data);
});
