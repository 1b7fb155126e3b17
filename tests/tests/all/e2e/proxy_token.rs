//! CRI PullImage through the regcred proxy against a registry with token auth: a Secret
//! with only an `identityToken` pulls (containerd exchanges it with a refresh-token grant),
//! which kubelet's dockerconfigjson path cannot do.

use regcred_tests::harness::{
    CapturedLogs, Containerd, Grant, Proxy, Registry, TestImage, TokenServer, assert_logs_exclude,
};

use super::canary_password;
use super::proxy_support::Manifests;

#[tokio::test]
async fn identity_token_alone_pulls_from_the_token_registry() {
    let password = canary_password("proxy-token");
    let refresh_token = format!("{}-refresh", canary_password("proxy-token"));
    let tokens = TokenServer::builder()
        .user("robot", &password)
        .refresh_token(&refresh_token, "robot")
        .start();
    let registry = Registry::start_with_token_auth(&tokens).await;
    let image = TestImage::new("regcred e2e proxy token");
    image
        .push(
            &registry.url(),
            "private/token",
            "v1",
            Some(("robot", &password)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let containerd = Containerd::start().await;
    containerd.add_plain_http_registry(&registry.host());
    let manifests = Manifests::new();
    manifests.secret(
        "token-robot",
        &[
            ("serverAddress", &registry.host()),
            ("identityToken", &refresh_token),
        ],
    );
    let sandbox = manifests.pod("app-token", &["token-robot"]);
    let proxy = Proxy::builder(containerd.socket(), manifests.path())
        .start()
        .await;
    let mut cri = proxy.client().await;

    let reference = registry.image("private/token", "v1");
    let pulled = cri.pull(&reference, None, Some(sandbox)).await;
    assert_eq!(pulled.unwrap(), image.config_digest());
    let grants: Vec<Grant> = tokens
        .grants()
        .into_iter()
        .filter(|g| g.client_id.as_deref() == Some("containerd-client"))
        .map(|g| g.grant)
        .collect();
    assert!(
        grants.contains(&Grant::RefreshToken),
        "containerd used the refresh-token grant: {grants:?}"
    );
    let logs: [&dyn CapturedLogs; 4] = [&tokens, &registry, &containerd, &proxy];
    for secret in [&password, &refresh_token] {
        assert_logs_exclude(&logs, secret);
    }
}
