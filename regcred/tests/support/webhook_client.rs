//! A TLS client for the webhook's tests and its load benchmark, included by both with
//! `#[path]` (it lived in `regcred-tests`, which made a dependency cycle with this
//! crate): rustls (ring) trusting one
//! certificate, HTTP/1.1 with keep-alive over one connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One kept-alive HTTPS connection to the webhook.
#[allow(
    missing_debug_implementations,
    reason = "hyper's SendRequest has no Debug; a test client"
)]
pub(crate) struct WebhookClient {
    sender: SendRequest<Full<Bytes>>,
    /// The end-entity certificate the server presented in the handshake.
    pub(crate) peer_certificate: CertificateDer<'static>,
}

/// A rustls client configuration that trusts exactly `root` (DER).
pub(crate) fn webhook_client_config(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("a usable root certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl WebhookClient {
    /// Connects to `addr`, checking the certificate against `config`'s root for the name
    /// `localhost`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("a valid name");
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let peer_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("the server presents a certificate")
            .clone()
            .into_owned();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            peer_certificate,
        })
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }

    /// `POST /validate` with `body`.
    pub(crate) async fn review(&mut self, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        self.send("POST", "/validate", body)
            .await
            .expect("the webhook answers")
    }
}
