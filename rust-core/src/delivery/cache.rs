//! The model cache: `$GEMMAKIT_HOME/models` (default `~/.cache/gemmakit/models`). Catalogue
//! entries live at their [`relative_path`](super::CatalogueEntry::relative_path) under it.

use std::path::{Path, PathBuf};

use super::catalogue::{Catalogue, CatalogueEntry};
use crate::error::{GemmaError, Result};

/// `$GEMMAKIT_HOME`, or `~/.cache/gemmakit`: the root of everything GemmaKit caches.
pub fn gemmakit_home() -> PathBuf {
    std::env::var_os("GEMMAKIT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gemmakit")
        })
}

/// A file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// The catalogue entry stored at this path, if any.
    pub name: Option<String>,
    /// An unfinished download (`.part`): `pull` resumes it.
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCache {
    models_dir: PathBuf,
}

impl ModelCache {
    /// The cache under `$GEMMAKIT_HOME`.
    pub fn from_env() -> Self {
        ModelCache::at(gemmakit_home().join("models"))
    }

    /// A cache whose models directory is `models_dir` (an app's own storage).
    pub fn at(models_dir: impl Into<PathBuf>) -> Self {
        ModelCache {
            models_dir: models_dir.into(),
        }
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// Where `entry` is (or will be) stored.
    pub fn path_of(&self, entry: &CatalogueEntry) -> PathBuf {
        self.models_dir.join(entry.relative_path())
    }

    /// What `--model` names: an existing path as it is, else a catalogue name whose file is in
    /// the cache. A catalogue model not downloaded yet is an error that says how to get it.
    pub fn resolve(&self, name_or_path: &str, catalogue: &Catalogue) -> Result<PathBuf> {
        let as_path = Path::new(name_or_path);
        if as_path.exists() {
            return Ok(as_path.to_path_buf());
        }
        let entry = match catalogue.get(name_or_path) {
            Ok(entry) => entry,
            Err(GemmaError::UnknownModel { known, .. }) => {
                return Err(GemmaError::InvalidArgument(format!(
                    "`{name_or_path}` is neither a file nor a catalogue name ({})",
                    known.join(", ")
                )));
            }
            Err(e) => return Err(e),
        };
        let path = self.path_of(entry);
        if path.is_file() {
            Ok(path)
        } else {
            Err(GemmaError::InvalidArgument(format!(
                "`{name_or_path}` is not downloaded yet (expected at {}); run `gemmakit pull {name_or_path}`",
                path.display()
            )))
        }
    }

    /// The cached model files and unfinished downloads (two directory levels: the models
    /// directory and one directory per repository), sorted by path.
    pub fn list(&self, catalogue: &Catalogue) -> Result<Vec<CachedFile>> {
        let mut files = Vec::new();
        self.collect(&self.models_dir, 2, catalogue, &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn collect(
        &self,
        dir: &Path,
        depth: usize,
        catalogue: &Catalogue,
        files: &mut Vec<CachedFile>,
    ) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(GemmaError::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| GemmaError::io(dir, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| GemmaError::io(&path, e))?;
            if meta.is_dir() {
                if depth > 1 {
                    self.collect(&path, depth - 1, catalogue, files)?;
                }
                continue;
            }
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let (stored_as, partial) = match file_name.strip_suffix(".part") {
                Some(stem) => (path.with_file_name(stem), true),
                None if file_name.ends_with(".gguf") => (path.clone(), false),
                None => continue, // metadata, locks, other files
            };
            let name = catalogue
                .models
                .iter()
                .find(|m| self.path_of(m) == stored_as)
                .map(|m| m.name.clone());
            files.push(CachedFile {
                path,
                bytes: meta.len(),
                name,
                partial,
            });
        }
        Ok(())
    }

    /// Deletes a cached model (a catalogue name or a path inside the cache) with its partial
    /// download, metadata and lock; returns the paths deleted. Paths outside the cache are
    /// refused: this never deletes a user's own file.
    pub fn delete(&self, name_or_path: &str, catalogue: &Catalogue) -> Result<Vec<PathBuf>> {
        let target = match catalogue.get(name_or_path) {
            Ok(entry) => self.path_of(entry),
            Err(_) => PathBuf::from(name_or_path),
        };
        let target = without_part_suffix(&target);
        let inside = match (
            target.parent().map(Path::canonicalize),
            self.models_dir.canonicalize(),
        ) {
            (Some(Ok(dir)), Ok(root)) => dir.starts_with(&root),
            _ => false,
        };
        if !inside {
            return Err(GemmaError::InvalidArgument(format!(
                "`{name_or_path}` is not a model in the cache {}",
                self.models_dir.display()
            )));
        }
        let mut deleted = Vec::new();
        for suffix in ["", ".part", ".part.json", ".lock"] {
            let mut path = target.as_os_str().to_owned();
            path.push(suffix);
            let path = PathBuf::from(path);
            match std::fs::remove_file(&path) {
                Ok(()) => deleted.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(GemmaError::io(&path, e)),
            }
        }
        if deleted.is_empty() {
            return Err(GemmaError::InvalidArgument(format!(
                "nothing cached at {}",
                target.display()
            )));
        }
        Ok(deleted)
    }
}

/// `x.gguf.part` → `x.gguf` (a partial file names its download).
fn without_part_suffix(path: &Path) -> PathBuf {
    match path.to_str().and_then(|s| s.strip_suffix(".part")) {
        Some(stem) => PathBuf::from(stem),
        None => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        Catalogue::from_json(
            r#"{"models":[{"name":"m","repo":"o/r","file":"f.gguf","quantization":"Q4_0",
                "min_ram_mb":1,"context":1}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn names_resolve_list_and_delete_within_the_cache_only() {
        let root = std::env::temp_dir().join(format!("gemmakit-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cache = ModelCache::at(root.join("models"));
        let catalogue = catalogue();
        let err = cache.resolve("m", &catalogue).unwrap_err().to_string();
        assert!(err.contains("gemmakit pull m"), "{err}");
        assert!(cache.resolve("nope", &catalogue).is_err());

        let stored = root.join("models/o--r/f.gguf");
        std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
        std::fs::write(&stored, b"12345").unwrap();
        std::fs::write(root.join("models/other.gguf.part"), b"12").unwrap();
        std::fs::write(root.join("models/other.gguf.part.json"), b"{}").unwrap();
        assert_eq!(cache.resolve("m", &catalogue).unwrap(), stored);

        let listed = cache.list(&catalogue).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!((listed[0].name.as_deref(), listed[0].bytes), (Some("m"), 5));
        assert!(listed[1].partial && listed[1].name.is_none());

        let outside = root.join("elsewhere.gguf");
        std::fs::write(&outside, b"mine").unwrap();
        assert!(cache.delete(outside.to_str().unwrap(), &catalogue).is_err());
        assert!(outside.exists());

        let deleted = cache.delete("m", &catalogue).unwrap();
        assert_eq!(deleted, [stored.clone()]);
        let partial = root.join("models/other.gguf.part");
        assert_eq!(
            cache
                .delete(partial.to_str().unwrap(), &catalogue)
                .unwrap()
                .len(),
            2
        );
        assert!(cache.list(&catalogue).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
