//! The `GET /metrics` endpoint both servers expose.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, header};
use tokio::net::TcpListener;

use super::HttpServer;

/// The Prometheus text exposition format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Serves `GET /metrics` (plain HTTP/1.1 or h2c) on `listener` until `shutdown`
/// completes, with the text `render` gives at each request; every other path is a 404.
pub async fn serve_metrics(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let render = Arc::clone(&render);
        async move { Ok::<_, Infallible>(metrics_response(&request, &*render)) }
    });
    HttpServer::new("metrics")
        .serve(listener, service, shutdown)
        .await;
}

fn metrics_response<B>(request: &Request<B>, render: &dyn Fn() -> String) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from_static(
            b"not found: this server answers GET /metrics\n",
        )));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    response
}
