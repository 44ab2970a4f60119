//! The layering that ARCHITECTURE.md states, checked on the source: every `crate::…` path in
//! a top-level module of `src/` names a module of a strictly lower layer, so the modules form
//! no cycle. A new top-level module must be given a layer here (and in ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each top-level module, lowest first (ARCHITECTURE.md, "Layers").
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("files", 0),
    ("device", 1),
    ("delivery", 1),
    ("weights", 1),
    ("kernels", 2),
    ("model", 3),
    ("tokenizer", 3),
    ("sampling", 3),
    ("media", 4),
    ("constraint", 4),
    ("chat", 5),
    ("source", 5),
    ("convert", 6),
    ("engine", 7),
    ("eval", 8),
    ("bench", 8),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `X` of every `crate::X` outside comments and unit-test modules (tests may reach any
/// layer to build their inputs).
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
            rest = after;
        }
    }
    found
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" {
            continue;
        }
        let Some(&own) = layer.get(top.as_str()) else {
            violations.push(format!("{top} (src/{}) has no layer", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for name in crate_paths(&text) {
            if name == top {
                continue;
            }
            match layer.get(name.as_str()) {
                Some(&other) if other < own => {}
                Some(&other) => violations.push(format!(
                    "src/{} (layer {own}) uses crate::{name} (layer {other})",
                    relative.display()
                )),
                None => violations.push(format!(
                    "src/{} uses crate::{name}: name the module, not a root re-export",
                    relative.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 1000).then(|| format!("{}: {lines}", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}

/// Library code, without its unit tests: the text before a file's first `#[cfg(test)]` or
/// `#[cfg(all(test, …))]`; files that are test modules themselves are skipped.
fn library_code(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .into_iter()
        .filter(|f| {
            let relative = f.strip_prefix(src).unwrap();
            !(relative.ends_with("tests.rs")
                || relative.components().any(|c| c.as_os_str() == "tests"))
        })
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let end = ["#[cfg(test)]", "#[cfg(all(test"]
                .iter()
                .filter_map(|m| text.find(m))
                .min()
                .unwrap_or(text.len());
            (f, text[..end].to_string())
        })
        .collect()
}

/// Input from files, media and the caller must become a `GemmaError`, never a panic (a panic
/// would take down the app embedding us). So library code has no `.unwrap()` (an `.expect`
/// names the invariant that makes it safe, and reviewers check that no input reaches it), no
/// `todo!`/`unimplemented!`/`dbg!`, and `panic!`/`unreachable!` only in the kernels, where
/// they guard our own dispatch tables.
#[test]
fn library_code_has_no_panicking_shortcuts() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (file, code) in library_code(&src) {
        let relative = file.strip_prefix(&src).unwrap().display().to_string();
        let in_kernels = relative.starts_with("kernels");
        for (i, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            let mut bad: Vec<&str> = [".unwrap()", "todo!(", "unimplemented!(", "dbg!("]
                .into_iter()
                .filter(|p| line.contains(p))
                .collect();
            if !in_kernels {
                bad.extend(
                    ["panic!(", "unreachable!("]
                        .into_iter()
                        .filter(|p| line.contains(p)),
                );
            }
            for pattern in bad {
                violations.push(format!("src/{relative}:{}: {pattern}", i + 1));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}
