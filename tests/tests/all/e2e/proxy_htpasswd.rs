//! CRI PullImage through the regcred proxy to containerd, against a registry with
//! htpasswd auth: the pod's regcredentials Secrets (a `dir:` source) supply the
//! credentials kubelet would not, with `sandbox_config` metadata as kubelet sends it.

use regcred_tests::harness::basic_auth;
use tonic::Code;

use super::proxy_support::ProxiedHtpasswd;
use super::timed_pull;

#[tokio::test]
async fn username_and_password_pull_through_the_real_binary() {
    let mut w = ProxiedHtpasswd::start_with("proxy-binary", true).await;
    w.login_secret("registry-login", &w.world.registry.url());
    let sandbox = w.manifests.pod("app-0", &["registry-login"]);

    let (pulled, _) = timed_pull(
        "through the regcred cri-proxy binary",
        w.cri.pull(&w.world.reference, None, Some(sandbox)),
    )
    .await;
    let image_ref = pulled.unwrap_or_else(|s| panic!("pull through the proxy failed: {s:?}"));
    assert_eq!(image_ref, w.world.image.config_digest());
    // containerd has it: asked directly, not through the proxy.
    let status = w.world.cri.image_status(&w.world.reference).await.unwrap();
    assert!(status.is_some(), "containerd does not have the image");

    let metrics = w.proxy.metrics_text().await;
    assert!(
        metrics.contains("regcred_cri_proxy_pulls_total{outcome=\"pulled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regcred_cri_proxy_credentials_injected_total 1"),
        "{metrics}"
    );
    let log = w.proxy.log_text();
    // docs/logs.md: the decision's line names the pod, image and secret as plain values.
    let pulled = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["decision"] == "pulled")
        .unwrap_or_else(|| panic!("no JSON line with decision \"pulled\":\n{log}"));
    assert_eq!(pulled["pod"], "team/app-0", "{pulled}");
    assert_eq!(pulled["image"], w.world.reference.as_str(), "{pulled}");
    assert_eq!(pulled["secret"], "team/registry-login", "{pulled}");
    assert_eq!(pulled["level"], "INFO", "{pulled}");
    assert!(
        !log.contains("Some("),
        "a field logged as Rust's Debug:\n{log}"
    );
    assert!(!metrics.contains(&w.world.password));
    w.assert_password_not_logged();

    // SIGTERM: a clean exit that removes the socket.
    let socket = w.proxy.socket().to_owned();
    let status = w
        .proxy
        .terminate()
        .await
        .expect("the proxy exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[tokio::test]
async fn auth_alone_pulls() {
    use base64::Engine as _;
    let mut w = ProxiedHtpasswd::start("proxy-auth-only").await;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", w.world.user, w.world.password));
    // Values base64-encoded under `data`, as the API server returns them.
    w.manifests.secret_data(
        "auth-only",
        &[("serverAddress", &w.world.registry.host()), ("auth", &auth)],
    );
    let sandbox = w.manifests.pod("app-auth", &["auth-only"]);
    let pulled = w.cri.pull(&w.world.reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), w.world.image.config_digest());
    w.assert_password_not_logged();
}

#[tokio::test]
async fn bare_host_and_port_server_address_pulls() {
    // The proposal writes `serverAddress: my.registry.com`; containerd refuses a bare
    // `127.0.0.1:PORT` outright (a URL parse error, see direct_htpasswd). The containerd
    // profile sends `https://127.0.0.1:PORT`, whose host is the one containerd contacts.
    let mut w = ProxiedHtpasswd::start("proxy-bare-host").await;
    w.login_secret("bare", &w.world.registry.host());
    let sandbox = w.manifests.pod("app-bare", &["bare"]);
    let pulled = w.cri.pull(&w.world.reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), w.world.image.config_digest());
    w.assert_password_not_logged();
}

#[tokio::test]
async fn pod_without_pull_secrets_is_refused_by_the_registry() {
    let mut w = ProxiedHtpasswd::start("proxy-no-secret").await;
    w.login_secret("unused", &w.world.registry.host());
    let sandbox = w.manifests.pod("app-none", &[]);
    let status = w
        .cri
        .pull(&w.world.reference, None, Some(sandbox))
        .await
        .expect_err("an anonymous pull is refused");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(
        super::refused_by_basic_registry(status.message()),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("regcred"),
        "no candidate: the runtime's error comes back unchanged: {}",
        status.message()
    );
    let metrics = w.proxy.metrics_text().await;
    assert!(
        metrics.contains("outcome=\"forwarded_without_credentials\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn wrong_password_fails_with_a_message_naming_the_secret() {
    let mut w = ProxiedHtpasswd::start("proxy-wrong").await;
    let wrong = format!("{}-wrong", w.world.password);
    w.manifests.secret(
        "wrong-login",
        &[
            ("serverAddress", &w.world.registry.host()),
            ("username", w.world.user),
            ("password", &wrong),
        ],
    );
    let sandbox = w.manifests.pod("app-wrong", &["wrong-login"]);
    let status = w
        .cri
        .pull(&w.world.reference, None, Some(sandbox))
        .await
        .expect_err("wrong credentials are refused");
    let message = status.message();
    assert_eq!(
        status.code(),
        Code::Unknown,
        "the runtime's code: {status:?}"
    );
    assert!(message.contains("401"), "the runtime's error: {message}");
    assert!(
        message.contains("team/wrong-login"),
        "names the secret: {message}"
    );
    assert!(!message.contains(&wrong), "never the value");
    w.assert_password_not_logged();
    assert!(!w.proxy.log_text().contains(&wrong));
}

#[tokio::test]
async fn second_candidate_pulls_when_the_first_is_wrong() {
    let mut w = ProxiedHtpasswd::start("proxy-two").await;
    w.manifests.secret(
        "first-wrong",
        &[
            ("serverAddress", &w.world.registry.host()),
            ("username", "mallory"),
            ("password", "not-the-password"),
        ],
    );
    w.login_secret("second-right", &w.world.registry.url());
    let sandbox = w.manifests.pod("app-two", &["first-wrong", "second-right"]);
    let pulled = w.cri.pull(&w.world.reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), w.world.image.config_digest());
    let log = w.proxy.log_text();
    let failed = log
        .find("team/first-wrong")
        .expect("the first attempt is logged");
    let pulled = log.find("decision=\"pulled\"").expect("the pull is logged");
    assert!(failed < pulled, "first tried first:\n{log}");
    let metrics = w.proxy.metrics_text().await;
    assert!(
        metrics.contains("regcred_cri_proxy_credentials_injected_total 2"),
        "{metrics}"
    );
    w.assert_password_not_logged();
}

#[tokio::test]
async fn request_that_has_auth_is_forwarded_untouched() {
    // The pod's own secret is wrong: had the proxy replaced kubelet's auth, the pull
    // would fail.
    let mut w = ProxiedHtpasswd::start("proxy-has-auth").await;
    w.manifests.secret(
        "stale",
        &[
            ("serverAddress", &w.world.registry.host()),
            ("username", w.world.user),
            ("password", "stale-password"),
        ],
    );
    let sandbox = w.manifests.pod("app-auth-set", &["stale"]);
    let auth = basic_auth(&w.world.registry.url(), w.world.user, &w.world.password);
    let pulled = w
        .cri
        .pull(&w.world.reference, Some(auth), Some(sandbox))
        .await;
    assert_eq!(pulled.unwrap(), w.world.image.config_digest());
    let metrics = w.proxy.metrics_text().await;
    assert!(
        metrics.contains("outcome=\"forwarded_with_auth\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regcred_cri_proxy_credentials_injected_total 0"),
        "{metrics}"
    );
    w.assert_password_not_logged();
}

#[tokio::test]
async fn rotated_secret_is_used_on_the_next_pull_without_restart() {
    let mut w = ProxiedHtpasswd::start("proxy-rotate").await;
    w.manifests.secret(
        "rotating",
        &[
            ("serverAddress", &w.world.registry.host()),
            ("username", w.world.user),
            ("password", "old-password"),
        ],
    );
    let sandbox = w.manifests.pod("app-rotate", &["rotating"]);
    let status = w
        .cri
        .pull(&w.world.reference, None, Some(sandbox.clone()))
        .await
        .expect_err("the old password is refused");
    assert!(
        status.message().contains("team/rotating"),
        "{}",
        status.message()
    );

    w.login_secret("rotating", &w.world.registry.host());
    let pulled = w.cri.pull(&w.world.reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), w.world.image.config_digest());
    w.assert_password_not_logged();
}

#[tokio::test]
async fn list_status_fs_info_and_remove_pass_through() {
    let mut w = ProxiedHtpasswd::start("proxy-image-service").await;
    w.login_secret("login", &w.world.registry.host());
    let sandbox = w.manifests.pod("app-is", &["login"]);
    w.cri
        .pull(&w.world.reference, None, Some(sandbox))
        .await
        .expect("pulled");

    let through = w
        .cri
        .list_images()
        .await
        .expect("ListImages through the proxy");
    let direct = w.world.cri.list_images().await.expect("ListImages direct");
    assert_eq!(through, direct);
    assert!(
        through
            .iter()
            .any(|i| i.repo_tags.contains(&w.world.reference)),
        "{through:?}"
    );
    let status = w
        .cri
        .image_status(&w.world.reference)
        .await
        .expect("ImageStatus");
    assert_eq!(
        status,
        w.world.cri.image_status(&w.world.reference).await.unwrap()
    );
    assert_eq!(status.expect("present").id, w.world.image.config_digest());
    let fs = w.cri.image_fs_info().await.expect("ImageFsInfo");
    assert!(!fs.image_filesystems.is_empty());

    w.cri
        .remove_image(&w.world.reference)
        .await
        .expect("RemoveImage");
    assert_eq!(w.cri.image_status(&w.world.reference).await.unwrap(), None);
    assert_eq!(
        w.world.cri.image_status(&w.world.reference).await.unwrap(),
        None
    );
    // Removing again: containerd's answer (success), unchanged.
    w.cri
        .remove_image(&w.world.reference)
        .await
        .expect("idempotent");
    let metrics = w.proxy.metrics_text().await;
    for method in [
        "ListImages",
        "ImageStatus",
        "ImageFsInfo",
        "RemoveImage",
        "PullImage",
    ] {
        assert!(
            metrics.contains(&format!("method=\"{method}\"")),
            "{method} timed:\n{metrics}"
        );
    }
}
