//! Image decoding and preprocessing (filled in by the vision work).
