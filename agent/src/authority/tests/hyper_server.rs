//! The real thing: hyper's HTTP/2 server behind the normalizer, a client writing raw
//! frames with each authority grpc clients send.

use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::*;

/// What the client got on stream 1: the response's `:status`, or the RST_STREAM code.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Status(Vec<u8>),
    Reset(u32),
    Closed,
}

/// Serves one connection with hyper (behind the normalizer when `normalize`), sends
/// a request with `authority`, and says what came back and what authority the
/// service saw.
async fn call(authority: &str, normalize: bool) -> (Outcome, Option<String>) {
    let (client, server) = UnixStream::pair().unwrap();
    let seen = Arc::new(Mutex::new(None));
    let service = {
        let seen = Arc::clone(&seen);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            *seen.lock().unwrap() = request.uri().authority().map(ToString::to_string);
            async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            }
        })
    };
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let served = if normalize {
        tokio::spawn(builder.serve_connection(TokioIo::new(Normalized::new(server)), service))
    } else {
        tokio::spawn(builder.serve_connection(TokioIo::new(server), service))
    };

    let mut encoder = Encoder::new();
    let fields = request_fields(Some(authority), "/runtime.v1.ImageService/ListImages");
    let mut request = PREFACE.to_vec();
    request.extend(frame(0x4, 0, 0, &[]));
    request.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &encode(&mut encoder, &fields),
    ));
    request.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    let (mut read, mut write) = client.into_split();
    write.write_all(&request).await.unwrap();

    let mut decoder = Decoder::new();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let mut head = [0u8; 9];
            if read.read_exact(&mut head).await.is_err() {
                return Outcome::Closed;
            }
            let head = FrameHead::parse(&head);
            let mut payload = vec![0; head.length];
            read.read_exact(&mut payload).await.unwrap();
            match (head.frame_type, head.stream) {
                (0x4, 0) if head.flags & 1 == 0 => {
                    write.write_all(&frame(0x4, 1, 0, &[])).await.unwrap();
                }
                (HEADERS, 1) => {
                    let fields = decoder.decode(&payload).unwrap();
                    let status = fields.into_iter().find(|(n, _)| n == b":status");
                    return Outcome::Status(status.unwrap().1);
                }
                (0x3, 1) => {
                    return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                (0x7, 0) => return Outcome::Closed,
                _ => {}
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    drop(write);
    drop(read);
    let _ = served.await;
    let seen = seen.lock().unwrap().clone();
    (outcome, seen)
}

#[tokio::test]
async fn h2_alone_resets_streams_with_such_authorities() {
    for authority in ["%2Frun%2Fregcred%2Fcri-proxy.sock", "/run/x.sock", ""] {
        let (outcome, seen) = call(authority, false).await;
        assert_eq!(outcome, Outcome::Reset(1), "{authority:?}: PROTOCOL_ERROR");
        assert_eq!(seen, None, "the service never saw it");
    }
}

#[tokio::test]
async fn behind_the_normalizer_hyper_answers_every_authority() {
    for (authority, expected) in [
        ("%2Frun%2Fregcred%2Fcri-proxy.sock", "localhost"),
        ("/run/x.sock", "localhost"),
        ("", "localhost"),
        ("localhost", "localhost"),
        ("127.0.0.1:1234", "127.0.0.1:1234"),
    ] {
        let (outcome, seen) = call(authority, true).await;
        assert_eq!(outcome, Outcome::Status(b"200".to_vec()), "{authority:?}");
        assert_eq!(seen.as_deref(), Some(expected), "{authority:?}");
    }
}

#[tokio::test]
async fn a_connection_error_closes_the_connection() {
    let (client, server) = UnixStream::pair().unwrap();
    let service = hyper::service::service_fn(|_: Request<Incoming>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::new())))
    });
    let served = tokio::spawn(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(Normalized::new(server)), service),
    );
    let (mut read, mut write) = client.into_split();
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[]));
    input.extend(frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]));
    write.write_all(&input).await.unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), served)
        .await
        .expect("hyper ends the connection")
        .unwrap();
    let err = result.expect_err("a connection error");
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut refused = None;
    while let Some(e) = source {
        // io::Error's source() skips its own payload: look at it directly.
        if let Some(e) = e
            .downcast_ref::<io::Error>()
            .and_then(|e| e.get_ref()?.downcast_ref::<NormalizeError>())
        {
            refused = Some(e.clone());
        }
        source = e.source();
    }
    assert!(
        matches!(refused, Some(NormalizeError::Hpack { stream: 1, .. })),
        "{err:?}"
    );
    let mut rest = Vec::new();
    let _ = read.read_to_end(&mut rest).await;
}
