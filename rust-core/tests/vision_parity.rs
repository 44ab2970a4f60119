//! Gemma 4 image input vs transformers 5.24 (Gemma4ImageProcessorPil + the f32 vision tower).
//!
//! * Preprocessing: pixel values and position ids IDENTICAL to the processor's, on the tiny
//!   fixtures' image and on encoded test images (tests/fixtures/images, written by
//!   scripts/reference/image_preprocess_ref.py: upscaled, downscaled under budget 280,
//!   EXIF-rotated JPEG, 4:2:0 JPEG, RGBA, grey, lossless WebP).
//! * Tower: encoder output, pooled tower output and projected soft tokens, loaded from the
//!   Hugging Face safetensors and from llama.cpp's mmproj GGUF. Max-abs tolerance 1e-4 on
//!   the CPU, 1e-3 on wgpu (lavapipe); the residual stream and the pooled output (×√d) are
//!   compared per unit of the reference's largest magnitude, as in gemma4_parity.rs.
//! * Bad input → `GemmaError::InvalidImage`.

mod common;

use std::path::PathBuf;

use common::*;
use gemmakit::media::image::{
    ImageParams, PreprocessedImage, decode_image, preprocess, resize_bicubic, soft_token_count,
};
use gemmakit::model::vision::VisionTower;
use gemmakit::{BackendKind, ComputeDevice, GemmaError};
use safetensors::SafeTensors;

const CPU_TOL: f32 = 1e-4;
const GPU_TOL: f32 = 1e-3;

/// The tiny fixtures' processor: patch 4, pooling 3, budget 70 (reference_meta.json).
fn tiny_params() -> ImageParams {
    ImageParams {
        patch_size: 4,
        pooling_kernel: 3,
        max_soft_tokens: 70,
    }
}

fn reference_i64(fixture: &str, name: &str) -> (Vec<usize>, Vec<i64>) {
    let path = fixture_dir(fixture).join("reference_outputs.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::I64);
    let values = view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

fn reference_u8(fixture: &str, name: &str) -> (Vec<usize>, Vec<u8>) {
    let path = fixture_dir(fixture).join("reference_outputs.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::U8);
    (view.shape().to_vec(), view.data().to_vec())
}

/// The fixture's image through our processor.
fn fixture_image(fixture: &str) -> PreprocessedImage {
    let (shape, raw) = reference_u8(fixture, "vision.image_uint8");
    let (h, w) = (shape[0], shape[1]);
    let img = image::RgbImage::from_raw(w as u32, h as u32, raw).unwrap();
    preprocess(&img, &tiny_params()).expect("preprocess")
}

fn check_fixture_preprocessing(fixture: &str) {
    let reference = Reference::load(fixture);
    let ours = fixture_image(fixture);
    let expected = reference.f32("vision.pixel_values");
    assert_eq!(ours.pixel_values.len(), expected.len());
    let mismatches = ours
        .pixel_values
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        mismatches,
        0,
        "pixel values differ (max abs {:e})",
        max_abs_diff(&ours.pixel_values, &expected)
    );
    let (shape, pos) = reference_i64(fixture, "vision.image_position_ids");
    assert_eq!(shape, vec![1, ours.max_patches(), 2]);
    let ours_pos: Vec<i64> = ours.position_ids.iter().flatten().copied().collect();
    assert_eq!(ours_pos, pos, "position ids");
    assert_eq!(ours.resized, (72, 120));
    assert_eq!(
        ours.num_soft_tokens,
        reference.shape("vision.soft_tokens")[0]
    );
    assert_eq!(
        soft_token_count(64, 40, &tiny_params()).unwrap(),
        ours.num_soft_tokens
    );
}

#[test]
fn e2b_preprocessing_is_identical_to_transformers() {
    check_fixture_preprocessing("tiny_gemma4_e2b");
}

#[test]
fn e4b_preprocessing_is_identical_to_transformers() {
    check_fixture_preprocessing("tiny_gemma4_e4b");
}

#[derive(Clone, Copy)]
enum Source {
    SafeTensors,
    Mmproj,
}

fn load_tower(fixture: &str, source: Source, backend: BackendKind) -> VisionTower {
    let device = ComputeDevice::open(backend).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let dir = fixture_dir(fixture);
    match source {
        Source::SafeTensors => VisionTower::load_hf_dir(&dir, &device),
        Source::Mmproj => VisionTower::load_mmproj(&dir.join("mmproj-f32.gguf"), &device),
    }
    .expect("vision tower loads")
}

fn check_tower(fixture: &str, source: Source, backend: BackendKind, tol: f32) {
    let reference = Reference::load(fixture);
    let tower = load_tower(fixture, source, backend);
    let img = fixture_image(fixture);
    let trace = tower.encode_traced(img.patches()).expect("encode");
    let d = tower.config().hidden_size;
    let n = img.num_patches;
    // The reference holds all padded rows; the padding never reaches the soft tokens (masked
    // keys, zeroed before pooling), and we do not compute it.
    let hidden = reference.f32("vision.encoder_last_hidden");
    assert_close_scaled(
        "encoder last hidden (real patches)",
        &trace.encoder_last_hidden,
        &hidden[..n * d],
        tol,
    );
    assert_close_scaled(
        "tower out (pooled, ×√d)",
        &trace.tower_out,
        &reference.f32("vision.tower_out"),
        tol,
    );
    assert_close(
        "soft tokens",
        &trace.soft_tokens,
        &reference.f32("vision.soft_tokens"),
        tol,
    );
    assert_eq!(tower.encode(img.patches()).unwrap(), trace.soft_tokens);
}

macro_rules! tower_suite {
    ($module:ident, $fixture:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn cpu_safetensors() {
                check_tower($fixture, Source::SafeTensors, BackendKind::Cpu, CPU_TOL);
            }
            #[test]
            fn cpu_mmproj_gguf() {
                check_tower($fixture, Source::Mmproj, BackendKind::Cpu, CPU_TOL);
            }
            #[test]
            fn gpu_safetensors() {
                if gpu_expected() {
                    check_tower($fixture, Source::SafeTensors, BackendKind::Gpu, GPU_TOL);
                }
            }
            #[test]
            fn gpu_mmproj_gguf() {
                if gpu_expected() {
                    check_tower($fixture, Source::Mmproj, BackendKind::Gpu, GPU_TOL);
                }
            }
        }
    };
}

tower_suite!(e2b, "tiny_gemma4_e2b");
tower_suite!(e4b, "tiny_gemma4_e4b");

// ------------------------------------------------------------------------------------------
// Encoded images
// ------------------------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    fixture_dir("images")
}

fn read(name: &str) -> Vec<u8> {
    let path = images_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A lossless PNG written by the reference script, as RGB.
fn reference_png(name: &str) -> image::RgbImage {
    image::load_from_memory(&read(name)).unwrap().into_rgb8()
}

fn max_pixel_diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    let diffs = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
    let count = a.iter().zip(b).filter(|(x, y)| x != y).count();
    (diffs.max().unwrap_or(0), count)
}

/// The processor's pixel values for a resized uint8 image: float32(float64(u8)·(1/255)) in
/// patch order — the mapping the tiny-fixture tests check bit for bit against transformers.
fn expected_pixel_values(resized: &image::RgbImage, p: &ImageParams) -> Vec<f32> {
    let (w, h, ps) = (
        resized.width() as usize,
        resized.height() as usize,
        p.patch_size,
    );
    let (rows, cols) = (h / ps, w / ps);
    let mut out = vec![0.0f32; p.max_patches() * p.patch_len()];
    let raw = resized.as_raw();
    for py in 0..rows {
        for px in 0..cols {
            for r in 0..ps {
                for c in 0..ps {
                    for ch in 0..3 {
                        let v = raw[((py * ps + r) * w + px * ps + c) * 3 + ch];
                        out[(py * cols + px) * p.patch_len() + (r * ps + c) * 3 + ch] =
                            (v as f64 * (1.0 / 255.0)) as f32;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn encoded_images_preprocess_like_transformers() {
    let meta: serde_json::Value =
        serde_json::from_slice(&read("reference.json")).expect("reference.json");
    let cases = meta["cases"].as_object().expect("cases");
    assert!(cases.len() >= 7);
    let mut failures = Vec::new();
    for (name, case) in cases {
        let budget = case["max_soft_tokens"].as_u64().unwrap() as usize;
        let p = ImageParams::for_budget(budget).unwrap();
        let hw = |key: &str| -> (usize, usize) {
            let a = case[key].as_array().unwrap();
            (
                a[0].as_u64().unwrap() as usize,
                a[1].as_u64().unwrap() as usize,
            )
        };
        let (ih, iw) = hw("input_hw");
        let (rh, rw) = hw("resized_hw");
        let reference_resized = reference_png(case["resized_png"].as_str().unwrap());

        let decoded = decode_image(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (decoded.height() as usize, decoded.width() as usize),
            (ih, iw),
            "{name}: decoded size (EXIF orientation applied)"
        );
        assert_eq!(
            soft_token_count(iw, ih, &p).unwrap(),
            case["num_soft_tokens"].as_u64().unwrap() as usize,
            "{name}: soft-token count before decoding"
        );

        // Resampling alone, from exactly the pixels Pillow decoded: must be identical.
        let source = match case["decoded_png"].as_str() {
            Some(png) => {
                let pil = reference_png(png);
                let (max, count) = max_pixel_diff(pil.as_raw(), decoded.as_raw());
                eprintln!(
                    "{name}: JPEG decode vs libjpeg-turbo (Pillow): {count} of {} values differ, max {max}",
                    pil.as_raw().len()
                );
                // zune-jpeg and libjpeg-turbo may round the IDCT / chroma upsampling apart.
                assert!(max <= 4, "{name}: decoder differs from Pillow by {max}");
                pil
            }
            None => decoded.clone(),
        };
        let resized = resize_bicubic(source.as_raw(), iw, ih, rw, rh);
        let (max, count) = max_pixel_diff(&resized, reference_resized.as_raw());
        eprintln!(
            "{name}: {iw}×{ih} → {rw}×{rh}: resize differs from Pillow in {count} values (max {max})"
        );
        if count != 0 {
            failures.push(format!(
                "{name}: resize differs in {count} values, max {max}"
            ));
        }
        let out = preprocess(&source, &p).unwrap();
        assert_eq!(out.resized, (rh, rw), "{name}");
        assert_eq!(
            out.num_patches,
            case["num_patches"].as_u64().unwrap() as usize
        );
        assert_eq!(
            out.num_soft_tokens,
            case["num_soft_tokens"].as_u64().unwrap() as usize
        );
        assert_eq!(
            out.max_patches(),
            case["max_patches"].as_u64().unwrap() as usize
        );
        let expected = expected_pixel_values(&reference_resized, &p);
        if out.pixel_values != expected {
            failures.push(format!("{name}: pixel values differ"));
        }
        // End to end from the encoded bytes (the decoder's rounding included for JPEG).
        let end_to_end = preprocess(&decoded, &p).unwrap();
        let err = max_abs_diff(&end_to_end.pixel_values, &expected);
        eprintln!(
            "{name}: end to end from the file: max abs {err:.4} ({:.1}/255)",
            err * 255.0
        );
        if case["decoded_png"].is_null() && err != 0.0 {
            failures.push(format!("{name}: end-to-end pixel values differ by {err}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_resized_image_runs_through_the_tower_at_the_fixture_geometry() {
    // The processor's output shape feeds the tower directly (patch 4 for the tiny tower).
    let img = decode_image(&read("exif_rotated.jpg")).unwrap();
    let pre = preprocess(&img, &tiny_params()).unwrap();
    let tower = load_tower("tiny_gemma4_e2b", Source::SafeTensors, BackendKind::Cpu);
    let out = tower.encode(pre.patches()).unwrap();
    assert_eq!(
        out.len(),
        pre.num_soft_tokens * tower.config().text_hidden_size
    );
    assert!(out.iter().all(|v| v.is_finite()));
    // A tower refuses an image preprocessed for another patch size.
    let wrong = preprocess(&img, &ImageParams::video_frame()).unwrap();
    assert!(matches!(
        tower.encode(wrong.patches()),
        Err(GemmaError::InvalidImage(_))
    ));
}

// ------------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose IHDR claims `width × height` (CRC fixed up so only the size is wrong).
fn png_with_size(width: u32, height: u32) -> Vec<u8> {
    let mut png = read("grey.png");
    // Signature (8), length (4), "IHDR" (4), then width, height.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn assert_invalid(what: &str, bytes: &[u8]) {
    match decode_image(bytes) {
        Err(GemmaError::InvalidImage(reason)) => eprintln!("{what}: {reason}"),
        Err(other) => panic!("{what}: wrong error {other:?}"),
        Ok(img) => panic!("{what}: decoded a {}×{} image", img.width(), img.height()),
    }
}

#[test]
fn bad_images_are_invalid_image_errors() {
    assert_invalid("empty", &[]);
    assert_invalid("text", b"this is not an image, just some bytes");
    assert_invalid(
        "GIF (unsupported format)",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    );
    let png = read("grey.png");
    assert_invalid("truncated PNG", &png[..png.len() / 2]);
    assert_invalid("PNG header only", &png[..40]);
    assert_invalid("zero-width PNG", &png_with_size(0, 50));
    assert_invalid("zero-height PNG", &png_with_size(50, 0));
    // Refused from the header alone: no 100000² buffer is ever allocated.
    assert_invalid("100000×100000 PNG", &png_with_size(100_000, 100_000));
    assert_invalid("16385×1 PNG", &png_with_size(16_385, 1));
    let jpg = read("frame_420.jpg");
    assert_invalid("truncated JPEG (a third)", &jpg[..jpg.len() / 3]);
    assert_invalid("truncated JPEG (last 10 bytes cut)", &jpg[..jpg.len() - 10]);
    assert_invalid("JPEG headers only", &jpg[..200]);
    // Bytes after the end-of-image marker (some cameras append data) are harmless.
    let mut trailing = jpg.clone();
    trailing.extend_from_slice(b"appended by a camera");
    assert_eq!(decode_image(&trailing).unwrap().dimensions(), (160, 90));
    // The fixture PNG itself decodes, so the failures above are about the damage.
    assert_eq!(decode_image(&png).unwrap().dimensions(), (50, 50));
    // Zero-size images cannot be preprocessed either.
    let empty = image::RgbImage::new(0, 0);
    assert!(matches!(
        preprocess(&empty, &ImageParams::default()),
        Err(GemmaError::InvalidImage(_))
    ));
}
