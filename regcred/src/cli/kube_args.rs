//! kubectl's connection flags (`--kubeconfig`, `--context`), shared by the commands that
//! read the cluster, and the client they make.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the cluster is, as kubectl takes it.
#[derive(Debug, Clone, Args)]
pub(super) struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub(super) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub(super) context: Option<String>,
}

impl KubeArgs {
    /// A client, and the namespace the kubeconfig context names (`default` without one).
    pub(super) async fn client(&self) -> Result<(kube::Client, String)> {
        let (client, namespace, _) = self.connect().await?;
        Ok((client, namespace))
    }

    /// [`Self::client`], and the API server's URL (for errors).
    pub(super) async fn connect(&self) -> Result<(kube::Client, String, String)> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("the kubeconfig is not usable")?,
            None => kube::Config::infer()
                .await
                .context("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a cluster")?,
        };
        let namespace = config.default_namespace.clone();
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).context("cannot make a Kubernetes client")?;
        Ok((client, namespace, url))
    }
}

/// A current-thread runtime for a command's few API calls.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
