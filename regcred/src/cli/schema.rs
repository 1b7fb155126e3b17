//! `regcred schema`: write the JSON schemas.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use super::EXIT_OK;

#[derive(Debug, Args)]
pub(super) struct SchemaArgs {
    /// The directory to write the schema files into (created if missing).
    #[arg(long, value_name = "DIR", required_unless_present = "chart")]
    pub(super) out: Option<PathBuf>,
    /// Also (or only) write the Helm chart's values.schema.json into this chart
    /// directory (deploy/chart).
    #[arg(long, value_name = "DIR")]
    pub(super) chart: Option<PathBuf>,
}

pub(super) fn run(args: &SchemaArgs) -> Result<u8> {
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        for file in regcred_types::schema::all() {
            let path = out.join(file.file_name);
            std::fs::write(&path, file.to_pretty_json())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if let Some(chart) = &args.chart {
        let path = chart.join(crate::chart::SCHEMA_FILE);
        std::fs::write(&path, crate::chart::values_schema_text())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(EXIT_OK)
}
