//! `regcred convert`: dockerconfigjson/dockercfg Secrets into regcredentials Secrets,
//! printed or applied.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use regcred_host::PolicyRunner;
use regcred_types::PolicyConfig;

use super::apply::{ApplyArgs, apply};
use super::input::read_secrets;
use super::policy::explain;
use super::{EXIT_INVALID, EXIT_OK, ManifestFormat, print_manifests};

#[derive(Debug, Args)]
pub(super) struct ConvertArgs {
    /// Files with dockerconfigjson or dockercfg Secrets (`-` for stdin).
    #[arg(value_name = "FILE", required_unless_present = "filename")]
    pub(super) files: Vec<PathBuf>,
    /// The same as FILE, kubectl style; may be repeated.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub(super) filename: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ManifestFormat::Yaml)]
    pub(super) output: ManifestFormat,
    #[command(flatten)]
    pub(super) apply: ApplyArgs,
}

pub(super) fn run(policy: &PolicyRunner, args: ConvertArgs) -> Result<u8> {
    let mut converted = Vec::new();
    let mut invalid = Vec::new();
    let mut convertible = 0;
    let files: Vec<PathBuf> = args.files.iter().chain(&args.filename).cloned().collect();
    for (path, secret) in read_secrets(&files)? {
        let type_ = secret.secret_type();
        if type_ != regcred_types::DOCKER_CONFIG_JSON_TYPE && type_ != regcred_types::DOCKERCFG_TYPE
        {
            eprintln!(
                "warning: {}: {}: skipped (type {type_} is not a Docker config Secret)",
                path.display(),
                secret.display_name()
            );
            continue;
        }
        convertible += 1;
        let secrets = policy
            .convert(&secret)
            .map_err(explain)
            .with_context(|| format!("cannot convert {}", path.display()))?;
        for secret in &secrets {
            let report = policy
                .validate(secret, &PolicyConfig::default())
                .map_err(explain)?;
            for v in &report.violations {
                eprintln!("warning: converted {}: {v}", report.secret);
            }
            if !report.valid {
                invalid.push(report.secret);
            }
        }
        converted.extend(secrets);
    }
    if convertible == 0 {
        bail!("no dockerconfigjson or dockercfg Secret in the input");
    }
    // Any --apply refuses an invalid conversion, so that --dry-run=client predicts the
    // real run.
    if args.apply.apply && !invalid.is_empty() {
        eprintln!(
            "error: not applying: the converted Secret(s) {} break the rules above; \
             nothing was sent",
            invalid.join(", ")
        );
        return Ok(EXIT_INVALID);
    }
    if args.apply.sends() {
        apply(converted, &args.apply)?;
        return Ok(EXIT_OK);
    }
    print_manifests(&converted, args.output)?;
    Ok(EXIT_OK)
}
