//! `regcred validate`: check Secrets against the rules; a report per Secret.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use regcred_host::PolicyRunner;
use regcred_types::{REGCREDENTIALS_TYPE, SecretManifest, ValidationReport};
use serde::Serialize;

use super::input::{Object, read_objects};
use super::kube_args::{KubeArgs, runtime};
use super::policy::explain;
use super::{EXIT_INVALID, EXIT_OK, PolicyConfigArg, ReportFormat, load_config, print_report};

#[derive(Debug, Args)]
pub(super) struct ValidateArgs {
    /// Files with manifests (YAML or JSON, multi-document, kind: List; `-` for stdin);
    /// or, as kubectl names them, `secret NAME...` (Secrets in the cluster, in -n) or
    /// `secrets` (every credential Secret of -n, or of every namespace with -A).
    #[arg(value_name = "FILE", required_unless_present = "filename")]
    pub(super) files: Vec<PathBuf>,
    /// The same as FILE, kubectl style; may be repeated.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub(super) filename: Vec<PathBuf>,
    #[command(flatten)]
    pub(super) config: PolicyConfigArg,
    /// With `secret NAME...` or `secrets`: the namespace (default: the kubeconfig
    /// context's).
    #[arg(short = 'n', long)]
    pub(super) namespace: Option<String>,
    /// With `secrets`: every namespace.
    #[arg(short = 'A', long)]
    pub(super) all_namespaces: bool,
    #[command(flatten)]
    pub(super) kube: KubeArgs,
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

/// The Secret types that carry registry credentials.
const CREDENTIAL_TYPES: [&str; 3] = [
    REGCREDENTIALS_TYPE,
    regcred_types::DOCKER_CONFIG_JSON_TYPE,
    regcred_types::DOCKERCFG_TYPE,
];

/// What to validate: files, or Secrets in the cluster (`secret NAME...`, `secrets`, as
/// kubectl names resources; a file of that name wins).
enum Target<'a> {
    Files(Vec<&'a PathBuf>),
    Named(Vec<String>),
    All,
}

fn target(args: &ValidateArgs) -> Target<'_> {
    let first = args.files.first().and_then(|p| p.to_str());
    let is_file = args.files.first().is_some_and(|p| p.exists());
    match first {
        Some("secret") if !is_file && args.filename.is_empty() => Target::Named(
            args.files[1..]
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        ),
        Some("secrets") if !is_file && args.filename.is_empty() && args.files.len() == 1 => {
            Target::All
        }
        _ => Target::Files(args.files.iter().chain(&args.filename).collect()),
    }
}

/// The Secrets `secret NAME...` or `secrets` names, as (where, Secret) pairs.
fn cluster_secrets(
    args: &ValidateArgs,
    target: &Target<'_>,
) -> Result<Vec<(String, SecretManifest)>> {
    use k8s_openapi::api::core::v1::Secret;
    runtime()?.block_on(async {
        let (client, default_namespace) = args.kube.client().await?;
        let namespace = args.namespace.clone().unwrap_or(default_namespace);
        let mut found = Vec::new();
        match target {
            Target::Named(names) => {
                anyhow::ensure!(
                    !names.is_empty(),
                    "validate secret: name at least one Secret"
                );
                let api: kube::Api<Secret> = kube::Api::namespaced(client, &namespace);
                for name in names {
                    let secret = api
                        .get(name)
                        .await
                        .with_context(|| format!("cannot get Secret {namespace}/{name}"))?;
                    found.push((
                        format!("secret/{namespace}/{name}"),
                        SecretManifest::from(secret),
                    ));
                }
            }
            Target::All => {
                let api: kube::Api<Secret> = if args.all_namespaces {
                    kube::Api::all(client)
                } else {
                    kube::Api::namespaced(client, &namespace)
                };
                for type_ in CREDENTIAL_TYPES {
                    let params = kube::api::ListParams::default().fields(&format!("type={type_}"));
                    let list = api
                        .list(&params)
                        .await
                        .with_context(|| format!("cannot list Secrets of type {type_}"))?;
                    for secret in list.items {
                        let ns = secret.metadata.namespace.clone().unwrap_or_default();
                        let name = secret.metadata.name.clone().unwrap_or_default();
                        found.push((format!("secret/{ns}/{name}"), SecretManifest::from(secret)));
                    }
                }
                found.sort_by(|a, b| a.0.cmp(&b.0));
            }
            Target::Files(_) => {}
        }
        Ok(found)
    })
}

/// The report on one Secret from `file` (a path, or `secret/NAMESPACE/NAME`): checked
/// when its type carries registry credentials, skipped otherwise.
fn report(
    policy: &PolicyRunner,
    config: &regcred_types::PolicyConfig,
    file: String,
    secret: &SecretManifest,
) -> Result<FileReport> {
    let type_ = secret.secret_type();
    if CREDENTIAL_TYPES.contains(&type_) {
        let report = policy.validate(secret, config).map_err(explain)?;
        return Ok(FileReport::Checked { file, report });
    }
    Ok(FileReport::Skipped {
        file,
        secret: secret.display_name(),
        skipped: format!("type {type_} carries no registry credentials"),
    })
}

pub(super) fn run(policy: &PolicyRunner, args: ValidateArgs) -> Result<u8> {
    let config = load_config(&args.config, policy)?;
    let mut reports = Vec::new();
    let target = target(&args);
    if !matches!(target, Target::Files(_)) {
        for (file, secret) in cluster_secrets(&args, &target)? {
            reports.push(report(policy, &config, file, &secret)?);
        }
    }
    let files = match &target {
        Target::Files(files) => files.clone(),
        _ => Vec::new(),
    };
    for path in files {
        let file = path.display().to_string();
        for object in read_objects(path)? {
            match object {
                Object::Secret(secret) => {
                    reports.push(report(policy, &config, file.clone(), &secret)?);
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
    print_report(&reports, args.output, |reports| {
        let mut out = std::io::stdout().lock();
        for report in reports {
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
        Ok(())
    })?;
    Ok(if invalid { EXIT_INVALID } else { EXIT_OK })
}
