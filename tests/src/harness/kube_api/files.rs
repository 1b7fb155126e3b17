//! What the two servers need and how they start: the PKI, tokens, audit policy and
//! kubeconfigs written to the harness's directory, etcd and kube-apiserver spawned and
//! waited for.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Writes a CA, the API server's serving certificate (127.0.0.1, localhost) and the
/// service account signing key into `dir`; returns the CA certificate (PEM).
pub(super) fn write_pki(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "regcred-tests kube CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let server_key = rcgen::KeyPair::generate().expect("serving key");
    let mut server_params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])
    .expect("serving certificate params");
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params
        .signed_by(&server_key, &ca)
        .expect("serving certificate");
    std::fs::write(dir.join("apiserver.crt"), server.pem()).expect("writing the serving cert");
    write_private(&dir.join("apiserver.key"), &server_key.serialize_pem());

    let sa_key = rcgen::KeyPair::generate().expect("service account key");
    write_private(&dir.join("sa.key"), &sa_key.serialize_pem());
    std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem()).expect("writing sa.pub");

    let ca_pem = ca.pem();
    std::fs::write(dir.join("ca.crt"), &ca_pem).expect("writing the CA cert");
    ca_pem
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
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: regcred-tests\n  cluster:\n    \
         server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: {user}\n  context:\n    cluster: regcred-tests\n    user: {user}\n\
         current-context: {user}\n"
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
