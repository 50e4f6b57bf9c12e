//! `POST /v1/push`: the intake steps ([`crate::intake`]), the JSON batch
//! validated, published as received, and 202 only after the broker's
//! confirm.

use actix_web::{HttpRequest, HttpResponse, web};
use inlet_domain::Batch;
use inlet_domain::problem::AcceptedBody;

use crate::error::ApiError;
use crate::intake::{self, Received};
use crate::metrics::ResponseCode;
use crate::request_id::RequestId;
use crate::state::AppState;

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

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<uuid::Uuid, ApiError> {
    let received: Received =
        intake::receive(req, payload, state, is_json, "application/json").await?;

    // 5. Validate; the parsed batch is gone before the publish.
    let (limits, now) = (state.limits.clone(), received.received_at_ms);
    let batch = intake::decode(state, &received, move |decoded| {
        Batch::decode(decoded, &limits, now).map_err(ApiError::Batch)
    })
    .await?;
    if let Some(allowed) = &received.grant.app
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

    // 6. Publish the body as received; 202 only once the broker confirmed.
    let envelope = intake::envelope(
        &received,
        received.encoding,
        batch_id,
        received.body.clone(),
    );
    state
        .publisher
        .publish(&envelope)
        .await
        .map_err(ApiError::Queue)?;
    let m = &state.metrics.hot;
    let [transactions, metrics, errors] = items;
    m.transactions.inc_by(transactions as u64);
    m.metrics.inc_by(metrics as u64);
    m.errors.inc_by(errors as u64);
    intake::note_provisional(&received, &envelope.message_id);
    Ok(envelope.message_id)
}
