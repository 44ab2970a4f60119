//! `gemmakit models`: what the cache holds (list), where a model is (path), what the catalogue
//! offers (catalogue), and deleting one (delete).

use clap::{Args, Subcommand};
use gemmakit::Result;
use gemmakit::delivery::{Catalogue, ModelCache};
use gemmakit::error::gib;

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// The cached models and unfinished downloads: name, size, path (the default).
    List,
    /// The path of a cached model (a catalogue name or a file).
    Path { name: String },
    /// Deletes a cached model (and its partial download).
    Delete { name: String },
    /// The catalogue: name, quantization, size, minimum RAM, repository file.
    Catalogue,
}

pub fn execute(args: ModelsArgs) -> Result<()> {
    let catalogue = Catalogue::from_env()?;
    let cache = ModelCache::from_env();
    match args.action.unwrap_or(Action::List) {
        Action::List => {
            let files = cache.list(&catalogue)?;
            if files.is_empty() {
                eprintln!("gemmakit: no models in {}", cache.models_dir().display());
            }
            for f in files {
                let name = f.name.as_deref().unwrap_or("-");
                let state = if f.partial { " (partial)" } else { "" };
                println!("{name}\t{}{state}\t{}", gib(f.bytes), f.path.display());
            }
        }
        Action::Path { name } => println!("{}", cache.resolve(&name, &catalogue)?.display()),
        Action::Delete { name } => {
            for path in cache.delete(&name, &catalogue)? {
                println!("deleted {}", path.display());
            }
        }
        Action::Catalogue => {
            for m in &catalogue.models {
                let size = m.size.map_or("?".into(), gib);
                let pinned = if m.sha256.is_some() {
                    "sha256 pinned"
                } else {
                    ""
                };
                println!(
                    "{}\t{}\t{size}\t{} MiB RAM\t{}/{}\t{pinned}",
                    m.name, m.quantization, m.min_ram_mb, m.repo, m.file
                );
            }
        }
    }
    Ok(())
}
