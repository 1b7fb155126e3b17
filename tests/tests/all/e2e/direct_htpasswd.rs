//! CRI PullImage straight to containerd, against a registry with htpasswd (Basic) auth:
//! which `AuthConfig` shapes pull and which are refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regcred_cri_api::runtime::v1::AuthConfig;
use regcred_tests::harness::{PullPath, pod_sandbox};
use rstest::rstest;

use super::{HtpasswdWorld, refused_by_basic_registry, timed_pull};

/// The `AuthConfig` a case sends.
#[derive(Debug, Clone, Copy)]
enum Credentials {
    /// No `auth` in the request.
    Absent,
    /// username + password, `server_address` = `http://127.0.0.1:PORT`.
    UsernamePasswordWithUrl,
    /// username + password, no `server_address`.
    UsernamePasswordOnly,
    /// username + a wrong password, `server_address` = URL.
    WrongPassword,
    /// Only `auth` = base64(`user:password`).
    AuthOnly,
    /// username + password, `server_address` = bare `127.0.0.1:PORT`, as the proposal writes it.
    BareHostPortServerAddress,
    /// username + password, `server_address` of another registry.
    OtherRegistryServerAddress,
}

impl Credentials {
    fn auth_config(self, world: &HtpasswdWorld) -> Option<AuthConfig> {
        let user = world.user.to_owned();
        let password = world.password.clone();
        let config = match self {
            Self::Absent => return None,
            Self::UsernamePasswordWithUrl => AuthConfig {
                username: user,
                password,
                server_address: world.registry.url(),
                ..Default::default()
            },
            Self::UsernamePasswordOnly => AuthConfig {
                username: user,
                password,
                ..Default::default()
            },
            Self::WrongPassword => AuthConfig {
                username: user,
                password: format!("{password}-wrong"),
                server_address: world.registry.url(),
                ..Default::default()
            },
            Self::AuthOnly => AuthConfig {
                auth: STANDARD.encode(format!("{user}:{password}")),
                ..Default::default()
            },
            Self::BareHostPortServerAddress => AuthConfig {
                username: user,
                password,
                server_address: world.registry.host(),
                ..Default::default()
            },
            Self::OtherRegistryServerAddress => AuthConfig {
                username: user,
                password,
                server_address: "https://registry.invalid".to_owned(),
                ..Default::default()
            },
        };
        Some(config)
    }
}

/// What the pull must do.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Pulled; the image reference is the image's config digest.
    Pulled,
    /// Refused by the registry: the gRPC error mentions `401` (containerd 1.6) or
    /// containerd 2.x's "no basic auth credentials" ([`refused_by_basic_registry`]).
    Unauthorized,
    /// Failed before reaching the registry: the error contains this text.
    FailsWith(&'static str),
}

#[rstest]
#[case::no_auth_is_refused(Credentials::Absent, Outcome::Unauthorized)]
#[case::username_password_with_url_server_address_pulls(
    Credentials::UsernamePasswordWithUrl,
    Outcome::Pulled
)]
#[case::username_password_without_server_address_pulls(
    Credentials::UsernamePasswordOnly,
    Outcome::Pulled
)]
#[case::wrong_password_is_refused(Credentials::WrongPassword, Outcome::Unauthorized)]
#[case::auth_alone_pulls(Credentials::AuthOnly, Outcome::Pulled)]
// containerd url.Parse()s server_address: a bare host:port is a Go parse error.
#[case::bare_host_port_server_address_is_a_parse_error(
    Credentials::BareHostPortServerAddress,
    Outcome::FailsWith("first path segment in URL cannot contain colon")
)]
// A server_address naming another host: containerd drops the credentials silently.
#[case::other_registry_server_address_goes_anonymous(
    Credentials::OtherRegistryServerAddress,
    Outcome::Unauthorized
)]
#[tokio::test]
async fn pull_image_with(
    #[case] credentials: Credentials,
    #[case] outcome: Outcome,
    #[values(PullPath::Transfer, PullPath::Local)] pull: PullPath,
) {
    let test = format!("{credentials:?}-{pull:?}").to_lowercase();
    let mut world = HtpasswdWorld::start_with(&test, pull).await;
    let auth = credentials.auth_config(&world);
    let sandbox = Some(pod_sandbox(
        "team-a",
        "app-0",
        "0b6c3a54-5cc1-4a0e-9a56-6f8a3d2b1c00",
    ));
    let reference = world.reference.clone();
    let (result, _) = timed_pull(&test, world.cri.pull(&reference, auth, sandbox)).await;

    match (outcome, result) {
        (Outcome::Pulled, Ok(image_ref)) => {
            assert_eq!(
                image_ref,
                world.image.config_digest(),
                "containerd reports the image ID"
            );
        }
        (Outcome::Unauthorized, Err(status)) => {
            assert_eq!(status.code(), tonic::Code::Unknown, "{status}");
            assert!(
                refused_by_basic_registry(status.message()),
                "not refused by the registry: {status}"
            );
        }
        (Outcome::FailsWith(text), Err(status)) => {
            println!("containerd says: {}", status.message());
            assert!(
                status.message().contains(text),
                "unexpected error: {status}"
            );
            assert!(
                !refused_by_basic_registry(status.message()),
                "reached the registry: {status}"
            );
        }
        (expected, got) => panic!("expected {expected:?}, got {got:?}"),
    }
    world.assert_password_not_logged();
}
