//! Load on the admission webhook: starts the real `regcred webhook` binary (a second
//! process) on a loopback port and drives it over TLS with kept-alive HTTP/1.1
//! connections, with a mix of valid and invalid Secrets, for a bounded number of
//! requests and a bounded time. Prints throughput and latency percentiles, how long the
//! server took from its spawn until its port accepted a connection and until it answered
//! its first review, and its resident memory (`VmRSS` in `/proc/PID/status`) right after
//! that first answer, after 10,000 reviews and at the end, with its peak (`VmHWM`).
//!
//! ```sh
//! cargo bench -p regcred --bench webhook_load
//! cargo bench -p regcred --bench webhook_load -- --requests=100000 --connections=16 --seconds=60
//! ```
//!
//! Flags: `--requests=N` (default 50,000), `--connections=N` (default 8),
//! `--seconds=N` (default 30: the run stops there even if requests remain), `--native`
//! (the webhook runs the rules natively instead of the wasm module), `--binary=PATH` (run
//! that regcred instead of this build's, e.g. the static musl build the image carries),
//! `--json`. At the end it prints where the resident memory is, from `/proc/PID/smaps`:
//! the binary's pages, the heap, other anonymous mappings, thread stacks, other files.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../tests/support/webhook_client.rs"]
mod webhook_client;
use serde_json::{Value, json};
use webhook_client::{WebhookClient as Client, webhook_client_config as client_config};

/// Warm-up rounds: each sends every workload body once.
const WARM_UP_ROUNDS: usize = 250;
/// Resident memory is sampled once this many reviews were answered.
const MEMORY_SAMPLE_AT: usize = 10_000;

struct Options {
    requests: usize,
    connections: usize,
    seconds: u64,
    native: bool,
    json: bool,
    binary: Option<std::path::PathBuf>,
}

fn options() -> Options {
    let mut options = Options {
        requests: 50_000,
        connections: 8,
        seconds: 30,
        native: false,
        json: false,
        binary: None,
    };
    for arg in std::env::args().skip(1) {
        let (key, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        match key {
            "--requests" => options.requests = value.parse().expect("--requests=N"),
            "--connections" => options.connections = value.parse().expect("--connections=N"),
            "--seconds" => options.seconds = value.parse().expect("--seconds=N"),
            "--native" => options.native = true,
            "--json" => options.json = true,
            "--binary" => options.binary = Some(value.into()),
            // `cargo bench` passes --bench; filters do not apply to this one benchmark.
            _ => {}
        }
    }
    options.connections = options.connections.max(1);
    options
}

/// The webhook process; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Just before the process was spawned.
    spawned: Instant,
    /// When a TCP connection to its port first succeeded.
    accepting: Instant,
    _dir: tempfile::TempDir,
}

/// `VmRSS` and `VmHWM` of a process, in KiB, from `/proc/PID/status`.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the webhook's /proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resident KiB of a process by kind of mapping, from `/proc/PID/smaps`: `binary` (the
/// executable's file), `heap` (`[heap]`, where glibc's main arena grows), `anonymous`
/// (other private mappings: thread arenas, the wasm instance pool, mmap'd buffers),
/// `stacks` (`[stack]` and the threads' guard-paged stacks are anonymous too, so this is
/// the main thread's), `files` (shared libraries and other files).
fn smaps_kib(pid: u32, binary: &std::path::Path) -> Vec<(&'static str, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .expect("the webhook's /proc/PID/smaps");
    let binary = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_owned());
    let mut totals = vec![
        ("binary", 0),
        ("heap", 0),
        ("anonymous", 0),
        ("stacks", 0),
        ("files", 0),
    ];
    let mut kind = 2;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            // A mapping's header: address perms offset dev inode [path].
            let path: Vec<&str> = fields.skip(4).collect();
            let path = path.join(" ");
            kind = match path.as_str() {
                "" => 2,
                "[heap]" => 1,
                "[stack]" => 3,
                p if std::path::Path::new(p) == binary => 0,
                p if p.starts_with('[') => 2,
                _ => 4,
            };
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            totals[kind].1 += kib;
        }
    }
    totals
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A loopback port nobody listens on right now (the server is given it, so the bench can
/// connect before the server says where it listens).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    native: bool,
    binary: &std::path::Path,
) -> Server {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write the key");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = Command::new(binary);
    if native {
        command.arg("--native");
    }
    command
        .arg("webhook")
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .arg("--addr")
        .arg(addr.to_string())
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let spawned = Instant::now();
    let mut child = command.spawn().expect("start regcred webhook");
    // The first log line names the port; later lines (denials) are read and dropped so
    // the pipe never fills.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = event["addr"].as_str()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    // Polled from the spawn: the first connection that succeeds (then closed; the server
    // sees a client that left before its handshake).
    let accepting = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break Instant::now();
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(60),
            "regcred webhook does not accept connections on {addr}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("regcred webhook exited: {status}");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let announced: SocketAddr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("regcred webhook announces its address")
        .parse()
        .expect("a socket address");
    assert_eq!(announced, addr, "the webhook listens where it was told");
    Server {
        child,
        addr,
        spawned,
        accepting,
        _dir: dir,
    }
}

fn review(uid: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "requestKind": {"group": "", "version": "v1", "kind": "Secret"},
            "requestResource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": object["metadata"]["name"],
            "namespace": "apps",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-create"}
        }
    }))
    .expect("JSON")
}

/// (body, allowed): half valid, half invalid, as the API server holds them (base64
/// `data`, managedFields).
fn workload() -> Vec<(Vec<u8>, bool)> {
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let secret = |name: &str, data: Value| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": name, "namespace": "apps", "uid": "0f2b5e2e-8a8e-4b5e-9a53-6f0f2f4c7d11",
                "creationTimestamp": "2025-06-02T09:14:27Z",
                "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                    "time": "2025-06-02T09:14:27Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}, "f:password": {}, "f:serverAddress": {}, "f:username": {}}, "f:type": {}}}]
            },
            "type": "kubernetes.io/regcredentials",
            "data": data,
        })
    };
    vec![
        (
            review(
                "valid-1",
                secret(
                    "quay-robot",
                    json!({
                        "serverAddress": b64("quay.io/my-org"), "username": b64("my-org+robot"), "password": b64("example-password"),
                    }),
                ),
            ),
            true,
        ),
        (
            review(
                "valid-2",
                secret(
                    "onprem",
                    json!({
                        "serverAddress": b64("https://registry.corp.example:5000"), "identityToken": b64("example-refresh-token"),
                    }),
                ),
            ),
            true,
        ),
        (
            review(
                "invalid-1",
                secret(
                    "bad-colon",
                    json!({
                        "serverAddress": b64("registry.corp.example"), "username": b64("team:robot"), "password": b64("example-password"),
                    }),
                ),
            ),
            false,
        ),
        (
            review(
                "invalid-2",
                secret(
                    "bad-server",
                    json!({
                        "serverAddress": b64("ftp://registry.corp.example"), "auth": b64("robot-without-colon"),
                    }),
                ),
            ),
            false,
        ),
    ]
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    wrong: usize,
    errors: usize,
}

async fn drive(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    bodies: Arc<Vec<(Vec<u8>, bool)>>,
    next: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    total: usize,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut client = Client::connect(addr, config.clone())
        .await
        .expect("connect");
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total || Instant::now() >= deadline {
            break;
        }
        let (body, allowed) = &bodies[i % bodies.len()];
        let started = Instant::now();
        match client.send("POST", "/validate", body.clone()).await {
            Ok((status, answer)) => {
                let elapsed = started.elapsed();
                answered.fetch_add(1, Ordering::Relaxed);
                tally
                    .latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                let ok = status == 200
                    && serde_json::from_slice::<Value>(&answer)
                        .is_ok_and(|a| a["response"]["allowed"] == *allowed);
                if !ok {
                    tally.wrong += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                client = Client::connect(addr, config.clone())
                    .await
                    .expect("reconnect");
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn main() {
    let options = options();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let binary = options
        .binary
        .clone()
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_regcred").into());
    let server = start_server(&cert, options.native, &binary);
    let config = client_config(cert.cert.der());
    let bodies = Arc::new(workload());

    // The load generator: its own process and runtime, two threads for two cores.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let pid = server.child.id();
    let (first_answer, after_start) = runtime.block_on(async {
        // The first review, as soon as the port accepts: start to serving.
        let mut warm = Client::connect(server.addr, config.clone())
            .await
            .expect("connect");
        assert_eq!(&warm.peer_certificate, cert.cert.der());
        let (body, allowed) = &bodies[0];
        let (status, answer) = warm.review(body.clone()).await;
        let first_answer = Instant::now();
        let after_start = memory_kib(pid);
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&answer).expect("JSON");
        assert_eq!(answer["response"]["allowed"], *allowed);
        (first_answer, after_start)
    });
    runtime.block_on(async {
        // Warm: every body 250 times, answers checked.
        let mut warm = Client::connect(server.addr, config.clone())
            .await
            .expect("connect");
        for _ in 0..WARM_UP_ROUNDS {
            for (body, allowed) in bodies.iter() {
                let (status, answer) = warm.review(body.clone()).await;
                assert_eq!(status, 200);
                let answer: Value = serde_json::from_slice(&answer).expect("JSON");
                assert_eq!(answer["response"]["allowed"], *allowed);
            }
        }
    });

    // Resident memory once 10,000 reviews were answered (warm-up and first included),
    // sampled by a thread that watches the count.
    let warmed_up = 1 + WARM_UP_ROUNDS * bodies.len();
    let answered = Arc::new(AtomicUsize::new(warmed_up));
    let (sample_tx, sample_rx) = std::sync::mpsc::channel();
    let sampler = {
        let answered = answered.clone();
        std::thread::spawn(move || {
            while answered.load(Ordering::Relaxed) < MEMORY_SAMPLE_AT {
                if sample_rx.try_recv().is_ok() {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Some((answered.load(Ordering::Relaxed), memory_kib(pid)))
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let tallies: Vec<Tally> = runtime.block_on(async {
        let tasks: Vec<_> = (0..options.connections)
            .map(|_| {
                tokio::spawn(drive(
                    server.addr,
                    config.clone(),
                    bodies.clone(),
                    next.clone(),
                    answered.clone(),
                    options.requests,
                    deadline,
                ))
            })
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.expect("a driver task"));
        }
        tallies
    });
    let elapsed = started.elapsed();
    let at_end = (answered.load(Ordering::Relaxed), memory_kib(pid));
    let where_resident = smaps_kib(pid, &binary);
    let _ = sample_tx.send(());
    let at_sample = sampler.join().expect("the memory sampler");
    let to_accept = server.accepting.duration_since(server.spawned);
    let to_first_answer = first_answer.duration_since(server.spawned);
    drop(server);

    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let wrong: usize = tallies.iter().map(|t| t.wrong).sum();
    let errors: usize = tallies.iter().map(|t| t.errors).sum();
    let completed = latencies.len();
    let throughput = completed as f64 / elapsed.as_secs_f64();
    let (p50, p90, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
    let policy = if options.native { "native" } else { "wasm" };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if options.json {
        println!(
            "{}",
            json!({
                "policy": policy, "connections": options.connections, "requests": completed,
                "seconds": elapsed.as_secs_f64(), "reviewsPerSecond": throughput,
                "p50Ms": p50, "p90Ms": p90, "p99Ms": p99, "maxMs": max,
                "wrongVerdicts": wrong, "errors": errors,
                "spawnToAcceptMs": ms(to_accept), "spawnToFirstAnswerMs": ms(to_first_answer),
                "rssAfterStartMiB": mib(after_start.0),
                "rssAfter10000MiB": at_sample.map(|(_, (rss, _))| mib(rss)),
                "reviewsAtSample": at_sample.map(|(n, _)| n),
                "rssAtEndMiB": mib(at_end.1.0), "reviewsAtEnd": at_end.0,
                "peakRssMiB": mib(at_end.1.1),
                "binary": binary.display().to_string(),
                "rssAtEndByKindMiB": where_resident.iter().map(|(k, v)| (k.to_string(), json!(mib(*v)))).collect::<serde_json::Map<_, _>>(),
            })
        );
    } else {
        println!(
            "webhook load ({policy} policy, {} connections, TLS + HTTP/1.1 keep-alive, 50% invalid)",
            options.connections
        );
        println!(
            "  {completed} reviews in {:.2} s: {throughput:.0} reviews/s",
            elapsed.as_secs_f64()
        );
        println!("  latency p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, max {max:.3} ms");
        println!("  wrong verdicts {wrong}, transport errors {errors}");
        println!(
            "  start: port accepting {:.1} ms after spawn, first review answered {:.1} ms after spawn",
            ms(to_accept),
            ms(to_first_answer)
        );
        let sampled = at_sample.map_or_else(
            || format!("not reached ({} reviews)", at_end.0),
            |(n, (rss, _))| format!("{:.1} MiB (at {n})", mib(rss)),
        );
        println!(
            "  resident: {:.1} MiB after the first review, after 10,000 reviews {sampled}, \
             {:.1} MiB after {} reviews, peak {:.1} MiB",
            mib(after_start.0),
            mib(at_end.1.0),
            at_end.0,
            mib(at_end.1.1)
        );
        let kinds: Vec<String> = where_resident
            .iter()
            .map(|(kind, kib)| format!("{kind} {:.1}", mib(*kib)))
            .collect();
        println!(
            "  resident at the end by mapping (MiB): {}",
            kinds.join(", ")
        );
        println!("  binary: {}", binary.display());
    }
    assert_eq!(wrong, 0, "the webhook gave wrong verdicts under load");
}
