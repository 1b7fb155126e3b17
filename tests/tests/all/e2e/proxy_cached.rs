//! Who may use a private image already on the node: the proxy's decision at
//! CreateContainer, against real containerd and an htpasswd registry. A container that the
//! proxy lets through reaches containerd, which answers for a sandbox that does not exist
//! (NotFound): that answer is the proof of forwarding. A refusal is the proxy's own
//! PERMISSION_DENIED. (The kit's cached_test.go shows the same with the real kubelet.)

use regcred_agent::{ImageAccess, PullRecords, RECORDS_FILE, VerificationPolicy};
use tonic::Code;

use super::proxy_support::ProxiedHtpasswd;

/// A sandbox ID containerd does not have.
const NO_SANDBOX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A verifying proxy in front of containerd, and pod A's pull of the private image with
/// its Secret `a-login`: the world, the image reference, its ID, the registry URL and A's
/// sandbox.
async fn pulled_by_a(
    test: &str,
) -> (
    ProxiedHtpasswd,
    String,
    String,
    String,
    regcred_cri_api::runtime::v1::PodSandboxConfig,
) {
    let mut w = ProxiedHtpasswd::start_verifying(test).await;
    let image = w.world.reference.clone();
    let id = w.world.image.config_digest().to_owned();
    let url = w.world.registry.url();
    w.login_secret("a-login", &url);
    let a = w.manifests.pod("a", &["a-login"]);
    let pulled = w
        .cri
        .pull(&image, None, Some(a.clone()))
        .await
        .unwrap_or_else(|e| panic!("pod A's pull: {e}"));
    assert_eq!(pulled, id);
    (w, image, id, url, a)
}

/// Pod C, whose Secret `c-auth` holds the same valid credentials as A's in the `auth`
/// form: valid, but a credential the records do not know yet.
fn pod_c_with_auth(
    w: &ProxiedHtpasswd,
    url: &str,
) -> regcred_cri_api::runtime::v1::PodSandboxConfig {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", w.world.user, w.world.password));
    w.manifests
        .secret("c-auth", &[("serverAddress", url), ("auth", auth.as_str())]);
    w.manifests.pod("c", &["c-auth"])
}

/// The records file's text once `settled` holds for it: the agent writes its records in
/// the background (issue 23, finding 9), a few milliseconds after the change.
async fn records_when(w: &ProxiedHtpasswd, settled: impl Fn(&str) -> bool) -> String {
    let file = w.proxy.records_dir().join(RECORDS_FILE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if settled(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the records never settled: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_private_image_is_used_only_with_the_pods_own_accepted_credentials() {
    // Pod A pulls with its Secret.
    let (mut w, image, id, url, a) = pulled_by_a("proxy-cached").await;
    let records = records_when(&w, |text| text.contains(&id)).await;
    assert!(
        !records.contains(&w.world.password),
        "the records hold the password"
    );

    // A's container is created from it: forwarded (containerd's own answer).
    let created = w.cri.create_container(NO_SANDBOX, &id, &image, a).await;
    assert_forwarded(&created);

    // B has no pull secret: refused, in words, naming pod and image.
    let b = w.manifests.pod("b", &[]);
    let refused = w.cri.create_container(NO_SANDBOX, &id, &image, b).await;
    let message = refusal(&refused);
    for expected in [
        "regcred: pod team/b may not use image",
        image.as_str(),
        "from a pull with other credentials",
        "the pod has no pull secret for this image",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }

    // D has a wrong password: refused, naming the Secret, never the value.
    w.manifests.secret(
        "d-wrong",
        &[
            ("serverAddress", url.as_str()),
            ("username", w.world.user),
            ("password", "CANARY-wrong-cached"),
        ],
    );
    let d = w.manifests.pod("d", &["d-wrong"]);
    let message = refusal(&w.cri.create_container(NO_SANDBOX, &id, &image, d).await).to_owned();
    assert!(message.contains("team/d-wrong: "), "{message}");
    assert!(!message.contains("CANARY-wrong-cached"), "{message}");

    // C has another Secret with valid credentials (`auth`): the registry is asked, accepts,
    // and C is remembered from then on.
    let c = pod_c_with_auth(&w, &url);
    assert_forwarded(
        &w.cri
            .create_container(NO_SANDBOX, &id, &image, c.clone())
            .await,
    );

    // With the registry down (killed: connections are refused), A and C are still allowed
    // (from the records: these very pods were allowed before, `pod_on_record`), B is not.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &w.world.registry.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_forwarded(
        &w.cri
            .create_container(NO_SANDBOX, &id, &image, w.manifests.pod("a", &["a-login"]))
            .await,
    );
    assert_forwarded(&w.cri.create_container(NO_SANDBOX, &id, &image, c).await);
    let b = w.manifests.pod("b", &[]);
    refusal(&w.cri.create_container(NO_SANDBOX, &id, &image, b).await);

    let metrics = w.proxy.metrics_text().await;
    for series in [
        "regcred_cri_proxy_image_use_total{decision=\"remembered\"} 1",
        "regcred_cri_proxy_image_use_total{decision=\"pod_on_record\"} 2",
        "regcred_cri_proxy_image_use_total{decision=\"verified\"} 1",
        "regcred_cri_proxy_image_use_total{decision=\"refused\"} 3",
    ] {
        assert!(metrics.contains(series), "{series} not in\n{metrics}");
    }
    let log = w.proxy.log_text();
    assert!(
        log.contains("team/c-auth") && log.contains("the pod's credentials are accepted"),
        "{log}"
    );
    assert!(!log.contains("CANARY-wrong-cached"));
    w.assert_password_not_logged();

    // With the pull Secret source unreadable, no decision is made for a pod not on record
    // (pod C deleted and created again: same name, a new uid): UNAVAILABLE, counted as
    // failed, and the container is not created.
    let manifests = w.manifests.path().to_owned();
    let moved = manifests.with_extension("moved");
    std::fs::rename(&manifests, &moved).unwrap();
    let c = regcred_tests::harness::pod_sandbox(
        super::proxy_support::NAMESPACE,
        "c",
        "c-recreated-0000-new-uid",
    );
    let answer = w.cri.create_container(NO_SANDBOX, &id, &image, c).await;
    std::fs::rename(&moved, &manifests).unwrap();
    match answer {
        Err(status) if status.code() == Code::Unavailable => {
            assert!(
                status
                    .message()
                    .contains("cannot read the pull secrets of pod team/c"),
                "{status:?}"
            );
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    let metrics = w.proxy.metrics_text().await;
    assert!(
        metrics.contains("regcred_cri_proxy_image_use_total{decision=\"failed\"} 1"),
        "{metrics}"
    );

    // Image volumes (KEP-4639) are checked as the container's image is (issue 23, finding
    // 1): B's container from an image without records (every pod's) mounting the private
    // image as a volume is refused; A, on record for it, mounts it.
    let preloaded = super::proxy_support::PRELOADED_ID;
    let b = w.manifests.pod("b", &[]);
    let message = refusal(
        &w.cri
            .create_container_with_volumes(
                NO_SANDBOX,
                preloaded,
                "r.example/open:v1",
                b,
                &[(&id, &image)],
            )
            .await,
    )
    .to_owned();
    assert!(
        message.contains("regcred: pod team/b may not use image") && message.contains(&id),
        "{message}"
    );
    let a = w.manifests.pod("a", &["a-login"]);
    assert_forwarded(
        &w.cri
            .create_container_with_volumes(
                NO_SANDBOX,
                preloaded,
                "r.example/open:v1",
                a,
                &[(&id, &image)],
            )
            .await,
    );
    let log = w.proxy.log_text();
    assert!(log.contains("app (image volume)"), "{log}");

    // RemoveImage through the proxy drops the image's records (read back from disk).
    w.cri.remove_image(&image).await.unwrap();
    records_when(&w, |text| !text.contains(&id)).await;
    let reopened =
        PullRecords::inspect(&w.proxy.records_dir(), std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(reopened.access(&id), ImageAccess::Unrecorded);
}

/// Preloaded means on the node when regcred first listed its images (issue 23, finding
/// 5): such an image is for every pod; one pulled around the agent after that (by hand,
/// or whose record was lost) is not, and a pod without credentials for it is refused.
#[tokio::test]
async fn preloaded_images_are_for_every_pod_and_later_unrecorded_ones_are_not() {
    let mut w = ProxiedHtpasswd::start_verifying_preloaded(
        "proxy-preloaded",
        VerificationPolicy::NeverVerifyPreloadedImages,
        |_| Vec::new(),
    )
    .await;
    let image = w.world.reference.clone();
    let id = w.world.image.config_digest().to_owned();
    let nobody = w.manifests.pod("nobody", &[]);
    assert_forwarded(
        &w.cri
            .create_container(NO_SANDBOX, &id, &image, nobody)
            .await,
    );
    let metrics = w.proxy.metrics_text().await;
    assert!(
        metrics.contains("regcred_cri_proxy_image_use_total{decision=\"preloaded\"} 1"),
        "{metrics}"
    );

    // Another private image, pulled straight into containerd after the agent started.
    let url = w.world.registry.url();
    let later = regcred_tests::harness::TestImage::new("regcred e2e proxy-preloaded, later");
    later
        .push(
            &url,
            "private/proxy-preloaded-later",
            "v1",
            Some((w.world.user, &w.world.password)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let later_ref = w
        .world
        .registry
        .image("private/proxy-preloaded-later", "v1");
    let auth = regcred_tests::harness::basic_auth(&url, w.world.user, &w.world.password);
    w.world
        .cri
        .pull(&later_ref, Some(auth), None)
        .await
        .unwrap();
    let nobody = w.manifests.pod("nobody", &[]);
    let message = refusal(
        &w.cri
            .create_container(NO_SANDBOX, later.config_digest(), &later_ref, nobody)
            .await,
    )
    .to_owned();
    assert!(
        message.contains("without a pull regcred recorded")
            && message.contains("counts as private"),
        "{message}"
    );
    // A pod whose credentials the registry accepts uses it.
    w.login_secret("login", &url);
    let member = w.manifests.pod("member", &["login"]);
    assert_forwarded(
        &w.cri
            .create_container(NO_SANDBOX, later.config_digest(), &later_ref, member)
            .await,
    );
}

/// The proxy forwarded CreateContainer: containerd answered (no such sandbox).
fn assert_forwarded(result: &Result<String, tonic::Status>) {
    match result {
        Err(status) if status.code() == Code::NotFound || status.code() == Code::Unknown => {
            assert!(
                !status.message().contains("regcred"),
                "the proxy answered, not containerd: {status:?}"
            );
        }
        other => panic!("expected containerd's answer for a missing sandbox, got {other:?}"),
    }
}

/// The proxy's refusal message.
fn refusal(result: &Result<String, tonic::Status>) -> &str {
    match result {
        Err(status) if status.code() == Code::PermissionDenied => status.message(),
        other => panic!("expected the proxy's PERMISSION_DENIED, got {other:?}"),
    }
}

#[tokio::test]
async fn always_verify_and_an_unmatched_allowlist_ask_for_preloaded_images_too() {
    for (policy, allowlist, allowed) in [
        (VerificationPolicy::AlwaysVerify, &[][..], false),
        (
            VerificationPolicy::NeverVerifyAllowlistedImages,
            &[][..],
            false,
        ),
        (
            VerificationPolicy::NeverVerifyAllowlistedImages,
            &["127.0.0.1/nothing/*"][..],
            false,
        ),
        (VerificationPolicy::NeverVerify, &[][..], true),
    ] {
        let allowlist: Vec<String> = allowlist.iter().map(|s| (*s).to_owned()).collect();
        let mut w =
            ProxiedHtpasswd::start_verifying_preloaded("proxy-always", policy, |_| allowlist).await;
        let image = w.world.reference.clone();
        let id = w.world.image.config_digest().to_owned();
        let url = w.world.registry.url();
        let nobody = w.manifests.pod("nobody", &[]);
        let answer = w
            .cri
            .create_container(NO_SANDBOX, &id, &image, nobody)
            .await;
        if allowed {
            assert_forwarded(&answer);
        } else {
            let message = refusal(&answer);
            assert!(
                message.contains("the verification policy asks every pod for credentials"),
                "{policy}: {message}"
            );
        }
        // A pod with its own valid credentials passes under every policy.
        w.login_secret("login", &url);
        let member = w.manifests.pod("member", &["login"]);
        assert_forwarded(
            &w.cri
                .create_container(NO_SANDBOX, &id, &image, member)
                .await,
        );
    }
    // Matching allowlist entries: the next test.
}

/// The allowlist is matched on the image's own names (issue 23, finding 12): a pod that
/// names an allowlisted preloaded image by its ID (`image: sha256:...`, which names no
/// repository) may use it, and so may one naming it by tag; a pod naming an image outside
/// the list by its ID may not.
#[tokio::test]
async fn the_allowlist_is_matched_on_the_images_own_names() {
    let mut w = ProxiedHtpasswd::start_verifying_allowlisting(
        "proxy-allowlist-names",
        VerificationPolicy::NeverVerifyAllowlistedImages,
        |world| {
            let reference = world.reference.clone();
            let repository = reference
                .rsplit_once(':')
                .map_or(reference.as_str(), |(r, _)| r);
            vec![repository.to_owned()]
        },
    )
    .await;
    let image = w.world.reference.clone();
    let id = w.world.image.config_digest().to_owned();
    let url = w.world.registry.url();
    let auth = regcred_tests::harness::basic_auth(&url, w.world.user, &w.world.password);
    // On the node without regcred (pulled straight from containerd): preloaded.
    w.world.cri.pull(&image, Some(auth), None).await.unwrap();
    for written in [image.as_str(), id.as_str()] {
        let nobody = w.manifests.pod("nobody", &[]);
        assert_forwarded(
            &w.cri
                .create_container(NO_SANDBOX, &id, written, nobody)
                .await,
        );
    }
    // The control: an image ID the runtime does not have has no names, so
    // nothing in the list covers it, whatever name the pod wrote (matched on that name
    // before, it was let through).
    let unknown = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let nobody = w.manifests.pod("nobody", &[]);
    let message = refusal(
        &w.cri
            .create_container(NO_SANDBOX, unknown, &image, nobody)
            .await,
    )
    .to_owned();
    assert!(
        message.contains("without a pull regcred recorded"),
        "{message}"
    );
}

/// A verification pull grants only what it proved (issue 23, finding 11): when the tag now
/// names another image, a pod whose credentials the registry accepts is still refused the
/// image on the node, with words that say why and what to do; its credentials are
/// recorded for the image the pull got.
#[tokio::test]
async fn a_moved_tag_proves_nothing_about_the_image_on_the_node() {
    let (mut w, image, id, url, _) = pulled_by_a("proxy-moved-tag").await;

    // The tag moves: another image is pushed under the same name.
    let newer = regcred_tests::harness::TestImage::new("regcred e2e proxy-moved-tag, newer");
    let repository = "private/proxy-moved-tag";
    newer
        .push(
            &url,
            repository,
            "v1",
            Some((w.world.user, &w.world.password)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let newer_id = newer.config_digest().to_owned();
    assert_ne!(newer_id, id);

    // C's Secret is valid but new to the records: the registry is asked and serves the
    // newer image, which proves nothing about the one on the node.
    let c = pod_c_with_auth(&w, &url);
    let message = refusal(&w.cri.create_container(NO_SANDBOX, &id, &image, c).await).to_owned();
    for expected in [
        "regcred: pod team/c may not use image",
        "team/c-auth: the registry now serves another image",
        newer_id.as_str(),
        "imagePullPolicy: Always",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
    records_when(&w, |text| text.contains(&newer_id)).await;
    let records =
        PullRecords::inspect(&w.proxy.records_dir(), std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(records.access(&newer_id), ImageAccess::Private);
    w.assert_password_not_logged();
}

/// Credentials kubelet sends itself (a credential provider plugin's, or a Docker Secret the
/// agent may not read) do not lock pods out (issue 23, finding 3). Pod A has no Secret the
/// agent can read; kubelet pulls for it with its own `auth`. A's container starts (A is on
/// record), and so does a replica that never pulled (`IfNotPresent`): such pulls are left to
/// kubelet's own checks (KEP-2535) instead of making the image private under a hash no
/// Secret of any pod could produce. A pull through a regcredentials Secret still makes the
/// image private for pods without credentials.
#[tokio::test]
async fn credentials_kubelet_sent_itself_do_not_lock_pods_out() {
    let mut w = ProxiedHtpasswd::start_verifying("proxy-kubelet-auth").await;
    let image = w.world.reference.clone();
    let id = w.world.image.config_digest().to_owned();
    let url = w.world.registry.url();
    let auth = regcred_tests::harness::basic_auth(&url, w.world.user, &w.world.password);
    let a = w.manifests.pod("a", &[]);
    w.cri
        .pull(&image, Some(auth), Some(a.clone()))
        .await
        .unwrap();
    assert_forwarded(&w.cri.create_container(NO_SANDBOX, &id, &image, a).await);
    let replica = w.manifests.pod("a-replica", &[]);
    assert_forwarded(
        &w.cri
            .create_container(NO_SANDBOX, &id, &image, replica)
            .await,
    );
    let records = records_when(&w, |text| text.contains("a-5f0c-4d7e-9b1a")).await;
    assert!(
        !records.contains("privateSince"),
        "not made private: {records}"
    );

    // A regcredentials pull of the same image: private from then on.
    w.login_secret("login", &url);
    let c = w.manifests.pod("c", &["login"]);
    w.cri.pull(&image, None, Some(c)).await.unwrap();
    let late = w.manifests.pod("late", &[]);
    let message = refusal(&w.cri.create_container(NO_SANDBOX, &id, &image, late).await).to_owned();
    assert!(
        message.contains("regcred: pod team/late may not use image"),
        "{message}"
    );
}
