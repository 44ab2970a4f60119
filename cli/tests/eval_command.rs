//! `gemmakit eval` with media files: the placeholder runs of the token list are filled from
//! `--image`/`--audio`, and the logits written to `.npy` match transformers (fixture `mm.*`).

#[path = "../../rust-core/tests/common/mod.rs"]
mod common;

use common::*;

/// The end-to-end media bound of rust-core/tests/multimodal_engine.rs (its module doc says why
/// 1e-3): this is the same computation, reached through the command line.
const CPU_TOL: f32 = 1e-3;

/// `gemmakit eval` from outside the test suite: the fixture's image as a PNG file and its
/// waveform as a float WAV fill the placeholder runs of `mm.input_ids`; the written logits
/// match transformers' `mm.logits`.
#[test]
fn cli_eval_fills_placeholders_from_files() {
    let fixture = "tiny_gemma4_e2b";
    let reference = Reference::load(fixture);
    let tmp = std::env::temp_dir().join(format!("gemmakit-mm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let shape = reference.shape("vision.image_uint8");
    image::RgbImage::from_raw(
        shape[1] as u32,
        shape[0] as u32,
        reference.u8("vision.image_uint8"),
    )
    .unwrap()
    .save(tmp.join("image.png"))
    .unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut wav = hound::WavWriter::create(tmp.join("audio.wav"), spec).unwrap();
    for s in reference.f32("audio.waveform") {
        wav.write_sample(s).unwrap();
    }
    wav.finalize().unwrap();
    let tokens: Vec<String> = reference
        .ids("mm.input_ids")
        .iter()
        .map(u32::to_string)
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gemmakit"))
        .args(["eval", "--model"])
        .arg(fixture_dir(fixture))
        .args([
            "--tokens",
            &tokens.join(","),
            "--image-tokens",
            "70",
            "--image",
        ])
        .arg(tmp.join("image.png"))
        .arg("--audio")
        .arg(tmp.join("audio.wav"))
        .arg("--out")
        .arg(tmp.join("logits.npy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::File::open(tmp.join("logits.npy")).unwrap();
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
    let logits: Vec<f32> = npy.into_vec().unwrap();
    assert_close(
        "mm logits via `gemmakit eval`",
        &logits,
        &reference.f32("mm.logits"),
        CPU_TOL,
    );

    // More placeholders than media: a clear error, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gemmakit"))
        .args(["eval", "--model"])
        .arg(fixture_dir(fixture))
        .args([
            "--tokens",
            &tokens.join(","),
            "--image-tokens",
            "70",
            "--image",
        ])
        .arg(tmp.join("image.png"))
        .arg("--out")
        .arg(tmp.join("logits2.npy"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("media do not match"));
    let _ = std::fs::remove_dir_all(&tmp);
}
