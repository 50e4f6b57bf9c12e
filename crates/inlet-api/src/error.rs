//! The one mapping from everything that can go wrong to an HTTP status, a
//! stable `code`, and the agent directive (`retryable`, `retry_after_s`,
//! `probe_after_s`).
//!
//! | status | codes | agent should |
//! |---|---|---|
//! | 400 | `invalid_json`, `invalid_batch`, `invalid_otlp`, `corrupt_body`, `body_incomplete` | drop, never retry |
//! | 401 | `missing_key`, `malformed_key`, `unknown_key`, `revoked_key` | keep data (`retryable`), retry within the auth grace, then after `probe_after_s` |
//! | 403 | `account_suspended`, `app_forbidden` | likewise |
//! | 404/405 | `not_found`, `method_not_allowed` | fix the client |
//! | 408 | `body_timeout` | send again (the data was not kept) |
//! | 413 | `payload_too_large` | drop |
//! | 415 | `unsupported_media_type`, `unsupported_encoding` | drop |
//! | 429 | `rate_limited` | retry after `Retry-After` |
//! | 503 | `auth_unavailable`, `key_record_unreadable`, `queue_unavailable`, `queue_backpressure`, `queue_timeout`, `queue_nacked`, `queue_unroutable`, `server_busy`, `shutting_down` | retry after `Retry-After` |
//!
//! `auth_unavailable` (undecidable) is a 503, never a 401: only a verdict of
//! the source of truth or of the key's own bytes is a 401.
//! `key_record_unreadable` is a 503 too: MongoDB holds a document for the
//! key that cannot be read, which is neither a verdict nor an outage.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use inlet_domain::{
    BatchError, DecodeError, Disposition, FieldError, Problem, UndecidableReason,
    UnsupportedEncoding, Verdict,
};
use inlet_queue::PublishError;

use crate::metrics::ResponseCode;
use crate::settings::ApiSettings;

/// Everything a request can fail with. Handlers return it as their
/// error; the application's middleware turns it into the answer
/// ([`ApiError::to_response`]), with the request id and the directive
/// settings.
#[derive(Debug)]
pub enum ApiError {
    /// The authenticator did not accept the key (any verdict but
    /// `Accepted`).
    Auth(Verdict),
    /// The key is restricted to another app.
    AppForbidden {
        /// The app the batch named.
        app: String,
    },
    /// The key's token bucket is empty.
    RateLimited {
        /// Seconds until a token is available.
        wait_s: u32,
    },
    /// `Content-Type` is not one the route takes.
    UnsupportedMediaType {
        /// The type sent (cut to 64 characters).
        got: String,
        /// The types the route takes.
        expected: &'static str,
    },
    /// `Content-Encoding` is not supported.
    UnsupportedEncoding(UnsupportedEncoding),
    /// The body, or the body once decompressed, is over its limit.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// Whether the decompressed size was over.
        decompressed: bool,
    },
    /// The compressed body does not decompress.
    CorruptBody(String),
    /// The body could not be read to its end.
    BodyIncomplete(String),
    /// The body did not arrive within `api.body_read_timeout_ms`.
    BodyTimeout {
        /// The limit, milliseconds.
        after_ms: u64,
    },
    /// The batch is not valid JSON or breaks the schema.
    Batch(BatchError),
    /// The OTLP export request does not decode.
    Otlp(inlet_otlp::DecodeError),
    /// The broker did not confirm.
    Queue(PublishError),
    /// No room in the memory budgets within the wait.
    ServerBusy,
    /// The instance is shutting down.
    ShuttingDown,
    /// No such route.
    NotFound,
    /// Wrong method for the route.
    MethodNotAllowed {
        /// The route's methods, for the `Allow` header.
        allow: &'static str,
    },
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge { limit } => ApiError::PayloadTooLarge {
                limit,
                decompressed: true,
            },
            DecodeError::Corrupt { .. } => ApiError::CorruptBody(e.to_string()),
        }
    }
}

impl ApiError {
    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(v) => (
                match v.disposition() {
                    Disposition::Unauthorized => StatusCode::UNAUTHORIZED,
                    Disposition::Forbidden => StatusCode::FORBIDDEN,
                    // Undecidable, and (defensively) anything else.
                    Disposition::RetryLater | Disposition::Proceed => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                },
                v.code(),
            ),
            ApiError::AppForbidden { .. } => (StatusCode::FORBIDDEN, "app_forbidden"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::CorruptBody(_) => (StatusCode::BAD_REQUEST, "corrupt_body"),
            ApiError::BodyIncomplete(_) => (StatusCode::BAD_REQUEST, "body_incomplete"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::Batch(e) => (StatusCode::BAD_REQUEST, e.code()),
            ApiError::Otlp(_) => (StatusCode::BAD_REQUEST, "invalid_otlp"),
            ApiError::Queue(e) => (StatusCode::SERVICE_UNAVAILABLE, e.code()),
            ApiError::ServerBusy => (StatusCode::SERVICE_UNAVAILABLE, "server_busy"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Auth(Verdict::Undecidable(UndecidableReason::RecordUnreadable)) => {
                "the key's record in the source of truth cannot be read; nothing was decided \
                 about the key and the operators are alerted; retry later"
                    .into()
            }
            ApiError::Auth(Verdict::Undecidable(reason)) => format!(
                "the key cannot be checked right now ({}); nothing was decided about it, retry later",
                reason.as_str()
            ),
            ApiError::Auth(Verdict::UnknownKey) => "the API key is not known".into(),
            ApiError::Auth(Verdict::RevokedKey) => "the API key was revoked".into(),
            ApiError::Auth(Verdict::SuspendedAccount) => "the account is suspended".into(),
            ApiError::Auth(Verdict::Malformed(e)) => e.to_string(),
            ApiError::Auth(Verdict::Accepted(_)) => {
                "internal: accepted key reported as error".into()
            }
            ApiError::AppForbidden { app } => format!("this key may not push data for app {app:?}"),
            ApiError::RateLimited { wait_s } => {
                format!("rate limit exceeded for this key; retry in {wait_s} s")
            }
            ApiError::UnsupportedMediaType { got, expected } => {
                format!("content type {got:?} is not supported; send {expected}")
            }
            ApiError::UnsupportedEncoding(e) => e.to_string(),
            ApiError::PayloadTooLarge {
                limit,
                decompressed,
            } => format!(
                "the {} body exceeds {limit} bytes",
                if *decompressed {
                    "decompressed"
                } else {
                    "request"
                }
            ),
            ApiError::CorruptBody(m) | ApiError::BodyIncomplete(m) => m.clone(),
            ApiError::BodyTimeout { after_ms } => format!(
                "the body did not arrive within {after_ms} ms; nothing was kept, send it again"
            ),
            ApiError::Batch(e) => e.to_string(),
            ApiError::Otlp(e) => e.to_string(),
            ApiError::Queue(e) => format!("the push could not be queued: {e}"),
            ApiError::ServerBusy => {
                "this instance holds as many push bytes as it may right now; retry".into()
            }
            ApiError::ShuttingDown => "this instance is shutting down; retry".into(),
            ApiError::NotFound => "no such endpoint".into(),
            ApiError::MethodNotAllowed { .. } => "method not allowed on this endpoint".into(),
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ApiError::Batch(BatchError::Invalid { violations, more }) => {
                let mut v: Vec<FieldError> = violations
                    .iter()
                    .map(|v| FieldError {
                        path: v.path.clone(),
                        rule: serde_json::to_value(v.rule)
                            .ok()
                            .and_then(|r| r.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        message: v.message.clone(),
                    })
                    .collect();
                if *more > 0 {
                    v.push(FieldError {
                        path: ".".into(),
                        rule: "more".into(),
                        message: format!("{more} further violations not listed"),
                    });
                }
                v
            }
            ApiError::Batch(BatchError::Syntax { path, message }) => vec![FieldError {
                path: path.clone(),
                rule: "syntax".into(),
                message: message.clone(),
            }],
            _ => Vec::new(),
        }
    }

    /// The agent directive: `retryable`, and `retry_after_s` /
    /// `probe_after_s` in whole seconds.
    fn directive(&self, status: StatusCode, settings: &ApiSettings) -> Directive {
        let (retryable, retry_after_s, probe_after_s) = match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                (true, Some(jittered(settings.retry_after_s, settings)), None)
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = match self {
                    ApiError::RateLimited { wait_s } => *wait_s,
                    _ => 1,
                };
                (true, Some(jittered(wait.max(1), settings)), None)
            }
            // A rejected key: the data is still good, so it stays
            // retryable — the agent keeps it and tries again (within its
            // auth grace window, then every `probe_after_s`) instead of
            // disengaging.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                (true, None, Some(settings.probe_after_s))
            }
            // The body never arrived whole: the same data may be sent again.
            StatusCode::REQUEST_TIMEOUT => (true, None, None),
            _ => (false, None, None),
        };
        Directive {
            retryable,
            retry_after_s,
            probe_after_s,
        }
    }

    fn problem_with(&self, code: &str, directive: &Directive, request_id: &str) -> Problem {
        Problem {
            code: Some(code.to_owned()),
            message: Some(self.message()),
            retryable: Some(directive.retryable),
            retry_after_s: directive.retry_after_s.map(f64::from),
            probe_after_s: directive.probe_after_s.map(f64::from),
            request_id: Some(request_id.to_owned()),
            errors: self.field_errors(),
        }
    }

    /// Builds the problem document with the agent directive.
    pub fn problem(&self, settings: &ApiSettings, request_id: &str) -> (StatusCode, Problem) {
        let (status, code) = self.status_and_code();
        let directive = self.directive(status, settings);
        (status, self.problem_with(code, &directive, request_id))
    }

    /// The complete HTTP response: the problem document, `Retry-After`
    /// (429, 503), `Allow` (405), `Connection: close` (`shutting_down`),
    /// and the [`ResponseCode`] for the metrics.
    pub fn to_response(&self, settings: &ApiSettings, request_id: &str) -> HttpResponse {
        let (mut builder, code, directive) = self.head(settings);
        let mut resp = builder.json(self.problem_with(code, &directive, request_id));
        resp.extensions_mut().insert(ResponseCode(code));
        resp
    }

    /// The same answer for an OTLP route: status and headers as
    /// [`ApiError::to_response`], `X-Inlet-Error: <code>`, and a
    /// `google.rpc.Status` body in the request's format whose
    /// `google.rpc.ErrorInfo` detail carries the code (`reason`) and the
    /// directive (`metadata`: `retryable`, `retry_after_s`,
    /// `probe_after_s`, `request_id`).
    pub fn to_otlp_response(
        &self,
        settings: &ApiSettings,
        request_id: &str,
        format: inlet_otlp::Format,
    ) -> HttpResponse {
        let (mut builder, code, directive) = self.head(settings);
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("retryable".to_owned(), directive.retryable.to_string());
        for (key, value) in [
            ("retry_after_s", directive.retry_after_s),
            ("probe_after_s", directive.probe_after_s),
        ] {
            if let Some(v) = value {
                metadata.insert(key.to_owned(), v.to_string());
            }
        }
        metadata.insert("request_id".to_owned(), request_id.to_owned());
        let status = self.status_and_code().0.as_u16();
        let body = inlet_otlp::answer::failure(format, status, &self.message(), code, metadata);
        builder.insert_header((OTLP_ERROR_HEADER, code));
        let mut resp = builder.content_type(format.content_type()).body(body);
        resp.extensions_mut().insert(ResponseCode(code));
        resp
    }

    /// The status, the headers every rendering shares (`Retry-After`,
    /// `Allow`, `Connection: close`), the code and the directive.
    fn head(&self, settings: &ApiSettings) -> (HttpResponseBuilder, &'static str, Directive) {
        let (status, code) = self.status_and_code();
        let directive = self.directive(status, settings);
        let mut builder = HttpResponseBuilder::new(status);
        if let Some(s) = directive.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            builder.insert_header((header::RETRY_AFTER, v));
        }
        match self {
            ApiError::ShuttingDown => {
                builder.insert_header((header::CONNECTION, "close"));
            }
            ApiError::MethodNotAllowed { allow } => {
                builder.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            _ => {}
        }
        (builder, code, directive)
    }
}

/// The header an OTLP route's failure names its code in.
pub const OTLP_ERROR_HEADER: &str = "x-inlet-error";

/// What an agent should do with a refused push.
struct Directive {
    retryable: bool,
    retry_after_s: Option<u32>,
    probe_after_s: Option<u32>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// Handlers return `Result<_, ApiError>`. The problem document needs the
/// request id and the directive settings, which a `ResponseError` cannot
/// reach: this gives the status (and the code, for the metrics), and the
/// application's middleware replaces it with [`ApiError::to_response`].
impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        let mut resp = HttpResponse::new(status);
        resp.extensions_mut().insert(ResponseCode(code));
        resp
    }
}

/// `base` plus a random 0..=jitter seconds.
fn jittered(base: u32, settings: &ApiSettings) -> u32 {
    if settings.retry_after_jitter_s == 0 {
        return base;
    }
    base + rand::random_range(0..=settings.retry_after_jitter_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_domain::KeyError;

    #[test]
    fn undecidable_is_never_401() {
        let s = ApiSettings::default();
        for reason in [
            UndecidableReason::StoresUnavailable,
            UndecidableReason::Timeout,
            UndecidableReason::NotPopulated,
            UndecidableReason::ConfirmationThrottled,
        ] {
            let (status, p) = ApiError::Auth(Verdict::Undecidable(reason)).problem(&s, "r");
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(p.code.as_deref(), Some("auth_unavailable"));
            assert_eq!(p.retryable, Some(true));
            let after = p.retry_after_s.unwrap();
            assert!((2.0..=5.0).contains(&after), "{after}");
        }
    }

    #[test]
    fn rejections_carry_probe_after() {
        let s = ApiSettings::default();
        for (v, status, code) in [
            (Verdict::UnknownKey, 401, "unknown_key"),
            (Verdict::RevokedKey, 401, "revoked_key"),
            (Verdict::Malformed(KeyError::Missing), 401, "missing_key"),
            (Verdict::Malformed(KeyError::Checksum), 401, "malformed_key"),
            (Verdict::SuspendedAccount, 403, "account_suspended"),
        ] {
            let (st, p) = ApiError::Auth(v).problem(&s, "r");
            assert_eq!((st.as_u16(), p.code.as_deref()), (status, Some(code)));
            assert_eq!(p.probe_after_s, Some(300.0));
            assert!(p.retry_after_s.is_none());
            assert_eq!(
                p.retryable,
                Some(true),
                "the data is good; only the key is in question"
            );
        }
    }

    #[test]
    fn retry_after_is_spread() {
        let s = ApiSettings::default();
        let seen: std::collections::HashSet<u32> = (0..200)
            .map(|_| {
                ApiError::ShuttingDown
                    .problem(&s, "r")
                    .1
                    .retry_after_s
                    .unwrap() as u32
            })
            .collect();
        assert!(seen.len() >= 3, "jittered: {seen:?}");
    }
}
