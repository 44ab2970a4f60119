//! Audio decoding, resampling and the log-mel front end (filled in by the audio work).
