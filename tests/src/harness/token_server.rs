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

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use super::process::{CapturedLogs, fixture_dir, print_logs_if_panicking};

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

/// The RSA key and certificate the tokens are signed with.
struct SigningKeyPair {
    private_pkcs1_der: Vec<u8>,
    certificate_der: Vec<u8>,
    certificate_pem: String,
    key_id: String,
}

impl SigningKeyPair {
    fn generate() -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
        use rsa::pkcs8::EncodePublicKey as _;

        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
        let public = private.to_public_key();
        let signer = CertificateSigner {
            public_pkcs1_der: public.to_pkcs1_der().expect("PKCS#1 public key").into_vec(),
            key: &private,
        };
        let mut params = rcgen::CertificateParams::new(vec!["regcred-e2e-token-issuer".to_owned()])
            .expect("certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regcred e2e token issuer");
        // rcgen picks a serial itself only with its own crypto backend, which is off here.
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).expect("random bytes");
        serial[0] &= 0x7f; // a positive DER INTEGER
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let certificate = params
            .self_signed(&signer)
            .expect("self-signed certificate");
        let spki = public.to_public_key_der().expect("SubjectPublicKeyInfo");
        Self {
            private_pkcs1_der: private
                .to_pkcs1_der()
                .expect("PKCS#1 private key")
                .as_bytes()
                .to_vec(),
            certificate_der: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
            key_id: libtrust_key_id(spki.as_bytes()),
        }
    }

    fn jwt_header(&self, key_reference: KeyReference) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        match key_reference {
            KeyReference::X5c => header.x5c = Some(vec![STANDARD.encode(&self.certificate_der)]),
            KeyReference::Kid => header.kid = Some(self.key_id.clone()),
        }
        header
    }
}

/// Signs the certificate with the `rsa` crate's key (rcgen's own backends are off).
struct CertificateSigner<'a> {
    public_pkcs1_der: Vec<u8>,
    key: &'a rsa::PrivateKey,
}

impl rcgen::PublicKeyData for CertificateSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_pkcs1_der
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for CertificateSigner<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .pkcs1v15_sign::<Sha256>(message)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// libtrust's key ID, which distribution matches a JWT `kid` against: the SHA-256 of the
/// public key's SubjectPublicKeyInfo DER, first 30 bytes, base32, in groups of 4 joined
/// by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = data_encoding::BASE32.encode(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).expect("base32 is ASCII"))
        .collect::<Vec<_>>()
        .join(":")
}

struct ServerState {
    users: HashMap<String, SecretString>,
    /// Accepted refresh tokens and their subjects.
    refresh_tokens: Mutex<HashMap<String, String>>,
    grants: Mutex<Vec<GrantRecord>>,
    log: Mutex<File>,
    encoding_key: jsonwebtoken::EncodingKey,
    header: jsonwebtoken::Header,
    service: String,
    issuer: String,
    refuse_anonymous: bool,
    serial: AtomicU64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    access_token: String,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl ServerState {
    fn password_matches(&self, user: &str, password: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|expected| expected.expose_secret() == password)
    }

    /// Signs a token for `subject` granting `scopes` (none when anonymous).
    fn issue(&self, subject: Option<&str>, scopes: &[String]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let access = match subject {
            None => Vec::new(),
            Some(_) => scopes
                .iter()
                .filter_map(|scope| parse_scope(scope))
                .collect(),
        };
        let claims = Claims {
            iss: &self.issuer,
            sub: subject.unwrap_or(""),
            aud: &self.service,
            exp: now + TOKEN_LIFETIME.as_secs(),
            nbf: now.saturating_sub(10),
            iat: now,
            jti: format!(
                "regcred-e2e-{}",
                self.serial.fetch_add(1, Ordering::Relaxed)
            ),
            access,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.encoding_key).expect("signing a token")
    }

    fn new_refresh_token(&self, subject: &str) -> String {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).expect("random bytes");
        let token = format!("rt-{}", data_encoding::HEXLOWER.encode(&bytes));
        self.refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), subject.to_owned());
        token
    }

    fn record(&self, record: GrantRecord) {
        let line = format!(
            "{} grant={:?} client_id={} subject={} scopes={:?} -> {}\n",
            record.method,
            record.grant,
            record.client_id.as_deref().unwrap_or("-"),
            record.subject.as_deref().unwrap_or("-"),
            record.scopes,
            record.status
        );
        let _ = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(line.as_bytes());
        self.grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    fn answer(
        &self,
        record: GrantRecord,
        subject: Option<&str>,
        refresh_token: Option<String>,
    ) -> Response {
        let status = record.status;
        let scopes = record.scopes.clone();
        self.record(record);
        match status {
            200 => {}
            400 => {
                let body = serde_json::json!({"error": "unsupported_grant_type"});
                return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
            }
            _ => {
                let body = serde_json::json!({"error": "invalid_grant"});
                return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            }
        }
        let token = self.issue(subject, &scopes);
        axum::Json(TokenResponse {
            token: token.clone(),
            access_token: token,
            expires_in: TOKEN_LIFETIME.as_secs(),
            refresh_token,
        })
        .into_response()
    }
}

/// `repository:NAME:pull,push` into an access entry: the type before the first colon, the
/// actions after the last one.
fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

async fn get_token(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let scopes: Vec<String> = params
        .iter()
        .filter(|(key, _)| key == "scope")
        .map(|(_, value)| value.clone())
        .collect();
    let client_id = param(&params, "client_id").map(str::to_owned);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let Some(credentials) = basic else {
        let record = GrantRecord {
            method: "GET",
            grant: Grant::Anonymous,
            client_id,
            subject: None,
            scopes,
            status: if state.refuse_anonymous { 401 } else { 200 },
        };
        return state.answer(record, None, None);
    };
    let (user, password) = credentials
        .split_once(':')
        .unwrap_or((credentials.as_str(), ""));
    let ok = state.password_matches(user, password);
    let subject = ok.then(|| user.to_owned());
    let record = GrantRecord {
        method: "GET",
        grant: Grant::Basic,
        client_id,
        subject: subject.clone(),
        scopes,
        status: if ok { 200 } else { 401 },
    };
    state.answer(record, subject.as_deref(), None)
}

async fn post_token(
    State(state): State<Arc<ServerState>>,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let scopes: Vec<String> = param(&params, "scope")
        .map(|scope| {
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let client_id = param(&params, "client_id").map(str::to_owned);
    let grant_type = param(&params, "grant_type").unwrap_or("");
    let (grant, subject, refresh_token) = match grant_type {
        "password" => {
            let user = param(&params, "username").unwrap_or("");
            let password = param(&params, "password").unwrap_or("");
            if state.password_matches(user, password) {
                let refresh = state.new_refresh_token(user);
                (Grant::Password, Some(user.to_owned()), Some(refresh))
            } else {
                (Grant::Password, None, None)
            }
        }
        "refresh_token" => {
            let token = param(&params, "refresh_token").unwrap_or("");
            let subject = state
                .refresh_tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(token)
                .cloned();
            (Grant::RefreshToken, subject, None)
        }
        other => (Grant::Unsupported(other.to_owned()), None, None),
    };
    let status = match (&grant, &subject) {
        (Grant::Unsupported(_), _) => 400,
        (_, Some(_)) => 200,
        (_, None) => 401,
    };
    let record = GrantRecord {
        method: "POST",
        grant,
        client_id,
        subject: subject.clone(),
        scopes,
        status,
    };
    state.answer(record, subject.as_deref(), refresh_token)
}

#[cfg(test)]
mod tests {
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
