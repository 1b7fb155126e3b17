//! End-to-end tests with real programs: containerd (2.3 by default, CRI plugin), the distribution
//! registry and a token server, all started by the harness on loopback in temporary
//! directories (see `tests/README.md`).
//!
//! The `direct_*` and `image_service` tests call containerd's CRI ImageService directly:
//! they pin down what containerd does with each `AuthConfig` field, the behaviour the
//! regcred proxy builds on. The `proxy_*` tests put the regcred CRI proxy in between
//! (in-process, or the real `regcred cri-proxy` binary) and send what kubelet sends.
//! Every test starts its own registry and containerd, so tests are independent and run in
//! parallel.

mod direct_htpasswd;
mod direct_token;
mod harness_lifecycle;
mod image_service;
mod node_install;
mod proxy_authority;
mod proxy_cached;
mod proxy_faults;
mod proxy_htpasswd;
mod proxy_kube;
mod proxy_support;
mod proxy_token;
mod proxy_wire;
mod socket_activation;

use std::time::{Duration, Instant};

use regcred_tests::harness::{Containerd, CriClient, PullPath, Registry, TestImage};

/// Whether a runtime's error is the Basic-auth registry refusing the pull: containerd 1.6
/// passes the registry's `401 Unauthorized` on; containerd 2.x answers the registry's
/// Basic challenge itself when it has no credentials for that host ("authorization
/// failed: no basic auth credentials"), and the 401 never shows. With wrong credentials
/// both say 401.
fn refused_by_basic_registry(message: &str) -> bool {
    message.contains("401") || message.contains("no basic auth credentials")
}

/// A password that must never appear in any log: the tests give it to the registry, the
/// token server and containerd, then search their logs for it.
fn canary_password(test: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random bytes");
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("CANARY-{test}-{suffix}")
}

/// An htpasswd registry with one user and one pushed image, and a containerd that
/// reaches the registry over plain HTTP.
struct HtpasswdWorld {
    registry: Registry,
    containerd: Containerd,
    cri: CriClient,
    image: TestImage,
    /// `127.0.0.1:PORT/REPO:TAG` of the pushed image.
    reference: String,
    user: &'static str,
    password: String,
}

impl HtpasswdWorld {
    async fn start(test: &str) -> Self {
        Self::start_with(test, PullPath::Transfer).await
    }

    /// [`HtpasswdWorld::start`] with containerd's CRI pull path chosen.
    async fn start_with(test: &str, pull: PullPath) -> Self {
        let user = "alice";
        let password = canary_password(test);
        let registry = Registry::start_htpasswd(&[(user, &password)]).await;
        let image = TestImage::new(&format!("regcred e2e {test}"));
        let repository = format!("private/{test}");
        image
            .push(&registry.url(), &repository, "v1", Some((user, &password)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let containerd = Containerd::start_with(pull).await;
        containerd.add_plain_http_registry(&registry.host());
        let cri = containerd.client().await;
        let reference = registry.image(&repository, "v1");
        Self {
            registry,
            containerd,
            cri,
            image,
            reference,
            user,
            password,
        }
    }

    /// Fails the test when the password (or its base64 `auth` form) is in any log.
    fn assert_password_not_logged(&self) {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        for secret in [self.password.as_str(), auth.as_str()] {
            regcred_tests::harness::assert_logs_exclude(
                &[&self.registry, &self.containerd],
                secret,
            );
        }
    }
}

/// Runs a pull and reports how long it took (printed; shown with `--nocapture`).
async fn timed_pull<T>(what: &str, pull: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let outcome = pull.await;
    let took = started.elapsed();
    println!("pull {what}: {took:?}");
    (outcome, took)
}
