//! What clients can make the webhook hold (security review, issue 14, finding 3): a body
//! is read only once its review is admitted, within a deadline, and unfinished large
//! bodies neither starve ordinary reviews nor `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use regcred_types::PolicyConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{TestServer, admission, body, captured};

/// A TLS connection that sent a `POST /validate` declaring `declared` bytes of body and
/// then as much of `send` bytes as the server takes within a short while; it holds the
/// rest back.
pub(crate) async fn hold_body(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    declared: usize,
    send: usize,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n{{\"x\": \""
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        // A server that stops reading blocks the write: hold what was sent.
        match tokio::time::timeout(Duration::from_millis(300), tls.write_all(&chunk[..n])).await {
            Ok(Ok(())) => sent += n,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), tls.flush()).await;
    tls
}

/// Reads what the server answers on `stream` until it closes or `wait` passes.
async fn answer(stream: &mut TlsStream<TcpStream>, wait: Duration) -> String {
    let mut text = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if text.windows(4).any(|w| w == b"\r\n\r\n") && text.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_after_the_deadline() {
    let server = TestServer::start_with(admission(PolicyConfig::default()), |b| {
        b.body_timeout(Duration::from_millis(500))
    })
    .await;
    let config = super::client_config(&server.cert.der);
    let started = std::time::Instant::now();
    let mut slow = hold_body(server.addr, config, 100_000, 1000).await;
    let text = answer(&mut slow, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(text.contains("did not arrive within"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_large_bodies_leave_room_for_reviews_and_healthz() {
    let server = TestServer::start_with(admission(PolicyConfig::default()), |b| {
        b.max_concurrent_reviews(2)
    })
    .await;
    let config = super::client_config(&server.cert.der);
    // More large unfinished bodies than there are review slots.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(hold_body(server.addr, config.clone(), 2_900_000, 1_000_000).await);
    }
    let mut client = server.client().await;
    let (status, text) = tokio::time::timeout(
        Duration::from_secs(3),
        client.send("GET", "/healthz", Vec::new()),
    )
    .await
    .expect("healthz answers at once")
    .unwrap();
    assert_eq!((status.as_u16(), text.as_slice()), (200, &b"ok\n"[..]));
    let review = body(&captured("create-regcredentials.json"));
    let (status, answer) = tokio::time::timeout(Duration::from_secs(3), client.review(review))
        .await
        .expect("an ordinary review answers at once");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    drop(held);
}
