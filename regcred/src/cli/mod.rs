//! The `regcred` command line.
mod cri_proxy;
mod input;
mod policy;
mod schema;
mod webhook;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use regcred_types::{
    PolicyConfig, REGCREDENTIALS_TYPE, RuntimeProfile, SecretManifest, ValidationReport, keys,
};
use serde::Serialize;

use input::{Object, read_objects, read_secrets, read_value_file, trim_newline};
use policy::{PolicyArgs, PolicyCommand, explain};
use regcred_host::PolicyRunner;

/// Exit status: the command ran and everything was valid (or there was nothing to judge).
const EXIT_OK: u8 = 0;
/// Exit status: some Secret is invalid.
const EXIT_INVALID: u8 = 1;
/// Exit status: an input could not be read or parsed, or an argument is wrong.
const EXIT_USAGE: u8 = 2;

/// Validate, resolve, create and convert image pull secrets of type
/// kubernetes.io/regcredentials: registry credentials that map directly onto the CRI
/// AuthConfig, for any registry.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the credentials a pull of IMAGE would try, in order, as CRI AuthConfigs.
    #[command(
        after_help = "Exit status: 0 when it ran (an empty list is an answer), 2 when an \
                            input cannot be read or parsed or the image reference is malformed."
    )]
    Resolve(ResolveArgs),
    /// Check Secrets (regcredentials, dockerconfigjson, dockercfg) against the rules.
    #[command(
        after_help = "Exit status: 0 all valid, 1 any invalid, 2 unreadable input. \
                            Objects that are not credential Secrets are listed as skipped."
    )]
    Validate(ValidateArgs),
    /// Print a validated kubernetes.io/regcredentials Secret manifest.
    #[command(
        after_help = "Example:\n  printf %s \"$TOKEN\" | regcred create quay --server quay.io \
                            --username robot --password-stdin -n apps | kubectl apply -f -"
    )]
    Create(CreateArgs),
    /// Turn dockerconfigjson/dockercfg Secrets into regcredentials Secrets, one per registry.
    Convert(ConvertArgs),
    /// Write the JSON schemas (Secret manifest, AuthConfig, policy configuration).
    Schema(schema::SchemaArgs),
    /// Export or inspect the WebAssembly policy module.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Serve the validating admission webhook (HTTPS) that checks Secrets as they are
    /// created and updated.
    #[command(
        after_help = "Example:\n  regcred webhook --tls-cert tls.crt --tls-key tls.key \
                            --addr 127.0.0.1:8443 --metrics-addr 127.0.0.1:9090"
    )]
    Webhook(webhook::WebhookArgs),
    /// Serve the CRI image-service proxy: kubelet's imageServiceEndpoint, forwarding to the
    /// runtime and supplying pods' regcredentials on PullImage.
    #[command(
        after_help = "Example:\n  regcred cri-proxy --listen unix:///run/regcred/cri-proxy.sock \
                            --runtime unix:///run/containerd/containerd.sock --secrets-from kube \
                            --metrics-addr 127.0.0.1:9091"
    )]
    CriProxy(cri_proxy::CriProxyArgs),
}

#[derive(Debug, Args)]
struct PolicyConfigArg {
    /// Policy configuration (JSON or YAML): allowedRegistries, maxValueBytes, maxSecretBytes.
    #[arg(long, value_name = "FILE")]
    policy_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ResolveArgs {
    /// The image as written in the pod spec, e.g. registry.example.com:5000/team/app:1.0.
    #[arg(long)]
    image: String,
    /// A file with pull Secrets (YAML or JSON; `-` for stdin), in imagePullSecrets order.
    #[arg(long = "secret", value_name = "FILE", required = true)]
    secrets: Vec<PathBuf>,
    /// The container runtime that receives the AuthConfig.
    #[arg(long, value_enum, default_value_t = ProfileArg::Containerd)]
    runtime_profile: ProfileArg,
    #[command(flatten)]
    config: PolicyConfigArg,
    /// Print passwords, auth and tokens instead of "<redacted>".
    #[arg(long)]
    show_secrets: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    /// serverAddress becomes https://HOST[:PORT] of the registry containerd contacts.
    Containerd,
    /// username/password/auth only; tokens (ignored by CRI-O) are left out.
    #[value(name = "cri-o")]
    CriO,
    /// Every field exactly as written in the Secret.
    Passthrough,
}

impl From<ProfileArg> for RuntimeProfile {
    fn from(value: ProfileArg) -> Self {
        match value {
            ProfileArg::Containerd => Self::Containerd,
            ProfileArg::CriO => Self::CriO,
            ProfileArg::Passthrough => Self::Passthrough,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Files with manifests (YAML or JSON, multi-document, kind: List; `-` for stdin).
    #[arg(value_name = "FILE", required_unless_present = "filename")]
    files: Vec<PathBuf>,
    /// The same as FILE, kubectl style; may be repeated.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    filename: Vec<PathBuf>,
    #[command(flatten)]
    config: PolicyConfigArg,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Text)]
    output: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ManifestFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The Secret's name.
    name: String,
    /// The registry: [https://|http://]HOST[:PORT][/PATH]; HOST may use * ? [..] globs.
    #[arg(long, value_name = "ADDR")]
    server: String,
    /// User name (needs --password-stdin or --password-file).
    #[arg(long, requires = "password_source")]
    username: Option<String>,
    /// Read the password from standard input (one trailing newline is dropped).
    #[arg(long, group = "password_source", requires = "username")]
    password_stdin: bool,
    /// Read the password from a file (one trailing newline is dropped).
    #[arg(
        long,
        value_name = "FILE",
        group = "password_source",
        requires = "username"
    )]
    password_file: Option<PathBuf>,
    /// Read an OAuth2 identity (refresh) token from a file.
    #[arg(long, value_name = "FILE")]
    identity_token_file: Option<PathBuf>,
    /// Read a registry bearer token from a file.
    #[arg(long, value_name = "FILE")]
    registry_token_file: Option<PathBuf>,
    /// The Secret's namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ManifestFormat::Yaml)]
    output: ManifestFormat,
    /// Hand the manifest to `kubectl apply -f -` instead of printing it (kubectl from
    /// $KUBECTL, else PATH; the cluster from KUBECONFIG as kubectl finds it).
    #[arg(long)]
    apply: bool,
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// Files with dockerconfigjson or dockercfg Secrets (`-` for stdin).
    #[arg(value_name = "FILE", required_unless_present = "filename")]
    files: Vec<PathBuf>,
    /// The same as FILE, kubectl style; may be repeated.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    filename: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ManifestFormat::Yaml)]
    output: ManifestFormat,
}

/// Parses the arguments (naming itself `kubectl regcred` when run as a kubectl plugin),
/// runs the command and maps the outcome onto the exit status.
pub(crate) fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut command = Cli::command();
    if invoked_as.starts_with("kubectl-") {
        command = command.bin_name("kubectl regcred");
    }
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Resolve(args) => resolve(&cli.policy.runner()?, args),
        Command::Validate(args) => validate(&cli.policy.runner()?, args),
        Command::Create(args) => create(&cli.policy.runner()?, args),
        Command::Convert(args) => convert(&cli.policy.runner()?, args),
        Command::Schema(args) => schema::run(&args),
        Command::Policy(command) => policy::run(&command),
        Command::Webhook(args) => webhook::run(&cli.policy, args),
        Command::CriProxy(args) => cri_proxy::run(cli.policy.runner()?, args),
    }
}

fn load_config(arg: &PolicyConfigArg) -> Result<PolicyConfig> {
    let Some(path) = &arg.policy_config else {
        return Ok(PolicyConfig::default());
    };
    let text = input::read_text(path)?;
    let config: PolicyConfig = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a policy configuration", path.display()))?;
    regcred_policy::check_config(&config)
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
    Ok(config)
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn resolve(policy: &PolicyRunner, args: ResolveArgs) -> Result<u8> {
    let config = load_config(&args.config)?;
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
    print_json(&candidates)?;
    Ok(EXIT_OK)
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

fn validate(policy: &PolicyRunner, args: ValidateArgs) -> Result<u8> {
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

fn create(policy: &PolicyRunner, args: CreateArgs) -> Result<u8> {
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
    if args.apply {
        return kubectl_apply(&secret);
    }
    print_manifests(&[secret], args.output)?;
    Ok(EXIT_OK)
}

/// Pipes the manifest into `kubectl apply -f -`; kubectl's own output and errors pass
/// through. The manifest never reaches a command line or a log.
fn kubectl_apply(secret: &SecretManifest) -> Result<u8> {
    let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let manifest = serde_json::to_vec(secret)?;
    let mut child = std::process::Command::new(&kubectl)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", Path::new(&kubectl).display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&manifest)
            .context("cannot hand the manifest to kubectl")?;
    }
    let status = child.wait().context("kubectl did not finish")?;
    if !status.success() {
        bail!(
            "kubectl apply failed ({status}); the Secret {} was not applied",
            secret.display_name()
        );
    }
    Ok(EXIT_OK)
}

fn print_manifests(secrets: &[SecretManifest], format: ManifestFormat) -> Result<()> {
    match format {
        ManifestFormat::Json if secrets.len() == 1 => print_json(&secrets[0]),
        ManifestFormat::Json => print_json(&serde_json::json!({
            "apiVersion": "v1", "kind": "List", "items": secrets,
        })),
        ManifestFormat::Yaml => {
            let mut out = std::io::stdout().lock();
            for (i, secret) in secrets.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                out.write_all(serde_yaml::to_string(secret)?.as_bytes())?;
            }
            Ok(())
        }
    }
}

fn convert(policy: &PolicyRunner, args: ConvertArgs) -> Result<u8> {
    let mut converted = Vec::new();
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
        }
        converted.extend(secrets);
    }
    if convertible == 0 {
        bail!("no dockerconfigjson or dockercfg Secret in the input");
    }
    print_manifests(&converted, args.output)?;
    Ok(EXIT_OK)
}
