//! Inlet's domain: the types and rules every other Inlet crate shares.
//!
//! This crate does no I/O. It has no async runtime, no HTTP, no AMQP, no
//! Redis and no MongoDB in its dependency tree (an architecture invariant,
//! checked by `cargo tree` in CI), so every decision it makes can be tested
//! in microseconds and reused by any service.
//!
//! # Layout
//!
//! - [`key`]: [`ApiKey`] (self-checking, signed Inlet keys and opaque
//!   legacy keys), [`KeyId`], [`KeyVerifier`], [`KeyIssuer`].
//! - [`ids`]: [`KeyDigest`] (what stores hold), [`AccountId`], [`AppName`],
//!   [`Environment`].
//! - [`record`]: [`KeyRecord`] (what a store knows about a key) and the
//!   auth [`Verdict`] with its single mapping to a [`Disposition`].
//! - [`batch`]: the push batch, wire form ([`WireBatch`]) and validated
//!   form ([`Batch`]), with [`BatchLimits`] and field-path violations.
//! - [`encoding`]: body [`ContentEncoding`]s and bounded decompression.
//! - [`envelope`]: the queue [`Envelope`] and its binary encoding, and the
//!   [`Bundle`] that carries several in one broker message.
//! - [`problem`]: the push API's error document ([`Problem`],
//!   [`FieldError`]), written by the API and read by agents.
//! - [`time`]: [`Minute`] buckets, the [`DurationHistogram`] layout, and
//!   [`LATENCY_BUCKETS`], the one bucket layout of every latency histogram
//!   Inlet exports to Prometheus.
//! - [`redact`]: credentials in URLs replaced, for logs and output.
//! - [`setting`]: [`InvalidSetting`], what every crate's settings
//!   `validate()` returns.
//! - [`backoff`]: the one exponential [`backoff::Backoff`] schedule with
//!   [`backoff::Jitter`], used by every retry loop.
//!
//! # Using it from another service
//!
//! ```
//! use inlet_domain::{ApiKey, KeyIssuer, KeyVerifier, SigningSecret, Provenance};
//!
//! let secret = SigningSecret::new(1, &[42u8; 32]).unwrap();
//! let key = KeyIssuer::new(secret.clone()).issue();
//! let verifier = KeyVerifier::new(vec![secret]).unwrap();
//!
//! // Parsing checks prefix, length, alphabet, checksum and signature, with
//! // no I/O: garbage is rejected before any store is asked.
//! let parsed = ApiKey::parse(key.expose_secret(), &verifier).unwrap();
//! assert_eq!(parsed.provenance(), Provenance::Verified);
//! assert!(ApiKey::parse("inlet_garbage", &verifier).is_err());
//!
//! // Stores are keyed by digest, never by the key itself.
//! let _digest = parsed.digest();
//! ```

pub mod backoff;
pub mod batch;
pub mod encoding;
pub mod envelope;
pub mod ids;
pub mod key;
pub mod problem;
pub mod record;
pub mod redact;
pub mod setting;
pub mod time;

pub use batch::{
    Agent, Batch, BatchError, BatchId, BatchLimits, ErrorSample, Frame, Histogram, Metric,
    MetricKind, Rule, Transaction, Violation, WireAgent, WireBatch, WireErrorSample, WireFrame,
    WireMetric, WireTransaction, WireTransactionError,
};
pub use encoding::{ContentEncoding, DecodeError, UnsupportedEncoding};
pub use envelope::{
    BUNDLE_CONTENT_TYPE, Bundle, ENVELOPE_CONTENT_TYPE, Envelope, EnvelopeError, MAX_BUNDLE_PARTS,
};
pub use ids::{AccountId, AppName, Environment, InvalidDigest, InvalidName, KeyDigest};
pub use key::{
    ApiKey, KEY_MAX_LEN, KEY_PREFIX, KeyError, KeyId, KeyIssuer, KeyVerifier, Provenance,
    SecretError, SigningSecret,
};
pub use problem::{FieldError, Problem};
pub use record::{
    AccountState, AuthMode, Disposition, Grant, KeyRecord, KeyState, RateLimit, UndecidableReason,
    Verdict,
};
pub use setting::InvalidSetting;
pub use time::{
    DurationHistogram, HISTOGRAM_BUCKETS, LATENCY_BUCKETS, MINUTE_MS, Minute, StatusClass,
};

/// The current time in Unix milliseconds.
///
/// The one place the domain reads the clock; rules take `now` as an
/// argument so tests control it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
