//! `--apply` and `--dry-run` of `create` and `convert`: the Secrets go to the cluster by
//! server-side apply (field manager `regcred`), as `kubectl apply --server-side` would
//! send them, with kubectl's dry-run values.

use anyhow::Result;
use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use regcred_types::SecretManifest;

use super::kube_args::{KubeArgs, runtime};

/// The flags `create` and `convert` share for sending Secrets to the cluster.
#[derive(Debug, Args)]
pub(super) struct ApplyArgs {
    /// Apply the Secrets to the cluster (server-side apply, field manager `regcred`)
    /// instead of printing them.
    #[arg(long)]
    pub(super) apply: bool,
    /// With --apply: `server` sends them for the API server's checks (the admission
    /// webhook's included) and stores nothing; `client` prints them and sends nothing.
    #[arg(long, value_enum, default_value_t = DryRun::None, requires = "apply")]
    pub(super) dry_run: DryRun,
    #[command(flatten)]
    pub(super) kube: KubeArgs,
}

impl ApplyArgs {
    /// Whether the Secrets go to the API server (`--apply` without `--dry-run=client`).
    pub(super) fn sends(&self) -> bool {
        self.apply && self.dry_run != DryRun::Client
    }
}

/// kubectl's `--dry-run` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum DryRun {
    /// Apply for real.
    None,
    /// Print what would be applied.
    Client,
    /// The API server checks it and stores nothing.
    Server,
}

/// Applies `secrets` in order, printing kubectl's line for each; stops at the first the
/// API server refuses, naming it (the ones before it are applied). A Secret without a
/// namespace goes to the kubeconfig context's. The values travel only in the request
/// bodies, never in a command line, log or error.
pub(super) fn apply(secrets: Vec<SecretManifest>, args: &ApplyArgs) -> Result<()> {
    runtime()?.block_on(async {
        let (client, default_namespace, url) = args.kube.connect().await?;
        let mut params = kube::api::PatchParams::apply("regcred");
        params.dry_run = args.dry_run == DryRun::Server;
        let suffix = if params.dry_run {
            " (server dry run)"
        } else {
            ""
        };
        for mut secret in secrets {
            if secret.metadata.namespace.is_none() {
                secret.metadata.namespace = Some(default_namespace.clone());
            }
            let name = secret.display_name();
            let namespace = secret.metadata.namespace.clone().unwrap_or_default();
            let object = Secret::try_from(secret)?;
            let object_name = object.metadata.name.clone().unwrap_or_default();
            let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &namespace);
            api.patch(&object_name, &params, &kube::api::Patch::Apply(&object))
                .await
                .map_err(|err| match err {
                    kube::Error::Api(status) => anyhow::anyhow!(
                        "the API server refused Secret {name}: {} ({})",
                        status.message,
                        status.reason
                    ),
                    other => anyhow::anyhow!("cannot apply Secret {name} to {url}: {other}"),
                })?;
            println!("secret/{object_name} serverside-applied{suffix}");
        }
        Ok(())
    })
}
