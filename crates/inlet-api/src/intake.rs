//! What every intake route does before and after its own decoding:
//! authenticate (before reading the body), rate-limit, check the content
//! type and encoding, read the body within its limits and budget, decode
//! it within the decompressed limit (on the worker thread, or on the
//! blocking pool when large), and publish envelopes — answered only once
//! the broker confirmed. `push` and `otlp` differ only in what the decoded
//! bytes become.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use bytes::Bytes;
use futures::StreamExt as _;
use inlet_domain::{
    AuthMode, BatchId, ContentEncoding, Envelope, Grant, KeyDigest, Verdict, now_ms,
};

use crate::budget::Reservation;
use crate::error::ApiError;
use crate::state::AppState;

/// Where agents may put the key, in order of precedence.
///
/// Header values are read as UTF-8, not only visible ASCII: a token an
/// older system issued may hold any character a store can hold. A value
/// that is not UTF-8 is read as ISO-8859-1 (HTTP's historical header
/// charset, one character per byte): it is a key that was sent, judged
/// like any other, never "no API key was sent".
pub fn extract_key(req: &HttpRequest) -> Option<String> {
    let text = |name| {
        req.headers()
            .get(name)
            .map(|v| match std::str::from_utf8(v.as_bytes()) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => {
                    std::borrow::Cow::Owned(v.as_bytes().iter().map(|b| char::from(*b)).collect())
                }
            })
    };
    if let Some(v) = text(header::AUTHORIZATION)
        && let Some((scheme, token)) = v.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    if let Some(v) = text(header::HeaderName::from_static("x-inlet-key")) {
        return Some(v.trim().to_owned());
    }
    // Older agents send `?api_key=`. The query string is never logged.
    form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == "api_key")
        .map(|(_, value)| value.into_owned())
}

/// Largest decoded body handled on an HTTP worker thread, bytes: about a
/// millisecond of decompressing and validating (~445 MiB/s for validation
/// in `docs/benchmarks.md`), as long as a worker's other connections
/// should wait. Larger bodies are handled on the blocking pool.
pub const INLINE_DECODED_BYTES: usize = 256 * 1024;

/// A request that passed every check before decoding.
#[derive(Debug)]
pub(crate) struct Received {
    /// The accepted key's grant.
    pub grant: Grant,
    /// The key's digest (for the envelope).
    pub digest: KeyDigest,
    /// The body's `Content-Encoding`.
    pub encoding: ContentEncoding,
    /// The body, as received.
    pub body: Bytes,
    /// When it was received, Unix ms (the timestamp window's origin).
    pub received_at_ms: i64,
    /// The body's room in the process's body budget, held until the
    /// request is answered (dropped with it).
    #[expect(dead_code, reason = "held, never read")]
    pub held: Reservation,
}

/// Steps 1–4 of every intake route. `media` says whether a `Content-Type`
/// is one the route takes (an absent one always passes); `expected` names
/// them in the 415.
pub(crate) async fn receive(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    media: impl Fn(&str) -> bool,
    expected: &'static str,
) -> Result<Received, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }

    // 1. Authenticate before reading a byte of the body.
    let raw_key = extract_key(req);
    let decision = state.auth.decide(raw_key.as_deref()).await;
    let grant = match decision.verdict {
        Verdict::Accepted(g) => g,
        other => return Err(ApiError::Auth(other)),
    };
    let Some(digest) = decision.digest else {
        return Err(ApiError::Auth(Verdict::UnknownKey));
    };

    // 2. Per-key rate limit.
    if let Err(wait) = state.limiter.check(grant.key_id, grant.rate_limit) {
        state.metrics.rate_limited.inc();
        return Err(ApiError::RateLimited {
            wait_s: wait.as_secs_f64().ceil().max(1.0) as u32,
        });
    }

    // 3. Content type and encoding.
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !media(ct) {
            return Err(ApiError::UnsupportedMediaType {
                got: ct.chars().take(64).collect(),
                expected,
            });
        }
    }
    let encoding = match req.headers().get(header::CONTENT_ENCODING) {
        None => ContentEncoding::Identity,
        Some(v) => ContentEncoding::parse(v.to_str().unwrap_or("?"))
            .map_err(ApiError::UnsupportedEncoding)?,
    };

    // 4. Read the body, never more than the limit, holding room for it in
    //    the process's body budget until the answer.
    let limit = state.settings.max_body_bytes;
    let too_large = ApiError::PayloadTooLarge {
        limit,
        decompressed: false,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large);
    }
    let mut held = state
        .bodies
        .reserve(declared.unwrap_or(limit))
        .await
        .ok_or(ApiError::ServerBusy)?;
    let read_for = Duration::from_millis(state.settings.body_read_timeout_ms);
    let body = tokio::time::timeout(read_for, async {
        let mut body = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::BodyIncomplete(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    })
    .await
    .map_err(|_| ApiError::BodyTimeout {
        after_ms: state.settings.body_read_timeout_ms,
    })??;
    held.shrink_to(body.len());
    state.metrics.hot.body_received.observe(body.len() as f64);
    Ok(Received {
        grant,
        digest,
        encoding,
        body,
        received_at_ms: now_ms(),
        held,
    })
}

/// Step 5: decompresses the body within the decompressed limit and hands
/// the decoded bytes to `parse`. A body that decodes to at most
/// [`INLINE_DECODED_BYTES`] (nearly every request) is handled here, on the
/// worker thread. A larger one is decoded again on the blocking pool,
/// holding room in the decoding budget, so no worker thread stalls on it
/// while its other connections wait. The decoded bytes are gone when this
/// returns.
pub(crate) async fn decode<T, F>(state: &AppState, r: &Received, parse: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Fn(&[u8]) -> Result<T, ApiError> + Clone + Send + 'static,
{
    let max_decoded = state.settings.max_decoded_bytes;
    let inline_limit = max_decoded.min(INLINE_DECODED_BYTES);
    let hist = &state.metrics.hot.body_decoded;
    let inline = r
        .encoding
        .decode(&r.body, inline_limit)
        .map_err(ApiError::from)
        .and_then(|decoded| {
            hist.observe(decoded.len() as f64);
            parse(&decoded)
        });
    match inline {
        Err(ApiError::PayloadTooLarge {
            decompressed: true, ..
        }) if inline_limit < max_decoded => {
            let room = match r.encoding {
                ContentEncoding::Identity => r.body.len(),
                _ => max_decoded,
            };
            let _decoding = state
                .decoding
                .reserve(room)
                .await
                .ok_or(ApiError::ServerBusy)?;
            let (body, hist, encoding) = (r.body.clone(), hist.clone(), r.encoding);
            web::block(move || {
                let decoded = encoding.decode(&body, max_decoded)?;
                hist.observe(decoded.len() as f64);
                parse(&decoded)
            })
            .await
            // Only while the runtime shuts down is there no pool to run on.
            .map_err(|_| ApiError::ServerBusy)?
        }
        other => other,
    }
}

/// The envelope of one batch of a received request.
pub(crate) fn envelope(
    r: &Received,
    encoding: ContentEncoding,
    batch_id: Option<BatchId>,
    body: Bytes,
) -> Envelope {
    Envelope {
        message_id: Envelope::new_message_id(),
        account_id: r.grant.account_id.clone(),
        key_id: r.grant.key_id,
        key_digest: r.digest,
        auth_mode: r.grant.mode,
        received_at_ms: r.received_at_ms,
        content_encoding: encoding,
        batch_id,
        body,
    }
}

/// Step 6 of an accepted request: a log line when the key was accepted
/// provisionally (the worker re-checks it).
pub(crate) fn note_provisional(r: &Received, message_id: &uuid::Uuid) {
    if r.grant.mode == AuthMode::Provisional {
        tracing::info!(key_id = %r.grant.key_id, message_id = %message_id, "push accepted provisionally");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn key_sources_in_order() {
        let req = TestRequest::default()
            .insert_header(("Authorization", "Bearer abc"))
            .insert_header(("X-Inlet-Key", "def"))
            .uri("/v1/push?api_key=ghi")
            .to_http_request();
        assert_eq!(extract_key(&req).as_deref(), Some("abc"));
        let req = TestRequest::default()
            .insert_header(("Authorization", "Basic xyz"))
            .insert_header(("X-Inlet-Key", " def "))
            .to_http_request();
        assert_eq!(extract_key(&req).as_deref(), Some("def"));
        let req = TestRequest::default()
            .uri("/v1/push?x=1&api_key=g%2Dh&y=2")
            .to_http_request();
        assert_eq!(extract_key(&req).as_deref(), Some("g-h"));
        let req = TestRequest::default().uri("/v1/push").to_http_request();
        assert_eq!(extract_key(&req), None);
    }

    #[test]
    fn a_key_header_that_is_not_utf8_is_a_key_sent_not_a_missing_one() {
        let latin1 = actix_web::http::header::HeaderValue::from_bytes(b"caf\xe9-key").unwrap();
        let req = TestRequest::default()
            .insert_header(("X-Inlet-Key", latin1.clone()))
            .to_http_request();
        assert_eq!(extract_key(&req).as_deref(), Some("caf\u{e9}-key"));
        let mut bearer = b"Bearer caf".to_vec();
        bearer.push(0xe9);
        let req = TestRequest::default()
            .insert_header((
                "Authorization",
                actix_web::http::header::HeaderValue::from_bytes(&bearer).unwrap(),
            ))
            .to_http_request();
        assert_eq!(extract_key(&req).as_deref(), Some("caf\u{e9}"));
    }

    #[test]
    fn query_keys_are_form_decoded_and_decoding_is_total() {
        for (raw, key) in [
            ("a%2Fb", "a/b"),
            ("a+b", "a b"),
            ("%", "%"),
            ("%zz", "%zz"),
            ("%4", "%4"),
            ("%ff", "\u{fffd}"),
        ] {
            let req = TestRequest::default()
                .uri(&format!("/v1/push?api_key={raw}"))
                .to_http_request();
            assert_eq!(extract_key(&req).as_deref(), Some(key), "{raw}");
        }
    }
}
