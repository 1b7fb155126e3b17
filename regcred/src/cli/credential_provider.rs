//! `regcred credential-provider`: the kubelet credential provider plugin (KEP-4412).

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use regcred_host::PolicyRunner;
use regcred_types::RuntimeProfile;

use super::{PolicyConfigArg, load_config};
use crate::credential_provider::{
    CredentialProviderRequest, PULL_SECRETS_ANNOTATION, ProviderError, answer, pod_of,
    read_secrets, record_event,
};

/// The largest request read from standard input (kubelet's are a few KiB).
const MAX_REQUEST: u64 = 1 << 20;
/// The kubeconfig whose API server and CA are used when none is named (kubeadm's
/// kubelet kubeconfig); its credentials are not used.
const DEFAULT_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

/// Arguments of `regcred credential-provider`.
#[derive(Debug, Args)]
pub(crate) struct CredentialProviderArgs {
    /// The kubeconfig naming the API server and its CA (default: $KUBECONFIG, else
    /// /etc/kubernetes/kubelet.conf). Only the cluster is used: the Secrets are read with
    /// the pod's service-account token.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    config: PolicyConfigArg,
    /// Seconds kubelet may keep an answer (per image); a rotated Secret is used at most
    /// this long after the change.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    cache_duration: u64,
    /// Seconds one read of the API server may take.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    api_timeout: u64,
}

/// Reads kubelet's request from standard input, writes the answer on standard output;
/// every problem goes to standard error with a non-zero exit, and, once the pod is known,
/// to a Warning Event on the pod (best effort, with the pod's own token).
pub(crate) fn run(policy: PolicyRunner, args: CredentialProviderArgs) -> Result<u8> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST + 1)
        .read_to_end(&mut input)
        .context("cannot read the request on standard input")?;
    if input.len() as u64 > MAX_REQUEST {
        anyhow::bail!("the request on standard input is larger than {MAX_REQUEST} bytes");
    }
    let request = CredentialProviderRequest::parse(&input)?;
    let (namespace, service_account) = request.service_account()?;
    let config = load_config(&args.config, &policy)?;
    let path = args
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG));
    let timeout = Duration::from_secs(args.api_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let response = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
        let cluster = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .with_context(|| format!("the kubeconfig {} names no usable cluster", path.display()))?;
        let answered = provide(
            &policy,
            &request,
            &namespace,
            &service_account,
            cluster.clone(),
            &config,
            timeout,
            Duration::from_secs(args.cache_duration),
        )
        .await;
        if let Err(err) = &answered
            && let Some((pod, uid)) = pod_of(&request.service_account_token)
        {
            let recorded = record_event(
                cluster,
                &request.service_account_token,
                &namespace,
                (&pod, &uid),
                &format!(
                    "regcred could not give kubelet credentials for {}: {err}",
                    request.image
                ),
                timeout,
            )
            .await;
            if !recorded {
                eprintln!(
                    "regcred: (no Event on pod {namespace}/{pod}: its service account may not \
                     create events)"
                );
            }
        }
        anyhow::Ok(answered?)
    })?;
    let mut out = serde_json::to_vec(&response).context("cannot encode the response")?;
    out.push(b'\n');
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out)
        .context("cannot write the response on standard output")?;
    Ok(0)
}

/// The answer for `request`: the named Secrets read with the pod's token, resolved by
/// the policy.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; each argument is a different part of the question"
)]
async fn provide(
    policy: &PolicyRunner,
    request: &CredentialProviderRequest,
    namespace: &str,
    service_account: &str,
    cluster: kube::Config,
    config: &regcred_types::PolicyConfig,
    timeout: Duration,
    cache_duration: Duration,
) -> Result<crate::credential_provider::CredentialProviderResponse, ProviderError> {
    let names = request.pull_secret_names(namespace, service_account)?;
    let secrets = if names.is_empty() {
        eprintln!(
            "regcred: service account {namespace}/{service_account} names no pull Secrets \
             (annotation {PULL_SECRETS_ANNOTATION}); no credentials for {}",
            request.image
        );
        Vec::new()
    } else {
        read_secrets(
            cluster,
            &request.service_account_token,
            namespace,
            service_account,
            &names,
            timeout,
        )
        .await?
    };
    let resolution = policy
        .resolve(
            &request.image,
            &secrets,
            RuntimeProfile::Passthrough,
            config,
        )
        .map_err(|err| ProviderError::Policy {
            image: request.image.clone(),
            reason: err.to_string(),
        })?;
    for warning in &resolution.warnings {
        eprintln!("regcred: {warning}");
    }
    answer(request, &resolution.candidates, cache_duration)
}
