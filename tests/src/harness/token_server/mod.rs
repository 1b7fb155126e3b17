//! A registry token server (Docker token authentication and its OAuth2 flavour) for the
//! token-auth registry: RS256 JWTs signed by a key and self-signed certificate made at
//! start.
//!
//! Endpoints, all at `/token`:
//! - `GET` with optional HTTP Basic auth (`?service=S&scope=repository:NAME:pull,push`):
//!   valid credentials get a token for the requested scopes; wrong credentials get 401;
//!   no credentials get, as on public registries, a token that grants nothing (the
//!   registry then answers 401 `insufficient_scope`), or a 401 from the token server
//!   itself with [`TokenServerBuilder::refuse_anonymous`].
//! - `POST` form with `grant_type=password` (`username`, `password`): a token and a new
//!   refresh token for that user; with `grant_type=refresh_token` (`refresh_token`): a
//!   token when the refresh token was issued by a password grant or configured with
//!   [`TokenServerBuilder::refresh_token`]; 401 otherwise.
//!
//! Every grant is logged (method, grant type, client, subject, scopes, outcome; never a
//! password or token) to a log file and recorded in [`TokenServer::grants`].

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tempfile::TempDir;

use super::process::{CapturedLogs, fixture_dir, print_logs_if_panicking};

mod grants;
mod keys;

pub use keys::libtrust_key_id;

use grants::{ServerState, get_token, post_token};
use keys::SigningKeyPair;

/// Lifetime of the access tokens issued.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Which JWT header names the signing key; distribution accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyReference {
    /// `x5c`: the signing certificate itself (base64 DER), checked against the
    /// registry's `rootcertbundle`.
    #[default]
    X5c,
    /// `kid`: libtrust's key ID of the public key in the `rootcertbundle` certificate.
    Kid,
}

/// How a token request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `POST grant_type=password`.
    Password,
    /// `POST grant_type=refresh_token`.
    RefreshToken,
    /// `GET` with HTTP Basic credentials.
    Basic,
    /// `GET` without credentials.
    Anonymous,
    /// A `POST` with another or no `grant_type` (the value, never a secret).
    Unsupported(String),
}

/// One token request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// How the request authenticated.
    pub grant: Grant,
    /// The OAuth2 `client_id` the client sent (containerd sends `containerd-client`).
    pub client_id: Option<String>,
    /// The authenticated user, when authentication succeeded.
    pub subject: Option<String>,
    /// The scopes requested.
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// Configures a [`TokenServer`].
#[must_use]
pub struct TokenServerBuilder {
    users: Vec<(String, SecretString)>,
    refresh_tokens: Vec<(SecretString, String)>,
    key_reference: KeyReference,
    refuse_anonymous: bool,
    service: String,
    issuer: String,
}

impl std::fmt::Debug for TokenServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServerBuilder")
            .field(
                "users",
                &self.users.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("refresh_tokens", &self.refresh_tokens.len())
            .field("key_reference", &self.key_reference)
            .field("refuse_anonymous", &self.refuse_anonymous)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Default for TokenServerBuilder {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            refresh_tokens: Vec::new(),
            key_reference: KeyReference::default(),
            refuse_anonymous: false,
            service: "regcred-e2e-registry".to_owned(),
            issuer: "regcred-e2e-token-issuer".to_owned(),
        }
    }
}

impl TokenServerBuilder {
    /// A user who can get tokens with this password (password grant or Basic auth).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users
            .push((name.to_owned(), SecretString::from(password)));
        self
    }

    /// A refresh token (an `identityToken` in Docker's terms) accepted for `subject`.
    pub fn refresh_token(mut self, token: &str, subject: &str) -> Self {
        self.refresh_tokens
            .push((SecretString::from(token), subject.to_owned()));
        self
    }

    /// Which JWT header names the key ([`KeyReference::X5c`] unless set).
    pub fn key_reference(mut self, key_reference: KeyReference) -> Self {
        self.key_reference = key_reference;
        self
    }

    /// Answer token requests without credentials with 401 instead of a token that
    /// grants nothing.
    pub fn refuse_anonymous(mut self) -> Self {
        self.refuse_anonymous = true;
        self
    }

    /// Generates the key and certificate and starts serving on a free loopback port, in
    /// a thread with its own tokio runtime (so it outlives no test and needs none).
    pub fn start(self) -> TokenServer {
        let dir = fixture_dir("token");
        let key = SigningKeyPair::generate();
        let log_path = dir.path().join("token-server.log");
        let log = File::create(&log_path).expect("creating the token server log");
        let state = Arc::new(ServerState {
            users: self.users.into_iter().collect(),
            refresh_tokens: Mutex::new(
                self.refresh_tokens
                    .into_iter()
                    .map(|(token, subject)| (token.expose_secret().to_owned(), subject))
                    .collect(),
            ),
            grants: Mutex::new(Vec::new()),
            log: Mutex::new(log),
            encoding_key: jsonwebtoken::EncodingKey::from_rsa_der(&key.private_pkcs1_der),
            header: key.jwt_header(self.key_reference),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            refuse_anonymous: self.refuse_anonymous,
            serial: AtomicU64::new(0),
        });

        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the token server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("token server address");
        let router = axum::Router::new()
            .route("/token", axum::routing::get(get_token).post(post_token))
            .with_state(Arc::clone(&state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("token-server-{addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("token server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("token server listener");
                    tokio::select! {
                        served = axum::serve(listener, router) => {
                            if let Err(e) = served { eprintln!("token server stopped: {e}"); }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends open keep-alive connections too.
            })
            .expect("starting the token server thread");

        TokenServer {
            addr,
            service: self.service,
            issuer: self.issuer,
            certificate_pem: key.certificate_pem,
            key_id: key.key_id,
            state,
            stop: Some(stop),
            thread: Some(thread),
            log_path,
            _dir: dir,
        }
    }
}

/// A running token server. Dropping it stops the server and removes its directory.
pub struct TokenServer {
    addr: SocketAddr,
    service: String,
    issuer: String,
    certificate_pem: String,
    key_id: String,
    state: Arc<ServerState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    log_path: PathBuf,
    _dir: TempDir,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Configures a token server.
    pub fn builder() -> TokenServerBuilder {
        TokenServerBuilder::default()
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token` (the registry's `realm`).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `service` the tokens are for (the registry's `auth.token.service`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The tokens' issuer (the registry's `auth.token.issuer`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing certificate, PEM (the registry's `rootcertbundle`).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The libtrust key ID of the signing key (what a `kid` header carries).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A valid access token for `subject` granting `scope` (`repository:NAME:pull`),
    /// signed like the ones the endpoint issues, without a request (not recorded).
    pub fn issue_token(&self, subject: &str, scope: &str) -> String {
        self.state.issue(Some(subject), &[scope.to_owned()])
    }

    /// Every token request answered so far, oldest first.
    pub fn grants(&self) -> Vec<GrantRecord> {
        self.state
            .grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl CapturedLogs for TokenServer {
    fn log_files(&self) -> Vec<(String, PathBuf)> {
        vec![("token server".to_owned(), self.log_path.clone())]
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        print_logs_if_panicking([("token server", self.log_path.as_path())]);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grants::parse_scope;
    use super::*;

    #[test]
    fn key_id_has_libtrust_shape() {
        let id = libtrust_key_id(b"any bytes");
        assert_eq!(id.len(), 12 * 4 + 11, "{id}");
        assert!(id.split(':').all(|group| group.len() == 4));
        assert!(
            id.chars()
                .all(|c| c == ':' || c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
    }

    #[test]
    fn scope_parsing_keeps_the_name_between_the_first_and_last_colon() {
        let access = parse_scope("repository:team/app:pull,push").expect("parses");
        assert_eq!(
            (access.kind.as_str(), access.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(access.actions, ["pull", "push"]);
        assert!(parse_scope("nonsense").is_none());
    }
}
