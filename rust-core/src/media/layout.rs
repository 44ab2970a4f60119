//! Where media go in a prompt (spec §3): a chat template writes one marker per media item
//! (`<|image|>`, `<|audio|>`, `<|video|>`); each marker is expanded to begin/end tokens around
//! one placeholder per soft token, and the soft tokens are later scattered into those
//! placeholder positions in order.

use super::input::{Media, MediaKind};
use crate::error::{GemmaError, Result};
use crate::tokenizer::Tokenizer;

const BOI: &str = "<|image>";
const EOI: &str = "<image|>";
const BOA: &str = "<|audio>";
const EOA: &str = "<audio|>";

/// The vocabulary ids of the placeholder tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderIds {
    pub image: u32,
    pub audio: u32,
    pub video: u32,
}

impl PlaceholderIds {
    /// `None` when the vocabulary has no multimodal tokens (Gemma 3 text models).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        Some(PlaceholderIds {
            image: tokenizer.token_id(MediaKind::Image.marker())?,
            audio: tokenizer.token_id(MediaKind::Audio.marker())?,
            video: tokenizer.token_id(MediaKind::Video.marker())?,
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

/// The prompt text one media item's marker expands to.
pub fn expansion(media: &Media, counts: &[usize]) -> String {
    let run = |marker: &str, n: usize| marker.repeat(n);
    match media {
        Media::Image(_) => counts
            .iter()
            .map(|&n| format!("{BOI}{}{EOI}", run(MediaKind::Image.marker(), n)))
            .collect(),
        Media::Audio(_) => counts
            .iter()
            .map(|&n| format!("{BOA}{}{EOA}", run(MediaKind::Audio.marker(), n)))
            .collect(),
        Media::Video(v) => v
            .frames()
            .iter()
            .zip(counts)
            .map(|(frame, &n)| {
                format!(
                    "{} {BOI}{}{EOI}",
                    timestamp(frame.timestamp_secs),
                    run(MediaKind::Video.marker(), n)
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Replaces the markers of `rendered`, in order, by the expansions of `media`. The markers
/// must match the media one for one and kind for kind.
pub fn expand_markers(rendered: &str, media: &[Media], counts: &[SegmentCounts]) -> Result<String> {
    let markers = [MediaKind::Image, MediaKind::Audio, MediaKind::Video];
    let mut out = String::with_capacity(rendered.len());
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
        out.push_str(&rest[..at]);
        out.push_str(&expansion(item, item_counts));
        rest = &rest[at + kind.marker().len()..];
        placed += 1;
    }
    if placed != media.len() {
        return Err(GemmaError::MediaMismatch(format!(
            "{} media given but the prompt places {placed} (does the chat template support media?)",
            media.len()
        )));
    }
    out.push_str(rest);
    Ok(out)
}

/// Offsets of the placeholder ids in `ids`, with the kind of each.
pub fn placeholder_positions(ids: &[u32], placeholders: &PlaceholderIds) -> Vec<(usize, MediaKind)> {
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

    #[test]
    fn timestamps_are_minutes_and_seconds() {
        // transformers: f"{int(s // 60):02d}:{int(s % 60):02d}"
        assert_eq!(timestamp(0.0), "00:00");
        assert_eq!(timestamp(59.99), "00:59");
        assert_eq!(timestamp(61.5), "01:01");
        assert_eq!(timestamp(3600.0), "60:00");
    }
}
