//! `regcred explain POD` (`kubectl regcred explain POD`): for each image of a pod in the
//! cluster, the pull Secrets it names and what became of each, the candidates a pull
//! tries in order (values redacted), which one it tries first and the warnings, read
//! from the API with the user's kubeconfig, so that "why is this pod not pulling?" has an
//! answer without a shell on the node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use k8s_openapi::api::core::v1::{Pod, Secret};
use regcred_agent::{ImageSummary, PodSummary, PullRecords};
use regcred_host::PolicyRunner;
use regcred_types::{Candidate, SecretManifest};
use serde::Serialize;

use super::cri_proxy::{DEFAULT_PULL_RECORD_TTL, DEFAULT_RECORDS_DIR};
use super::kube_args::{KubeArgs, runtime};
use super::policy::explain as explain_policy_error;
use super::{EXIT_OK, PolicyConfigArg, ProfileArg, ReportFormat, load_config, print_report};

/// Arguments of `regcred explain`.
#[derive(Debug, Args)]
pub(super) struct ExplainArgs {
    /// The pod.
    pod: String,
    /// The pod's namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    kube: KubeArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ReportFormat::Text)]
    output: ReportFormat,
    /// The container runtime that receives the AuthConfig.
    #[arg(long, value_enum, default_value_t = ProfileArg::Containerd)]
    runtime_profile: ProfileArg,
    /// On the pod's node: the node agent's pulled-image records directory (its
    /// --pull-records-dir), read without a lock or a write, to show what the records say
    /// about each image (who may use it, with which Secret).
    #[arg(long, value_name = "DIR")]
    records_dir: Option<PathBuf>,
    /// With --records-dir: the agent's --pull-record-ttl, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PULL_RECORD_TTL.as_secs(), requires = "records_dir")]
    pull_record_ttl: u64,
    #[command(flatten)]
    config: PolicyConfigArg,
}

/// What `explain` found (its `-o json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Explanation {
    pod: String,
    /// The pod's uid (its records are kept by uid).
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    node: Option<String>,
    service_account: Option<String>,
    pull_secrets: Vec<PullSecretState>,
    images: Vec<ImageExplanation>,
    /// The records directory read (`--records-dir`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    records_dir: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PullSecretState {
    name: String,
    /// `found`, `missing`, `unreadable`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    r#type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageExplanation {
    image: String,
    /// `container`, `initContainer`, `ephemeralContainer` or `imageVolume`, with its name.
    used_by: Vec<String>,
    /// In the order a pull tries them; values redacted.
    candidates: Vec<Candidate>,
    /// The Secret a pull tries first; none: the pull goes without credentials.
    tries_first: Option<String>,
    warnings: Vec<String>,
    /// The image IDs the pod's container statuses report for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    image_ids: Vec<String>,
    /// With `--records-dir`: what the node's records say (`null`: nothing recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<Option<ImageSummary>>,
}

pub(super) fn run(policy: &PolicyRunner, args: ExplainArgs) -> Result<u8> {
    let config = load_config(&args.config, policy)?;
    let runtime = runtime()?;
    let explanation = runtime.block_on(gather(policy, &args, &config))?;
    print_report(&explanation, args.output, |explanation| {
        print!("{}", human(explanation));
        Ok(())
    })?;
    Ok(EXIT_OK)
}

async fn gather(
    policy: &PolicyRunner,
    args: &ExplainArgs,
    config: &regcred_types::PolicyConfig,
) -> Result<Explanation> {
    let (client, default_namespace) = args.kube.client().await?;
    let namespace = args.namespace.clone().unwrap_or(default_namespace);
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &namespace);
    let pod = pods
        .get(&args.pod)
        .await
        .with_context(|| format!("cannot get pod {namespace}/{}", args.pod))?;
    let spec = pod.spec.clone().unwrap_or_default();

    let secrets_api: kube::Api<Secret> = kube::Api::namespaced(client, &namespace);
    let mut pull_secrets = Vec::new();
    let mut manifests = Vec::new();
    for reference in spec.image_pull_secrets.iter().flatten() {
        let name = reference.name.clone();
        match secrets_api.get_opt(&name).await {
            Ok(Some(secret)) => {
                pull_secrets.push(PullSecretState {
                    name: name.clone(),
                    state: "found",
                    r#type: secret.type_.clone(),
                    reason: None,
                });
                manifests.push(SecretManifest::from(secret));
            }
            Ok(None) => pull_secrets.push(PullSecretState {
                name,
                state: "missing",
                r#type: None,
                reason: Some("not found: its credentials are not used".to_owned()),
            }),
            Err(err) => pull_secrets.push(PullSecretState {
                name,
                state: "unreadable",
                r#type: None,
                reason: Some(match err {
                    kube::Error::Api(status) => {
                        format!("{} {}: {}", status.code, status.reason, status.message)
                    }
                    other => other.to_string(),
                }),
            }),
        }
    }

    // Each image once, with everything that uses it.
    let mut images: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |image: Option<&String>, used_by: String| {
        let Some(image) = image.filter(|i| !i.is_empty()) else {
            return;
        };
        match images.iter_mut().find(|(i, _)| i == image) {
            Some((_, users)) => users.push(used_by),
            None => images.push((image.clone(), vec![used_by])),
        }
    };
    for c in spec.init_containers.iter().flatten() {
        add(c.image.as_ref(), format!("initContainer {}", c.name));
    }
    for c in &spec.containers {
        add(c.image.as_ref(), format!("container {}", c.name));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        add(c.image.as_ref(), format!("ephemeralContainer {}", c.name));
    }
    for v in spec.volumes.iter().flatten() {
        let reference = v.image.as_ref().and_then(|i| i.reference.as_ref());
        add(reference, format!("imageVolume {}", v.name));
    }

    // The image IDs the runtime reported for each image (kubelet's container statuses).
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .chain(status.ephemeral_container_statuses.iter().flatten());
    let mut image_ids: Vec<(String, String)> = Vec::new();
    for s in statuses {
        let spec_image = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .find(|c| c.name == s.name)
            .and_then(|c| c.image.clone())
            .or_else(|| {
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .find(|c| c.name == s.name)
                    .and_then(|c| c.image.clone())
            });
        if let Some(image) = spec_image
            && !s.image_id.is_empty()
            && !image_ids.contains(&(image.clone(), s.image_id.clone()))
        {
            image_ids.push((image, s.image_id.clone()));
        }
    }
    // Records are a node's: a pod on no node has none to show.
    let records = match &args.records_dir {
        Some(_) if spec.node_name.is_none() => None,
        Some(dir) => Some(
            PullRecords::inspect(dir, Duration::from_secs(args.pull_record_ttl))
                .with_context(|| format!("cannot read the records in {}", dir.display()))?,
        ),
        None => None,
    };

    let mut explained = Vec::new();
    for (image, used_by) in images {
        let ids: Vec<String> = image_ids
            .iter()
            .filter(|(i, _)| *i == image)
            .map(|(_, id)| id.clone())
            .collect();
        let recorded = records.as_ref().map(|records| {
            // The IDs the pod's containers run first (a name may have been pulled as
            // several images over time), then the name for a pod not started yet.
            ids.iter()
                .map(String::as_str)
                .chain(std::iter::once(image.as_str()))
                .find_map(|reference| records.summary(reference))
                .or_else(|| {
                    // No record under any name: an image ID still says preloaded or not.
                    let id = ids.iter().find(|id| id.starts_with("sha256:"))?;
                    Some(ImageSummary {
                        id: id.clone(),
                        access: records.access(id).as_str(),
                        names: Vec::new(),
                        secrets: Vec::new(),
                        pods: Vec::new(),
                    })
                })
        });
        let resolution = policy
            .resolve(&image, &manifests, args.runtime_profile.into(), config)
            .map_err(explain_policy_error)
            .with_context(|| format!("image {image}"))?;
        let candidates: Vec<Candidate> = resolution
            .candidates
            .iter()
            .map(Candidate::redacted)
            .collect();
        explained.push(ImageExplanation {
            tries_first: candidates.first().map(|c| c.secret.clone()),
            image,
            used_by,
            candidates,
            warnings: resolution.warnings,
            image_ids: ids,
            records: recorded,
        });
    }
    Ok(Explanation {
        pod: format!("{namespace}/{}", args.pod),
        uid: pod.metadata.uid.clone(),
        node: spec.node_name.clone(),
        service_account: spec.service_account_name.clone(),
        pull_secrets,
        images: explained,
        records_dir: args.records_dir.as_ref().map(|d| d.display().to_string()),
    })
}

/// The human form.
fn human(e: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Pod {} on node {} (service account {})",
        e.pod,
        e.node.as_deref().unwrap_or("<not scheduled>"),
        e.service_account.as_deref().unwrap_or("default")
    );
    if e.pull_secrets.is_empty() {
        let _ = writeln!(out, "Pull Secrets: none (imagePullSecrets is empty)");
    } else {
        let _ = writeln!(out, "Pull Secrets, in imagePullSecrets order:");
        for s in &e.pull_secrets {
            let detail = match (&s.r#type, &s.reason) {
                (_, Some(reason)) => format!("{}: {reason}", s.state),
                (Some(t), None) => t.clone(),
                (None, None) => s.state.to_owned(),
            };
            let _ = writeln!(out, "  {:<24} {detail}", s.name);
        }
    }
    for image in &e.images {
        let _ = writeln!(
            out,
            "\nImage {} ({})",
            image.image,
            image.used_by.join(", ")
        );
        if image.candidates.is_empty() {
            let _ = writeln!(
                out,
                "  no pull Secret matches: a pull goes without credentials"
            );
        } else {
            let _ = writeln!(
                out,
                "  a pull tries, in order, until the registry accepts one:"
            );
            for (i, c) in image.candidates.iter().enumerate() {
                let a = &c.auth_config;
                let mut fields = Vec::new();
                if !a.username.is_empty() {
                    fields.push(format!("username {}", a.username));
                }
                for (name, set) in [
                    ("password", !a.password.is_empty()),
                    ("auth", !a.auth.is_empty()),
                    ("identityToken", !a.identity_token.is_empty()),
                    ("registryToken", !a.registry_token.is_empty()),
                ] {
                    if set {
                        fields.push(format!("{name} <redacted>"));
                    }
                }
                let _ = writeln!(
                    out,
                    "  {}. {} (matched {}): serverAddress {}, {}",
                    i + 1,
                    c.secret,
                    c.matched,
                    a.server_address,
                    fields.join(", ")
                );
            }
        }
        for w in &image.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        match &image.records {
            None => {}
            Some(None) => {
                let _ = writeln!(
                    out,
                    "  the node's records: nothing about this image (not pulled through regcred \
                     within the record lifetime)"
                );
            }
            Some(Some(r)) => {
                let _ = writeln!(out, "  the node's records: {} is {}", r.id, r.access);
                if !r.secrets.is_empty() {
                    let _ = writeln!(
                        out,
                        "    pulled with the credentials of {}",
                        r.secrets.join(", ")
                    );
                }
                let this_pod = |p: &&PodSummary| p.pod == e.pod && Some(&p.uid) == e.uid.as_ref();
                match r.pods.iter().find(this_pod) {
                    Some(p) if p.secret.is_empty() => {
                        let _ = writeln!(
                            out,
                            "    this pod is on record: allowed without credentials"
                        );
                    }
                    Some(p) => {
                        let _ =
                            writeln!(out, "    this pod is on record: allowed with {}", p.secret);
                    }
                    None => {
                        let _ = writeln!(out, "    this pod is not on record");
                    }
                }
                let others = r.pods.iter().filter(|p| !this_pod(p)).count();
                if others > 0 {
                    let _ = writeln!(out, "    {others} other pod(s) on record");
                }
            }
        }
    }
    if e.records_dir.is_some() && e.node.is_none() {
        let _ = writeln!(
            out,
            "\nThe pod is not scheduled: no node's records apply to it (--records-dir not read)."
        );
    }
    if e.records_dir.is_none()
        && let Some(node) = &e.node
    {
        let _ = writeln!(
            out,
            "\nWhat node {node}'s records say about these images: run this again on that node \
             with --records-dir (the agent's --pull-records-dir, {DEFAULT_RECORDS_DIR} by \
             default)."
        );
    }
    out
}
