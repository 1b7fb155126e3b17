//! What the proxy tests share: Pod and Secret manifests in a `dir:` source, and a world of
//! registry + containerd + proxy with a CRI client talking to the proxy.

use std::path::Path;

use base64::Engine as _;
use regcred_cri_api::runtime::v1::PodSandboxConfig;
use regcred_tests::harness::{
    CapturedLogs, CriClient, Proxy, ProxyBuilder, assert_logs_exclude, pod_sandbox,
};
use tempfile::TempDir;

use super::HtpasswdWorld;

/// The namespace of every test pod.
pub(crate) const NAMESPACE: &str = "team";

/// A `dir:` pull secret source: Pod and Secret manifests in a temporary directory.
pub(crate) struct Manifests {
    dir: TempDir,
}

impl Manifests {
    pub(crate) fn new() -> Self {
        Self {
            dir: regcred_tests::harness::fixture_dir("manifests"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `pod-NAME.yaml` (YAML, as kubectl would show it) and returns the
    /// `sandbox_config` kubelet sends for it.
    pub(crate) fn pod(&self, name: &str, pull_secrets: &[&str]) -> PodSandboxConfig {
        let uid = format!("{name}-5f0c-4d7e-9b1a");
        let refs: String = pull_secrets
            .iter()
            .map(|s| format!("  - name: {s}\n"))
            .collect();
        let refs = if refs.is_empty() {
            String::new()
        } else {
            format!("  imagePullSecrets:\n{refs}")
        };
        std::fs::write(
            self.path().join(format!("pod-{name}.yaml")),
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  uid: {uid}\n\
                 spec:\n{refs}  containers:\n  - name: app\n    image: private/app:v1\n"
            ),
        )
        .expect("writing the pod manifest");
        pod_sandbox(NAMESPACE, name, &uid)
    }

    /// Writes (or rewrites) `secret-NAME.json`: a regcredentials Secret with `values`
    /// under `stringData`, written to a temporary file and renamed into place as
    /// kubectl-style tooling and ConfigMap volume updates do.
    pub(crate) fn secret(&self, name: &str, values: &[(&str, &str)]) {
        let string_data: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        self.write_secret(name, serde_json::json!({ "stringData": string_data }));
    }

    /// The same with the values base64-encoded under `data`, as the API returns them.
    pub(crate) fn secret_data(&self, name: &str, values: &[(&str, &str)]) {
        let data: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(v);
                ((*k).to_owned(), serde_json::Value::from(encoded))
            })
            .collect();
        self.write_secret(name, serde_json::json!({ "data": data }));
    }

    fn write_secret(&self, name: &str, values: serde_json::Value) {
        let mut secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "type": "kubernetes.io/regcredentials",
        });
        if let (Some(secret), Some(values)) = (secret.as_object_mut(), values.as_object()) {
            secret.extend(values.clone());
        }
        let target = self.path().join(format!("secret-{name}.json"));
        let staging = self.path().join(format!(".secret-{name}.tmp"));
        std::fs::write(&staging, serde_json::to_vec_pretty(&secret).expect("JSON"))
            .expect("writing the secret manifest");
        std::fs::rename(&staging, &target).expect("renaming the secret manifest into place");
    }
}

/// An htpasswd registry with a pushed image, containerd, and the proxy in front of it
/// reading `manifests`; `cri` talks to the proxy, `world.cri` to containerd directly.
/// An image ID that [`ProxiedHtpasswd::start_verifying`]'s records hold as preloaded
/// (on the node at the first start). containerd has no such image: a container of it is
/// refused by containerd, after the proxy let it through.
pub(crate) const PRELOADED_ID: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) struct ProxiedHtpasswd {
    pub(crate) world: HtpasswdWorld,
    pub(crate) manifests: Manifests,
    pub(crate) proxy: Proxy,
    pub(crate) cri: CriClient,
}

impl ProxiedHtpasswd {
    /// Starts everything; the proxy in-process.
    pub(crate) async fn start(test: &str) -> Self {
        Self::start_with(test, false).await
    }

    /// Starts everything; `binary` runs the real `regcred cri-proxy`.
    pub(crate) async fn start_with(test: &str, binary: bool) -> Self {
        Self::start_configured(test, |builder, _| {
            if binary {
                builder.binary().with_metrics().json_logs()
            } else {
                builder
            }
        })
        .await
    }

    /// Starts everything with the in-process proxy deciding at CreateContainer who may
    /// use an image on the node.
    /// [`PRELOADED_ID`] counts as on the node at the first start.
    pub(crate) async fn start_verifying(test: &str) -> Self {
        Self::start_configured(test, |b, _| b.verify_images().preloaded(&[PRELOADED_ID])).await
    }

    /// The same with an allowlist made from the running world (its registry's address is
    /// known only then).
    pub(crate) async fn start_verifying_allowlisting(
        test: &str,
        policy: regcred_agent::VerificationPolicy,
        allowlist: impl FnOnce(&HtpasswdWorld) -> Vec<String>,
    ) -> Self {
        Self::start_configured(test, |b, world| {
            let list = allowlist(world);
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            b.verification_policy(policy, &list)
        })
        .await
    }

    /// The proxy deciding with `policy` and `allowlist`, with the world's private image pulled straight
    /// into containerd (with credentials, as by hand or a node image build) before the
    /// proxy first starts: a preloaded image.
    pub(crate) async fn start_verifying_preloaded(
        test: &str,
        policy: regcred_agent::VerificationPolicy,
        allowlist: impl FnOnce(&HtpasswdWorld) -> Vec<String>,
    ) -> Self {
        let mut world = HtpasswdWorld::start(test).await;
        let auth =
            regcred_tests::harness::basic_auth(&world.registry.url(), world.user, &world.password);
        world
            .cri
            .pull(&world.reference.clone(), Some(auth), None)
            .await
            .unwrap_or_else(|e| panic!("preloading {}: {e}", world.reference));
        Self::start_in(world, |b, world| {
            let list = allowlist(world);
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            b.verification_policy(policy, &list)
        })
        .await
    }

    async fn start_configured(
        test: &str,
        configure: impl FnOnce(ProxyBuilder, &HtpasswdWorld) -> ProxyBuilder,
    ) -> Self {
        Self::start_in(HtpasswdWorld::start(test).await, configure).await
    }

    async fn start_in(
        world: HtpasswdWorld,
        configure: impl FnOnce(ProxyBuilder, &HtpasswdWorld) -> ProxyBuilder,
    ) -> Self {
        let manifests = Manifests::new();
        let builder = configure(
            Proxy::builder(world.containerd.socket(), manifests.path()),
            &world,
        );
        let proxy = builder.start().await;
        let cri = proxy.client().await;
        Self {
            world,
            manifests,
            proxy,
            cri,
        }
    }

    /// A Secret with the registry's user and password and this `serverAddress`.
    pub(crate) fn login_secret(&self, name: &str, server_address: &str) {
        self.manifests.secret(
            name,
            &[
                ("serverAddress", server_address),
                ("username", self.world.user),
                ("password", &self.world.password),
            ],
        );
    }

    /// Fails the test when the password (or its base64 `auth` form) is in any log: the
    /// registry's, containerd's and the proxy's.
    pub(crate) fn assert_password_not_logged(&self) {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.world.user, self.world.password));
        let logs: [&dyn CapturedLogs; 3] =
            [&self.world.registry, &self.world.containerd, &self.proxy];
        for secret in [self.world.password.as_str(), auth.as_str()] {
            assert_logs_exclude(&logs, secret);
        }
    }
}
