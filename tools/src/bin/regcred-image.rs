//! Writes regcred's OCI image archive (`scripts/image` runs it; see
//! `regcred_tools::oci_image` for what the image holds and why it is reproducible).
//!
//! Usage: `regcred-image --binary PATH [--nri-plugin PATH] --out FILE --name NAME
//! --source-date-epoch SECONDS [--label KEY=VALUE]...`. Prints the manifest digest, the config digest (containerd's
//! image ID) and the layer's files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use regcred_tools::oci_image::{ImageInput, build};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("regcred-image: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut binary = None;
    let mut nri_plugin = None;
    let mut out = None;
    let mut name = None;
    let mut epoch = None;
    let mut labels = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--binary" => binary = Some(PathBuf::from(value)),
            "--nri-plugin" => nri_plugin = Some(PathBuf::from(value)),
            "--out" => out = Some(PathBuf::from(value)),
            "--name" => name = Some(value),
            "--source-date-epoch" => {
                epoch = Some(
                    value
                        .parse::<u64>()
                        .map_err(|e| format!("--source-date-epoch {value}: {e}"))?,
                );
            }
            "--label" => {
                let (key, value) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--label {value}: not KEY=VALUE"))?;
                labels.insert(key.to_owned(), value.to_owned());
            }
            other => {
                return Err(format!(
                    "unknown argument {other} (see the source's header)"
                ));
            }
        }
    }
    let missing = |flag: &str| format!("missing {flag}");
    let input = ImageInput {
        binary: binary.ok_or_else(|| missing("--binary"))?,
        nri_plugin,
        name: name.ok_or_else(|| missing("--name"))?,
        source_date_epoch: epoch.ok_or_else(|| missing("--source-date-epoch"))?,
        labels,
    };
    let out = out.ok_or_else(|| missing("--out"))?;
    let image = build(&input)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    // A temporary name, then rename: an interrupted build leaves no half archive.
    let tmp = out.with_extension("tar.tmp");
    std::fs::write(&tmp, &image.archive).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("renaming to {}: {e}", out.display()))?;
    println!("image     {}", input.name);
    println!(
        "archive   {} ({} bytes)",
        out.display(),
        image.archive.len()
    );
    println!("manifest  {}", image.manifest_digest);
    println!("config    {}", image.config_digest);
    for file in &image.files {
        println!("file      {file}");
    }
    Ok(())
}
