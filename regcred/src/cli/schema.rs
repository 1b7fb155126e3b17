//! `regcred schema`: write the JSON schemas.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use super::EXIT_OK;

#[derive(Debug, Args)]
pub(super) struct SchemaArgs {
    /// The directory to write the schema files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub(super) out: PathBuf,
}

pub(super) fn run(args: &SchemaArgs) -> Result<u8> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for file in regcred_types::schema::all() {
        let path = args.out.join(file.file_name);
        std::fs::write(&path, file.to_pretty_json())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(EXIT_OK)
}
