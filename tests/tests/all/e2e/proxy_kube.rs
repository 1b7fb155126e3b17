//! The proxy's `kube` pull secret source against the real Kubernetes API server.
//!
//! [`KubeApi`] starts etcd and kube-apiserver on loopback; the proxy authenticates as
//! its own user (a bearer token, the harness's CA) with the rights the deployment's RBAC
//! grants (get pods, get secrets), so a 403 is RBAC's own refusal. What the proxy asked
//! is read from the API server's audit log. containerd and the registry are real too.

use std::time::Duration;

use regcred_tests::harness::{KubeApi, Proxy, pod_sandbox, regcred_secret};
use tonic::Code;

use super::HtpasswdWorld;

const NS: &str = "team";

fn login(world: &HtpasswdWorld, name: &str, password: &str) -> k8s_openapi::api::core::v1::Secret {
    regcred_secret(
        NS,
        name,
        &[
            ("serverAddress", &world.registry.host()),
            ("username", world.user),
            ("password", password),
        ],
    )
}

/// `get` of a pod or Secret in [`NS`] answered with `code`, as [`KubeApi::requests`]
/// lists it.
fn get(resource: &str, name: &str, code: u16) -> String {
    format!("get /api/v1/namespaces/{NS}/{resource}/{name} {code}")
}

#[tokio::test]
async fn pulls_with_secrets_from_the_api_and_follows_a_rotation() {
    let mut world = HtpasswdWorld::start("proxy-kube-rotate").await;
    let api = KubeApi::start().await;
    let uid = api.create_pod(NS, "app-0", &["missing", "login"]).await;
    api.put_secret(login(&world, "login", "old-password")).await;
    let ttl = Duration::from_millis(300);
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(api.proxy_kubeconfig(), ttl)
    .start()
    .await;
    let mut cri = proxy.client().await;
    let sandbox = pod_sandbox(NS, "app-0", &uid);

    let status = cri
        .pull(&world.reference, None, Some(sandbox.clone()))
        .await
        .expect_err("the old password is refused");
    assert!(
        status.message().contains("team/login"),
        "{}",
        status.message()
    );
    let first = [
        get("pods", "app-0", 200),
        get("secrets", "missing", 404),
        get("secrets", "login", 200),
    ];
    assert_eq!(reads(&api).await, first);

    // Rotated in the API: used once the cached copy is older than the TTL.
    api.put_secret(login(&world, "login", &world.password))
        .await;
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let pulled = cri.pull(&world.reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), world.image.config_digest());
    // Every cached answer had expired: the pod, the 404 and the Secret were asked again.
    assert_eq!(reads(&api).await, [first.clone(), first].concat());
    assert!(
        proxy.log_text().contains("missing"),
        "the missing secret is logged"
    );
    world.cri.remove_image(&world.reference).await.unwrap();
    regcred_tests::harness::assert_logs_exclude(
        &[&world.registry, &world.containerd, &proxy, &api],
        &world.password,
    );
    regcred_tests::harness::assert_logs_exclude(&[&proxy, &api], api.proxy_token());
}

#[tokio::test]
async fn api_outage_serves_cached_secrets_for_a_bounded_time_then_fails_clearly() {
    let mut world = HtpasswdWorld::start("proxy-kube-outage").await;
    let mut api = KubeApi::start().await;
    let uid_1 = api.create_pod(NS, "app-1", &["login"]).await;
    // A pod the proxy has not seen when the outage begins.
    let uid_2 = api.create_pod(NS, "app-2", &["login"]).await;
    api.put_secret(login(&world, "login", &world.password))
        .await;
    // TTL 0 s: every pull asks the API; the stale window is the default (5 min).
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(api.proxy_kubeconfig(), Duration::ZERO)
    .start()
    .await;
    let mut cri = proxy.client().await;
    let sandbox = pod_sandbox(NS, "app-1", &uid_1);
    cri.pull(&world.reference, None, Some(sandbox.clone()))
        .await
        .expect("pulled with the API up");
    world.cri.remove_image(&world.reference).await.unwrap();

    // The outage: the API server process is stopped, its port refuses connections.
    api.stop_apiserver();
    cri.pull(&world.reference, None, Some(sandbox))
        .await
        .expect("pulled with the cached copy during the outage");
    assert!(
        proxy.log_text().contains("using the copy fetched"),
        "the fallback is logged:\n{}",
        proxy.log_text()
    );

    // A pod never seen before: nothing cached, the pull fails with the API's error.
    let status = cri
        .pull(
            &world.reference,
            None,
            Some(pod_sandbox(NS, "app-2", &uid_2)),
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
    let api = KubeApi::start().await;
    let uid = api.create_pod(NS, "app-3", &["login"]).await;
    api.put_secret(login(&world, "login", &world.password))
        .await;
    // RBAC: the proxy user's Role no longer names this Secret.
    api.forbid_secret(NS, "login").await;
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(api.proxy_kubeconfig(), Duration::from_secs(10))
    .binary()
    .start()
    .await;
    let mut cri = proxy.client().await;
    // Past the agent's first look at its kubeconfig's files: nothing changed, so its
    // client is not rebuilt (checked below).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = cri
        .pull(&world.reference, None, Some(pod_sandbox(NS, "app-3", &uid)))
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
    assert!(!log.contains("client was rebuilt"), "{log}");
    assert_eq!(
        reads(&api).await,
        [get("pods", "app-3", 200), get("secrets", "login", 403)]
    );
    // The skipped Secret is also a Warning Event on the pod (written off the CRI path,
    // so it may come a moment later). This identity may not create Events: the agent
    // logs that, and the pull's answer above did not wait for it.
    let mut events = Vec::new();
    for _ in 0..50 {
        events = api
            .requests()
            .await
            .into_iter()
            .filter(|r| r.contains("/events"))
            .collect();
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events, ["create /api/v1/namespaces/team/events 403"]);
    assert!(
        proxy.log_text().contains("cannot create the pod's Event"),
        "{}",
        proxy.log_text()
    );
    regcred_tests::harness::assert_logs_exclude(&[&proxy, &api], &world.password);
    regcred_tests::harness::assert_logs_exclude(&[&proxy, &api], api.proxy_token());
}

/// Issue 23, finding 7: an agent that starts before its kubeconfig exists (kubelet's TLS
/// bootstrap writes it) serves anyway, fails pulls that need the API with a message that
/// says why, and reads the API as soon as the file is there, without a restart.
#[tokio::test]
async fn an_agent_started_before_its_kubeconfig_waits_for_it_without_exiting() {
    let world = HtpasswdWorld::start("proxy-kube-later").await;
    let api = KubeApi::start().await;
    let uid = api.create_pod(NS, "app-4", &["login"]).await;
    api.put_secret(login(&world, "login", &world.password))
        .await;
    let proxy = Proxy::builder(
        world.containerd.socket(),
        std::path::Path::new("/nonexistent"),
    )
    .kube(api.proxy_kubeconfig(), Duration::ZERO)
    .kubeconfig_later()
    .binary()
    .start()
    .await;
    let mut cri = proxy.client().await;
    let sandbox = pod_sandbox(NS, "app-4", &uid);
    let status = cri
        .pull(&world.reference, None, Some(sandbox.clone()))
        .await
        .expect_err("no kubeconfig yet");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no usable kubeconfig yet"),
        "{status:?}"
    );
    proxy.write_kubeconfig();
    // Looked for again at most once a second, at a read.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pulled = cri
        .pull(&world.reference, None, Some(sandbox))
        .await
        .unwrap_or_else(|s| panic!("the kubeconfig is there now: {s:?}"));
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    let log = proxy.log_text();
    assert!(log.contains("a usable kubeconfig appeared"), "{log}");
    regcred_tests::harness::assert_logs_exclude(&[&proxy, &api], &world.password);
}

/// The API reads the agent made (the Warning Events it writes on pods left out: they
/// are written off the CRI path, a moment after the reads).
async fn reads(api: &KubeApi) -> Vec<String> {
    api.requests()
        .await
        .into_iter()
        .filter(|r| !r.contains("/events"))
        .collect()
}
