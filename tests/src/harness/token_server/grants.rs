//! The `/token` endpoint: password, refresh-token and anonymous grants, each recorded
//! and logged without a secret.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{Grant, GrantRecord, TOKEN_LIFETIME};

pub(super) struct ServerState {
    pub(super) users: HashMap<String, SecretString>,
    /// Accepted refresh tokens and their subjects.
    pub(super) refresh_tokens: Mutex<HashMap<String, String>>,
    pub(super) grants: Mutex<Vec<GrantRecord>>,
    pub(super) log: Mutex<File>,
    pub(super) encoding_key: jsonwebtoken::EncodingKey,
    pub(super) header: jsonwebtoken::Header,
    pub(super) service: String,
    pub(super) issuer: String,
    pub(super) refuse_anonymous: bool,
    pub(super) serial: AtomicU64,
}

#[derive(Serialize)]
pub(super) struct Claims<'a> {
    pub(super) iss: &'a str,
    pub(super) sub: &'a str,
    pub(super) aud: &'a str,
    pub(super) exp: u64,
    pub(super) nbf: u64,
    pub(super) iat: u64,
    pub(super) jti: String,
    pub(super) access: Vec<Access>,
}

#[derive(Serialize)]
pub(super) struct Access {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) actions: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct TokenResponse {
    pub(super) token: String,
    pub(super) access_token: String,
    pub(super) expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) refresh_token: Option<String>,
}

impl ServerState {
    pub(super) fn password_matches(&self, user: &str, password: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|expected| expected.expose_secret() == password)
    }

    /// Signs a token for `subject` granting `scopes` (none when anonymous).
    pub(super) fn issue(&self, subject: Option<&str>, scopes: &[String]) -> String {
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

    pub(super) fn new_refresh_token(&self, subject: &str) -> String {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).expect("random bytes");
        let token = format!("rt-{}", data_encoding::HEXLOWER.encode(&bytes));
        self.refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), subject.to_owned());
        token
    }

    pub(super) fn record(&self, record: GrantRecord) {
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

    pub(super) fn answer(
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
pub(super) fn parse_scope(scope: &str) -> Option<Access> {
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

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

pub(super) async fn get_token(
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

pub(super) async fn post_token(
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
