//! What the two servers need and how they start: the PKI, tokens, audit policy and
//! kubeconfigs written to the harness's directory, etcd and kube-apiserver spawned and
//! waited for.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::pki;
use super::super::process::{ChildProcess, free_port};
use super::{ADMIN_USER, APISERVER_TIMEOUT, ETCD_TIMEOUT, PORT_ATTEMPTS, PROXY_USER};

pub(super) fn random_token(user: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random bytes");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{user}-{hex}")
}

/// Writes a file only its owner may read (tokens, keys, kubeconfigs).
pub(super) fn write_private(path: &Path, contents: &str) {
    pki::write_private(path, contents).unwrap_or_else(|e| panic!("{e}"));
}

/// Writes a CA, the API server's serving certificate (127.0.0.1, localhost) and the
/// service account signing key into `dir` (the test tree's one PKI writer,
/// [`pki`]); returns the CA certificate (PEM).
pub(super) fn write_pki(dir: &Path) -> String {
    let ca = pki::Authority::generate("regcred-tests kube CA").unwrap_or_else(|e| panic!("{e}"));
    ca.issue(&pki::Leaf::server(
        "kube-apiserver",
        &["127.0.0.1", "localhost", "kubernetes.default.svc"],
    ))
    .and_then(|pair| pair.write(dir, "apiserver"))
    .unwrap_or_else(|e| panic!("{e}"));
    let (sa_key, sa_pub) = pki::signing_key().unwrap_or_else(|e| panic!("{e}"));
    write_private(&dir.join("sa.key"), &sa_key);
    std::fs::write(dir.join("sa.pub"), sa_pub).expect("writing sa.pub");
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).expect("writing the CA cert");
    ca.cert_pem().to_owned()
}

/// Metadata (no bodies) for every request of the proxy user, and for the admin's audit
/// marker GETs of ConfigMaps; nothing else.
pub(super) fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
         omitStages: [\"RequestReceived\", \"ResponseStarted\"]\n\
         rules:\n\
         - level: Metadata\n  users: [\"{PROXY_USER}\"]\n\
         - level: Metadata\n  users: [\"{ADMIN_USER}\"]\n  verbs: [\"get\"]\n  \
           resources:\n  - group: \"\"\n    resources: [\"configmaps\"]\n\
         - level: None\n"
    )
}

pub(super) fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    pki::kubeconfig(
        "regcred-tests",
        server,
        pki::CaRef::Pem(ca_pem),
        user,
        pki::Credential::Token(token),
    )
}

pub(super) async fn client_from_yaml(yaml: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).expect("parsing a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a client configuration from the kubeconfig");
    kube::Client::try_from(config).expect("a kube client")
}

/// A client configuration from a kubeconfig file (as the binary reads `KUBECONFIG`).
pub async fn config_from_file(path: &Path) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading the kubeconfig {}: {e}", path.display()));
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("the kubeconfig {}: {e}", path.display()))
}

pub(super) async fn start_etcd(program: &Path, dir: &Path) -> (ChildProcess, SocketAddr) {
    let mut last_log = String::new();
    for attempt in 1..=PORT_ATTEMPTS {
        let client = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let log = dir.join(format!("etcd-{attempt}.log"));
        let data = dir.join(format!("etcd-{attempt}"));
        let args: Vec<String> = vec![
            "--name".into(),
            "regcred-tests".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone(),
            "--initial-cluster".into(),
            format!("regcred-tests={peer_url}"),
            // Test data: nothing to keep across a power loss, and fsync is slow here.
            "--unsafe-no-fsync".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let mut etcd = ChildProcess::spawn("etcd", program, &args, &log);
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(client).await.is_ok() {
                return (etcd, client);
            }
            if etcd.exited().is_some() {
                break;
            }
            assert!(
                started.elapsed() < ETCD_TIMEOUT,
                "etcd did not listen on {client} within {ETCD_TIMEOUT:?}; its log:\n{}",
                etcd.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last_log = etcd.log_text();
        if !last_log.contains("address already in use") {
            panic!("etcd exited at start; its log:\n{last_log}");
        }
    }
    panic!("etcd found no free ports in {PORT_ATTEMPTS} attempts; last log:\n{last_log}")
}

pub(super) fn apiserver_log_path(dir: &Path, start: usize) -> PathBuf {
    dir.join(format!("kube-apiserver-{start}.log"))
}

pub(super) fn audit_log_path(dir: &Path, start: usize) -> PathBuf {
    dir.join(format!("audit-{start}.log"))
}

/// Spawns kube-apiserver (start number `start` names its log files) without waiting.
pub(super) fn spawn_apiserver(
    program: &Path,
    dir: &Path,
    etcd: SocketAddr,
    port: u16,
    start: usize,
) -> ChildProcess {
    let file = |name: &str| dir.join(name).display().to_string();
    let args: Vec<String> = vec![
        "--etcd-servers".into(),
        format!("http://{etcd}"),
        "--bind-address".into(),
        "127.0.0.1".into(),
        "--advertise-address".into(),
        "127.0.0.1".into(),
        "--secure-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        file("apiserver.crt"),
        "--tls-private-key-file".into(),
        file("apiserver.key"),
        "--token-auth-file".into(),
        file("tokens.csv"),
        "--anonymous-auth=false".into(),
        "--authorization-mode".into(),
        "RBAC".into(),
        "--service-account-issuer".into(),
        "https://kubernetes.default.svc.cluster.local".into(),
        "--service-account-key-file".into(),
        file("sa.pub"),
        "--service-account-signing-key-file".into(),
        file("sa.key"),
        "--service-cluster-ip-range".into(),
        "10.96.0.0/24".into(),
        "--endpoint-reconciler-type".into(),
        "none".into(),
        "--audit-policy-file".into(),
        file("audit-policy.yaml"),
        "--audit-log-path".into(),
        audit_log_path(dir, start).display().to_string(),
        "--audit-log-format".into(),
        "json".into(),
        "--profiling=false".into(),
        "--cert-dir".into(),
        file("apiserver-certs"),
    ];
    ChildProcess::spawn(
        "kube-apiserver",
        program,
        &args,
        &apiserver_log_path(dir, start),
    )
}

/// Waits until `/readyz` answers `ok` to the admin; `Err(log)` when the API server exits
/// first, a panic when it takes too long.
pub(super) async fn wait_until_ready(
    apiserver: &mut ChildProcess,
    admin: &kube::Client,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let request = hyper::Request::get("/readyz")
            .body(Vec::new())
            .expect("the /readyz request");
        if let Ok(text) = admin.request_text(request).await
            && text.trim() == "ok"
        {
            return Ok(());
        }
        if apiserver.exited().is_some() {
            return Err(apiserver.log_text());
        }
        assert!(
            started.elapsed() < APISERVER_TIMEOUT,
            "kube-apiserver was not ready within {APISERVER_TIMEOUT:?}; its log:\n{}",
            apiserver.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
