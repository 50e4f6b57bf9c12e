//! `POST /v1/push`: authenticate (before reading the body), rate-limit,
//! read and decode the body within limits, validate, publish, and answer
//! 202 only after the broker's confirm.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt as _;
use inlet_domain::problem::AcceptedBody;
use inlet_domain::{AuthMode, Batch, BatchLimits, ContentEncoding, Envelope, Verdict, now_ms};
use prometheus::Histogram;

use crate::error::ApiError;
use crate::metrics::ResponseCode;
use crate::request_id::RequestId;
use crate::state::AppState;

/// Where agents may put the key, in order of precedence.
///
/// Header values are read as UTF-8, not only visible ASCII: a token an
/// older system issued may hold any character a store can hold.
pub fn extract_key(req: &HttpRequest) -> Option<String> {
    let text = |name| {
        req.headers()
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
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

/// The handler: 202 with the message id once the broker confirmed, else
/// the error (answered by the application's middleware).
pub async fn push(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = handle(&req, payload, &state).await?;
    let mut resp = HttpResponse::Accepted().json(AcceptedBody {
        id: Some(id.to_string()),
        request_id: Some(RequestId::of(&req).to_string()),
    });
    resp.extensions_mut().insert(ResponseCode("accepted"));
    Ok(resp)
}

async fn handle(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<uuid::Uuid, ApiError> {
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
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(
                ct.chars().take(64).collect(),
            ));
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

    // 5. Decode within the decompressed limit, and validate. A body that
    //    decodes to at most `INLINE_DECODED_BYTES` (nearly every push) is
    //    handled here, on the worker thread. A larger one is decoded again
    //    on the blocking pool, holding room in the decoding budget, so no
    //    worker thread stalls on it while its other connections wait. The
    //    decoded text and the parsed batch are gone before the publish.
    let received_at_ms = now_ms();
    let max_decoded = state.settings.max_decoded_bytes;
    let inline_limit = max_decoded.min(INLINE_DECODED_BYTES);
    let decoded_hist = &state.metrics.hot.body_decoded;
    let inline = validate(
        encoding,
        &body,
        inline_limit,
        &state.limits,
        received_at_ms,
        decoded_hist,
    );
    let batch = match inline {
        Err(ApiError::PayloadTooLarge {
            decompressed: true, ..
        }) if inline_limit < max_decoded => {
            let room = match encoding {
                ContentEncoding::Identity => body.len(),
                _ => max_decoded,
            };
            let _decoding = state
                .decoding
                .reserve(room)
                .await
                .ok_or(ApiError::ServerBusy)?;
            let (body, limits, hist) = (body.clone(), state.limits.clone(), decoded_hist.clone());
            web::block(move || {
                validate(encoding, &body, max_decoded, &limits, received_at_ms, &hist)
            })
            .await
            // Only while the runtime shuts down is there no pool to run on.
            .map_err(|_| ApiError::ServerBusy)??
        }
        other => other?,
    };
    if let Some(allowed) = &grant.app
        && allowed != batch.app()
    {
        return Err(ApiError::AppForbidden {
            app: batch.app().to_string(),
        });
    }
    let batch_id = batch.batch_id().cloned();
    let items = [
        batch.transactions().len(),
        batch.metrics().len(),
        batch.errors().len(),
    ];
    drop(batch);

    // 6. Publish; 202 only once the broker has confirmed.
    let envelope = Envelope {
        message_id: Envelope::new_message_id(),
        account_id: grant.account_id.clone(),
        key_id: grant.key_id,
        key_digest: digest,
        auth_mode: grant.mode,
        received_at_ms,
        content_encoding: encoding,
        batch_id,
        body,
    };
    state
        .publisher
        .publish(&envelope)
        .await
        .map_err(ApiError::Queue)?;
    drop(held);
    let m = &state.metrics.hot;
    let [transactions, metrics, errors] = items;
    m.transactions.inc_by(transactions as u64);
    m.metrics.inc_by(metrics as u64);
    m.errors.inc_by(errors as u64);
    if grant.mode == AuthMode::Provisional {
        tracing::info!(key_id = %grant.key_id, message_id = %envelope.message_id, "push accepted provisionally");
    }
    Ok(envelope.message_id)
}

/// Decodes `body` within `limit` (bytes, decompressed) and validates it.
fn validate(
    encoding: ContentEncoding,
    body: &[u8],
    limit: usize,
    limits: &BatchLimits,
    received_at_ms: i64,
    decoded_hist: &Histogram,
) -> Result<Batch, ApiError> {
    let decoded = encoding.decode(body, limit)?;
    decoded_hist.observe(decoded.len() as f64);
    Batch::decode(&decoded, limits, received_at_ms).map_err(ApiError::Batch)
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
