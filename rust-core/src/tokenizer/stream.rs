//! Streaming detokenization that never emits broken UTF-8: the bytes of tokens are buffered
//! until they form whole characters (a byte-fallback token or a character split across tokens
//! is held back until complete).

use super::Tokenizer;

#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.push_bytes(tokenizer.token_bytes(id))
    }

    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut ready = 0;
        loop {
            match std::str::from_utf8(&self.pending[ready..]) {
                Ok(_) => {
                    ready = self.pending.len();
                    break;
                }
                Err(e) => match e.error_len() {
                    // An incomplete sequence at the end: wait for more bytes.
                    None => {
                        ready += e.valid_up_to();
                        break;
                    }
                    // A byte that can never start or continue a character: pass it on (as
                    // U+FFFD) and keep going, never stall on it.
                    Some(bad) => ready += e.valid_up_to() + bad,
                },
            }
        }
        let out: Vec<u8> = self.pending.drain(..ready).collect();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whatever is still buffered at the end of generation (an incomplete character becomes
    /// U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_split_across_pushes_are_held_back() {
        let text = "é漢🙂";
        let bytes = text.as_bytes();
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        for b in bytes {
            let chunk = d.push_bytes(&[*b]);
            assert!(!chunk.contains('\u{FFFD}'));
            out.push_str(&chunk);
        }
        out.push_str(&d.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_do_not_stall_the_stream() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push_bytes(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(d.push_bytes(&[0xE6, 0xBC]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
