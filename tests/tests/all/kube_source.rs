//! The proxy's `kube` pull secret source on its own, against the real kube-apiserver
//! ([`KubeApi`]: etcd and kube-apiserver started on loopback, RBAC, static tokens): which
//! pod's Secrets a sandbox gets (security review, issue 14, finding 2). The sandbox's uid
//! names the pod; a pod of the same name with another uid is another pod; a 403 or 404 is
//! an answer, never covered by an older cached success; only an unreachable API (the API
//! server stopped) falls back on the cache, and only for the same uid.
//!
//! The API server assigns pod uids, so the tests read them back from the created pods; a
//! recreated pod (deleted, then created with the same name) gets a new one. What the
//! source asked is read from the API server's audit log ([`KubeApi::requests`]).

use std::time::Duration;

use regcred_agent::{KubeSource, PodPullSecrets, PodRef, PullSecretSource};
use regcred_tests::harness::{KubeApi, PROXY_USER, assert_logs_exclude, regcred_secret};

const NS: &str = "team";
/// Long enough that every case below happens within one TTL.
const TTL: Duration = Duration::from_secs(60);
/// The Secrets' password: in no warning and no API server log.
const CANARY: &str = "CANARY-kube-source";

/// A source authenticating as the proxy user (its token and the CA from the kubeconfig).
async fn source(api: &KubeApi, ttl: Duration) -> KubeSource {
    let client = kube::Client::try_from(api.proxy_config().await).unwrap();
    KubeSource::builder(client)
        .ttl(ttl)
        // Generous for a loaded machine; the outages below are refused connections.
        .request_timeout(Duration::from_secs(5))
        .build()
}

fn sandbox(name: &str, uid: &str) -> PodRef {
    PodRef {
        namespace: NS.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

fn secret(name: &str) -> k8s_openapi::api::core::v1::Secret {
    regcred_secret(
        NS,
        name,
        &[
            ("serverAddress", "r.example"),
            ("username", name),
            ("password", CANARY),
        ],
    )
}

fn names(found: &PodPullSecrets) -> Vec<String> {
    found.secrets.iter().map(|s| s.display_name()).collect()
}

fn warned(found: &PodPullSecrets, parts: &[&str]) -> bool {
    found
        .warnings
        .iter()
        .any(|w| parts.iter().all(|p| w.contains(p)))
}

/// `get` of a pod or Secret in [`NS`] answered with `code`, as [`KubeApi::requests`]
/// lists it.
fn get(resource: &str, name: &str, code: u16) -> String {
    format!("get /api/v1/namespaces/{NS}/{resource}/{name} {code}")
}

#[tokio::test]
async fn a_recreated_pod_gets_its_own_secret_within_the_ttl() {
    let api = KubeApi::start().await;
    api.put_secret(secret("old-login")).await;
    api.put_secret(secret("new-login")).await;
    let uid_1 = api.create_pod(NS, "app", &["old-login"]).await;
    let source = source(&api, TTL).await;
    let first = source.pull_secrets(&sandbox("app", &uid_1)).await.unwrap();
    assert_eq!(names(&first), ["team/old-login"]);

    let uid_2 = api.recreate_pod(NS, "app", &["new-login"]).await;
    assert_ne!(uid_1, uid_2, "a recreated pod has a new uid");
    let second = source.pull_secrets(&sandbox("app", &uid_2)).await.unwrap();
    assert_eq!(names(&second), ["team/new-login"]);
    // The new uid is not in the cache: the pod is asked for again within the TTL.
    assert_eq!(
        api.requests().await,
        [
            get("pods", "app", 200),
            get("secrets", "old-login", 200),
            get("pods", "app", 200),
            get("secrets", "new-login", 200),
        ]
    );
    // Within the TTL, the same sandbox again is answered from the cache.
    let again = source.pull_secrets(&sandbox("app", &uid_2)).await.unwrap();
    assert_eq!(names(&again), ["team/new-login"]);
    assert_eq!(api.requests().await.len(), 4, "a cache hit asks nothing");
}

#[tokio::test]
async fn a_sandbox_with_an_old_uid_gets_nothing_from_the_new_pod() {
    let api = KubeApi::start().await;
    api.put_secret(secret("new-login")).await;
    let uid_old = api.create_pod(NS, "app", &[]).await;
    let uid_new = api.recreate_pod(NS, "app", &["new-login"]).await;
    let source = source(&api, TTL).await;
    let stale = source
        .pull_secrets(&sandbox("app", &uid_old))
        .await
        .unwrap();
    assert!(!stale.pod_found, "{stale:?}");
    assert!(stale.secrets.is_empty());
    assert!(
        warned(&stale, &["team/app", &uid_old, &uid_new]),
        "{:?}",
        stale.warnings
    );
    // The new pod's own sandbox still gets its Secret.
    let current = source
        .pull_secrets(&sandbox("app", &uid_new))
        .await
        .unwrap();
    assert_eq!(names(&current), ["team/new-login"]);
    // The stale sandbox's answer was not cached as the new pod's: both asked the API.
    assert_eq!(
        api.requests().await,
        [
            get("pods", "app", 200),
            get("pods", "app", 200),
            get("secrets", "new-login", 200),
        ]
    );
}

#[tokio::test]
async fn a_pod_that_lists_no_pull_secrets_gets_none_even_with_a_cached_answer() {
    let mut api = KubeApi::start().await;
    api.put_secret(secret("login")).await;
    let uid_1 = api.create_pod(NS, "app", &["login"]).await;
    let source = source(&api, TTL).await;
    assert_eq!(
        names(&source.pull_secrets(&sandbox("app", &uid_1)).await.unwrap()),
        ["team/login"]
    );
    // imagePullSecrets cannot change on a pod (the API server refuses the update): the
    // pod without them is a new one.
    let uid_2 = api.recreate_pod(NS, "app", &[]).await;
    let now = source.pull_secrets(&sandbox("app", &uid_2)).await.unwrap();
    assert!(now.pod_found && now.secrets.is_empty(), "{now:?}");

    // Nor during an outage: the cached answers (within the TTL) are other uids'.
    api.stop_apiserver();
    let during = source.pull_secrets(&sandbox("app", "uid-never-seen")).await;
    assert!(during.is_err(), "{during:?}");
}

#[tokio::test]
async fn a_403_after_a_cached_success_is_an_answer_not_an_outage() {
    let api = KubeApi::start().await;
    api.put_secret(secret("login")).await;
    let uid = api.create_pod(NS, "app", &["login"]).await;
    // TTL 0: every lookup asks the API; the stale window (5 min) would cover an outage.
    let source = source(&api, Duration::ZERO).await;
    assert_eq!(
        names(&source.pull_secrets(&sandbox("app", &uid)).await.unwrap()),
        ["team/login"]
    );

    // RBAC: the proxy user's Role no longer names this Secret.
    api.forbid_secret(NS, "login").await;
    let refused = source.pull_secrets(&sandbox("app", &uid)).await.unwrap();
    assert!(
        refused.pod_found && refused.secrets.is_empty(),
        "{refused:?}"
    );
    assert!(
        warned(
            &refused,
            &[
                "team/app",
                "team/login",
                "403",
                &format!("User \"{PROXY_USER}\" cannot get resource \"secrets\""),
            ]
        ),
        "{:?}",
        refused.warnings
    );

    api.forbid_pod(NS, "app").await;
    let denied = source.pull_secrets(&sandbox("app", &uid)).await.unwrap();
    assert!(!denied.pod_found && denied.secrets.is_empty(), "{denied:?}");
    assert!(
        warned(&denied, &["team/app", "403 Forbidden"]),
        "{:?}",
        denied.warnings
    );
    for warning in refused.warnings.iter().chain(&denied.warnings) {
        assert!(!warning.contains("CANARY"), "{warning}");
    }
    assert_eq!(
        api.requests().await,
        [
            get("pods", "app", 200),
            get("secrets", "login", 200),
            get("pods", "app", 200),
            get("secrets", "login", 403),
            get("pods", "app", 403),
        ]
    );
    assert_logs_exclude(&[&api], CANARY);
}

#[tokio::test]
async fn a_deleted_pod_is_an_answer_and_an_outage_still_serves_the_same_uid() {
    let mut api = KubeApi::start().await;
    api.put_secret(secret("login")).await;
    let uid = api.create_pod(NS, "app", &["login"]).await;
    let source = source(&api, Duration::ZERO).await;
    source.pull_secrets(&sandbox("app", &uid)).await.unwrap();

    // An outage (the API server stopped): the same uid's cached answer stands in, with a
    // warning.
    api.stop_apiserver();
    assert_eq!(source.stale_answers().get(), 0);
    let during = source.pull_secrets(&sandbox("app", &uid)).await.unwrap();
    assert_eq!(names(&during), ["team/login"]);
    // Counted for the agent's metrics: the pod and its Secret.
    assert_eq!(source.stale_answers().get(), 2);
    assert!(
        warned(&during, &["using the copy fetched"]),
        "{:?}",
        during.warnings
    );
    api.restart_apiserver().await;

    // Deleted: a 404 is an answer, the cached success is not used.
    api.delete_pod(NS, "app").await;
    let gone = source.pull_secrets(&sandbox("app", &uid)).await.unwrap();
    assert!(!gone.pod_found && gone.secrets.is_empty(), "{gone:?}");
    assert!(warned(&gone, &["team/app", "404"]), "{:?}", gone.warnings);
    assert_eq!(
        api.requests().await,
        [
            get("pods", "app", 200),
            get("secrets", "login", 200),
            get("pods", "app", 404),
        ]
    );
}
