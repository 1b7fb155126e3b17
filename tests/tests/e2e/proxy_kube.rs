//! The proxy's `kube` pull secret source, against a stand-in for the Kubernetes API.
//!
//! No kube-apiserver can be installed on the machines these tests run on, so
//! [`FakeKubeApi`] plays it: a local HTTP server that answers `GET` of pods and Secrets
//! with the JSON the real API server sends (k8s-openapi `Pod` and `Secret` objects,
//! `Status` objects for 404, 403 and 503). The proxy's kube-rs client talks to it as it
//! would to a cluster; containerd and the registry are real.

use std::time::Duration;

use regcred_tests::harness::{FakeKubeApi, Proxy, api_pod, api_regcred_secret, pod_sandbox};
use tonic::Code;

use crate::HtpasswdWorld;

const NS: &str = "team";

fn login(world: &HtpasswdWorld, name: &str, password: &str) -> k8s_openapi::api::core::v1::Secret {
    api_regcred_secret(
        NS,
        name,
        &[
            ("serverAddress", &world.registry.host()),
            ("username", world.user),
            ("password", password),
        ],
    )
}

#[tokio::test]
async fn pulls_with_secrets_from_the_api_and_follows_a_rotation() {
    let mut world = HtpasswdWorld::start("proxy-kube-rotate").await;
    let api = FakeKubeApi::start();
    api.put_pod(api_pod(NS, "app-0", "uid-app-0", &["missing", "login"]));
    api.put_secret(login(&world, "login", "old-password"));
    let ttl = Duration::from_millis(300);
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(&api.url(), ttl)
    .start()
    .await;
    let mut cri = proxy.client().await;
    let sandbox = pod_sandbox(NS, "app-0", "uid-app-0");

    let status = cri
        .pull(&world.reference, None, Some(sandbox.clone()))
        .await
        .expect_err("the old password is refused");
    assert!(
        status.message().contains("team/login"),
        "{}",
        status.message()
    );
    let requests = api.requests();
    assert_eq!(
        requests,
        [
            "/api/v1/namespaces/team/pods/app-0",
            "/api/v1/namespaces/team/secrets/missing",
            "/api/v1/namespaces/team/secrets/login",
        ]
    );

    // Rotated in the API: used once the cached copy is older than the TTL.
    api.put_secret(login(&world, "login", &world.password));
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let pulled = cri.pull(&world.reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), world.image.config_digest());
    assert!(
        proxy.log_text().contains("missing"),
        "the missing secret is logged"
    );
    world.cri.remove_image(&world.reference).await.unwrap();
    regcred_tests::harness::assert_logs_exclude(
        &[&world.registry, &world.containerd, &proxy],
        &world.password,
    );
}

#[tokio::test]
async fn api_outage_serves_cached_secrets_for_a_bounded_time_then_fails_clearly() {
    let mut world = HtpasswdWorld::start("proxy-kube-outage").await;
    let api = FakeKubeApi::start();
    api.put_pod(api_pod(NS, "app-1", "uid-app-1", &["login"]));
    api.put_secret(login(&world, "login", &world.password));
    // TTL 0 s: every pull asks the API; the stale window is the default (5 min).
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(&api.url(), Duration::ZERO)
    .start()
    .await;
    let mut cri = proxy.client().await;
    let sandbox = pod_sandbox(NS, "app-1", "uid-app-1");
    cri.pull(&world.reference, None, Some(sandbox.clone()))
        .await
        .expect("pulled with the API up");
    world.cri.remove_image(&world.reference).await.unwrap();

    api.set_outage(true);
    cri.pull(&world.reference, None, Some(sandbox))
        .await
        .expect("pulled with the cached copy during the outage");
    assert!(
        proxy.log_text().contains("using the copy fetched"),
        "the fallback is logged:\n{}",
        proxy.log_text()
    );

    // A pod never seen before: nothing cached, the pull fails with the API's error.
    api.put_pod(api_pod(NS, "app-2", "uid-app-2", &["login"]));
    let status = cri
        .pull(
            &world.reference,
            None,
            Some(pod_sandbox(NS, "app-2", "uid-app-2")),
        )
        .await
        .expect_err("no cached copy");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("failed to get pod team/app-2")
            && status.message().contains("no cached copy"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn forbidden_secret_is_an_answer_logged_clearly_through_the_real_binary() {
    let world = HtpasswdWorld::start("proxy-kube-forbidden").await;
    let api = FakeKubeApi::start();
    api.put_pod(api_pod(NS, "app-3", "uid-app-3", &["login"]));
    api.put_secret(login(&world, "login", &world.password));
    api.forbid_secret(NS, "login");
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(&api.url(), Duration::from_secs(10))
    .binary()
    .start()
    .await;
    let mut cri = proxy.client().await;
    let status = cri
        .pull(
            &world.reference,
            None,
            Some(pod_sandbox(NS, "app-3", "uid-app-3")),
        )
        .await
        .expect_err("without the refused secret the registry refuses the pull");
    // A 403 is an answer (issue 14, finding 2): no credentials from that Secret, the pull
    // goes on without them and the registry's refusal comes back, not an outage.
    assert_ne!(status.code(), Code::Unavailable, "{status:?}");
    // What kubelet puts in the pod's event says why the Secret was not used.
    assert!(
        status.message().contains(
            "regcred: pull secret(s) of pod team/app-3 that could not be read, so not used: \
             team/login: 403"
        ),
        "{status:?}"
    );
    let log = proxy.log_text();
    assert!(
        log.contains("secret team/login of pod team/app-3") && log.contains("403 Forbidden"),
        "{log}"
    );
    assert!(
        api.requests()
            .contains(&"/api/v1/namespaces/team/secrets/login".to_owned())
    );
    regcred_tests::harness::assert_logs_exclude(&[&proxy], &world.password);
}
