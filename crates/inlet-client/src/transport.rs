//! One HTTP attempt: POST a body to `/v1/push`, read the answer into a
//! [`ResponseSummary`] or a [`TransportError`]. No policy here.

use std::time::{Duration, SystemTime};

use inlet_domain::ApiKey;
use reqwest::header::{self, HeaderName, HeaderValue};

use crate::response::ResponseSummary;

/// Most bytes of a response body read (the problem documents are small; a
/// proxy's error page is not worth more).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where the key goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (the default).
    #[default]
    Bearer,
    /// `X-Inlet-Key: <key>`, for proxies that strip or rewrite
    /// `Authorization`.
    XInletKey,
}

/// No answer was received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransportError {
    /// `timeout`, `connect`, `body` or `request`.
    pub kind: &'static str,
    /// The underlying error (its chain, flattened).
    pub message: String,
}

impl TransportError {
    /// Classifies a `reqwest` error by what went wrong (`kind`) and keeps
    /// its whole chain as the message.
    pub fn from_reqwest(e: &reqwest::Error) -> TransportError {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else if e.is_body() || e.is_decode() {
            "body"
        } else {
            "request"
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        TransportError { kind, message }
    }
}

/// Normalizes an endpoint into the push URL: a base URL gets `v1/push`
/// appended (keeping any path prefix); a URL already ending in `/v1/push`
/// is used as is. The error says what is wrong with the endpoint.
pub fn push_url(endpoint: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(endpoint.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("an endpoint has no query string or fragment".into());
    }
    if !url.path().trim_end_matches('/').ends_with("/v1/push") {
        let path = format!("{}/v1/push", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// The key as a header, marked sensitive so it never shows in debug output.
pub(crate) fn key_header(
    key: &ApiKey,
    style: KeyHeader,
) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = match style {
        KeyHeader::Bearer => (
            header::AUTHORIZATION,
            format!("Bearer {}", key.expose_secret()),
        ),
        KeyHeader::XInletKey => (
            HeaderName::from_static("x-inlet-key"),
            key.expose_secret().to_owned(),
        ),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Sends push requests for one client.
#[derive(Clone)]
pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub url: reqwest::Url,
    pub key: Option<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// One attempt. `gzip` says whether `body` is gzip-compressed.
    pub(crate) async fn send(
        &self,
        body: Vec<u8>,
        gzip: bool,
        timeout: Duration,
    ) -> Result<ResponseSummary, TransportError> {
        let mut req = self
            .http
            .post(self.url.clone())
            .timeout(timeout)
            .header(header::CONTENT_TYPE, "application/json");
        if gzip {
            req = req.header(header::CONTENT_ENCODING, "gzip");
        }
        if let Some((name, value)) = &self.key {
            req = req.header(name.clone(), value.clone());
        }
        let mut resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| TransportError::from_reqwest(&e))?;
        let status = resp.status().as_u16();
        let text = |name: HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = text(header::RETRY_AFTER);
        let request_id = text(HeaderName::from_static("x-request-id"));
        let mut body = Vec::new();
        // A status line is an answer even if its body then fails to
        // arrive: keep what was read.
        while body.len() < MAX_RESPONSE_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(MAX_RESPONSE_BYTES);
        Ok(ResponseSummary::from_parts(
            status,
            retry_after.as_deref(),
            request_id.as_deref(),
            &body,
            SystemTime::now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn endpoints_become_push_urls() {
        for (given, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/push"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1/push"),
            (
                "https://in.example.com/inlet",
                "https://in.example.com/inlet/v1/push",
            ),
            (
                "https://in.example.com/inlet/",
                "https://in.example.com/inlet/v1/push",
            ),
            ("http://h:1/v1/push", "http://h:1/v1/push"),
        ] {
            assert_eq!(push_url(given).unwrap().as_str(), want, "{given}");
        }
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://h/",
            "http://h/?api_key=x",
            "not a url",
        ] {
            assert!(push_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_header_is_sensitive() {
        let key = ApiKey::parse_format("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
        let (name, value) = key_header(&key, KeyHeader::Bearer).unwrap();
        assert_eq!(name, header::AUTHORIZATION);
        assert!(value.is_sensitive());
        assert_eq!(
            value.to_str().unwrap(),
            "Bearer 3f2504e0-4f89-11d3-9a0c-0305e82c3301"
        );
        let (name, _) = key_header(&key, KeyHeader::XInletKey).unwrap();
        assert_eq!(name.as_str(), "x-inlet-key");
    }
}
