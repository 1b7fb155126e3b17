//! Every CRI client, not only kubelet's: clients that send a socket path (percent-encoded
//! or raw) or an empty `:authority` reach the runtime through the proxy, as they reach
//! containerd directly. Python's grpcio (grpc C-core) makes the calls, and a raw HTTP/2
//! client that writes exactly the authority it is given.

use std::path::Path;
use std::time::{Duration, Instant};

use loona_hpack::{Decoder, Encoder};
use regcred_cri_api::methods;
use regcred_tests::examples::repo_root;
use regcred_tests::harness::{
    ChildProcess, Proxy, RecordingRuntime, Reply, fixture_dir, require_program,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::proxy_support::Manifests;

/// A ListImagesResponse with one image `sha256:abc`: what the runtime answers.
const LIST_IMAGES_RESPONSE: &[u8] = b"\x0a\x0c\x0a\x0asha256:abc";

struct AuthorityWorld {
    runtime: RecordingRuntime,
    proxy: Proxy,
    _manifests: Manifests,
}

impl AuthorityWorld {
    async fn start(binary: bool) -> Self {
        let runtime = RecordingRuntime::start();
        runtime.reply(
            methods::LIST_IMAGES,
            Reply::Message(LIST_IMAGES_RESPONSE.to_vec()),
        );
        let manifests = Manifests::new();
        let mut builder = Proxy::builder(runtime.socket(), manifests.path());
        if binary {
            builder = builder.binary();
        }
        let proxy = builder.start().await;
        Self {
            runtime,
            proxy,
            _manifests: manifests,
        }
    }

    fn calls_to(&self, path: &str) -> usize {
        self.runtime
            .calls()
            .iter()
            .filter(|c| c.path == path)
            .count()
    }
}

/// What grpcio's call ended with.
#[derive(Debug, serde::Deserialize)]
struct PythonAnswer {
    code: String,
    details: String,
    response: String,
}

/// One unary call with Python's grpcio to `socket` (`authority`: grpcio's own when
/// `None`). The interpreter is stopped by PID on every path (`ChildProcess`).
fn grpcio_call(
    socket: &Path,
    method: &str,
    request: &[u8],
    authority: Option<&str>,
) -> PythonAnswer {
    let python = require_program("python3", "python3");
    let dir = fixture_dir("grpcio");
    let log = dir.path().join("grpcio.log");
    let mut args = vec![
        repo_root()
            .join("tests/python/grpc_unix_call.py")
            .display()
            .to_string(),
        socket.display().to_string(),
        method.to_owned(),
        request.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    args.extend(authority.map(str::to_owned));
    let mut child = ChildProcess::spawn("grpcio client", &python, &args, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the grpcio client did not finish in 60 s: {}",
            child.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.log_text();
    assert!(
        !output.contains("No module named 'grpc'"),
        "Python's grpcio package is missing: run scripts/setup"
    );
    assert!(status.success(), "the grpcio client failed: {output}");
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no answer from the grpcio client: {output}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn grpcio_reaches_the_runtime_with_its_own_empty_or_raw_path_authority() {
    let w = AuthorityWorld::start(false).await;
    let socket = w.proxy.socket().display().to_string();
    let cases = [
        ("grpcio's own (the percent-encoded socket path)", None),
        ("empty", Some(String::new())),
        ("the raw socket path", Some(socket.clone())),
        ("kubelet's", Some("localhost".to_owned())),
    ];
    for (n, (what, authority)) in cases.iter().enumerate() {
        let answer = grpcio_call(
            w.proxy.socket(),
            methods::LIST_IMAGES,
            b"",
            authority.as_deref(),
        );
        assert_eq!(
            (answer.code.as_str(), answer.response.as_str()),
            ("OK", hex(LIST_IMAGES_RESPONSE).as_str()),
            "{what} authority: the runtime's answer ({})",
            answer.details
        );
        assert_eq!(w.calls_to(methods::LIST_IMAGES), n + 1, "{what}");
    }
    // Three of the four were rewritten (grpcio's own really is the socket path).
    let log = w.proxy.log_text();
    assert_eq!(
        log.matches("not a valid authority").count(),
        3,
        "proxy log:\n{log}"
    );
}

#[tokio::test]
async fn the_regcred_binary_answers_grpcio_too() {
    let w = AuthorityWorld::start(true).await;
    // The agent lists the runtime's images once at start (the preloaded ones).
    let started = std::time::Instant::now();
    while w.calls_to(methods::LIST_IMAGES) == 0 && started.elapsed().as_secs() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = w.calls_to(methods::LIST_IMAGES);
    assert_eq!(before, 1, "the agent's own listing at start");
    let answer = grpcio_call(w.proxy.socket(), methods::LIST_IMAGES, b"", None);
    assert_eq!(answer.code, "OK", "{}", answer.details);
    assert_eq!(answer.response, hex(LIST_IMAGES_RESPONSE));
    assert_eq!(w.calls_to(methods::LIST_IMAGES), before + 1);
}

/// A raw HTTP/2 client: writes the request headers with exactly `authority` (no client
/// library sends every one of these), then reads the response's DATA and `grpc-status`.
async fn raw_frames_call(socket: &Path, path: &str, authority: &[u8]) -> (Option<String>, Vec<u8>) {
    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("a small frame")
            .to_be_bytes();
        let mut out = length[1..].to_vec();
        out.extend([frame_type, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connecting to the proxy");
    let mut encoder = Encoder::new();
    let headers: [(&[u8], &[u8]); 6] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    request.extend(frame(0x4, 0, 0, &[]));
    request.extend(frame(0x1, 0x4, 1, &encoder.encode(headers)));
    request.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    stream
        .write_all(&request)
        .await
        .expect("sending the request");

    let mut decoder = Decoder::new();
    let mut data = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return None;
            }
            let length =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (frame_type, flags) = (head[3], head[4]);
            let mut payload = vec![0; length];
            stream
                .read_exact(&mut payload)
                .await
                .expect("a whole frame");
            match frame_type {
                0x4 if flags & 1 == 0 => stream
                    .write_all(&frame(0x4, 1, 0, &[]))
                    .await
                    .expect("SETTINGS ack"),
                0x0 => data.extend(payload),
                0x1 => {
                    let fields = decoder.decode(&payload).expect("the proxy's HPACK");
                    if let Some((_, status)) = fields.iter().find(|(n, _)| n == b"grpc-status") {
                        return Some(String::from_utf8_lossy(status).into_owned());
                    }
                }
                0x3 => return Some(format!("RST_STREAM {:?}", &payload)),
                0x7 => return Some(format!("GOAWAY {:?}", &payload)),
                _ => {}
            }
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer within 20 s");
    (status, data)
}

#[tokio::test]
async fn a_raw_client_with_any_authority_gets_the_runtimes_answer() {
    let w = AuthorityWorld::start(false).await;
    let socket = w.proxy.socket().display().to_string();
    let percent_encoded = socket.replace('/', "%2F");
    for authority in [percent_encoded.as_str(), "", socket.as_str(), "localhost"] {
        let (status, data) =
            raw_frames_call(w.proxy.socket(), methods::LIST_IMAGES, authority.as_bytes()).await;
        assert_eq!(status.as_deref(), Some("0"), "{authority:?}");
        assert_eq!(&data[5..], LIST_IMAGES_RESPONSE, "{authority:?}");
    }
    assert_eq!(w.calls_to(methods::LIST_IMAGES), 4);
}
