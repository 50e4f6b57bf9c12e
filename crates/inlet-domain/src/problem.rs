//! The push API's answer documents: the problem document, the JSON body
//! of every non-2xx answer (`docs/http-api.md`, `Problem` in
//! `docs/openapi.yaml`), and [`AcceptedBody`], the body of a 202.
//!
//! One type for both sides of the wire: `inlet-api` writes it, filling
//! every field it has; `inlet-client` (or any other agent) reads it, and
//! reading is lenient: every field may be missing, because a proxy in front
//! of Inlet may answer with something else entirely and the client must
//! still act.
//!
//! ```
//! use inlet_domain::Problem;
//!
//! let p = Problem::parse(br#"{"code":"rate_limited","retryable":true,"retry_after_s":2}"#)
//!     .unwrap();
//! assert_eq!(p.code.as_deref(), Some("rate_limited"));
//! assert_eq!(p.retry_after_s, Some(2.0));
//! assert!(Problem::parse(b"<html>busy</html>").is_none());
//! // Whole seconds are written as JSON integers, as the API promises.
//! assert!(serde_json::to_string(&p).unwrap().contains(r#""retry_after_s":2,"#));
//! ```

use serde::{Deserialize, Serialize, Serializer};

/// The body of a 202: the message id the server gave the batch and the
/// request id (also in `X-Request-Id`). The API writes both; a reader
/// takes what is there.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AcceptedBody {
    /// The message id the server gave the batch.
    #[serde(default)]
    pub id: Option<String>,
    /// The request id (also in `X-Request-Id`).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The JSON body of every non-2xx answer.
///
/// The API always writes `code`, `message`, `retryable` and `request_id`;
/// `retry_after_s` (429, 503) and `probe_after_s` (401, 403) only where
/// they apply, and `errors` only when there are some (400).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Problem {
    /// Stable machine-readable code, e.g. `auth_unavailable`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human explanation.
    #[serde(default)]
    pub message: Option<String>,
    /// Whether the same data may be sent again (also on 401/403: the data
    /// is good, only the key is in question).
    #[serde(default)]
    pub retryable: Option<bool>,
    /// Minimum wait before a retry, seconds (429 and 503; also in
    /// `Retry-After`). Written as an integer when whole.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_seconds"
    )]
    pub retry_after_s: Option<f64>,
    /// How long to pause before trying a rejected key again, seconds (401
    /// and 403). Written as an integer when whole.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_seconds"
    )]
    pub probe_after_s: Option<f64>,
    /// The request id (also in `X-Request-Id`).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Field-level violations (400 `invalid_batch` / `invalid_json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One field-level violation of a 400.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldError {
    /// Field path, e.g. `transactions[3].duration_ms`.
    #[serde(default)]
    pub path: String,
    /// Rule code, e.g. `too_long`.
    #[serde(default)]
    pub rule: String,
    /// Human explanation.
    #[serde(default)]
    pub message: String,
}

impl Problem {
    /// Parses a problem document; anything that is not one gives `None`.
    pub fn parse(body: &[u8]) -> Option<Problem> {
        serde_json::from_slice(body).ok()
    }
}

/// Seconds as the API writes them: a JSON integer when whole (`4`, not
/// `4.0`), else the number as it is.
fn whole_seconds<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *value {
        Some(v) if v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v) => {
            s.serialize_u64(v as u64)
        }
        Some(v) => s.serialize_f64(v),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn writes_the_documented_shape() {
        let p = Problem {
            code: Some("invalid_batch".into()),
            message: Some("m".into()),
            retryable: Some(false),
            request_id: Some("r".into()),
            errors: vec![FieldError {
                path: "app".into(),
                rule: "required".into(),
                message: "missing".into(),
            }],
            ..Problem::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"code":"invalid_batch","message":"m","retryable":false,"request_id":"r","errors":[{"path":"app","rule":"required","message":"missing"}]}"#
        );
        let p = Problem {
            code: Some("auth_unavailable".into()),
            message: Some("m".into()),
            retryable: Some(true),
            retry_after_s: Some(4.0),
            probe_after_s: Some(0.5),
            request_id: Some(String::new()),
            errors: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"code":"auth_unavailable","message":"m","retryable":true,"retry_after_s":4,"probe_after_s":0.5,"request_id":""}"#
        );
        assert_eq!(
            Problem::parse(serde_json::to_string(&p).unwrap().as_bytes()),
            Some(p)
        );
    }

    #[test]
    fn reads_leniently() {
        let p = Problem::parse(br#"{"code":null,"retry_after_s":2.5,"errors":[{}]}"#).unwrap();
        assert_eq!(p.code, None);
        assert_eq!(p.retry_after_s, Some(2.5));
        assert_eq!(p.errors, vec![FieldError::default()]);
        assert_eq!(Problem::parse(b"{}"), Some(Problem::default()));
        assert_eq!(Problem::parse(br#"{"code":5}"#), None);
        assert_eq!(Problem::parse(b"not json"), None);
    }
}
