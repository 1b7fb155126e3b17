//! The `regcred` command line.
mod apply;
mod convert;
mod create;
mod credential_provider;
mod cri_proxy;
mod doctor;
mod explain;
mod input;
mod kube_args;
mod node;
mod node_cleanup;
mod policy;
mod resolve;
mod schema;
mod validate;
mod webhook;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use regcred_types::{PolicyConfig, RuntimeProfile, SecretManifest};
use serde::Serialize;

use policy::{PolicyArgs, PolicyCommand};

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
    Resolve(resolve::ResolveArgs),
    /// Explain a pod's pulls from the cluster: its pull Secrets and what became of each,
    /// and for each image the credentials a pull tries, in order (values redacted).
    #[command(after_help = "Example:\n  kubectl regcred explain my-pod -n apps\n  \
                            kubectl regcred explain my-pod -n apps -o json\n\
                            Exit status: 0 when it ran, 2 when the pod or the cluster cannot be \
                            read.")]
    Explain(explain::ExplainArgs),
    /// Check that regcred works: the cluster (webhook configuration, caBundle, the webhook
    /// answering through the API server, each node's pull path) or, with --node, this
    /// node (kubelet's endpoint, containerd's NRI validator, the agent, its records).
    #[command(
        after_help = "Examples:\n  kubectl regcred doctor\n  sudo regcred doctor --node\n\
                            Exit status: 0 no check failed (warnings allowed), 1 a check failed, \
                            2 doctor itself could not run."
    )]
    Doctor(doctor::DoctorArgs),
    /// Check Secrets (regcredentials, dockerconfigjson, dockercfg) against the rules.
    #[command(
        after_help = "Exit status: 0 all valid, 1 any invalid, 2 unreadable input. \
                            Objects that are not credential Secrets are listed as skipped."
    )]
    Validate(validate::ValidateArgs),
    /// Print a validated kubernetes.io/regcredentials Secret manifest.
    #[command(
        after_help = "Examples:\n  printf %s \"$TOKEN\" | regcred create quay --server quay.io \
                            --username robot --password-stdin -n apps | kubectl apply -f -\n  \
                            printf %s \"$TOKEN\" | regcred create quay --server quay.io \
                            --username robot --password-stdin -n apps --apply"
    )]
    Create(create::CreateArgs),
    /// Turn dockerconfigjson/dockercfg Secrets into regcredentials Secrets, one per registry.
    #[command(
        after_help = "Examples:\n  kubectl get secret old-pull -n apps -o yaml | regcred convert - \
                            > new-pull.yaml\n  \
                            kubectl get secret old-pull -n apps -o yaml | regcred convert - \
                            --apply --dry-run=server"
    )]
    Convert(convert::ConvertArgs),
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
    /// Be kubelet's credential provider plugin (credentialprovider.kubelet.k8s.io/v1): read
    /// a CredentialProviderRequest on stdin, answer with the pod's pull Secret's username
    /// and password, read with the pod's service-account token.
    #[command(
        after_help = "kubelet runs it per pull (--image-credential-provider-config, \
                            --image-credential-provider-bin-dir); see deploy/credential-provider. \
                            Exit status: 0 answered (possibly with no credentials), 2 any error \
                            (the reason on stderr)."
    )]
    CredentialProvider(credential_provider::CredentialProviderArgs),
    /// Install regcred's node side on this host (systemd services, containerd's and
    /// kubelet's drop-ins), undo it, or show it.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Print a shell completion script for regcred's commands and flags.
    #[command(after_help = "Examples:\n  source <(regcred completion bash)\n  \
                            regcred completion zsh > \"${fpath[1]}/_regcred\"\n  \
                            regcred completion fish > ~/.config/fish/completions/regcred.fish")]
    Completion(CompletionArgs),
}

/// Arguments of `regcred completion`.
#[derive(Debug, Args)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: CompletionShell,
    /// The command name the script completes (e.g. kubectl-regcred for the plugin's file).
    #[arg(long, value_name = "NAME", default_value = "regcred")]
    bin_name: String,
}

/// The shells `regcred completion` writes for.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
struct PolicyConfigArg {
    /// Policy configuration (JSON or YAML): allowedRegistries, maxValueBytes, maxSecretBytes.
    #[arg(long, value_name = "FILE")]
    policy_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// `-o` of the commands that print a report (`validate`, `resolve`, `explain`,
/// `doctor`): lines for people, or one JSON or YAML document of the same shape for
/// scripts (docs/versioning.md, "The CLI's JSON output").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
    /// The same document as YAML.
    Yaml,
}

/// Prints `report` as `format` asks; `text` prints it with `human`.
fn print_report<T: Serialize>(
    report: &T,
    format: ReportFormat,
    human: impl FnOnce(&T) -> Result<()>,
) -> Result<()> {
    match format {
        ReportFormat::Text => human(report),
        ReportFormat::Json => print_json(report),
        ReportFormat::Yaml => {
            std::io::stdout()
                .lock()
                .write_all(serde_yaml::to_string(report)?.as_bytes())?;
            Ok(())
        }
    }
}

/// `--log-format` of the servers (`webhook`, `cri-proxy`), mapped onto the serving
/// layer's [`regcred_serve::LogFormat`] (which knows nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    /// One JSON object per line (docs/logs.md).
    Json,
    /// Human-readable lines (journald, kubectl logs).
    Text,
}

impl From<LogFormatArg> for regcred_serve::LogFormat {
    fn from(format: LogFormatArg) -> Self {
        match format {
            LogFormatArg::Json => Self::Json,
            LogFormatArg::Text => Self::Text,
        }
    }
}

/// How `create` and `convert` print manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ManifestFormat {
    Yaml,
    Json,
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
        Command::Resolve(args) => resolve::run(&cli.policy.runner()?, args),
        Command::Explain(args) => explain::run(&cli.policy.runner()?, args),
        Command::Doctor(args) => doctor::run(args),
        Command::Validate(args) => validate::run(&cli.policy.runner()?, args),
        Command::Create(args) => create::run(&cli.policy.runner()?, args),
        Command::Convert(args) => convert::run(&cli.policy.runner()?, args),
        Command::Schema(args) => schema::run(&args),
        Command::Policy(command) => policy::run(&command),
        Command::Webhook(args) => webhook::run(&cli.policy, args),
        Command::CriProxy(args) => cri_proxy::run(cli.policy.runner()?, args),
        Command::CredentialProvider(args) => credential_provider::run(cli.policy.runner()?, args),
        Command::Node(command) => node::run(&command),
        Command::Completion(args) => {
            let shell = match args.shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), &args.bin_name, &mut out);
            std::io::stdout()
                .lock()
                .write_all(&out)
                .context("cannot write the completion script")?;
            Ok(EXIT_OK)
        }
    }
}

/// The policy configuration `arg` names (the default without one), checked by `policy` as
/// every evaluation checks it, so that a wrong one fails at start, naming the file.
fn load_config(arg: &PolicyConfigArg, policy: &regcred_host::PolicyRunner) -> Result<PolicyConfig> {
    let Some(path) = &arg.policy_config else {
        return Ok(PolicyConfig::default());
    };
    let text = input::read_text(path)?;
    let config: PolicyConfig = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a policy configuration", path.display()))?;
    match policy.check_config(&config) {
        Ok(()) => {}
        Err(regcred_host::EvalError::Rejected { message, .. }) => {
            anyhow::bail!("{}: {message}", path.display())
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot check {}", path.display()));
        }
    }
    Ok(config)
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
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
