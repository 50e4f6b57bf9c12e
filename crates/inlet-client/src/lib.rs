//! The agent-side transport for the Inlet push API: an agent built on it
//! never goes silent on a blip.
//!
//! Inlet exists because of an incident: a deploy made the push API answer
//! 401 to valid keys for under a minute, and agents built to shut down on
//! 401 went silent for hours. This crate is the agent half of the fix. It
//! follows the push API's status contract (`docs/http-api.md`):
//!
//! - **Batching and gzip.** Items are recorded without blocking into a
//!   buffer bounded by serialized bytes (drop-oldest, counted), and sent in
//!   batches by size and by interval, gzip-compressed.
//! - **Idempotent retries.** Each batch gets a `batch_id` when it is
//!   formed and keeps it (and its exact bytes) across every retry, so the
//!   server stores a batch re-sent after a lost response once.
//! - **Jittered backoff.** 429, 5xx, timeouts and connection errors are
//!   retried with full-jitter exponential backoff, never earlier than the
//!   server's `Retry-After` / `retry_after_s`.
//! - **No disengaging on 401/403.** A rejected key keeps its data and
//!   retries within an auth grace window (5 min). Only a rejection for the
//!   whole window pauses the client; a paused client probes periodically
//!   and resumes by itself on the first success. No restart is ever needed.
//! - **400/413/415 drop the batch** (counted by reason): sending it again
//!   cannot succeed. Items are checked against the server's rules as they
//!   are recorded, so one bad item does not take a batch down with it.
//!
//! See `docs/client.md` for the policy table, the state machine and the
//! configuration options with their defaults.
//!
//! # Using it in an agent
//!
//! ```no_run
//! use std::time::Duration;
//! use inlet_client::{Client, ClientEvent};
//! use inlet_domain::{WireTransaction, now_ms};
//!
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("https://inlet.example.com", "inlet_AQG31mIOzsOPBuLO8Te_1qIUIw15YhkCK2qmeFjj6sIY3WasjskHQE6OrJbmNpLz")
//!     .app("shop")
//!     .environment("production")
//!     .agent("my-agent", "1.0.0")
//!     .on_event(|e| {
//!         if let ClientEvent::AuthPaused { error, .. } = e {
//!             tracing::warn!(code = ?error.code, "inlet key rejected; data kept, still probing");
//!         }
//!     })
//!     .build()?; // a malformed key or endpoint fails here, not later
//!
//! // Anywhere in the application (never blocks, never awaits):
//! client.record_transaction(WireTransaction {
//!     action: "OrdersController#index".into(),
//!     namespace: Some("web".into()),
//!     start_ms: now_ms(),
//!     duration_ms: 12.5,
//!     status: Some(200),
//!     error: None,
//! });
//!
//! // Health for the agent's own diagnostics.
//! let stats = client.stats();
//! tracing::info!(accepted = stats.accepted.items, dropped = stats.dropped_items.total(), state = stats.state.label());
//!
//! // Before exiting: flush what is buffered, for at most 5 s.
//! let report = client.shutdown(Duration::from_secs(5)).await;
//! tracing::info!(left = report.left_items, "inlet client stopped");
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! No two modules import each other. The [`status`] types are the leaf;
//! the options (`config`) sit on them, the state shared by the handles and
//! the flusher (`shared`) on both, the client and the flusher on that, and
//! the builder, which returns a client, on top.
//!
//! - [`builder`]: [`ClientBuilder`] (every option with its default, held
//!   in the one `Config` the client then runs with), [`WhenAuthPaused`],
//!   [`BuildError`], and [`Client::builder`].
//! - [`client`]: [`Client`] (recording, `flush`, `stats`, `shutdown`) and
//!   [`ShutdownReport`].
//! - `config` (private): the options as one struct; `shared` (private):
//!   the state shared by the handles and the flusher, and what the handles
//!   ask of it.
//! - `flusher` (private): the background task: forms batches, sends one at
//!   a time, applies the policy.
//! - [`policy`]: the pure retry policy: status classification, full-jitter
//!   backoff, the `Sending` / `BackingOff` / `AuthPaused` state machine.
//! - [`retry_after`]: `Retry-After` (delta-seconds and HTTP-date) and body
//!   hints.
//! - [`response`]: the API's answers ([`Problem`], [`AcceptedBody`]).
//! - [`buffer`]: [`Item`], the bounded drop-oldest buffer, batch formation
//!   and body assembly.
//! - [`status`]: what the client reports about itself: [`ClientStats`],
//!   [`ClientState`], [`ClientEvent`], [`DropReason`], [`LastError`].
//! - [`transport`]: one HTTP attempt; [`KeyHeader`]; the push URL of an
//!   endpoint.
//! - [`send_once`]: a single send with no policy and no local checks, the
//!   engine of `inlet push`.
//!
//! The load generator behind `inlet load` is not part of this library: it
//! is the `inlet-load` crate.

pub mod buffer;
pub mod builder;
pub mod client;
mod config;
mod flusher;
pub mod policy;
pub mod response;
pub mod retry_after;
pub mod send_once;
mod shared;
pub mod status;
pub mod transport;

pub use buffer::Item;
pub use builder::{BuildError, ClientBuilder, WhenAuthPaused};
pub use client::{Client, ShutdownReport};
pub use response::{AcceptedBody, FieldError, Problem};
pub use status::{ClientEvent, ClientState, ClientStats, DropCounts, DropReason, LastError, Tally};
pub use transport::{KeyHeader, TransportError};

/// `docs/client.md`, whose Rust examples are compiled as doc tests so the
/// guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/client.md")]
pub struct ClientGuide;
