//! The request id: the incoming `X-Request-Id` when it is usable, else a
//! fresh one; echoed in the `X-Request-Id` header and the body of every
//! answer.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;

/// The header that carries it, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request, stored in request extensions by
/// the application's middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The incoming `X-Request-Id` when it is 1–128 visible ASCII
    /// characters, else a fresh UUIDv7.
    pub fn assign(req: &ServiceRequest) -> RequestId {
        RequestId(
            req.headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
                })
                .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned),
        )
    }

    /// The id the middleware gave `req` (empty outside the middleware).
    pub fn of(req: &impl actix_web::HttpMessage) -> String {
        req.extensions()
            .get::<RequestId>()
            .map_or_else(String::new, |r| r.0.clone())
    }
}
