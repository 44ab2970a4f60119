//! The Gemma 4 audio tower (conformer) and its projector (filled in by the audio work).
