//! Faults around the proxy: the runtime socket missing or restarting (clean UNAVAILABLE,
//! then recovery without restarting the proxy) and a policy module that fails (that pull
//! fails clearly, everything else goes on).

use std::time::Duration;

use regcred_cri_api::methods;
use regcred_host::{PolicyModule, PolicyPre, PolicyRunner};
use regcred_tests::harness::{Containerd, Proxy, RecordingRuntime, basic_auth, raw_call};
use tonic::Code;

use super::proxy_support::Manifests;

#[tokio::test]
async fn missing_runtime_is_unavailable_until_containerd_appears() {
    let manifests = Manifests::new();
    let dir = regcred_tests::harness::fixture_dir("runtime-link");
    // kubelet's view: the runtime socket is not there yet (containerd still starting).
    let runtime_socket = dir.path().join("containerd.sock");
    let proxy = Proxy::builder(&runtime_socket, manifests.path())
        .start()
        .await;
    let mut cri = proxy.client_unchecked().await;

    let status = cri.list_images().await.expect_err("no runtime");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains(&runtime_socket.display().to_string()),
        "names the socket: {}",
        status.message()
    );

    let containerd = Containerd::start().await;
    std::os::unix::fs::symlink(containerd.socket(), &runtime_socket).expect("symlink");
    let images = cri
        .list_images()
        .await
        .expect("recovers once the runtime is there");
    assert!(images.is_empty(), "{images:?}");
    cri.image_fs_info().await.expect("ImageFsInfo");
}

#[tokio::test]
async fn runtime_restart_is_unavailable_then_recovers() {
    let manifests = Manifests::new();
    let dir = regcred_tests::harness::fixture_dir("runtime-restart");
    let socket = dir.path().join("runtime.sock");
    let runtime = RecordingRuntime::start_at(&socket);
    let proxy = Proxy::builder(&socket, manifests.path()).start().await;

    let answer = raw_call(proxy.socket(), methods::LIST_IMAGES, b"").await;
    assert_eq!(answer.code, Code::Ok, "{}", answer.message);

    drop(runtime);
    let answer = raw_call(proxy.socket(), methods::LIST_IMAGES, b"").await;
    assert_eq!(answer.code, Code::Unavailable, "{}", answer.message);

    let runtime = RecordingRuntime::start_at(&socket);
    // The old connection's end may take a moment to be noticed: bounded retries.
    let mut last = None;
    for _ in 0..50 {
        let answer = raw_call(proxy.socket(), methods::LIST_IMAGES, b"").await;
        if answer.code == Code::Ok {
            last = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.is_some(), "the proxy reaches the restarted runtime");
    assert_eq!(runtime.calls().len(), 1);
}

#[tokio::test]
async fn policy_error_fails_that_pull_clearly_and_nothing_else() {
    let wat = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/hostile/misbehave.wat"),
    )
    .expect("tests/data/hostile/misbehave.wat");
    // A module that answers every request with `{"ok":"fine"}`: not a resolution.
    let module = PolicyModule::from_bytes(wat::parse_str(&wat).expect("assembles"));
    let policy = PolicyRunner::Wasm(std::sync::Arc::new(
        PolicyPre::builder().module(module).build().expect("loads"),
    ));
    let world = super::HtpasswdWorld::start("proxy-policy-error").await;
    let manifests = Manifests::new();
    manifests.secret(
        "login",
        &[
            ("serverAddress", &world.registry.host()),
            ("username", world.user),
            ("password", &world.password),
        ],
    );
    let sandbox = manifests.pod("app-policy", &["login"]);
    let proxy = Proxy::builder(world.containerd.socket(), manifests.path())
        .policy(policy)
        .start()
        .await;
    let mut cri = proxy.client().await;

    let status = cri
        .pull(&world.reference, None, Some(sandbox.clone()))
        .await
        .expect_err("the policy fails");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .contains("the policy failed for pod team/app-policy"),
        "{}",
        status.message()
    );
    // Other calls go on: a pull that carries its own auth, and ListImages.
    let auth = basic_auth(&world.registry.url(), world.user, &world.password);
    cri.pull(&world.reference, Some(auth), Some(sandbox))
        .await
        .expect("a pull with auth does not need the policy");
    assert_eq!(cri.list_images().await.expect("ListImages").len(), 1);
    let metrics = proxy.metrics_text().await;
    assert!(metrics.contains("outcome=\"policy_error\"} 1"), "{metrics}");
}
