//! The proxy's `kube` pull secret source on its own, against [`FakeKubeApi`]: which
//! pod's Secrets a sandbox gets (security review, issue 14, finding 2). The sandbox's uid
//! names the pod; a pod of the same name with another uid is another pod; a 403 or 404 is
//! an answer, never covered by an older cached success; only an unreachable API falls
//! back on the cache, and only for the same uid.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

use std::time::Duration;

use regcred::cri_proxy::{KubeSource, PodPullSecrets, PodRef, PullSecretSource};
use regcred_tests::harness::{FakeKubeApi, api_pod, api_regcred_secret};

const NS: &str = "team";
/// Long enough that every case below happens within one TTL.
const TTL: Duration = Duration::from_secs(60);

fn source(api: &FakeKubeApi, ttl: Duration) -> KubeSource {
    let config = kube::Config::new(api.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    KubeSource::builder(client)
        .ttl(ttl)
        .request_timeout(Duration::from_millis(500))
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
    api_regcred_secret(
        NS,
        name,
        &[
            ("serverAddress", "r.example"),
            ("username", name),
            ("password", "CANARY-kube-source"),
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

#[tokio::test]
async fn a_recreated_pod_gets_its_own_secret_within_the_ttl() {
    let api = FakeKubeApi::start();
    api.put_secret(secret("old-login"));
    api.put_secret(secret("new-login"));
    api.put_pod(api_pod(NS, "app", "uid-1", &["old-login"]));
    let source = source(&api, TTL);
    let first = source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap();
    assert_eq!(names(&first), ["team/old-login"]);

    api.put_pod(api_pod(NS, "app", "uid-2", &["new-login"]));
    let second = source.pull_secrets(&sandbox("app", "uid-2")).await.unwrap();
    assert_eq!(names(&second), ["team/new-login"]);
}

#[tokio::test]
async fn a_sandbox_with_an_old_uid_gets_nothing_from_the_new_pod() {
    let api = FakeKubeApi::start();
    api.put_secret(secret("new-login"));
    api.put_pod(api_pod(NS, "app", "uid-new", &["new-login"]));
    let source = source(&api, TTL);
    let stale = source
        .pull_secrets(&sandbox("app", "uid-old"))
        .await
        .unwrap();
    assert!(!stale.pod_found, "{stale:?}");
    assert!(stale.secrets.is_empty());
    assert!(
        warned(&stale, &["team/app", "uid-old", "uid-new"]),
        "{:?}",
        stale.warnings
    );
    // The new pod's own sandbox still gets its Secret.
    let current = source
        .pull_secrets(&sandbox("app", "uid-new"))
        .await
        .unwrap();
    assert_eq!(names(&current), ["team/new-login"]);
}

#[tokio::test]
async fn a_pod_that_lists_no_pull_secrets_gets_none_even_with_a_cached_answer() {
    let api = FakeKubeApi::start();
    api.put_secret(secret("login"));
    api.put_pod(api_pod(NS, "app", "uid-1", &["login"]));
    let source = source(&api, TTL);
    assert_eq!(
        names(&source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap()),
        ["team/login"]
    );
    // imagePullSecrets cannot change on a pod: the pod without them is a new one.
    api.put_pod(api_pod(NS, "app", "uid-2", &[]));
    let now = source.pull_secrets(&sandbox("app", "uid-2")).await.unwrap();
    assert!(now.pod_found && now.secrets.is_empty(), "{now:?}");

    // Nor during an outage: the cached answer is another uid's.
    api.set_outage(true);
    let source = self::source(&api, Duration::ZERO);
    let during = source.pull_secrets(&sandbox("app", "uid-3")).await;
    assert!(during.is_err(), "{during:?}");
}

#[tokio::test]
async fn a_403_after_a_cached_success_is_an_answer_not_an_outage() {
    let api = FakeKubeApi::start();
    api.put_secret(secret("login"));
    api.put_pod(api_pod(NS, "app", "uid-1", &["login"]));
    // TTL 0: every lookup asks the API; the stale window (5 min) would cover an outage.
    let source = source(&api, Duration::ZERO);
    assert_eq!(
        names(&source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap()),
        ["team/login"]
    );

    api.forbid_secret(NS, "login");
    let refused = source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap();
    assert!(
        refused.pod_found && refused.secrets.is_empty(),
        "{refused:?}"
    );
    assert!(
        warned(&refused, &["team/app", "team/login", "403"]),
        "{:?}",
        refused.warnings
    );

    api.forbid_pod(NS, "app");
    let denied = source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap();
    assert!(!denied.pod_found && denied.secrets.is_empty(), "{denied:?}");
    assert!(
        warned(&denied, &["team/app", "403 Forbidden"]),
        "{:?}",
        denied.warnings
    );
    for warning in refused.warnings.iter().chain(&denied.warnings) {
        assert!(!warning.contains("CANARY"), "{warning}");
    }
}

#[tokio::test]
async fn a_deleted_pod_is_an_answer_and_an_outage_still_serves_the_same_uid() {
    let api = FakeKubeApi::start();
    api.put_secret(secret("login"));
    api.put_pod(api_pod(NS, "app", "uid-1", &["login"]));
    let source = source(&api, Duration::ZERO);
    source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap();

    // An outage: the same uid's cached answer stands in, with a warning.
    api.set_outage(true);
    let during = source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap();
    assert_eq!(names(&during), ["team/login"]);
    assert!(warned(&during, &["using the copy fetched"]));
    api.set_outage(false);

    // Deleted: a 404 is an answer, the cached success is not used.
    api.delete_pod(NS, "app");
    let gone = source.pull_secrets(&sandbox("app", "uid-1")).await.unwrap();
    assert!(!gone.pod_found && gone.secrets.is_empty(), "{gone:?}");
    assert!(warned(&gone, &["team/app", "404"]), "{:?}", gone.warnings);
}
