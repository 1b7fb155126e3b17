//! The harness itself: programs are stopped by PID with their directories removed, a
//! registry restarts in place, pushes answer the registry's challenges, missing programs
//! fail loudly.

use std::path::Path;

use regcred_tests::harness::{
    Containerd, KubeApi, Registry, TestImage, TokenServer, require_program,
};

fn process_is_alive(pid: u32) -> bool {
    // A zombie would still have /proc/PID: the fixture reaps its child, so it is gone.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn dropping_fixtures_kills_their_processes_and_removes_their_directories() {
    let registry = Registry::start_htpasswd(&[("u", "p")]).await;
    let containerd = Containerd::start().await;
    let (registry_pid, containerd_pid) = (registry.pid(), containerd.pid());
    let registry_dir = registry.dir().to_owned();
    let containerd_socket = containerd.socket().to_owned();
    assert!(process_is_alive(registry_pid) && process_is_alive(containerd_pid));
    assert!(containerd_socket.exists());

    drop(registry);
    drop(containerd);
    assert!(
        !process_is_alive(registry_pid),
        "registry {registry_pid} still running"
    );
    assert!(
        !process_is_alive(containerd_pid),
        "containerd {containerd_pid} still running"
    );
    assert!(!registry_dir.exists(), "registry directory left behind");
    assert!(
        !containerd_socket.parent().expect("dir").exists(),
        "containerd directory left behind"
    );
}

#[tokio::test]
async fn the_kube_api_stops_and_restarts_its_api_server_and_drop_kills_both() {
    let mut api = KubeApi::start().await;
    let etcd = api.etcd_pid();
    let first = api.apiserver_pid().expect("running");
    let dir = api.dir().to_owned();
    assert!(process_is_alive(etcd) && process_is_alive(first));

    api.stop_apiserver();
    assert!(
        !process_is_alive(first),
        "kube-apiserver {first} still running"
    );
    assert!(process_is_alive(etcd), "etcd outlives the outage");
    api.restart_apiserver().await;
    // The data survived the restart (the same etcd): the namespace set up before is there.
    let uid = api.create_pod("lifecycle", "before", &[]).await;
    api.stop_apiserver();
    api.restart_apiserver().await;
    let again = api.recreate_pod("lifecycle", "before", &[]).await;
    assert_ne!(uid, again);
    let second = api.apiserver_pid().expect("running again");

    drop(api);
    for pid in [etcd, second] {
        assert!(!process_is_alive(pid), "{pid} still running after drop");
    }
    assert!(!dir.exists(), "the kube API directory is left behind");
}

#[tokio::test]
async fn a_restarted_registry_serves_what_it_held_on_the_same_address() {
    let image = TestImage::new("restart check");
    let mut registry = Registry::start_htpasswd(&[("u", "p")]).await;
    image
        .push(&registry.url(), "a/b", "v1", Some(("u", "p")))
        .await
        .expect("push");
    let (first, host) = (registry.pid(), registry.host());

    registry.restart().await.expect("the registry starts again");
    assert!(
        !process_is_alive(first),
        "the first registry {first} still runs"
    );
    assert_ne!(registry.pid(), first);
    assert_eq!(registry.host(), host, "the same address");
    let manifest = reqwest::Client::new()
        .get(format!("{}/v2/a/b/manifests/v1", registry.url()))
        .basic_auth("u", Some("p"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("GET the manifest");
    assert_eq!(
        manifest.status(),
        200,
        "the pushed manifest after the restart"
    );
    assert_eq!(
        manifest
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok()),
        Some(image.manifest_digest())
    );
    let second = registry.pid();
    drop(registry);
    assert!(
        !process_is_alive(second),
        "{second} still running after drop"
    );
}

#[tokio::test]
async fn pushes_answer_basic_and_bearer_challenges_and_fail_on_wrong_credentials() {
    let image = TestImage::new("push check");
    let registry = Registry::start_htpasswd(&[("u", "right")]).await;
    image
        .push(&registry.url(), "a/b", "v1", Some(("u", "right")))
        .await
        .expect("Basic push");
    let refused = image
        .push(&registry.url(), "a/b", "v2", Some(("u", "wrong")))
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("401"), "{refused}");
    assert!(
        !refused.to_string().contains("wrong"),
        "no credentials in errors: {refused}"
    );
    let anonymous = image
        .push(&registry.url(), "a/b", "v3", None)
        .await
        .expect_err("refused");
    assert!(
        anonymous.to_string().contains("no credentials"),
        "{anonymous}"
    );

    let tokens = TokenServer::builder().user("u", "right").start();
    let token_registry = Registry::start_with_token_auth(&tokens).await;
    image
        .push(&token_registry.url(), "a/b", "v1", Some(("u", "right")))
        .await
        .expect("Bearer push");
    let refused = image
        .push(&token_registry.url(), "a/b", "v2", Some(("u", "wrong")))
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("401"), "{refused}");
}

#[test]
#[should_panic(expected = "run scripts/setup")]
fn a_missing_program_fails_the_test_with_what_to_do() {
    require_program("regcred-no-such-program", "regcred-no-such-package");
}
