//! The push API's answers as the client reads them: the 202 body, the
//! problem document of every other status (the wire types the API writes,
//! [`inlet_domain::Problem`] and [`inlet_domain::problem::AcceptedBody`],
//! re-exported here), and what the retry policy
//! takes from a response.

use std::time::{Duration, SystemTime};

pub use inlet_domain::problem::{AcceptedBody, FieldError, Problem};

use crate::retry_after;

/// What the retry policy needs from an HTTP response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseSummary {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After` and `retry_after_s` combined (the larger), capped.
    pub retry_after: Option<Duration>,
    /// `probe_after_s`, capped.
    pub probe_after: Option<Duration>,
    /// The problem document, when the body was one.
    pub problem: Option<Problem>,
    /// The 202 body's message id.
    pub id: Option<String>,
    /// `X-Request-Id`, or the body's `request_id`.
    pub request_id: Option<String>,
}

impl ResponseSummary {
    /// Builds the summary from the parts of a response. `now` is the
    /// wall-clock time an HTTP-date `Retry-After` is measured from.
    pub fn from_parts(
        status: u16,
        retry_after_header: Option<&str>,
        request_id_header: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> ResponseSummary {
        let header_wait = retry_after_header.and_then(|v| retry_after::parse_retry_after(v, now));
        let (problem, accepted) = if (200..300).contains(&status) {
            (
                None,
                serde_json::from_slice::<AcceptedBody>(body).unwrap_or_default(),
            )
        } else {
            (Problem::parse(body), AcceptedBody::default())
        };
        let body_wait = problem
            .as_ref()
            .and_then(|p| retry_after::from_body_seconds(p.retry_after_s));
        let retry_after = match (header_wait, body_wait) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let probe_after = problem
            .as_ref()
            .and_then(|p| retry_after::from_body_seconds(p.probe_after_s));
        let request_id = request_id_header
            .map(str::to_owned)
            .or_else(|| problem.as_ref().and_then(|p| p.request_id.clone()))
            .or(accepted.request_id);
        ResponseSummary {
            status,
            retry_after,
            probe_after,
            problem,
            id: accepted.id,
            request_id,
        }
    }

    /// The problem's code, if any.
    pub fn code(&self) -> Option<&str> {
        self.problem.as_ref().and_then(|p| p.code.as_deref())
    }

    /// The problem's message, if any.
    pub fn message(&self) -> Option<&str> {
        self.problem.as_ref().and_then(|p| p.message.as_deref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn header_and_body_waits_combine_to_the_larger() {
        let now = SystemTime::UNIX_EPOCH;
        let body = br#"{"code":"auth_unavailable","message":"m","retryable":true,"retry_after_s":4,"request_id":"r1"}"#;
        let s = ResponseSummary::from_parts(503, Some("2"), None, body, now);
        assert_eq!(s.retry_after, Some(Duration::from_secs(4)));
        assert_eq!(s.code(), Some("auth_unavailable"));
        assert_eq!(s.request_id.as_deref(), Some("r1"));
        let s = ResponseSummary::from_parts(503, Some("9"), Some("hdr"), body, now);
        assert_eq!(s.retry_after, Some(Duration::from_secs(9)));
        assert_eq!(s.request_id.as_deref(), Some("hdr"));
        // Body only.
        let s = ResponseSummary::from_parts(429, None, None, body, now);
        assert_eq!(s.retry_after, Some(Duration::from_secs(4)));
        // Header only, body not JSON (a proxy's HTML page).
        let s = ResponseSummary::from_parts(503, Some("3"), None, b"<html>", now);
        assert_eq!(s.retry_after, Some(Duration::from_secs(3)));
        assert!(s.problem.is_none());
    }

    #[test]
    fn probe_after_and_accepted_id() {
        let now = SystemTime::UNIX_EPOCH;
        let body = br#"{"code":"unknown_key","message":"the API key is not known","retryable":true,"probe_after_s":300,"request_id":"x"}"#;
        let s = ResponseSummary::from_parts(401, None, None, body, now);
        assert_eq!(s.probe_after, Some(Duration::from_secs(300)));
        assert_eq!(s.retry_after, None);
        assert_eq!(s.message(), Some("the API key is not known"));
        let s = ResponseSummary::from_parts(
            202,
            None,
            None,
            br#"{"id":"0190","request_id":"abc"}"#,
            now,
        );
        assert_eq!(s.id.as_deref(), Some("0190"));
        assert_eq!(s.request_id.as_deref(), Some("abc"));
        assert!(s.problem.is_none());
    }
}
