//! Image input for the Gemma 4 vision tower (as transformers' `Gemma4ImageProcessor`): decoding (JPEG, PNG, WebP, EXIF
//! orientation applied) and the exact preprocessing of transformers' `Gemma4ImageProcessorPil`:
//! aspect-preserving resize under a soft-token budget with Pillow's antialiased bicubic
//! resampler (replicated bit for bit, including its 8-bit fixed-point passes), rescale to
//! [0, 1], 16×16 patches, (x, y) patch positions, padding to the budget's patch count.
//!
//! A video frame is an image at budget 70 ([`ImageParams::video_frame`]).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{GemmaError, Result};
use crate::model::vision::ImagePatches;

/// Soft-token budgets the model was trained with (transformers rejects any other).
pub const SUPPORTED_SOFT_TOKEN_BUDGETS: [usize; 5] = [70, 140, 280, 560, 1120];

/// Longest side the decoder accepts; larger images are refused before any pixel is decoded.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Upper bound on what the decoder may allocate (a 16384 × 10000 RGBA image fits).
pub const MAX_DECODE_BYTES: u64 = 640 << 20;

/// Patch geometry and token budget of the image processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageParams {
    /// Side of a square patch in pixels (16 for the released models).
    pub patch_size: usize,
    /// Side of the pooling window in patches (3): one soft token per `pooling_kernel²` patches.
    pub pooling_kernel: usize,
    /// At most this many soft tokens per image.
    pub max_soft_tokens: usize,
}

impl Default for ImageParams {
    fn default() -> Self {
        ImageParams {
            patch_size: 16,
            pooling_kernel: 3,
            max_soft_tokens: 280,
        }
    }
}

impl ImageParams {
    /// The released models' geometry (patch 16, pooling 3) with budget `max_soft_tokens`,
    /// which must be one of [`SUPPORTED_SOFT_TOKEN_BUDGETS`].
    pub fn for_budget(max_soft_tokens: usize) -> Result<Self> {
        let p = ImageParams {
            max_soft_tokens,
            ..Self::default()
        };
        p.validate()?;
        Ok(p)
    }

    /// A video frame: budget 70 (Google's video recipe: 70 soft tokens per frame).
    pub fn video_frame() -> Self {
        ImageParams {
            max_soft_tokens: 70,
            ..Self::default()
        }
    }

    /// Patches the processor pads to: `max_soft_tokens · pooling_kernel²`.
    pub fn max_patches(&self) -> usize {
        self.max_soft_tokens * self.pooling_kernel * self.pooling_kernel
    }

    /// Values per patch: `3 · patch_size²`.
    pub fn patch_len(&self) -> usize {
        3 * self.patch_size * self.patch_size
    }

    pub fn validate(&self) -> Result<()> {
        if !SUPPORTED_SOFT_TOKEN_BUDGETS.contains(&self.max_soft_tokens) {
            return Err(GemmaError::InvalidArgument(format!(
                "max_soft_tokens must be one of {SUPPORTED_SOFT_TOKEN_BUDGETS:?}, got {}",
                self.max_soft_tokens
            )));
        }
        if self.patch_size == 0 || self.pooling_kernel == 0 || self.patch_size > 64 {
            return Err(GemmaError::InvalidArgument(format!(
                "invalid patch geometry: patch {} pooling {}",
                self.patch_size, self.pooling_kernel
            )));
        }
        Ok(())
    }
}

/// The processor's output for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedImage {
    /// `[max_patches, 3·p²]` row-major: real patches in raster order (x fastest), each
    /// `(row, col, channel)` with channel fastest, values in [0, 1]; then zero padding.
    pub pixel_values: Vec<f32>,
    /// `[max_patches]` patch positions `(x, y)` = (column, row); padding is `(-1, -1)`.
    pub position_ids: Vec<[i64; 2]>,
    /// Real (unpadded) patches: `(h/p)·(w/p)`.
    pub num_patches: usize,
    /// Soft tokens the tower produces: `num_patches / pooling_kernel²`.
    pub num_soft_tokens: usize,
    /// Size after the resize, `(height, width)` in pixels.
    pub resized: (usize, usize),
    /// Patch grid `(rows, columns)`.
    pub patch_grid: (usize, usize),
    pub params: ImageParams,
}

impl PreprocessedImage {
    /// Padded patch count (`params.max_patches()`).
    pub fn max_patches(&self) -> usize {
        self.position_ids.len()
    }

    /// The patches as the vision tower takes them.
    pub fn patches(&self) -> ImagePatches<'_> {
        ImagePatches {
            pixel_values: &self.pixel_values,
            position_ids: &self.position_ids,
            num_patches: self.num_patches,
            patch_grid: self.patch_grid,
            patch_size: self.params.patch_size,
        }
    }
}

/// Decodes a JPEG, PNG or WebP file to RGB, upright according to its EXIF orientation
/// (as transformers' `load_image` does). Alpha is dropped, grey is replicated to RGB.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    let invalid = |what: String| GemmaError::InvalidImage(what);
    if bytes.is_empty() {
        return Err(invalid("no image data".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(format!("cannot read the image header: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(invalid(format!(
                "unsupported image format {other:?} (expected JPEG, PNG or WebP)"
            )));
        }
        None => return Err(invalid("not a JPEG, PNG or WebP image".into())),
    }
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // zune-jpeg fills a cut-off scan with grey; Pillow refuses such files by default.
        return Err(invalid(
            "the JPEG data is truncated (no end-of-image marker)".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = reader;
    reader.limits(limits.clone());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| invalid(format!("cannot decode the image: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(invalid(format!("the image is empty ({w}×{h})")));
    }
    limits
        .reserve(decoder.total_bytes())
        .map_err(|e| invalid(format!("{w}×{h} image is too large to decode: {e}")))?;
    // A malformed EXIF block must not make an otherwise good image unusable.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| invalid(format!("cannot decode the image: {e}")))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Whether a JPEG stream has an end-of-image marker after its first scan. The header segments
/// are skipped by their lengths (an EXIF thumbnail carries its own markers), then the
/// entropy-coded data is searched: there `FF D9` can only be the end marker (data bytes `FF`
/// are stuffed as `FF 00`).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    loop {
        // Markers may be preceded by fill bytes 0xFF.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return false;
        };
        match marker {
            0xD9 => return false, // end of image before any scan
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let Some(len) = bytes.get(pos + 2..pos + 4) else {
                    return false;
                };
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                if marker == 0xDA {
                    let scan = pos + 2 + len;
                    return bytes
                        .get(scan..)
                        .is_some_and(|rest| rest.windows(2).any(|w| w == [0xFF, 0xD9]));
                }
                pos += 2 + len;
            }
        }
    }
}

/// Target size `(height, width)` of the aspect-preserving resize (transformers'
/// `get_aspect_ratio_preserving_size`, same float arithmetic).
pub fn target_size(height: usize, width: usize, p: &ImageParams) -> Result<(usize, usize)> {
    p.validate()?;
    if height == 0 || width == 0 {
        return Err(GemmaError::InvalidImage(format!(
            "the image is empty ({width}×{height})"
        )));
    }
    let max_patches = p.max_patches();
    let total_px = height as f64 * width as f64;
    let target_px = (max_patches * p.patch_size * p.patch_size) as f64;
    let factor = (target_px / total_px).sqrt();
    let side = p.pooling_kernel * p.patch_size;
    let round_down = |ideal: f64| (ideal / side as f64).floor() as usize * side;
    let mut th = round_down(factor * height as f64);
    let mut tw = round_down(factor * width as f64);
    if th == 0 && tw == 0 {
        return Err(GemmaError::InvalidImage(format!(
            "{width}×{height} cannot be resized to a multiple of {side}"
        )));
    }
    let max_side = (max_patches / (p.pooling_kernel * p.pooling_kernel)) * side;
    if th == 0 {
        th = side;
        tw = ((width as f64 / height as f64).floor() as usize * side).min(max_side);
    } else if tw == 0 {
        tw = side;
        th = ((height as f64 / width as f64).floor() as usize * side).min(max_side);
    }
    if (th * tw) as f64 > target_px {
        return Err(GemmaError::InvalidImage(format!(
            "resizing {width}×{height} to {tw}×{th} exceeds {max_patches} patches"
        )));
    }
    Ok((th, tw))
}

/// Soft tokens an image of `width × height` pixels becomes, so a prompt can be laid out before
/// the tower runs.
pub fn soft_token_count(width: usize, height: usize, p: &ImageParams) -> Result<usize> {
    let (th, tw) = target_size(height, width, p)?;
    Ok((th / p.patch_size) * (tw / p.patch_size) / (p.pooling_kernel * p.pooling_kernel))
}

/// Resizes, rescales, patchifies and pads one RGB image.
pub fn preprocess(img: &RgbImage, p: &ImageParams) -> Result<PreprocessedImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (th, tw) = target_size(h, w, p)?;
    let resized;
    let pixels: &[u8] = if (th, tw) == (h, w) {
        img.as_raw()
    } else {
        resized = resize_bicubic(img.as_raw(), w, h, tw, th);
        &resized
    };

    let ps = p.patch_size;
    let (rows, cols) = (th / ps, tw / ps);
    let num_patches = rows * cols;
    let patch_len = p.patch_len();
    let max_patches = p.max_patches();
    let mut pixel_values = vec![0.0f32; max_patches * patch_len];
    let mut position_ids = vec![[-1i64, -1]; max_patches];
    // transformers: float32(float64(u8) * (1/255)).
    let scale = 1.0f64 / 255.0;
    let lut: Vec<f32> = (0..256).map(|v| (v as f64 * scale) as f32).collect();
    for py in 0..rows {
        for px in 0..cols {
            let patch = py * cols + px;
            position_ids[patch] = [px as i64, py as i64];
            let dst = &mut pixel_values[patch * patch_len..(patch + 1) * patch_len];
            for r in 0..ps {
                let src_row = (py * ps + r) * tw + px * ps;
                let src = &pixels[src_row * 3..(src_row + ps) * 3];
                for (d, &s) in dst[r * ps * 3..(r + 1) * ps * 3].iter_mut().zip(src) {
                    *d = lut[s as usize];
                }
            }
        }
    }
    Ok(PreprocessedImage {
        pixel_values,
        position_ids,
        num_patches,
        num_soft_tokens: num_patches / (p.pooling_kernel * p.pooling_kernel),
        resized: (th, tw),
        patch_grid: (rows, cols),
        params: *p,
    })
}

// ------------------------------------------------------------------------------------------
// Pillow's ImagingResample (libImaging/Resample.c) for 8-bit RGB with the BICUBIC filter:
// separable, horizontal pass first, filter support widened by the downscale factor
// (antialiasing), coefficients normalised to sum 1 then quantised to 22-bit fixed point, and
// each pass rounded and clipped to u8 — the intermediate image is 8-bit, as in Pillow.
// ------------------------------------------------------------------------------------------

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel, a = −0.5, support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index, tap count, and `ksize` fixed-point coefficients.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    // Pillow's box coordinates are C floats; sizes are far below 2^24, so exact.
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0.0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C `(int)` truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let taps = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0f64;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (dst, &w) in row.iter_mut().zip(&k[..taps]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            *dst = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, taps));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes packed RGB `src` (`w × h`) to `tw × th` exactly as Pillow's
/// `Image.resize((tw, th), BICUBIC)`.
pub fn resize_bicubic(src: &[u8], w: usize, h: usize, tw: usize, th: usize) -> Vec<u8> {
    let horiz = coefficients(w, tw);
    let vert = coefficients(h, th);
    let half = 1i64 << (PRECISION_BITS - 1);

    // Horizontal pass over the input rows the vertical pass reads.
    let first_row = vert.bounds[0].0;
    let last_row = vert.bounds[th - 1].0 + vert.bounds[th - 1].1;
    let need_horizontal = tw != w;
    let need_vertical = th != h;
    let (tmp_w, tmp): (usize, std::borrow::Cow<'_, [u8]>) = if need_horizontal {
        let rows = last_row - first_row;
        let mut out = vec![0u8; rows * tw * 3];
        for (r, out_row) in out.chunks_exact_mut(tw * 3).enumerate() {
            let in_row = &src[(first_row + r) * w * 3..(first_row + r + 1) * w * 3];
            for xx in 0..tw {
                let (xmin, taps) = horiz.bounds[xx];
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + taps];
                let mut acc = [half; 3];
                for (x, &kx) in k.iter().enumerate() {
                    let px = &in_row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += px[c] as i64 * kx as i64;
                    }
                }
                for c in 0..3 {
                    out_row[xx * 3 + c] = clip8(acc[c]);
                }
            }
        }
        (tw, out.into())
    } else {
        (w, src.into())
    };
    if !need_vertical {
        return tmp.into_owned();
    }
    // When the horizontal pass ran it kept only rows first_row.., so bounds shift by it.
    let row_offset = if need_horizontal { first_row } else { 0 };
    let mut out = vec![0u8; th * tmp_w * 3];
    for yy in 0..th {
        let (ymin, taps) = vert.bounds[yy];
        let ymin = ymin - row_offset;
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + taps];
        let out_row = &mut out[yy * tmp_w * 3..(yy + 1) * tmp_w * 3];
        for (i, dst) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for (y, &ky) in k.iter().enumerate() {
                acc += tmp[(ymin + y) * tmp_w * 3 + i] as i64 * ky as i64;
            }
            *dst = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(budget: usize) -> ImageParams {
        ImageParams::for_budget(budget).unwrap()
    }

    #[test]
    fn target_sizes_match_the_spec_examples() {
        // transformers' processor: square → 768² at 280, 384² at 70, 1584² at 1120; 768×1024 → 672×912;
        // 1080×1920 → 576×1056.
        assert_eq!(target_size(1000, 1000, &params(280)).unwrap(), (768, 768));
        assert_eq!(target_size(224, 224, &params(280)).unwrap(), (768, 768));
        assert_eq!(target_size(500, 500, &params(70)).unwrap(), (384, 384));
        assert_eq!(target_size(500, 500, &params(1120)).unwrap(), (1584, 1584));
        assert_eq!(target_size(768, 1024, &params(280)).unwrap(), (672, 912));
        assert_eq!(target_size(1080, 1920, &params(280)).unwrap(), (576, 1056));
        assert_eq!(soft_token_count(1920, 1080, &params(280)).unwrap(), 264);
        assert_eq!(soft_token_count(1024, 768, &params(280)).unwrap(), 266);
        assert_eq!(
            soft_token_count(1920, 1080, &ImageParams::video_frame()).unwrap(),
            66
        );
    }

    #[test]
    fn extreme_aspect_ratios_keep_one_row_of_pooling_windows() {
        // 1×10000: the short side rounds to 0 → 48, the long side is capped at 280·48.
        assert_eq!(target_size(1, 10_000, &params(280)).unwrap(), (48, 13_440));
        assert_eq!(target_size(10_000, 2, &params(70)).unwrap(), (70 * 48, 48));
    }

    #[test]
    fn unsupported_budgets_are_refused() {
        assert!(matches!(
            ImageParams::for_budget(100),
            Err(GemmaError::InvalidArgument(_))
        ));
        assert!(matches!(
            target_size(0, 10, &params(70)),
            Err(GemmaError::InvalidImage(_))
        ));
    }

    #[test]
    fn patches_are_raster_ordered_with_channel_fastest() {
        // A 48×96 image at budget 70 would be resized, so use the budget's own target size
        // (384×384 for a square) to check the layout without resampling.
        let p = params(70);
        let side = 384;
        let img = RgbImage::from_fn(side, side, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 7) as u8])
        });
        let out = preprocess(&img, &p).unwrap();
        assert_eq!(out.num_patches, 576);
        assert_eq!(out.num_soft_tokens, 64);
        assert_eq!(out.pixel_values.len(), 630 * 768);
        // Patch 25 = row 1, column 1; its value (r=2, c=3, channel 1) is pixel (x=19, y=18).
        assert_eq!(out.position_ids[25], [1, 1]);
        let v = out.pixel_values[25 * 768 + (2 * 16 + 3) * 3 + 1];
        assert_eq!(v, (18.0f64 / 255.0) as f32);
        assert_eq!(out.position_ids[576], [-1, -1]);
        assert!(out.pixel_values[576 * 768..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn resampling_a_constant_image_keeps_it_constant() {
        let src = vec![77u8; 37 * 53 * 3];
        for (tw, th) in [(960, 624), (20, 11), (53, 100), (10, 37)] {
            let out = resize_bicubic(&src, 53, 37, tw, th);
            assert_eq!(out.len(), tw * th * 3);
            assert!(out.iter().all(|&v| v == 77), "{tw}×{th}");
        }
    }
}
