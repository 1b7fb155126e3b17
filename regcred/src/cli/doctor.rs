//! `regcred doctor` (`kubectl regcred doctor`): is regcred working here? Each check is one
//! line, ok, warning or error, with what to do about it.
//!
//! Cluster side (the default, with the user's kubeconfig): the webhook configuration, its
//! caBundle and its expiry, the webhook answering through the API server (a server-side
//! dry run of an invalid Secret, which it must refuse), and on every node the image
//! endpoint kubelet reports (`/configz` through the API server). Node side (`--node`, on
//! the node): kubelet's configured endpoints, containerd's NRI validator, the agent's
//! socket answering, its records directory writable.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Serialize;

use super::kube_args::{KubeArgs, runtime};
use super::{ReportFormat, print_report};

/// Exit status when every check passed (warnings allowed).
const HEALTHY: u8 = 0;
/// Exit status when a check failed.
const UNHEALTHY: u8 = 1;

/// Arguments of `regcred doctor`.
#[derive(Debug, Args)]
pub(super) struct DoctorArgs {
    /// Check this node instead of the cluster (run it on the node, as root).
    #[arg(long)]
    node: bool,
    #[command(flatten)]
    kube: KubeArgs,
    /// Cluster: the ValidatingWebhookConfiguration regcred registers.
    #[arg(long, value_name = "NAME", default_value = "regcred-webhook")]
    webhook_configuration: String,
    /// Cluster: the namespace of the dry-run Secret that tests the webhook.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Node: kubelet's configuration file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/kubelet/config.yaml"
    )]
    kubelet_config: PathBuf,
    /// Node: the agent's socket (kubelet's imageServiceEndpoint).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/regcred/cri-proxy.sock"
    )]
    agent_socket: PathBuf,
    /// Node: the agent's pulled-image records directory.
    #[arg(long, value_name = "DIR", default_value = super::cri_proxy::DEFAULT_RECORDS_DIR)]
    records_dir: PathBuf,
    /// Node: containerd's configuration file (its imports are read too).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/containerd/config.toml"
    )]
    containerd_config: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ReportFormat::Text)]
    output: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warning,
    Error,
}

/// One check's result.
#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, check: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.0.push(Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: None,
        });
    }

    fn fail(
        &mut self,
        check: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }
}

pub(super) fn run(args: DoctorArgs) -> Result<u8> {
    let mut report = Report::default();
    if args.node {
        node_checks(&args, &mut report);
    } else {
        runtime()?.block_on(cluster_checks(&args, &mut report))?;
    }
    print_report(&report.0, args.output, |checks| {
        for c in checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Warning => "warning",
                Status::Error => "error",
            };
            println!("{status:<8} {}: {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                println!("         fix: {fix}");
            }
        }
        Ok(())
    })?;
    Ok(if report.0.iter().any(|c| c.status == Status::Error) {
        UNHEALTHY
    } else {
        HEALTHY
    })
}

async fn cluster_checks(args: &DoctorArgs, report: &mut Report) -> Result<()> {
    let (client, _) = args.kube.client().await?;
    let name = &args.webhook_configuration;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let configuration = match configurations.get_opt(name).await {
        Ok(Some(c)) => Some(c),
        Ok(None) => {
            report.fail(
                "webhook configuration",
                Status::Error,
                format!("ValidatingWebhookConfiguration {name} does not exist: regcredentials Secrets are not checked"),
                "helm install regcred deploy/chart (README.md, \"Install with Helm\")",
            );
            None
        }
        Err(err) => {
            report.fail(
                "webhook configuration",
                Status::Error,
                format!("cannot read ValidatingWebhookConfiguration {name}: {err}"),
                "run doctor with a kubeconfig that may read it",
            );
            None
        }
    };
    if let Some(configuration) = &configuration {
        let webhooks = configuration.webhooks.clone().unwrap_or_default();
        report.add(
            "webhook configuration",
            Status::Ok,
            format!("{name}: {} webhook(s)", webhooks.len()),
        );
        for webhook in &webhooks {
            ca_bundle_check(
                report,
                &webhook.name,
                webhook.client_config.ca_bundle.as_ref(),
            );
            if let Some(service) = &webhook.client_config.service {
                endpoints_check(report, &client, &service.namespace, &service.name).await;
            }
        }
        reachability_check(report, &client, &args.namespace, &webhooks).await;
    }
    node_endpoint_checks(report, &client).await;
    Ok(())
}

fn ca_bundle_check(report: &mut Report, webhook: &str, bundle: Option<&k8s_openapi::ByteString>) {
    let check = format!("caBundle of {webhook}");
    let Some(bundle) = bundle.filter(|b| !b.0.is_empty()) else {
        report.fail(
            check,
            Status::Error,
            "empty: the API server cannot trust the webhook's certificate",
            "webhook.certificate.mode selfManaged sets it within seconds of the webhook's start; \
             otherwise set it (mode secret) or check cert-manager's CA injector",
        );
        return;
    };
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&bundle.0)
        .filter_map(Result::ok)
        .collect();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let ends: Vec<i64> = certs
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .collect();
    let Some(latest) = ends.iter().max().copied() else {
        report.fail(
            check,
            Status::Error,
            "holds no PEM certificate",
            "set it to the PEM CA that signed the webhook's serving certificate",
        );
        return;
    };
    let days = (latest - now) / 86_400;
    if latest <= now {
        report.fail(
            check,
            Status::Error,
            "every CA in it has expired",
            "renew the CA (mode selfManaged renews it; cert-manager; or your own)",
        );
    } else if latest - now < 14 * 86_400 {
        report.fail(
            check,
            Status::Warning,
            format!("{} CA(s), the last ends in {days} day(s)", certs.len()),
            "renew the CA before it ends",
        );
    } else {
        report.add(
            check,
            Status::Ok,
            format!("{} CA(s), the last ends in {days} day(s)", certs.len()),
        );
    }
}

async fn endpoints_check(
    report: &mut Report,
    client: &kube::Client,
    namespace: &str,
    service: &str,
) {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let check = format!("webhook endpoints {namespace}/{service}");
    match slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
    {
        Ok(list) => {
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                .count();
            if ready == 0 {
                report.fail(
                    check,
                    Status::Error,
                    "no ready webhook pod behind the Service",
                    format!("kubectl -n {namespace} get pods -l app.kubernetes.io/name={service}"),
                );
            } else {
                report.add(check, Status::Ok, format!("{ready} ready pod(s)"));
            }
        }
        Err(err) => report.add(
            check,
            Status::Warning,
            format!("cannot list its EndpointSlices: {err}"),
        ),
    }
}

/// A server-side dry run of a Secret the rules refuse: the webhook must be called and
/// must refuse it; nothing is stored.
async fn reachability_check(
    report: &mut Report,
    client: &kube::Client,
    namespace: &str,
    webhooks: &[k8s_openapi::api::admissionregistration::v1::ValidatingWebhook],
) {
    let check = "webhook answers through the API server";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let probe = Secret {
        metadata: kube::api::ObjectMeta {
            // generateName: a Secret of any fixed name could already exist.
            generate_name: Some("regcred-doctor-probe-".to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/regcredentials".to_owned()),
        string_data: Some(
            [
                (
                    "serverAddress".to_owned(),
                    "https://registry.invalid".to_owned(),
                ),
                ("username".to_owned(), "doctor:probe".to_owned()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some("regcred-doctor".to_owned()),
    };
    match secrets.create(&params, &probe).await {
        Ok(_) => report.fail(
            check,
            Status::Error,
            "an invalid regcredentials Secret (a username with ':') passed a server-side dry run: \
             the webhook was not called or did not refuse it",
            "check the configuration's rules and matchConditions, and its failurePolicy",
        ),
        Err(kube::Error::Api(status)) => {
            let message = status.message;
            let ours = webhooks
                .iter()
                .any(|w| message.contains(&format!("admission webhook \"{}\" denied", w.name)));
            if ours {
                report.add(
                    check,
                    Status::Ok,
                    "an invalid Secret was refused by the webhook (dry run)",
                );
            } else if message.contains("failed calling webhook") {
                report.fail(
                    check,
                    Status::Error,
                    format!("the API server cannot call the webhook: {message}"),
                    "the webhook pods are down or unreachable, or the caBundle does not match \
                     their certificate (see the checks above)",
                );
            } else {
                report.fail(
                    check,
                    Status::Warning,
                    format!("the dry run was refused by something else: {message}"),
                    "run doctor with -n a namespace where you may create Secrets",
                );
            }
        }
        Err(err) => report.fail(
            check,
            Status::Error,
            format!("the dry run failed: {err}"),
            "check the API server",
        ),
    }
}

/// Each node's kubelet image endpoint, from `/configz` through the API server.
async fn node_endpoint_checks(report: &mut Report, client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = match nodes.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(err) => {
            report.add(
                "nodes",
                Status::Warning,
                format!("cannot list nodes: {err}"),
            );
            return;
        }
    };
    for node in list.items {
        let name = node.metadata.name.unwrap_or_default();
        let check = format!("node {name}");
        let request = axum::http::Request::get(format!("/api/v1/nodes/{name}/proxy/configz"))
            .body(Vec::new())
            .unwrap_or_default();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.request::<serde_json::Value>(request),
        )
        .await;
        let config = match answer {
            Ok(Ok(value)) => value,
            Ok(Err(err)) => {
                report.add(
                    check,
                    Status::Warning,
                    format!("cannot read kubelet's /configz: {err}"),
                );
                continue;
            }
            Err(_) => {
                report.add(
                    check,
                    Status::Warning,
                    "kubelet's /configz did not answer within 10 s",
                );
                continue;
            }
        };
        let kubelet = &config["kubeletconfig"];
        let image = kubelet["imageServiceEndpoint"].as_str().unwrap_or("");
        let runtime = kubelet["containerRuntimeEndpoint"].as_str().unwrap_or("");
        if image.is_empty() || image == runtime {
            report.add(
                check,
                Status::Warning,
                format!(
                    "kubelet pulls through the runtime directly ({runtime}): regcred's agent is \
                     not on this node's pull path (right only in credential-provider mode)"
                ),
            );
        } else {
            report.add(check, Status::Ok, format!("kubelet pulls through {image}"));
        }
    }
}

fn node_checks(args: &DoctorArgs, report: &mut Report) {
    let agent_socket = std::path::absolute(&args.agent_socket).unwrap_or(args.agent_socket.clone());
    let socket = format!("unix://{}", agent_socket.display());
    // kubelet's configuration.
    match std::fs::read_to_string(&args.kubelet_config)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|e| e.to_string())
        }) {
        Ok(config) => {
            let image = config["imageServiceEndpoint"].as_str().unwrap_or("");
            let same = image
                .strip_prefix("unix://")
                .is_some_and(|path| std::path::absolute(path).ok() == Some(agent_socket.clone()));
            if same {
                report.add(
                    "kubelet",
                    Status::Ok,
                    format!("imageServiceEndpoint is {socket}"),
                );
            } else {
                report.fail(
                    "kubelet",
                    Status::Error,
                    format!(
                        "imageServiceEndpoint is {:?}, not the agent's {socket}: pulls bypass regcred",
                        image
                    ),
                    "add deploy/nri/kubelet-regcred.conf to kubelet's --config-dir and restart kubelet",
                );
            }
        }
        Err(reason) => report.fail(
            "kubelet",
            Status::Error,
            format!("cannot read {}: {reason}", args.kubelet_config.display()),
            "pass --kubelet-config with kubelet's configuration file",
        ),
    }
    // containerd's NRI validator.
    match containerd_requires_regcred(&args.containerd_config) {
        Ok(true) => report.add(
            "containerd",
            Status::Ok,
            "its default NRI validator requires the plugin regcred",
        ),
        Ok(false) => report.fail(
            "containerd",
            Status::Warning,
            "no NRI validator requiring the plugin regcred: containers start unchecked while \
             regcred-nri is away (right only in the runtime-proxy and credential-provider modes)",
            "import deploy/nri/containerd-regcred.toml and restart containerd",
        ),
        Err(reason) => report.fail(
            "containerd",
            Status::Warning,
            format!("cannot read {}: {reason}", args.containerd_config.display()),
            "pass --containerd-config with containerd's configuration file",
        ),
    }
    // The agent answers on its socket.
    match std::os::unix::net::UnixStream::connect(&args.agent_socket) {
        Ok(_) => report.add(
            "agent",
            Status::Ok,
            format!("{} accepts connections", args.agent_socket.display()),
        ),
        Err(err) => report.fail(
            "agent",
            Status::Error,
            format!("{} does not answer: {err}", args.agent_socket.display()),
            "systemctl status regcred-cri-proxy (and journalctl -u regcred-cri-proxy)",
        ),
    }
    // Its records directory.
    records_check(&args.records_dir, report);
    report.add(
        "version",
        Status::Ok,
        format!("regcred {}", env!("CARGO_PKG_VERSION")),
    );
}

fn records_check(dir: &Path, report: &mut Report) {
    match tempfile::Builder::new()
        .prefix(".regcred-doctor-")
        .tempfile_in(dir)
    {
        Ok(_) => report.add(
            "records",
            Status::Ok,
            format!("{} is writable", dir.display()),
        ),
        Err(err) => report.fail(
            "records",
            Status::Error,
            format!("cannot write in {}: {err}", dir.display()),
            "the agent refuses private images until its records can be written: fix the \
             directory's space and permissions",
        ),
    }
}

/// Whether containerd's configuration or a file it imports requires the NRI plugin
/// regcred (`required_plugins = ["regcred"]`).
fn containerd_requires_regcred(config: &Path) -> Result<bool, String> {
    let text = std::fs::read_to_string(config).map_err(|e| e.to_string())?;
    let mut texts = vec![text.clone()];
    for line in text.lines() {
        let line = line.trim();
        if let Some(list) = line.strip_prefix("imports") {
            for path in list.split('"').skip(1).step_by(2) {
                if let Ok(imported) = std::fs::read_to_string(path) {
                    texts.push(imported);
                }
            }
        }
    }
    Ok(texts.iter().any(|t| {
        t.lines().any(|l| {
            let l = l.trim();
            !l.starts_with('#') && l.starts_with("required_plugins") && l.contains("\"regcred\"")
        })
    }))
}
