//! CRI PullImage straight to containerd, against a registry with token auth and the
//! harness's token server: the OAuth2 grants containerd makes for each `AuthConfig` field.

use regcred_cri_api::runtime::v1::AuthConfig;
use regcred_tests::harness::{
    Containerd, CriClient, Grant, KeyReference, PullPath, Registry, TestImage, TokenServer,
    assert_logs_exclude, pod_sandbox,
};
use rstest::rstest;

use super::{canary_password, timed_pull};

const USER: &str = "robot";

/// What the token server does with a token request that has no credentials.
#[derive(Debug, Clone, Copy)]
enum Anonymous {
    /// Issues a token granting nothing, as public registries do: the registry then
    /// refuses with `insufficient_scope`, and containerd's message has no `401`.
    EmptyToken,
    /// Refuses with 401: containerd's message says `401 Unauthorized`.
    Refused,
}

impl Anonymous {
    /// The text containerd's error carries when an anonymous pull is refused.
    fn refusal_text(self) -> &'static str {
        match self {
            Self::EmptyToken => "insufficient_scope",
            Self::Refused => "401",
        }
    }
}

/// A token server, a registry trusting it, one pushed image, and containerd.
struct TokenWorld {
    tokens: TokenServer,
    registry: Registry,
    containerd: Containerd,
    cri: CriClient,
    image: TestImage,
    repository: String,
    reference: String,
    password: String,
    /// A refresh token the token server accepts for [`USER`] (an `identityToken`).
    refresh_token: String,
}

impl TokenWorld {
    async fn start(
        test: &str,
        key_reference: KeyReference,
        anonymous: Anonymous,
        pull: PullPath,
    ) -> Self {
        let test = &format!("{test}-{pull:?}").to_lowercase();
        let password = canary_password(test);
        let refresh_token = format!("{}-refresh", canary_password(test));
        let mut tokens = TokenServer::builder()
            .user(USER, &password)
            .refresh_token(&refresh_token, USER)
            .key_reference(key_reference);
        if let Anonymous::Refused = anonymous {
            tokens = tokens.refuse_anonymous();
        }
        let tokens = tokens.start();
        let registry = Registry::start_with_token_auth(&tokens).await;
        let image = TestImage::new(&format!("regcred e2e token {test}"));
        let repository = format!("private/{test}");
        image
            .push(&registry.url(), &repository, "v1", Some((USER, &password)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let containerd = Containerd::start_with(pull).await;
        containerd.add_plain_http_registry(&registry.host());
        let cri = containerd.client().await;
        let reference = registry.image(&repository, "v1");
        Self {
            tokens,
            registry,
            containerd,
            cri,
            image,
            repository,
            reference,
            password,
            refresh_token,
        }
    }

    /// The grants made after the push (the push itself authenticates with Basic on GET).
    fn grants_by_containerd(&self) -> Vec<regcred_tests::harness::GrantRecord> {
        self.tokens
            .grants()
            .into_iter()
            .filter(|g| {
                g.client_id.as_deref() == Some("containerd-client") || g.grant == Grant::Anonymous
            })
            .collect()
    }

    fn assert_secrets_not_logged(&self, extra: &[&str]) {
        let logs: [&dyn regcred_tests::harness::CapturedLogs; 3] =
            [&self.tokens, &self.registry, &self.containerd];
        for secret in [self.password.as_str(), self.refresh_token.as_str()]
            .iter()
            .chain(extra)
        {
            assert_logs_exclude(&logs, secret);
        }
    }
}

#[rstest]
#[case::x5c_header(KeyReference::X5c)]
#[case::kid_header(KeyReference::Kid)]
#[tokio::test]
async fn identity_token_pulls_with_the_refresh_token_grant(
    #[case] key_reference: KeyReference,
    #[values(PullPath::Transfer, PullPath::Local)] pull: PullPath,
) {
    let mut world = TokenWorld::start(
        &format!("identity-{key_reference:?}").to_lowercase(),
        key_reference,
        Anonymous::EmptyToken,
        pull,
    )
    .await;
    let auth = AuthConfig {
        identity_token: world.refresh_token.clone(),
        server_address: world.registry.url(),
        ..Default::default()
    };
    let reference = world.reference.clone();
    let sandbox = Some(pod_sandbox("team-a", "app-0", "5d1e"));
    let (pulled, _) = timed_pull(
        "identity token",
        world.cri.pull(&reference, Some(auth), sandbox),
    )
    .await;
    assert_eq!(
        pulled.expect("pulled with the identity token"),
        world.image.config_digest()
    );

    let grants = world.grants_by_containerd();
    assert!(
        grants.iter().any(|g| g.method == "POST"
            && g.grant == Grant::RefreshToken
            && g.subject.as_deref() == Some(USER)
            && g.status == 200),
        "containerd made no refresh-token grant: {grants:?}"
    );
    world.assert_secrets_not_logged(&[]);
}

#[rstest]
#[tokio::test]
async fn username_password_pulls_with_the_password_grant(
    #[values(PullPath::Transfer, PullPath::Local)] pull: PullPath,
) {
    let mut world = TokenWorld::start(
        "token-password",
        KeyReference::X5c,
        Anonymous::EmptyToken,
        pull,
    )
    .await;
    let auth = AuthConfig {
        username: USER.to_owned(),
        password: world.password.clone(),
        server_address: world.registry.url(),
        ..Default::default()
    };
    let reference = world.reference.clone();
    let (pulled, _) = timed_pull(
        "token password",
        world.cri.pull(&reference, Some(auth), None),
    )
    .await;
    assert_eq!(
        pulled.expect("pulled with username/password"),
        world.image.config_digest()
    );
    let grants = world.grants_by_containerd();
    assert!(
        grants
            .iter()
            .any(|g| g.method == "POST" && g.grant == Grant::Password && g.status == 200),
        "containerd made no password grant: {grants:?}"
    );
    world.assert_secrets_not_logged(&[]);
}

#[rstest]
#[case::anonymous_token_without_access(Anonymous::EmptyToken)]
#[case::anonymous_refused(Anonymous::Refused)]
#[tokio::test]
async fn registry_token_alone_is_ignored_and_the_pull_is_anonymous(
    #[case] anonymous: Anonymous,
    #[values(PullPath::Transfer, PullPath::Local)] pull: PullPath,
) {
    let test = format!("registry-token-{anonymous:?}").to_lowercase();
    let mut world = TokenWorld::start(&test, KeyReference::X5c, anonymous, pull).await;
    // A token the registry would accept: containerd ignores the field, so it goes anonymous.
    let valid = world
        .tokens
        .issue_token(USER, &format!("repository:{}:pull", world.repository));
    let auth = AuthConfig {
        registry_token: valid.clone(),
        server_address: world.registry.url(),
        ..Default::default()
    };
    let reference = world.reference.clone();
    let (pulled, _) = timed_pull(
        "registry token",
        world.cri.pull(&reference, Some(auth), None),
    )
    .await;
    let status = pulled.expect_err("a registry token alone does not pull on containerd");
    let refusal = anonymous.refusal_text();
    assert!(
        status.message().contains(refusal),
        "no {refusal:?} in: {status}"
    );
    let grants = world.grants_by_containerd();
    assert!(
        grants.iter().all(|g| g.grant == Grant::Anonymous),
        "containerd should only have asked anonymously: {grants:?}"
    );
    world.assert_secrets_not_logged(&[&valid]);
}

#[rstest]
#[case::no_auth_anonymous_token_without_access(None, Anonymous::EmptyToken, "insufficient_scope")]
#[case::no_auth_anonymous_refused(None, Anonymous::Refused, "401")]
#[case::unknown_identity_token(Some("not-a-refresh-token"), Anonymous::EmptyToken, "401")]
#[tokio::test]
async fn token_registry_refuses(
    #[case] identity_token: Option<&str>,
    #[case] anonymous: Anonymous,
    #[case] refusal: &str,
    #[values(PullPath::Transfer, PullPath::Local)] pull: PullPath,
) {
    let test = format!("refuses-{}-{anonymous:?}", identity_token.is_some()).to_lowercase();
    let mut world = TokenWorld::start(&test, KeyReference::X5c, anonymous, pull).await;
    let auth = identity_token.map(|token| AuthConfig {
        identity_token: token.to_owned(),
        server_address: world.registry.url(),
        ..Default::default()
    });
    let reference = world.reference.clone();
    let status = world
        .cri
        .pull(&reference, auth, None)
        .await
        .expect_err("refused");
    println!("containerd says: {}", status.message());
    assert!(
        status.message().contains(refusal),
        "no {refusal:?} in: {status}"
    );
    world.assert_secrets_not_logged(&[]);
}
