//! `regcred create`: a validated regcredentials Secret manifest, printed or applied.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use regcred_host::PolicyRunner;
use regcred_types::{PolicyConfig, REGCREDENTIALS_TYPE, SecretManifest, keys};

use super::apply::{ApplyArgs, apply};
use super::input::{read_value_file, trim_newline};
use super::policy::explain;
use super::{EXIT_INVALID, EXIT_OK, ManifestFormat, print_manifests};

#[derive(Debug, Args)]
pub(super) struct CreateArgs {
    /// The Secret's name.
    pub(super) name: String,
    /// The registry: [https://|http://]HOST[:PORT][/PATH]; HOST may use * ? [..] globs.
    #[arg(long, value_name = "ADDR")]
    pub(super) server: String,
    /// User name (needs --password-stdin or --password-file).
    #[arg(long, requires = "password_source")]
    pub(super) username: Option<String>,
    /// Read the password from standard input (one trailing newline is dropped).
    #[arg(long, group = "password_source", requires = "username")]
    pub(super) password_stdin: bool,
    /// Read the password from a file (one trailing newline is dropped).
    #[arg(
        long,
        value_name = "FILE",
        group = "password_source",
        requires = "username"
    )]
    pub(super) password_file: Option<PathBuf>,
    /// Read an OAuth2 identity (refresh) token from a file.
    #[arg(long, value_name = "FILE")]
    pub(super) identity_token_file: Option<PathBuf>,
    /// Read a registry bearer token from a file.
    #[arg(long, value_name = "FILE")]
    pub(super) registry_token_file: Option<PathBuf>,
    /// The Secret's namespace.
    #[arg(short = 'n', long)]
    pub(super) namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ManifestFormat::Yaml)]
    pub(super) output: ManifestFormat,
    #[command(flatten)]
    pub(super) apply: ApplyArgs,
}

pub(super) fn run(policy: &PolicyRunner, args: CreateArgs) -> Result<u8> {
    let mut secret = SecretManifest::new(args.name, args.namespace, REGCREDENTIALS_TYPE);
    secret.insert_data(keys::SERVER_ADDRESS, args.server.as_bytes());
    if let Some(username) = &args.username {
        secret.insert_data(keys::USERNAME, username.as_bytes());
        let password = if args.password_stdin {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the password from standard input")?;
            trim_newline(text)
        } else if let Some(path) = &args.password_file {
            read_value_file(path, "password file")?
        } else {
            bail!("--username needs --password-stdin or --password-file");
        };
        secret.insert_data(keys::PASSWORD, password.as_bytes());
    }
    if let Some(path) = &args.identity_token_file {
        let token = read_value_file(path, "identity token file")?;
        secret.insert_data(keys::IDENTITY_TOKEN, token.as_bytes());
    }
    if let Some(path) = &args.registry_token_file {
        let token = read_value_file(path, "registry token file")?;
        secret.insert_data(keys::REGISTRY_TOKEN, token.as_bytes());
    }
    let report = policy
        .validate(&secret, &PolicyConfig::default())
        .map_err(explain)?;
    for w in &report.warnings {
        eprintln!("warning: {}: {}", w.field, w.message);
    }
    if !report.valid {
        for v in &report.violations {
            eprintln!("error: {}: {}", v.field, v.message);
        }
        eprintln!("error: not creating an invalid Secret {}", report.secret);
        return Ok(EXIT_INVALID);
    }
    if args.apply.sends() {
        apply(vec![secret], &args.apply)?;
        return Ok(EXIT_OK);
    }
    print_manifests(&[secret], args.output)?;
    Ok(EXIT_OK)
}
