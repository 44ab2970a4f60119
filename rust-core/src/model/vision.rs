//! The Gemma 4 vision tower and its projector (filled in by the vision work).
