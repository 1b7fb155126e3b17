//! Tests of `pull.rs` (its `tests` module, in a file of its own).

use regcred_cri_api::runtime::v1::{ImageSpec, PodSandboxConfig, PodSandboxMetadata};

use regcred_types::{AuthConfig, Candidate};

use super::*;
use crate::upstream::{scrub, secret_values};

fn request(auth: Option<CriAuthConfig>) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: "127.0.0.1:5000/team/app:v1".into(),
            ..Default::default()
        }),
        auth,
        sandbox_config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "app-0".into(),
                uid: "6f1c".into(),
                namespace: "team".into(),
                attempt: 0,
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn reads_image_pod_and_whether_auth_is_set() {
    let view = PullView::decode(&request(None).encode_to_vec()).unwrap();
    assert_eq!(view.image, "127.0.0.1:5000/team/app:v1");
    assert!(view.auth.is_none());
    let pod = view.pod.unwrap();
    assert_eq!(
        (pod.to_string(), pod.uid.as_str()),
        ("team/app-0".into(), "6f1c")
    );

    let empty = PullView::decode(&request(Some(CriAuthConfig::default())).encode_to_vec());
    assert!(empty.unwrap().auth.is_none(), "an empty auth is no auth");
    let set = request(Some(CriAuthConfig {
        auth: "dTpw".into(),
        ..Default::default()
    }));
    assert!(
        PullView::decode(&set.encode_to_vec())
            .unwrap()
            .auth
            .is_some()
    );
    assert_eq!(PullView::decode(b"\xff\xff"), None);
}

#[test]
fn injected_auth_is_appended_and_everything_else_is_kept_byte_for_byte() {
    let mut original = request(None).encode_to_vec();
    // Field 99 (unknown to this schema) must survive.
    original.extend([0x9a, 0x06, 2, b'h', b'i']);
    let auth = AuthConfig {
        username: "robot".into(),
        password: "pw".into(),
        server_address: "https://127.0.0.1:5000".into(),
        ..AuthConfig::default()
    };
    let spliced = with_auth(&original, &auth);
    assert_eq!(&spliced[..original.len()], &original[..]);
    let decoded = PullImageRequest::decode(&spliced[..]).unwrap();
    let sent = decoded.auth.unwrap();
    assert_eq!(
        (
            sent.username.as_str(),
            sent.password.as_str(),
            sent.server_address.as_str()
        ),
        ("robot", "pw", "https://127.0.0.1:5000")
    );
    assert_eq!(decoded.sandbox_config, request(None).sandbox_config);

    // An empty auth already present merges with the injected one.
    let with_empty = request(Some(CriAuthConfig::default())).encode_to_vec();
    let merged = PullImageRequest::decode(&with_auth(&with_empty, &auth)[..]).unwrap();
    assert_eq!(merged.auth.unwrap().username, "robot");
}

#[test]
fn scrub_hides_every_value_and_the_basic_form() {
    let candidate = Candidate {
        secret: "team/s".into(),
        matched: "r.io".into(),
        auth_config: AuthConfig {
            username: "u".into(),
            password: "CANARY-pw".into(),
            identity_token: "CANARY-tok".into(),
            ..AuthConfig::default()
        },
    };
    let hidden = secret_values(&[candidate]);
    let text = scrub("bad CANARY-pw and CANARY-tok and dTpDQU5BUlktcHc=", &hidden);
    assert_eq!(text, "bad <redacted> and <redacted> and <redacted>");
}
