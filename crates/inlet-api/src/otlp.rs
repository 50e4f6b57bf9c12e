//! `POST /v1/traces`, `/v1/metrics`, `/v1/logs`: OTLP/HTTP exports.
//!
//! The intake steps are `/v1/push`'s ([`crate::intake`]); the decoded
//! request is mapped by [`inlet_otlp`] onto push batches, each published
//! as its own envelope (JSON body, a batch id derived from the request, so
//! a retried export is stored once); 200 with the
//! `Export*ServiceResponse` only after the broker confirmed every one.
//! Failures are answered as `google.rpc.Status` in the request's format
//! ([`ApiError::to_otlp_response`], chosen by the middleware from the
//! [`OtlpFormat`] this handler records on the request).

use actix_web::http::header;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use inlet_domain::{BatchId, ContentEncoding};
use inlet_otlp::{Format, Signal};

use crate::error::ApiError;
use crate::intake;
use crate::metrics::ResponseCode;
use crate::state::AppState;

/// Recorded on an OTLP request: its failures are answered as
/// `google.rpc.Status` in this format.
#[derive(Debug, Clone, Copy)]
pub struct OtlpFormat(pub Format);

/// The `Content-Type`s the routes take, for the 415.
const MEDIA: &str = "application/x-protobuf or application/json";

/// The format of a request: its `Content-Type` (absent: protobuf, OTLP's
/// default), or `None` when it names another type. Recorded on the
/// request for the error answer (JSON when the type is unknown).
pub(crate) fn format_of(req: &HttpRequest) -> Option<Format> {
    let format = match req.headers().get(header::CONTENT_TYPE) {
        None => Some(Format::Protobuf),
        Some(v) => v.to_str().ok().and_then(Format::from_content_type),
    };
    req.extensions_mut()
        .insert(OtlpFormat(format.unwrap_or(Format::Json)));
    format
}

/// `POST /v1/traces`.
pub async fn traces(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    export(Signal::Traces, &req, payload, &state).await
}

/// `POST /v1/metrics`.
pub async fn metrics(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    export(Signal::Metrics, &req, payload, &state).await
}

/// `POST /v1/logs`.
pub async fn logs(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    export(Signal::Logs, &req, payload, &state).await
}

async fn export(
    signal: Signal,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let format = format_of(req);
    let received = intake::receive(
        req,
        payload,
        state,
        |ct| Format::from_content_type(ct).is_some(),
        MEDIA,
    )
    .await?;
    let format = format.unwrap_or(Format::Protobuf);

    // 5. Decode and map; every sample is checked as the worker will.
    let (limits, now) = (state.limits.clone(), received.received_at_ms);
    let export = intake::decode(state, &received, move |decoded| {
        inlet_otlp::map(signal, format, decoded, &limits, now).map_err(ApiError::Otlp)
    })
    .await?;
    if let Some(allowed) = &received.grant.app
        && let Some(other) = export.batches.iter().find(|b| b.app != allowed.as_str())
    {
        return Err(ApiError::AppForbidden {
            app: other.app.clone(),
        });
    }

    // 6. Publish every batch; 200 only once the broker confirmed them all.
    //    Should one fail, the exporter retries the whole export, and the
    //    batches already confirmed are recognised by their batch ids.
    let envelopes: Vec<_> = export
        .batches
        .iter()
        .map(|b| {
            let id = b.batch_id.as_deref().and_then(BatchId::parse);
            // A WireBatch is strings and numbers: serialising it cannot fail.
            let body = serde_json::to_vec(b).unwrap_or_default();
            intake::envelope(&received, ContentEncoding::Identity, id, body.into())
        })
        .collect();
    futures::future::try_join_all(envelopes.iter().map(|e| state.publisher.publish(e)))
        .await
        .map_err(ApiError::Queue)?;

    let m = &state.metrics;
    for b in &export.batches {
        m.hot.transactions.inc_by(b.transactions.len() as u64);
        m.hot.metrics.inc_by(b.metrics.len() as u64);
        m.hot.errors.inc_by(b.errors.len() as u64);
    }
    let items = |outcome: &str| m.otlp_items.with_label_values(&[signal.items(), outcome]);
    items("accepted").inc_by(export.received - export.rejected);
    items("rejected").inc_by(export.rejected);
    for e in &envelopes {
        intake::note_provisional(&received, &e.message_id);
    }
    let body =
        inlet_otlp::answer::success(signal, format, export.rejected, export.message.as_deref());
    let mut resp = HttpResponse::Ok()
        .content_type(format.content_type())
        .body(body);
    resp.extensions_mut()
        .insert(ResponseCode(if export.rejected > 0 {
            "partial_success"
        } else {
            "exported"
        }));
    Ok(resp)
}
