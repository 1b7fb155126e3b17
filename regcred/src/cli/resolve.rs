//! `regcred resolve`: the credentials a pull of an image would try, in order.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use regcred_host::PolicyRunner;
use regcred_types::SecretManifest;

use super::input::read_secrets;
use super::policy::explain;
use super::{EXIT_OK, PolicyConfigArg, ProfileArg, ReportFormat, load_config, print_report};

#[derive(Debug, Args)]
pub(super) struct ResolveArgs {
    /// The image as written in the pod spec, e.g. registry.example.com:5000/team/app:1.0.
    #[arg(long)]
    pub(super) image: String,
    /// A file with pull Secrets (YAML or JSON; `-` for stdin), in imagePullSecrets order.
    #[arg(long = "secret", value_name = "FILE", required = true)]
    pub(super) secrets: Vec<PathBuf>,
    /// The container runtime that receives the AuthConfig.
    #[arg(long, value_enum, default_value_t = ProfileArg::Containerd)]
    pub(super) runtime_profile: ProfileArg,
    #[command(flatten)]
    pub(super) config: PolicyConfigArg,
    /// Print passwords, auth and tokens instead of "<redacted>".
    #[arg(long)]
    pub(super) show_secrets: bool,
    /// Output format: the candidates as JSON (the default) or YAML, or a line each.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Json)]
    pub(super) output: ReportFormat,
}

pub(super) fn run(policy: &PolicyRunner, args: ResolveArgs) -> Result<u8> {
    let config = load_config(&args.config, policy)?;
    let secrets: Vec<SecretManifest> = read_secrets(&args.secrets)?
        .into_iter()
        .map(|(_, secret)| secret)
        .collect();
    let resolution = policy
        .resolve(&args.image, &secrets, args.runtime_profile.into(), &config)
        .map_err(explain)?;
    for warning in &resolution.warnings {
        eprintln!("warning: {warning}");
    }
    let candidates: Vec<_> = if args.show_secrets {
        resolution.candidates
    } else {
        resolution.candidates.iter().map(|c| c.redacted()).collect()
    };
    print_report(&candidates, args.output, |candidates| {
        if candidates.is_empty() {
            println!(
                "no candidate: a pull of {} goes without credentials",
                args.image
            );
        }
        for (i, c) in candidates.iter().enumerate() {
            let a = &c.auth_config;
            let sent: Vec<&str> = [
                ("password", a.password.is_empty()),
                ("auth", a.auth.is_empty()),
                ("identityToken", a.identity_token.is_empty()),
                ("registryToken", a.registry_token.is_empty()),
            ]
            .into_iter()
            .filter_map(|(key, empty)| (!empty).then_some(key))
            .collect();
            println!(
                "{}. {} (matched as {}): serverAddress {:?}, username {:?}, with {}",
                i + 1,
                c.secret,
                c.matched,
                a.server_address,
                a.username,
                if sent.is_empty() {
                    "no secret value".to_owned()
                } else {
                    sent.join(", ")
                }
            );
        }
        Ok(())
    })?;
    Ok(EXIT_OK)
}
