//! Replays, through the fuzz targets' own checks (`fuzz/checks`, README "Fuzzing"), every seed
//! of the fuzz corpora (`fuzz/corpus/<target>`) and every input a fuzz run found
//! (`tests/fuzz_regressions/<target>`): no panic, only the typed errors each entry point
//! documents. A found input named `invalid-*` must be rejected, one named `valid-*` accepted;
//! every target has a seed that is accepted, so each check runs to its end.

#[allow(dead_code)]
#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::Path;

use checks::Outcome;

fn replay(target: &str) {
    let check = checks::CHECKS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target")
        .1;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut accepted_seeds = 0;
    for (dir, found) in [
        (root.join("fuzz/corpus").join(target), false),
        (root.join("tests/fuzz_regressions").join(target), true),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert!(found, "{target} has no seed corpus");
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let outcome = check(&data);
            if found && name.starts_with("invalid-") {
                assert!(
                    matches!(outcome, Outcome::Rejected(_)),
                    "{target}/{name}: {outcome:?}"
                );
            }
            if found && name.starts_with("valid-") {
                assert_eq!(outcome, Outcome::Accepted, "{target}/{name}");
            }
            if !found && outcome == Outcome::Accepted {
                accepted_seeds += 1;
            }
        }
    }
    assert!(accepted_seeds > 0, "no seed of {target} is accepted");
}

macro_rules! replay_tests {
    ($($name:ident: $target:literal),* $(,)?) => {
        $(#[test]
        fn $name() {
            replay($target);
        })*

        #[test]
        fn fuzz_regressions_cover_every_target() {
            let mut tested = vec![$($target),*];
            let mut all: Vec<&str> = checks::CHECKS.iter().map(|(name, _)| *name).collect();
            tested.sort();
            all.sort();
            assert_eq!(tested, all);
        }
    };
}

replay_tests! {
    fuzz_regressions_audio_input: "audio_input",
    fuzz_regressions_chat_messages: "chat_messages",
    fuzz_regressions_chat_template_text: "chat_template_text",
    fuzz_regressions_constraint: "constraint",
    fuzz_regressions_gguf_parse: "gguf_parse",
    fuzz_regressions_image_input: "image_input",
    fuzz_regressions_model_checkpoint: "model_checkpoint",
    fuzz_regressions_tokenizer_gguf: "tokenizer_gguf",
    fuzz_regressions_tokenizer_json: "tokenizer_json",
    fuzz_regressions_tool_call: "tool_call",
}
