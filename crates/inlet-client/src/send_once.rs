//! One push, sent once, with no retry policy: the engine of `inlet push`,
//! for operators checking a key or an endpoint by hand.
//!
//! Unlike [`Client`](crate::Client), nothing is validated locally: the
//! body goes as given and the key as given (even a malformed one, or none),
//! so the answer shown is the server's own.

use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::Serialize;

use crate::policy::BatchFate;
use crate::response::ResponseSummary;
use crate::transport::{self, KeyHeader, Transport, TransportError};

/// What to send.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Base URL of the API (`/v1/push` is appended) or the push URL.
    pub endpoint: String,
    /// The key, sent as given. `None` sends no key (to see `missing_key`).
    pub key: Option<String>,
    /// Where the key goes.
    pub key_header: KeyHeader,
    /// The body (JSON), sent as given.
    pub body: Vec<u8>,
    /// Compress it with gzip (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Bound on the request.
    pub timeout: Duration,
}

/// Why nothing was received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The endpoint is not an `http(s)` URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// As given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The key contains characters a header cannot carry.
    #[error("the key cannot be sent in a header (it contains control or non-ASCII characters)")]
    UnsendableKey,
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Http(#[source] reqwest::Error),
    /// No answer: connection refused, timeout…
    #[error("no answer from {url}")]
    NoAnswer {
        /// The push URL.
        url: String,
        /// What happened.
        #[source]
        source: TransportError,
    },
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushOutcome {
    /// The HTTP status.
    pub status: u16,
    /// Whether it is a 2xx.
    pub accepted: bool,
    /// The message id of an accepted push.
    pub id: Option<String>,
    /// The request id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// The problem of a non-2xx answer, when the body was one.
    pub problem: Option<crate::response::Problem>,
    /// `Retry-After` (or `retry_after_s`) in seconds, when given.
    pub retry_after_s: Option<f64>,
    /// What an agent following the contract does with this answer.
    pub directive: String,
    /// How long the request took, milliseconds.
    pub latency_ms: f64,
}

impl PushOutcome {
    fn from_summary(s: ResponseSummary, latency: Duration) -> PushOutcome {
        let directive = directive(&s);
        PushOutcome {
            directive,
            status: s.status,
            accepted: (200..300).contains(&s.status),
            id: s.id,
            request_id: s.request_id,
            retry_after_s: s.retry_after.map(|d| d.as_secs_f64()),
            problem: s.problem,
            latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
        }
    }
}

impl PushOutcome {
    /// The status's reason phrase, e.g. `Accepted`.
    pub fn reason(&self) -> &'static str {
        reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    }

    /// What an agent following the contract does with this answer.
    pub fn directive(&self) -> &str {
        &self.directive
    }
}

/// The contract's "agent should" column for an answer (see
/// [`policy::classify`](crate::policy::classify)).
fn directive(s: &ResponseSummary) -> String {
    match crate::policy::classify(s.status, s.retry_after, s.probe_after) {
        BatchFate::Accept => "forget the batch: it is accepted".into(),
        BatchFate::Drop(reason) => format!("drop the batch, never retry it ({reason})"),
        BatchFate::AuthRejected { probe_after } => format!(
            "keep the data; retry with backoff within the auth grace window, then pause and probe every {}",
            probe_after.map_or_else(
                || "probe interval".to_owned(),
                |d| format!("{} s", d.as_secs())
            )
        ),
        BatchFate::Retry { at_least: Some(d) } => format!(
            "keep the data; retry with the same batch_id, not before {} s",
            d.as_secs_f64()
        ),
        BatchFate::Retry { at_least: None } => {
            "keep the data; retry with the same batch_id after a jittered backoff".into()
        }
    }
}

/// Sends `req` once and returns the server's answer.
pub async fn push_once(req: PushRequest) -> Result<PushOutcome, PushError> {
    let url = transport::push_url(&req.endpoint).map_err(|reason| PushError::InvalidEndpoint {
        endpoint: req.endpoint.clone(),
        reason,
    })?;
    let key = match &req.key {
        None => None,
        Some(k) => {
            let (name, value) = match req.key_header {
                KeyHeader::Bearer => (reqwest::header::AUTHORIZATION, format!("Bearer {k}")),
                KeyHeader::XInletKey => (
                    reqwest::header::HeaderName::from_static("x-inlet-key"),
                    k.clone(),
                ),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| PushError::UnsendableKey)?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("inlet-push/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(PushError::Http)?;
    let transport = Transport {
        http,
        url: url.clone(),
        key,
    };
    let body = if req.gzip {
        inlet_domain::ContentEncoding::Gzip.encode(&req.body)
    } else {
        req.body
    };
    let started = std::time::Instant::now();
    let summary = transport
        .send(body, req.gzip, req.timeout)
        .await
        .map_err(|source| PushError::NoAnswer {
            url: url.to_string(),
            source,
        })?;
    Ok(PushOutcome::from_summary(summary, started.elapsed()))
}
