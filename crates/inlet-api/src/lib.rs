//! The push API agents talk to (actix-web). Its contract is the product:
//!
//! - `POST /v1/push` — a JSON batch (identity, gzip, deflate or zstd), the
//!   key in `Authorization: Bearer`, `X-Inlet-Key` or `?api_key=`. The key
//!   is checked before the body is read; malformed keys cost no store I/O;
//!   the body never exceeds its limits, compressed or decompressed, and
//!   the bytes all pushes hold at once stay within a process-wide budget
//!   (503 `server_busy` beyond it); 202 is sent only after the broker
//!   confirmed the message.
//! - `POST /v1/traces`, `/v1/metrics`, `/v1/logs` — OTLP/HTTP exports
//!   (protobuf or JSON), through the same intake steps, mapped by
//!   [`inlet_otlp`] onto push batches; 200 with the OTLP response (and
//!   `partial_success`) only after the broker confirmed; failures as
//!   `google.rpc.Status` with the same status codes and directive.
//! - `GET /health/live`, `GET /health/ready` — ready only when the
//!   authenticator can decide **and** the publisher is connected, and never
//!   once shutdown has begun.
//! - `GET /metrics` — Prometheus text format (here, or on a separate admin
//!   listener), of the process registry passed in [`Dependencies`].
//!
//! Every non-2xx answer is JSON with a stable `code` and the agent
//! directive; see [`error`] for the table. Undecidable auth is a 503 with a
//! jittered `Retry-After`, never a 401.
//!
//! # Layout
//!
//! Modules form a tree with no cycles: `app` uses the rest; `push` and
//! `otlp` use `intake`, `state`, `error`, `metrics` (and `push`
//! `request_id`); `intake` uses `state`, `error` and `budget`; `state` and `error` use
//! only the leaves (`budget`, `metrics`, `ratelimit`, `settings`,
//! `request_id`), which use no other module of the crate; `app` also uses
//! `tls`, which uses only `settings`.
//!
//! - [`app`]: [`Application`] (`build`, `port`, `run_until_stopped`), the
//!   middleware every answer passes (request id, an error's problem
//!   document, metrics), readiness wiring, graceful drain.
//! - `intake`: the steps every intake route shares (auth, rate limit,
//!   content checks, body reading, decoding within limits, envelopes).
//! - [`push`]: the push handler.
//! - [`otlp`]: the OTLP/HTTP handlers.
//! - [`state`]: [`AppState`](state::AppState), what handlers share.
//! - [`request_id`]: [`RequestId`](request_id::RequestId), the
//!   `X-Request-Id` of a request.
//! - [`budget`]: the process-wide budgets of push bytes in memory.
//! - [`error`]: [`ApiError`], the single error → status/code/directive
//!   mapping; handlers return `Result<_, ApiError>`. Its document is
//!   [`inlet_domain::Problem`], the type agents read.
//! - [`ratelimit`]: per-key token buckets.
//! - [`metrics`]: the [`ApiMetrics`].
//! - [`settings`]: [`ApiSettings`] (`[api]`, `[api.tls]`).
//! - [`tls`]: [`ReloadingCert`](tls::ReloadingCert), the push listener's
//!   certificate, replaced when its files change.
//!
//! # Using it from another service
//!
//! ```no_run
//! # async fn run(deps: inlet_api::Dependencies) -> std::io::Result<()> {
//! use inlet_api::{ApiSettings, Application};
//! let app = Application::build(ApiSettings::default(), deps)?;
//! println!("listening on {}", app.port());
//! app.run_until_stopped(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod app;
pub mod budget;
pub mod error;
pub(crate) mod intake;
pub mod metrics;
pub mod otlp;
pub mod push;
pub mod ratelimit;
pub mod request_id;
pub mod settings;
pub mod state;
pub mod tls;

pub use app::{Application, Dependencies};
pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use settings::{ApiSettings, TlsSettings};
