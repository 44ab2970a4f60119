//! Arbitrary bytes as a Hugging Face checkpoint directory, opened the way the engine opens one:
//! `ModelSource::open` (`config.json` → `GemmaConfig`, `*.safetensors` shard discovery), then
//! `weights()` (the safetensors header, dtypes, shapes and data ranges of the mapped shard) and
//! the first and last row of every tensor decoded. Input: a u16 (little-endian) length, that many
//! bytes of `config.json`, then the bytes of `model.safetensors`.

use std::path::PathBuf;
use std::sync::LazyLock;

use gemmakit::GemmaError;
use gemmakit::model::GemmaConfig;
use gemmakit::source::ModelSource;

use super::Outcome;

/// One checkpoint directory per process, rewritten for every input.
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("gemmakit-fuzz-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
});

pub fn run(data: &[u8]) -> Outcome {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return Outcome::NotApplicable;
    };
    let len = (u16::from_le_bytes(*len) as usize).min(rest.len());
    let (config, shard) = rest.split_at(len);
    std::fs::write(DIR.join("config.json"), config).unwrap();
    std::fs::write(DIR.join("model.safetensors"), shard).unwrap();

    let source = match ModelSource::open(&DIR) {
        Ok(source) => source,
        Err(e) => return rejected(e),
    };
    let direct = GemmaConfig::from_json(std::str::from_utf8(config).expect("config.json is UTF-8"));
    let direct = direct.expect("config.json parses as it did in open");
    assert_eq!(format!("{direct:?}"), format!("{:?}", source.config()));
    assert_eq!(source.file_bytes(), shard.len() as u64);
    let cfg = source.config();
    let _ = (cfg.num_layers(), cfg.first_kv_shared_layer());
    let _ = (
        source.chat_template(),
        source.instruction_tuned(),
        source.placeholder_ids(None),
    );
    let store = match source.weights() {
        Ok(store) => store,
        Err(e) => return rejected(e),
    };
    for t in store.tensors() {
        assert_eq!(t.byte_len(), t.bytes().len());
        assert_eq!(t.num_elements(), t.shape().iter().product::<usize>());
        if t.num_elements() == 0 {
            continue;
        }
        let mut row = vec![0f32; t.cols()];
        t.decode_row(0, &mut row);
        t.decode_row(t.rows() - 1, &mut row);
    }
    Outcome::Accepted
}

/// The errors a bad checkpoint may give (never a panic, never an I/O error on files that exist).
fn rejected(e: GemmaError) -> Outcome {
    match e {
        GemmaError::InvalidConfig(_)
        | GemmaError::UnknownArchitecture(_)
        | GemmaError::Unsupported(_)
        | GemmaError::InvalidWeightFile { .. }
        | GemmaError::UnsupportedDtype { .. }
        | GemmaError::ShapeMismatch { .. }
        | GemmaError::MissingTensor(_) => Outcome::Rejected(e.to_string()),
        e => panic!("a bad checkpoint gives a typed error, got {e:?}"),
    }
}
