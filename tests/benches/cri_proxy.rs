//! The CRI proxy's cost: added latency of ImageStatus and ListImages through the proxy
//! against calling containerd directly, in one run, the resolution cost on PullImage, and
//! the CreateContainer decision on an image already on the node (preloaded, and private
//! with the pod's credentials on record).
//!
//! `cargo bench -p regcred-tests --bench cri_proxy` (root: it starts containerd and a
//! registry like the end-to-end tests). Direct and proxied calls alternate, one each per
//! round, on warm connections, so both see the same machine; medians and p90s are
//! printed, and the ratio and the absolute difference at the median.
#![allow(
    clippy::unwrap_used,
    reason = "a benchmark binary: a failure is a panic"
)]
#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::time::{Duration, Instant};

use regcred_agent::{DirSource, PodRef};
use regcred_host::PolicyRunner;
use regcred_tests::harness::{
    Containerd, CriClient, Proxy, Registry, TestImage, basic_auth, pod_sandbox,
};
use regcred_types::{PolicyConfig, RuntimeProfile};

const ROUNDS: usize = 3000;
const WARMUP: usize = 200;
/// A sandbox ID containerd does not have: CreateContainer gets containerd's NotFound, the
/// same answer direct and through the proxy, after the proxy's decision.
const NO_SANDBOX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A unix socket that relays every connection to `target` byte for byte.
struct Relay {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(target: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("relay.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let target = target.to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let (mut client, _) = listener.accept().await.unwrap();
                        let mut upstream = tokio::net::UnixStream::connect(&target).await.unwrap();
                        tokio::spawn(async move {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            socket,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(name: &str, direct: &mut [Duration], proxied: &mut [Duration]) {
    let (d50, p50) = (percentile(direct, 0.5), percentile(proxied, 0.5));
    let (d90, p90) = (percentile(direct, 0.9), percentile(proxied, 0.9));
    println!(
        "{name:<28} direct median {:>7.1} µs p90 {:>7.1} µs | proxy median {:>7.1} µs p90 {:>7.1} µs | \
         ratio {:.2}x, added {:>6.1} µs at the median",
        micros(d50),
        micros(d90),
        micros(p50),
        micros(p90),
        p50.as_secs_f64() / d50.as_secs_f64(),
        micros(p50) - micros(d50),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let registry = Registry::start_htpasswd(&[("bench", "bench-password")]).await;
    let image = TestImage::new("regcred cri-proxy bench");
    image
        .push(
            &registry.url(),
            "bench/app",
            "v1",
            Some(("bench", "bench-password")),
        )
        .await
        .unwrap();
    let containerd = Containerd::start().await;
    containerd.add_plain_http_registry(&registry.host());
    let reference = registry.image("bench/app", "v1");
    let mut direct = containerd.client().await;
    direct
        .pull(
            &reference,
            Some(basic_auth(&registry.url(), "bench", "bench-password")),
            None,
        )
        .await
        .unwrap();

    let manifests = tempfile::tempdir().unwrap();
    let proxy = Proxy::builder(containerd.socket(), manifests.path())
        .start()
        .await;
    let mut proxied = proxy.client().await;

    // The floor of any extra hop: a relay that copies the bytes both ways, unread, on its
    // own thread and runtime as the in-process proxy has.
    let relay = Relay::start(containerd.socket());
    let mut relayed = CriClient::connect(&relay.socket).await.unwrap();
    for (name, is_list) in [("ImageStatus", false), ("ListImages", true)] {
        let mut times = [
            Vec::with_capacity(ROUNDS),
            Vec::with_capacity(ROUNDS),
            Vec::with_capacity(ROUNDS),
        ];
        for round in 0..WARMUP + ROUNDS {
            for (times, client) in times
                .iter_mut()
                .zip([&mut direct, &mut relayed, &mut proxied])
            {
                let started = Instant::now();
                if is_list {
                    client.list_images().await.unwrap();
                } else {
                    client.image_status(&reference).await.unwrap();
                }
                if round >= WARMUP {
                    times.push(started.elapsed());
                }
            }
        }
        let [direct_times, relay_times, proxied_times] = &mut times;
        report(name, direct_times, proxied_times);
        report(&format!("{name} (byte relay)"), direct_times, relay_times);
    }
    drop(relayed);
    drop(relay);

    // Resolution on PullImage: the pod's Secrets from a `dir:` source (read again on
    // every pull) and the candidates from the policy module (wasmtime).
    std::fs::write(
        manifests.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: team}\n\
         spec:\n  imagePullSecrets: [{name: a}, {name: b}]\n  containers: []\n",
    )
    .unwrap();
    for name in ["a", "b"] {
        std::fs::write(
            manifests.path().join(format!("secret-{name}.yaml")),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: team}}\n\
                 type: kubernetes.io/regcredentials\n\
                 stringData: {{serverAddress: '{}', username: bench-{name}, password: bench-password}}\n",
                registry.host()
            ),
        )
        .unwrap();
    }
    let source = DirSource::new(manifests.path());
    let policy = PolicyRunner::wasm().unwrap();
    let pod = PodRef {
        namespace: "team".into(),
        name: "app".into(),
        uid: "u".into(),
    };
    let config = PolicyConfig::default();
    let mut lookups = Vec::with_capacity(ROUNDS);
    let mut resolves = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        let started = Instant::now();
        let secrets = source.lookup(&pod).unwrap();
        let looked_up = started.elapsed();
        let started = Instant::now();
        let resolution = policy
            .resolve(
                &reference,
                &secrets.secrets,
                RuntimeProfile::Containerd,
                &config,
            )
            .unwrap();
        let resolved = started.elapsed();
        assert_eq!(resolution.candidates.len(), 2);
        if round >= WARMUP {
            lookups.push(looked_up);
            resolves.push(resolved);
        }
    }
    let mut totals: Vec<Duration> = lookups
        .iter()
        .zip(&resolves)
        .map(|(a, b)| *a + *b)
        .collect();
    println!(
        "PullImage resolution (2 secrets): dir: lookup median {:.1} µs p90 {:.1} µs, policy resolve \
         (wasm) median {:.1} µs p90 {:.1} µs, total median {:.1} µs",
        micros(percentile(&mut lookups, 0.5)),
        micros(percentile(&mut lookups, 0.9)),
        micros(percentile(&mut resolves, 0.5)),
        micros(percentile(&mut resolves, 0.9)),
        micros(percentile(&mut totals, 0.5)),
    );
    drop(proxied);
    drop(proxy);

    create_container_decisions(&registry, &containerd, &reference, &image, &mut direct).await;
}

/// CreateContainer direct against through a verifying proxy, for a private image whose
/// pulling pod comes again (credentials on record: a `dir:` lookup, a policy resolve and
/// a hash) and for a preloaded image (a records lookup only).
async fn create_container_decisions(
    registry: &Registry,
    containerd: &Containerd,
    private: &str,
    private_image: &TestImage,
    direct: &mut CriClient,
) {
    let preloaded_image = TestImage::new("regcred cri-proxy bench, preloaded");
    preloaded_image
        .push(
            &registry.url(),
            "bench/preloaded",
            "v1",
            Some(("bench", "bench-password")),
        )
        .await
        .unwrap();
    let preloaded = registry.image("bench/preloaded", "v1");
    direct
        .pull(
            &preloaded,
            Some(basic_auth(&registry.url(), "bench", "bench-password")),
            None,
        )
        .await
        .unwrap();
    // The private image again, this time pulled through the proxy so that it has records.
    direct.remove_image(private).await.unwrap();
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: team, uid: u}\n\
         spec:\n  imagePullSecrets: [{name: login}]\n  containers: []\n",
    )
    .unwrap();
    std::fs::write(
        manifests.path().join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: login, namespace: team}}\n\
             type: kubernetes.io/regcredentials\n\
             stringData: {{serverAddress: '{}', username: bench, password: bench-password}}\n",
            registry.host()
        ),
    )
    .unwrap();
    let proxy = Proxy::builder(containerd.socket(), manifests.path())
        .verify_images()
        .start()
        .await;
    let mut proxied = proxy.client().await;
    let sandbox = pod_sandbox("team", "app", "u");
    proxied
        .pull(private, None, Some(sandbox.clone()))
        .await
        .unwrap();

    for (name, image, id) in [
        (
            "Create, private, remembered",
            private,
            private_image.config_digest(),
        ),
        (
            "Create, preloaded",
            preloaded.as_str(),
            preloaded_image.config_digest(),
        ),
    ] {
        let mut direct_times = Vec::with_capacity(ROUNDS);
        let mut proxied_times = Vec::with_capacity(ROUNDS);
        for round in 0..WARMUP + ROUNDS {
            let started = Instant::now();
            let answer = direct
                .create_container(NO_SANDBOX, id, image, sandbox.clone())
                .await;
            let d = started.elapsed();
            assert_eq!(answer.unwrap_err().code(), tonic::Code::NotFound);
            let started = Instant::now();
            let answer = proxied
                .create_container(NO_SANDBOX, id, image, sandbox.clone())
                .await;
            let p = started.elapsed();
            let status = answer.unwrap_err();
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
            if round >= WARMUP {
                direct_times.push(d);
                proxied_times.push(p);
            }
        }
        report(name, &mut direct_times, &mut proxied_times);
    }
    let metrics = proxy.metrics_text().await;
    for series in ["decision=\"remembered\"", "decision=\"preloaded\""] {
        assert!(metrics.contains(series), "{series} not counted:\n{metrics}");
    }
}
