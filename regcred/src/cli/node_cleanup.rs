//! `regcred node cleanup`: the Helm chart's pre-delete hook. Removes the webhook
//! configuration first (nothing refuses Secrets once regcred is going) and the installer
//! DaemonSet (whose pods would install a node again if one restarted, and the uninstall
//! restarts kubelet), then runs `regcred node uninstall` on every node through a
//! DaemonSet made from the chart's manifest, waits until each node's pod reports the node
//! uninstalled, and deletes the DaemonSet.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};

use super::EXIT_OK;
use super::kube_args::{KubeArgs, runtime};

#[derive(Debug, Args)]
pub(super) struct CleanupArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// The uninstalling DaemonSet's manifest (YAML; the chart's hook ConfigMap).
    #[arg(long, value_name = "FILE")]
    daemonset: PathBuf,
    /// The ValidatingWebhookConfiguration to delete first (none when empty).
    #[arg(long, value_name = "NAME", default_value = "")]
    webhook_configuration: String,
    /// The installer DaemonSet (in the uninstalling DaemonSet's namespace) to delete, and
    /// whose pods to wait out, before anything is uninstalled (none when empty).
    #[arg(long, value_name = "NAME", default_value = "")]
    installer_daemonset: String,
    /// How long to wait for every node.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout_seconds: u64,
}

pub(super) fn run(args: &CleanupArgs) -> Result<u8> {
    runtime()?.block_on(cleanup(args))
}

async fn cleanup(args: &CleanupArgs) -> Result<u8> {
    let text = std::fs::read_to_string(&args.daemonset)
        .with_context(|| format!("cannot read {}", args.daemonset.display()))?;
    let daemonset: DaemonSet = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a DaemonSet manifest", args.daemonset.display()))?;
    let name = daemonset.name_any();
    let namespace = daemonset.namespace().with_context(|| {
        format!(
            "{}: metadata.namespace is missing",
            args.daemonset.display()
        )
    })?;
    let (client, _) = args.kube.client().await?;

    if !args.webhook_configuration.is_empty() {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        match api
            .delete(&args.webhook_configuration, &DeleteParams::default())
            .await
        {
            Ok(_) => println!(
                "deleted ValidatingWebhookConfiguration {}",
                args.webhook_configuration
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "deleting ValidatingWebhookConfiguration {}",
                        args.webhook_configuration
                    )
                });
            }
        }
    }

    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    if !args.installer_daemonset.is_empty() {
        stop_installer(&client, &api, &namespace, &args.installer_daemonset).await?;
    }
    // A DaemonSet left by an interrupted clean-up is replaced.
    delete_and_wait(&api, &namespace, &name, 60)
        .await
        .context("the uninstalling DaemonSet of an earlier clean-up")?;
    api.create(&PostParams::default(), &daemonset)
        .await
        .with_context(|| format!("creating DaemonSet {namespace}/{name}"))?;
    println!("created DaemonSet {namespace}/{name}: uninstalling on every node");

    // Every node uninstalled on two looks, more than a readiness period (5 s) apart: a
    // pod killed and started again by the kubelet that its own uninstall restarted may
    // show Ready for a moment before its probe runs again.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut seen_done: Option<Instant> = None;
    let done = loop {
        let current = api.get(&name).await?;
        if rolled_out(&current) {
            match seen_done {
                Some(at) if at.elapsed() >= Duration::from_secs(6) => break true,
                Some(_) => {}
                None => seen_done = Some(Instant::now()),
            }
        } else {
            seen_done = None;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let waiting = if done {
        Vec::new()
    } else {
        not_ready(&client, &namespace, &daemonset).await
    };
    api.delete(&name, &DeleteParams::background()).await?;
    if !done {
        bail!(
            "after {} s these nodes are not uninstalled (their regcred is left as it is; run \
             `regcred node uninstall` there): {}",
            args.timeout_seconds,
            if waiting.is_empty() {
                "no pod of the DaemonSet was scheduled".to_owned()
            } else {
                waiting.join(", ")
            }
        );
    }
    println!("every node is uninstalled; deleted DaemonSet {namespace}/{name}");
    Ok(EXIT_OK)
}

/// Deletes the installer DaemonSet and waits up to 60 s for its pods to go. Pods on a
/// node that does not answer stay Terminating: the clean-up goes on without them (such
/// a pod cannot install anything while its node is away, and its kubelet removes it when
/// the node comes back) and names their nodes.
async fn stop_installer(
    client: &kube::Client,
    api: &Api<DaemonSet>,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let Some(daemonset) = api.get_opt(name).await? else {
        return Ok(());
    };
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).with_context(|| format!("deleting DaemonSet {namespace}/{name}")),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = match_labels(&daemonset);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = pods.list(&ListParams::default().labels(&selector)).await?;
        if left.items.is_empty() {
            println!("deleted DaemonSet {namespace}/{name}: no installer pod is left");
            return Ok(());
        }
        if Instant::now() > deadline {
            let nodes: Vec<String> = left
                .items
                .iter()
                .map(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_else(|| "(unscheduled)".to_owned())
                })
                .collect();
            println!(
                "deleted DaemonSet {namespace}/{name}; its pods on {} have not gone after 60 \
                 s (node not answering?): going on without them",
                nodes.join(", ")
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The DaemonSet's `matchLabels` as a label selector.
fn match_labels(daemonset: &DaemonSet) -> String {
    daemonset
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Deletes the DaemonSet `name` (foreground: its pods first) and waits up to `seconds`
/// until it is gone; a DaemonSet that is not there is fine.
async fn delete_and_wait(
    api: &Api<DaemonSet>,
    namespace: &str,
    name: &str,
    seconds: u64,
) -> Result<()> {
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("deleting DaemonSet {namespace}/{name}")),
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while api.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("DaemonSet {namespace}/{name} does not go away after {seconds} s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Every node the DaemonSet is for has its pod Ready (the node uninstalled).
fn rolled_out(daemonset: &DaemonSet) -> bool {
    let Some(status) = &daemonset.status else {
        return false;
    };
    let observed = status.observed_generation.unwrap_or(0);
    observed >= daemonset.metadata.generation.unwrap_or(1)
        && status.updated_number_scheduled.unwrap_or(0) == status.desired_number_scheduled
        && status.number_ready == status.desired_number_scheduled
}

/// `node (pod: why)` for each pod of the DaemonSet not Ready.
async fn not_ready(client: &kube::Client, namespace: &str, daemonset: &DaemonSet) -> Vec<String> {
    let selector = match_labels(daemonset);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|pod| {
            !pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|pod| {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "(unscheduled)".to_owned());
            let why = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| {
                    s.waiting
                        .as_ref()
                        .and_then(|w| w.reason.clone())
                        .or_else(|| s.terminated.as_ref().and_then(|t| t.reason.clone()))
                })
                .unwrap_or_else(|| "not ready".to_owned());
            format!("{node} (pod {}: {why})", pod.name_any())
        })
        .collect()
}
