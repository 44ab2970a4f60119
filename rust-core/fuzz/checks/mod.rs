//! What each fuzz target feeds and checks, shared by the fuzz targets (`fuzz_targets/*.rs`, one
//! line each) and the stable regression test (`rust-core/tests/fuzz_regressions.rs`), which
//! replays the seed corpora and every input the fuzzer found through the same code.
//!
//! A check panics when the library breaks a promise (a panic inside it, an untyped error, an
//! inconsistent result); otherwise it says whether the input was accepted or rejected.

pub mod audio_input;
pub mod chat_messages;
pub mod chat_template_text;
pub mod constraint;
pub mod gguf_parse;
pub mod image_input;
pub mod model_checkpoint;
pub mod tokenizer_gguf;
pub mod tokenizer_json;
pub mod tool_call;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The library took the input (and every check on its result passed).
    Accepted,
    /// The library refused the input with the typed error it documents.
    Rejected(String),
    /// The input does not have the shape this target feeds (e.g. text that is not UTF-8).
    NotApplicable,
}

/// Every check, by target name.
pub const CHECKS: &[(&str, fn(&[u8]) -> Outcome)] = &[
    ("audio_input", audio_input::run),
    ("chat_messages", chat_messages::run),
    ("chat_template_text", chat_template_text::run),
    ("constraint", constraint::run),
    ("gguf_parse", gguf_parse::run),
    ("image_input", image_input::run),
    ("model_checkpoint", model_checkpoint::run),
    ("tokenizer_gguf", tokenizer_gguf::run),
    ("tokenizer_json", tokenizer_json::run),
    ("tool_call", tool_call::run),
];

/// Structured inputs drawn from the fuzzer's bytes; an exhausted input reads as zeros, so every
/// draw succeeds and loops driven by it end.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }

    pub fn flag(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number in `0..=max` (max < 256).
    pub fn up_to(&mut self, max: u8) -> usize {
        (self.u8() % (max + 1)) as usize
    }

    pub fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.u8() as usize % items.len()]
    }

    /// A string: a length byte, then that many bytes (lossy UTF-8).
    pub fn text(&mut self) -> String {
        let n = (self.u8() as usize).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}
