//! `regcred validate`: check Secrets against the rules; a report per Secret.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use regcred_host::PolicyRunner;
use regcred_types::{REGCREDENTIALS_TYPE, ValidationReport};
use serde::Serialize;

use super::input::{Object, read_objects};
use super::policy::explain;
use super::{EXIT_INVALID, EXIT_OK, PolicyConfigArg, load_config, print_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(super) struct ValidateArgs {
    /// Files with manifests (YAML or JSON, multi-document, kind: List; `-` for stdin).
    #[arg(value_name = "FILE", required_unless_present = "filename")]
    pub(super) files: Vec<PathBuf>,
    /// The same as FILE, kubectl style; may be repeated.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub(super) filename: Vec<PathBuf>,
    #[command(flatten)]
    pub(super) config: PolicyConfigArg,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Text)]
    pub(super) output: ReportFormat,
}

/// One line of `validate -o json`.
#[derive(Serialize)]
#[serde(untagged)]
enum FileReport {
    Checked {
        file: String,
        #[serde(flatten)]
        report: ValidationReport,
    },
    Skipped {
        file: String,
        secret: String,
        skipped: String,
    },
}

pub(super) fn run(policy: &PolicyRunner, args: ValidateArgs) -> Result<u8> {
    let config = load_config(&args.config)?;
    let mut reports = Vec::new();
    for path in args.files.iter().chain(&args.filename) {
        let file = path.display().to_string();
        for object in read_objects(path)? {
            match object {
                Object::Secret(secret) => {
                    let type_ = secret.secret_type();
                    if [
                        REGCREDENTIALS_TYPE,
                        regcred_types::DOCKER_CONFIG_JSON_TYPE,
                        regcred_types::DOCKERCFG_TYPE,
                    ]
                    .contains(&type_)
                    {
                        let report = policy.validate(&secret, &config).map_err(explain)?;
                        reports.push(FileReport::Checked {
                            file: file.clone(),
                            report,
                        });
                    } else {
                        reports.push(FileReport::Skipped {
                            file: file.clone(),
                            secret: secret.display_name(),
                            skipped: format!("type {type_} carries no registry credentials"),
                        });
                    }
                }
                Object::Other { kind, name } => reports.push(FileReport::Skipped {
                    file: file.clone(),
                    secret: name,
                    skipped: format!("kind {kind} is not a Secret"),
                }),
            }
        }
    }
    let invalid = reports
        .iter()
        .any(|r| matches!(r, FileReport::Checked { report, .. } if !report.valid));
    match args.output {
        ReportFormat::Json => print_json(&reports)?,
        ReportFormat::Text => {
            let mut out = std::io::stdout().lock();
            for report in &reports {
                match report {
                    FileReport::Checked { file, report } => {
                        let verdict = if report.valid { "valid" } else { "invalid" };
                        writeln!(out, "{file}: {}: {verdict}", report.secret)?;
                        for v in &report.violations {
                            writeln!(out, "  {}: {} ({})", v.field, v.message, v.error_type)?;
                        }
                        for w in &report.warnings {
                            writeln!(out, "  warning: {}: {}", w.field, w.message)?;
                        }
                    }
                    FileReport::Skipped {
                        file,
                        secret,
                        skipped,
                    } => writeln!(out, "{file}: {secret}: skipped ({skipped})")?,
                }
            }
        }
    }
    Ok(if invalid { EXIT_INVALID } else { EXIT_OK })
}
