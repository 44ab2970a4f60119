#![no_main]
//! See checks/tool_call.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::tool_call::run(data);
});
