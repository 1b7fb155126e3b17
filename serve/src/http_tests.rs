//! Tests of `http.rs` (its `tests` module, in a file of its own).

use std::convert::Infallible;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

async fn get(stream: &mut TcpStream) -> std::io::Result<String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A server whose `/slow` answers once `release` is notified, and everything else at
/// once.
fn serve(server: HttpServer, listener: TcpListener, release: Arc<Notify>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let release = Arc::clone(&release);
        async move {
            if request.uri().path() == "/slow" {
                release.notified().await;
            }
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        }
    });
    tokio::spawn(async move {
        server
            .serve(listener, service, std::future::pending())
            .await;
    });
}

async fn send(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

async fn answer(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Whether the server closed `stream` within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn from(source: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn past_the_limit_a_client_waits_while_every_connection_is_busy() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    serve(
        HttpServer::new("test").max_connections(1),
        listener,
        Arc::clone(&release),
    );
    let mut first = TcpStream::connect(addr).await.unwrap();
    send(&mut first, "/slow").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    send(&mut second, "/").await;
    let waiting = tokio::time::timeout(Duration::from_millis(300), answer(&mut second)).await;
    assert!(waiting.is_err(), "served past the limit: {waiting:?}");
    release.notify_one();
    assert!(answer(&mut first).await.starts_with("HTTP/1.1 200"));
    // The first is idle now: it is closed for the waiting client.
    let served = tokio::time::timeout(Duration::from_secs(5), answer(&mut second))
        .await
        .expect("served once the first turned idle");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(closed(&mut first, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn idle_connections_make_room_for_a_new_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(
        HttpServer::new("test").max_connections(2),
        listener,
        Arc::new(Notify::new()),
    );
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut stream).await.unwrap().starts_with("HTTP/1.1 200"));
        idle.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(2), get(&mut third))
        .await
        .expect("served at once")
        .unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    // The one idle the longest went; the other stays.
    assert!(closed(&mut idle[0], Duration::from_secs(5)).await);
    assert!(!closed(&mut idle[1], Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_peer_at_its_cap_gives_up_its_idle_connection_or_the_new_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    serve(
        HttpServer::new("test")
            .max_connections(8)
            .max_connections_per_peer(1),
        listener,
        Arc::clone(&release),
    );
    // Another address is not counted against 127.0.0.2.
    let mut other = from("127.0.0.1", addr).await;
    send(&mut other, "/slow").await;
    let mut idle = from("127.0.0.2", addr).await;
    assert!(get(&mut idle).await.unwrap().starts_with("HTTP/1.1 200"));
    let mut busy = from("127.0.0.2", addr).await;
    send(&mut busy, "/slow").await;
    assert!(closed(&mut idle, Duration::from_secs(5)).await);
    // Its only connection is busy now: a further one is closed, not queued.
    let mut refused = from("127.0.0.2", addr).await;
    assert!(closed(&mut refused, Duration::from_secs(5)).await);
    assert!(!closed(&mut other, Duration::from_millis(100)).await);
    release.notify_waiters();
    assert!(answer(&mut busy).await.starts_with("HTTP/1.1 200"));
    assert!(answer(&mut other).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_connection_closes_after_the_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(
        HttpServer::new("test").idle_timeout(Duration::from_millis(300)),
        listener,
        Arc::new(Notify::new()),
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut stream).await.unwrap().starts_with("HTTP/1.1 200"));
    assert!(!closed(&mut stream, Duration::from_millis(100)).await);
    assert!(closed(&mut stream, Duration::from_secs(3)).await);
    // A connection that never sends anything is idle from its accept.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut silent, Duration::from_secs(3)).await);
}
