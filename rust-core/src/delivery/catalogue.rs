//! The catalogue of known models: a built-in JSON list (`catalogue.json`, compiled in) that an
//! app may replace with its own. An entry names a file of a Hugging Face repository; its URL is
//! the catalogue's pattern filled with `{repo}` and `{file}` unless the entry gives its own.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::{GemmaError, Result};

const BUILT_IN: &str = include_str!("catalogue.json");

/// An app's catalogue is read whole; one larger than this is refused, not allocated.
pub const MAX_CATALOGUE_BYTES: usize = 1 << 20;

const DEFAULT_URL_PATTERN: &str = "https://huggingface.co/{repo}/resolve/main/{file}";

/// One downloadable file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// What `gemmakit pull NAME` and `--model NAME` accept.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `owner/name` of the Hugging Face repository.
    pub repo: String,
    /// The file's name in the repository.
    pub file: String,
    /// A full URL instead of the pattern (a mirror, another host).
    #[serde(default)]
    pub url: Option<String>,
    /// Where it goes, relative to the cache's models directory (default
    /// `owner--name/file`: a repository's model files and its mmproj share a directory, where
    /// the engine finds the mmproj by itself).
    #[serde(default)]
    pub path: Option<String>,
    pub quantization: String,
    /// Bytes, when known: checked against the server's and used for the disk-space check.
    #[serde(default)]
    pub size: Option<u64>,
    /// Pinned sha256 (hex); without one the server's declared LFS sha256 is used.
    #[serde(default)]
    pub sha256: Option<String>,
    /// RAM the model needs at its default context, in MiB (a guide for an app's model picker;
    /// the engine's memory check measures the file itself).
    pub min_ram_mb: u64,
    /// Default context length (0 for a tower file).
    pub context: usize,
    /// The catalogue name of the entry holding this model's vision/audio towers.
    #[serde(default)]
    pub mmproj: Option<String>,
}

impl CatalogueEntry {
    /// The entry's download URL.
    pub fn url(&self, pattern: &str) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => pattern
                .replace("{repo}", &self.repo)
                .replace("{file}", &self.file),
        }
    }

    /// The file's path relative to the models directory.
    pub fn relative_path(&self) -> PathBuf {
        match &self.path {
            Some(path) => PathBuf::from(path),
            None => Path::new(&self.repo.replace('/', "--")).join(&self.file),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    #[serde(default = "default_pattern")]
    pub url_pattern: String,
    pub models: Vec<CatalogueEntry>,
}

fn default_pattern() -> String {
    DEFAULT_URL_PATTERN.into()
}

impl Catalogue {
    /// The catalogue compiled into the library.
    pub fn built_in() -> Catalogue {
        Catalogue::from_json(BUILT_IN).expect("the built-in catalogue is valid (tested)")
    }

    /// An app's catalogue; every entry is checked (see [`validate`](Self::validate)).
    pub fn from_json(json: &str) -> Result<Catalogue> {
        if json.len() > MAX_CATALOGUE_BYTES {
            return Err(GemmaError::InvalidCatalogue(format!(
                "{} bytes, over the limit of {MAX_CATALOGUE_BYTES}",
                json.len()
            )));
        }
        let catalogue: Catalogue =
            serde_json::from_str(json).map_err(|e| GemmaError::InvalidCatalogue(e.to_string()))?;
        catalogue.validate()?;
        Ok(catalogue)
    }

    /// The catalogue in `$GEMMAKIT_CATALOGUE` (a JSON file) if set, else the built-in one.
    pub fn from_env() -> Result<Catalogue> {
        match std::env::var_os("GEMMAKIT_CATALOGUE") {
            Some(path) => Catalogue::from_file(Path::new(&path)),
            None => Ok(Catalogue::built_in()),
        }
    }

    pub fn from_file(path: &Path) -> Result<Catalogue> {
        let json = super::read_bounded(path, MAX_CATALOGUE_BYTES)?;
        let json = String::from_utf8(json).map_err(|_| {
            GemmaError::InvalidCatalogue(format!("{} is not UTF-8", path.display()))
        })?;
        Catalogue::from_json(&json)
    }

    pub fn get(&self, name: &str) -> Result<&CatalogueEntry> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| GemmaError::UnknownModel {
                name: name.into(),
                known: self.models.iter().map(|m| m.name.clone()).collect(),
            })
    }

    /// Names unique, URLs http(s), paths inside the cache, sha256 64 hex digits, mmproj
    /// references resolvable.
    fn validate(&self) -> Result<()> {
        let invalid = |name: &str, why: String| {
            Err(GemmaError::InvalidCatalogue(format!(
                "entry `{name}`: {why}"
            )))
        };
        for (i, m) in self.models.iter().enumerate() {
            if m.name.is_empty() || self.models[..i].iter().any(|o| o.name == m.name) {
                return invalid(&m.name, "empty or duplicate name".into());
            }
            let url = m.url(&self.url_pattern);
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid(&m.name, format!("URL `{url}` is not http(s)"));
            }
            let path = m.relative_path();
            let inside = path.components().all(|c| matches!(c, Component::Normal(_)));
            if !inside || path.as_os_str().is_empty() {
                return invalid(
                    &m.name,
                    format!("path `{}` leaves the cache", path.display()),
                );
            }
            if let Some(sha) = &m.sha256
                && super::verify::parse_sha256(sha).is_none()
            {
                return invalid(&m.name, format!("sha256 `{sha}` is not 64 hex digits"));
            }
            if let Some(mmproj) = &m.mmproj
                && !self.models.iter().any(|o| &o.name == mmproj)
            {
                return invalid(
                    &m.name,
                    format!("mmproj `{mmproj}` is not in the catalogue"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_is_valid_and_has_the_promised_entries() {
        let c = Catalogue::built_in();
        for q in ["q4_0", "q4_k_m", "q8_0"] {
            for size in ["e2b", "e4b"] {
                let e = c.get(&format!("gemma-4-{size}-it-{q}")).unwrap();
                assert!(e.repo.starts_with("unsloth/"), "{e:?}");
                assert!(c.get(e.mmproj.as_deref().unwrap()).is_ok());
            }
        }
        let demo = c.get("gemma-3-270m").unwrap();
        assert_eq!(demo.relative_path(), Path::new("gemma3-270m-q4_k_m.gguf"));
        assert_eq!(demo.size, Some(253_113_024));
        assert!(c.models.iter().any(|m| m.repo.starts_with("ggml-org/")));
        let e = c.get("gemma-4-e2b-it-q4_k_m").unwrap();
        assert_eq!(
            e.url(&c.url_pattern),
            "https://huggingface.co/unsloth/gemma-4-E2B-it-GGUF/resolve/main/gemma-4-E2B-it-Q4_K_M.gguf"
        );
        assert_eq!(
            e.relative_path(),
            Path::new("unsloth--gemma-4-E2B-it-GGUF/gemma-4-E2B-it-Q4_K_M.gguf")
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = Catalogue::built_in().get("gemma-9").unwrap_err();
        assert!(matches!(&err, GemmaError::UnknownModel { known, .. } if known.len() > 10));
        assert!(err.to_string().contains("gemma-4-e2b-it-q4_k_m"), "{err}");
    }

    #[test]
    fn hostile_app_catalogues_are_refused_with_the_reason() {
        let entry = |extra: &str| {
            format!(
                r#"{{"models":[{{"name":"m","repo":"o/r","file":"f.gguf","quantization":"Q4_0",
                "min_ram_mb":1,"context":1{extra}}}]}}"#
            )
        };
        assert!(Catalogue::from_json(&entry("")).is_ok());
        for (extra, why) in [
            (r#","path":"../../etc/passwd""#, "leaves the cache"),
            (r#","path":"/etc/passwd""#, "leaves the cache"),
            (r#","url":"file:///etc/passwd""#, "not http(s)"),
            (r#","sha256":"abc""#, "not 64 hex digits"),
            (r#","mmproj":"nope""#, "not in the catalogue"),
            (r#","surprise":1"#, "unknown field"),
            (r#","size":-1"#, "invalid value"),
        ] {
            let err = Catalogue::from_json(&entry(extra)).unwrap_err();
            assert!(
                matches!(err, GemmaError::InvalidCatalogue(_)) && err.to_string().contains(why),
                "{extra}: {err}"
            );
        }
        let huge = " ".repeat(MAX_CATALOGUE_BYTES + 1);
        assert!(matches!(
            Catalogue::from_json(&huge),
            Err(GemmaError::InvalidCatalogue(_))
        ));
        let two = r#"{"models":[
            {"name":"m","repo":"o/r","file":"a","quantization":"q","min_ram_mb":1,"context":1},
            {"name":"m","repo":"o/r","file":"b","quantization":"q","min_ram_mb":1,"context":1}]}"#;
        assert!(
            Catalogue::from_json(two)
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
    }
}
