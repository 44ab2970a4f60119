//! Where media go in a prompt: a chat template writes one marker per media item
//! (`<|image|>`, `<|audio|>`, `<|video|>`); each marker becomes begin/end ids around one
//! placeholder id per soft token, and the soft tokens are later scattered into those
//! placeholder positions in order. The ids are inserted directly rather than spelled out as
//! text, so the layout does not depend on the vocabulary marking them as special tokens.

use super::input::{Media, MediaKind};
use crate::error::{GemmaError, Result};
use crate::tokenizer::Tokenizer;

const BOI: &str = "<|image>";
const EOI: &str = "<image|>";
const BOA: &str = "<|audio>";
const EOA: &str = "<audio|>";

/// The vocabulary ids of the placeholders and of the begin/end tokens around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderIds {
    pub image: u32,
    pub audio: u32,
    pub video: u32,
    /// `<|image>` / `<image|>` (also around video frames).
    pub boi: u32,
    pub eoi: u32,
    /// `<|audio>` / `<audio|>`.
    pub boa: u32,
    pub eoa: u32,
}

impl PlaceholderIds {
    /// `None` when the vocabulary has no multimodal tokens (Gemma 3 text models).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        Some(PlaceholderIds {
            image: tokenizer.token_id(MediaKind::Image.marker())?,
            audio: tokenizer.token_id(MediaKind::Audio.marker())?,
            video: tokenizer.token_id(MediaKind::Video.marker())?,
            boi: tokenizer.token_id(BOI)?,
            eoi: tokenizer.token_id(EOI)?,
            boa: tokenizer.token_id(BOA)?,
            eoa: tokenizer.token_id(EOA)?,
        })
    }

    pub fn kind_of(&self, id: u32) -> Option<MediaKind> {
        if id == self.image {
            Some(MediaKind::Image)
        } else if id == self.audio {
            Some(MediaKind::Audio)
        } else if id == self.video {
            Some(MediaKind::Video)
        } else {
            None
        }
    }
}

/// How many soft tokens each piece of one media item has: one entry for an image, one per
/// 30-second clip for audio, one per frame for video.
pub type SegmentCounts = Vec<usize>;

/// `MM:SS`, as transformers' Gemma 4 processor writes frame timestamps.
pub fn timestamp(seconds: f64) -> String {
    let s = seconds.max(0.0);
    format!("{:02}:{:02}", (s / 60.0) as u64, (s % 60.0) as u64)
}

/// Tokenizes `rendered`, replacing its markers, in order, by the ids of `media`: begin id,
/// one placeholder per soft token, end id (per image; per 30-second audio clip; per video
/// frame, each preceded by its `MM:SS ` stamp and frames joined by a space, as transformers'
/// processor writes them). The markers must match the media one for one and kind for kind.
/// `encode` tokenizes a run of text (the text between markers is tokenized whole, so the
/// result equals tokenizing transformers' expanded string wherever the vocabulary treats the
/// begin/end tokens as special, as Gemma 4's does).
pub fn tokenize_with_media(
    rendered: &str,
    media: &[Media],
    counts: &[SegmentCounts],
    ids: &PlaceholderIds,
    mut encode: impl FnMut(&str) -> Result<Vec<u32>>,
) -> Result<Vec<u32>> {
    let markers = [MediaKind::Image, MediaKind::Audio, MediaKind::Video];
    let mut out = Vec::new();
    let mut text = String::new();
    let mut flush = |text: &mut String, out: &mut Vec<u32>| -> Result<()> {
        if !text.is_empty() {
            out.extend(encode(text)?);
            text.clear();
        }
        Ok(())
    };
    let run = |out: &mut Vec<u32>, begin: u32, placeholder: u32, n: usize, end: u32| {
        out.push(begin);
        out.extend(std::iter::repeat_n(placeholder, n));
        out.push(end);
    };
    let mut rest = rendered;
    let mut items = media.iter().zip(counts);
    let mut placed = 0;
    loop {
        let next = markers
            .iter()
            .filter_map(|k| rest.find(k.marker()).map(|at| (at, *k)))
            .min_by_key(|(at, _)| *at);
        let Some((at, kind)) = next else { break };
        let Some((item, item_counts)) = items.next() else {
            return Err(GemmaError::MediaMismatch(format!(
                "the prompt has more media markers than the {} media given (a literal `{}` in \
                 the text counts as one)",
                media.len(),
                kind.marker()
            )));
        };
        if item.kind() != kind {
            return Err(GemmaError::MediaMismatch(format!(
                "media item {placed} is {:?} but the prompt's marker there is `{}`",
                item.kind(),
                kind.marker()
            )));
        }
        text.push_str(&rest[..at]);
        match item {
            Media::Image(_) => {
                flush(&mut text, &mut out)?;
                for &n in item_counts {
                    run(&mut out, ids.boi, ids.image, n, ids.eoi);
                }
            }
            Media::Audio(_) => {
                flush(&mut text, &mut out)?;
                for &n in item_counts {
                    run(&mut out, ids.boa, ids.audio, n, ids.eoa);
                }
            }
            Media::Video(v) => {
                for (i, (frame, &n)) in v.frames().iter().zip(item_counts).enumerate() {
                    if i > 0 {
                        text.push(' ');
                    }
                    text.push_str(&timestamp(frame.timestamp_secs));
                    text.push(' ');
                    flush(&mut text, &mut out)?;
                    run(&mut out, ids.boi, ids.video, n, ids.eoi);
                }
            }
        }
        rest = &rest[at + kind.marker().len()..];
        placed += 1;
    }
    if placed != media.len() {
        return Err(GemmaError::MediaMismatch(format!(
            "{} media given but the prompt places {placed} (does the chat template support media?)",
            media.len()
        )));
    }
    text.push_str(rest);
    flush(&mut text, &mut out)?;
    Ok(out)
}

/// How many media markers `text` holds.
pub fn count_markers(text: &str) -> usize {
    [MediaKind::Image, MediaKind::Audio, MediaKind::Video]
        .iter()
        .map(|k| text.matches(k.marker()).count())
        .sum()
}

/// Offsets of the placeholder ids in `ids`, with the kind of each.
pub fn placeholder_positions(
    ids: &[u32],
    placeholders: &PlaceholderIds,
) -> Vec<(usize, MediaKind)> {
    ids.iter()
        .enumerate()
        .filter_map(|(p, &id)| placeholders.kind_of(id).map(|k| (p, k)))
        .collect()
}

/// Checks that the placeholder runs of `ids` hold exactly the soft tokens of `media`, kind by
/// kind and in order (images and videos are separate streams, as in transformers).
pub fn check_placeholders(
    ids: &[u32],
    placeholders: &PlaceholderIds,
    media: &[Media],
    counts: &[SegmentCounts],
) -> Result<()> {
    for kind in [MediaKind::Image, MediaKind::Audio, MediaKind::Video] {
        let slots = ids
            .iter()
            .filter(|&&id| placeholders.kind_of(id) == Some(kind))
            .count();
        let tokens: usize = media
            .iter()
            .zip(counts)
            .filter(|(m, _)| m.kind() == kind)
            .map(|(_, c)| c.iter().sum::<usize>())
            .sum();
        if slots != tokens {
            return Err(GemmaError::MediaMismatch(format!(
                "the prompt has {slots} `{}` placeholders but the {kind:?} media give {tokens} soft tokens",
                kind.marker()
            )));
        }
    }
    Ok(())
}

/// For each placeholder of `ids` (after [`check_placeholders`] passed): its position, the
/// index of the media item it belongs to and the row of that item's soft tokens.
pub fn assign_slots(
    ids: &[u32],
    placeholders: &PlaceholderIds,
    media: &[Media],
    counts: &[SegmentCounts],
) -> Vec<(usize, usize, usize)> {
    // One queue per kind: the media of that kind in order, each with its token count.
    let queue = |kind: MediaKind| -> Vec<(usize, usize)> {
        media
            .iter()
            .zip(counts)
            .enumerate()
            .filter(|(_, (m, _))| m.kind() == kind)
            .map(|(i, (_, c))| (i, c.iter().sum()))
            .collect()
    };
    let mut queues = [
        (MediaKind::Image, queue(MediaKind::Image), 0usize, 0usize),
        (MediaKind::Audio, queue(MediaKind::Audio), 0, 0),
        (MediaKind::Video, queue(MediaKind::Video), 0, 0),
    ];
    let mut slots = Vec::new();
    for (pos, kind) in placeholder_positions(ids, placeholders) {
        let Some((_, items, item, row)) = queues.iter_mut().find(|(k, ..)| *k == kind) else {
            continue;
        };
        while *item < items.len() && *row >= items[*item].1 {
            *item += 1;
            *row = 0;
        }
        if let Some(&(media_index, _)) = items.get(*item) {
            slots.push((pos, media_index, *row));
            *row += 1;
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' processor: `a` + `<|image>` + 2 × `<|image|>` + `<image|>` + `b`, then the
    /// video as "00:00 <|image><|video|><image|> 01:01 <|image><|video|><image|>", then `c`.
    #[test]
    fn markers_become_the_processors_layout() {
        let ids = PlaceholderIds {
            image: 90,
            audio: 91,
            video: 92,
            boi: 80,
            eoi: 81,
            boa: 82,
            eoa: 83,
        };
        let frame = || crate::media::ImageInput::from_rgb8(2, 2, vec![0; 12]).unwrap();
        let video = crate::media::VideoInput::from_frames(vec![
            crate::media::VideoFrame {
                image: frame(),
                timestamp_secs: 0.0,
            },
            crate::media::VideoFrame {
                image: frame(),
                timestamp_secs: 61.5,
            },
        ])
        .unwrap();
        let media = [Media::Image(frame()), Media::Video(video)];
        let counts = [vec![2], vec![1, 1]];
        let mut runs = Vec::new();
        let out = tokenize_with_media("a<|image|>b<|video|>c", &media, &counts, &ids, |t| {
            runs.push(t.to_string());
            Ok(vec![1000 + runs.len() as u32])
        })
        .unwrap();
        assert_eq!(runs, ["a", "b00:00 ", " 01:01 ", "c"]);
        assert_eq!(
            out,
            [
                1001, 80, 90, 90, 81, 1002, 80, 92, 81, 1003, 80, 92, 81, 1004
            ]
        );
        // Markers and media must pair up.
        let err = tokenize_with_media("<|audio|>", &media[..1], &counts[..1], &ids, |_| Ok(vec![]));
        assert!(matches!(err, Err(GemmaError::MediaMismatch(_))));
        let err = tokenize_with_media("none", &media[..1], &counts[..1], &ids, |_| Ok(vec![]));
        assert!(matches!(err, Err(GemmaError::MediaMismatch(_))));
    }

    #[test]
    fn timestamps_are_minutes_and_seconds() {
        // transformers: f"{int(s // 60):02d}:{int(s % 60):02d}"
        assert_eq!(timestamp(0.0), "00:00");
        assert_eq!(timestamp(59.99), "00:59");
        assert_eq!(timestamp(61.5), "01:01");
        assert_eq!(timestamp(3600.0), "60:00");
    }
}
