//! The HTTP side of the webhook: `POST /validate` (a review slot, the body read within
//! its limits and deadline, the review on the blocking executor, and the decision logged,
//! counted and answered) and the probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use tokio::sync::OwnedSemaphorePermit;

use super::admission::{Decision, Outcome, ReviewError, SecretAdmission, error_review};
use super::metrics::WebhookMetrics;
use regcred_serve::{BlockingError, BlockingExecutor};

/// Bodies declared at most this long (every ordinary Secret's review) are admitted from
/// their own slots, so that clients holding large unfinished bodies cannot starve them.
const SMALL_BODY: u64 = 256 << 10;

/// How much of an oversized body is read (and dropped) so that the client reads the 413.
const DRAIN_LIMIT: usize = 8 << 20;

/// What every request of the webhook shares.
pub(super) struct AppState {
    pub(super) admission: Arc<SecretAdmission>,
    pub(super) metrics: WebhookMetrics,
    pub(super) body_limit: usize,
    pub(super) body_timeout: Duration,
    /// Permits to read a body and review it, taken before the body is read: for bodies
    /// declared at most [`SMALL_BODY`] long, and for the others.
    pub(super) admitted_small: Arc<tokio::sync::Semaphore>,
    pub(super) admitted_large: Arc<tokio::sync::Semaphore>,
    pub(super) executor: BlockingExecutor,
    pub(super) ready: AtomicBool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

pub(super) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: this server answers POST /validate, GET /healthz and GET /readyz\n",
    )
        .into_response()
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /validate`: a review slot and the body ([`receive`]), the review on the blocking
/// executor, and its answer ([`answer`]).
pub(super) async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let (_permit, body) = match receive(&state, request, started).await {
        Ok(received) => received,
        Err(refused) => return refused,
    };
    let admission = state.admission.clone();
    let reviewed = state.executor.run(move || admission.review(&body)).await;
    answer(&state, reviewed, started)
}

/// A review slot and the request's body, read within the body limit and the deadline;
/// or the answer that refuses the request (413, 503, 400, 408), counted and logged.
async fn receive(
    state: &AppState,
    request: Request,
    started: Instant,
) -> Result<(OwnedSemaphorePermit, Vec<u8>), Response> {
    let limit = state.body_limit;
    let too_large = |state: &AppState| {
        let message = format!(
            "the request body is larger than the webhook's limit of {limit} bytes; \
             a Secret's AdmissionReview is far smaller"
        );
        state
            .metrics
            .review("unknown", "too_large", started.elapsed());
        tracing::warn!(limit, "refused an oversized request body");
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_review(None, 413, &message),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let drain_limit = limit.saturating_mul(2).max(DRAIN_LIMIT);
    if declared.is_some_and(|len| len > drain_limit as u64) {
        return Err(too_large(state));
    }
    // Admission first: a request waiting for its turn holds no body (HTTP/2 flow control
    // and TCP stop the client), so at most `concurrency` large bodies (and twice as many
    // small ones) are ever buffered. One deadline covers the wait and the body.
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let slots = if declared.is_some_and(|len| len <= SMALL_BODY) {
        &state.admitted_small
    } else {
        &state.admitted_large
    };
    let admitted = tokio::time::timeout_at(deadline, Arc::clone(slots).acquire_owned());
    let permit = match admitted.await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) | Err(_) => {
            state.metrics.review("unknown", "busy", started.elapsed());
            tracing::warn!(timeout = ?state.body_timeout, "no review slot in time; answered 503");
            return Err(json(
                StatusCode::SERVICE_UNAVAILABLE,
                error_review(None, 503, "the webhook is busy; try again"),
            ));
        }
    };
    let read = tokio::time::timeout_at(deadline, read_body(request, declared, limit, drain_limit));
    match read.await {
        Ok(BodyRead::Complete(body)) => Ok((permit, body)),
        Ok(BodyRead::TooLarge) => Err(too_large(state)),
        Ok(BodyRead::Broken) => {
            state
                .metrics
                .review("unknown", "bad_request", started.elapsed());
            Err(json(
                StatusCode::BAD_REQUEST,
                error_review(None, 400, "cannot read the request body"),
            ))
        }
        Err(_) => {
            state
                .metrics
                .review("unknown", "timeout", started.elapsed());
            tracing::warn!(timeout = ?state.body_timeout, "request body not received in time");
            let mut response = json(
                StatusCode::REQUEST_TIMEOUT,
                error_review(
                    None,
                    408,
                    &format!(
                        "the request body did not arrive within {:?}",
                        state.body_timeout
                    ),
                ),
            );
            // HTTP/1.1: the rest of the body will not be read; the connection ends.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

/// The answer to a review that ran (or could not): the decision as an AdmissionReview,
/// or the error's status; each counted, and logged without a value from the Secret.
fn answer(
    state: &AppState,
    reviewed: Result<Result<Decision, ReviewError>, BlockingError>,
    started: Instant,
) -> Response {
    match reviewed {
        Ok(Ok(decision)) => {
            log_decision(&state.metrics, &decision, started);
            json(StatusCode::OK, decision.to_json())
        }
        Ok(Err(err)) => {
            let (status, outcome) = if err.is_bad_request() {
                (StatusCode::BAD_REQUEST, "bad_request")
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "error")
            };
            state.metrics.review("unknown", outcome, started.elapsed());
            let message = err.to_string();
            if err.is_bad_request() {
                tracing::warn!(uid = err.uid().unwrap_or_default(), error = %message, "bad request");
            } else {
                tracing::error!(uid = err.uid().unwrap_or_default(), error = %message, "review failed");
            }
            json(status, error_review(err.uid(), status.as_u16(), &message))
        }
        Err(BlockingError::Closed) => {
            state.metrics.review("unknown", "error", started.elapsed());
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                error_review(None, 503, "shutting down"),
            )
        }
        Err(_) => {
            state.metrics.review("unknown", "error", started.elapsed());
            tracing::error!("the review task panicked");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                error_review(None, 500, "the review failed unexpectedly"),
            )
        }
    }
}

/// Counts a decision and logs it: denials at info with their violations (field and
/// reason, never a value), allowed and skipped reviews at debug.
fn log_decision(metrics: &WebhookMetrics, decision: &Decision, started: Instant) {
    let outcome = decision.outcome();
    metrics.review(decision.operation(), outcome.as_str(), started.elapsed());
    match outcome {
        Outcome::Denied => {
            for cause in decision.causes() {
                if let Some((_, reason)) = cause.rsplit_once(' ') {
                    metrics.violation(reason);
                }
            }
            tracing::info!(
                review_uid = decision.uid(),
                operation = decision.operation(),
                secret = decision.secret().unwrap_or_default(),
                decision = outcome.as_str(),
                violations = %decision.causes().join(", "),
                "denied"
            );
        }
        Outcome::Allowed => tracing::debug!(
            review_uid = decision.uid(),
            operation = decision.operation(),
            secret = decision.secret().unwrap_or_default(),
            decision = outcome.as_str(),
            "allowed"
        ),
        Outcome::Skipped => tracing::debug!(
            review_uid = decision.uid(),
            operation = decision.operation(),
            decision = outcome.as_str(),
            "not a checked Secret: allowed"
        ),
    }
}

/// How reading a request body ended.
enum BodyRead {
    Complete(Vec<u8>),
    TooLarge,
    Broken,
}

/// Reads up to `limit` bytes (`declared`: the Content-Length, when the client sent one);
/// past it, reads on and discards (up to `drain_limit`) so that the client, still
/// sending, gets to read the 413 instead of a reset connection.
async fn read_body(
    request: Request,
    declared: Option<u64>,
    limit: usize,
    drain_limit: usize,
) -> BodyRead {
    let mut over = declared.is_some_and(|len| len > limit as u64);
    let mut received = 0usize;
    let mut buffer = Vec::with_capacity(if over {
        0
    } else {
        declared.map_or(8192, |len| len as usize)
    });
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return BodyRead::Broken;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len());
        over |= received > limit;
        if over {
            if received > drain_limit {
                break;
            }
        } else {
            buffer.extend_from_slice(&data);
        }
    }
    if over {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(buffer)
    }
}
