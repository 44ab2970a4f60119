#![no_main]
//! See checks/chat_messages.rs.

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::chat_messages::run(data);
});
