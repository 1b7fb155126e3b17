//! A CRI runtime stand-in that records the exact bytes of every request: an HTTP/2 gRPC
//! server on a unix socket that answers each method with a reply set by the test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;

use super::process::fixture_dir;

/// What the stand-in answers for one method.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `grpc-status: 0` with this message (protobuf bytes, framed by the stand-in).
    Message(Vec<u8>),
    /// A trailers-only error with this gRPC code and message.
    Status(tonic::Code, String),
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The HTTP/2 path, `/runtime.v1.ImageService/PullImage`.
    pub path: String,
    /// The request body exactly as received: gRPC frames included.
    pub body: Vec<u8>,
}

impl RecordedCall {
    /// The message in the body (the bytes after the 5-byte gRPC frame header).
    pub fn message(&self) -> &[u8] {
        self.body.get(5..).unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<RecordedCall>>,
    replies: Mutex<HashMap<String, Reply>>,
}

/// A running stand-in. Dropping it stops serving, closes its connections and removes
/// its socket (the directory too when it made one).
pub struct RecordingRuntime {
    socket: PathBuf,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl std::fmt::Debug for RecordingRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingRuntime")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl RecordingRuntime {
    /// Starts on a socket in a new temporary directory.
    pub fn start() -> Self {
        let dir = fixture_dir("recording-runtime");
        let mut runtime = Self::start_at(&dir.path().join("runtime.sock"));
        runtime._dir = Some(dir);
        runtime
    }

    /// Starts on `socket` (a runtime that comes back at the same path after a restart).
    pub fn start_at(socket: &Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .unwrap_or_else(|e| panic!("binding {}: {e}", socket.display()));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let state = Arc::new(State::default());
        let served = Arc::clone(&state);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("recording-runtime".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("recording runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
                    tokio::select! {
                        () = accept_loop(listener, served) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime ends every connection task.
            })
            .expect("starting the recording runtime thread");
        Self {
            socket: socket.to_owned(),
            state,
            stop: Some(stop),
            thread: Some(thread),
            _dir: None,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Answer calls to `path` with `reply` (an empty message with status OK otherwise).
    pub fn reply(&self, path: &str, reply: Reply) {
        self.state
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), reply);
    }

    /// Every request so far, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RecordingRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn accept_loop(listener: tokio::net::UnixListener, state: Arc<State>) {
    while let Ok((stream, _)) = listener.accept().await {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<ReplyBody> {
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    state
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedCall {
            path: path.clone(),
            body,
        });
    let reply = state
        .replies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&path)
        .cloned()
        .unwrap_or(Reply::Message(Vec::new()));
    match reply {
        Reply::Message(message) => {
            let mut framed = vec![0u8];
            framed.extend(
                u32::try_from(message.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            framed.extend(message);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let mut response = Response::new(ReplyBody {
                data: Some(Bytes::from(framed)),
                trailers: Some(trailers),
            });
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Reply::Status(code, message) => tonic::Status::new(code, message).into_http(),
    }
}

/// A response body: one data frame, then trailers.
#[derive(Debug, Default)]
pub struct ReplyBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// The answer to a [`raw_call`].
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// The gRPC status code (from the trailers, or the headers when trailers-only).
    pub code: tonic::Code,
    /// The gRPC status message, percent-decoded.
    pub message: String,
    /// The response body exactly as received (gRPC frames included).
    pub body: Vec<u8>,
}

/// Calls `path` on the gRPC server at `socket` with `message` (protobuf bytes, framed
/// here) and returns the answer as bytes: a client that neither encodes nor decodes, so
/// messages with fields no schema here knows go out and come back exactly.
pub async fn raw_call(socket: &Path, path: &str, message: &[u8]) -> RawAnswer {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut framed = vec![0u8];
    framed.extend(
        u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend(message);
    let request = Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from(framed)))
        .expect("request");
    let response = sender.send_request(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the response body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes().to_vec();
    let status = tonic::Status::from_header_map(&trailers)
        .or_else(|| tonic::Status::from_header_map(&parts.headers))
        .unwrap_or_else(|| tonic::Status::unknown("no grpc-status"));
    RawAnswer {
        code: status.code(),
        message: status.message().to_owned(),
        body,
    }
}
