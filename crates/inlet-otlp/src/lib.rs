//! OTLP/HTTP intake without I/O: an export request (`/v1/traces`,
//! `/v1/metrics`, `/v1/logs`; protobuf or the OTLP JSON mapping) becomes
//! Inlet's ordinary push batches, and the answer becomes the OTLP response
//! or `google.rpc.Status` in the request's format.
//!
//! OTLP data is mapped onto [`inlet_domain::WireBatch`] — one batch per
//! resource (app, environment, host, SDK), split where a batch would pass a
//! count limit — so the queue, the worker, exactly-once and the
//! dead-letter rules stay one code path with `/v1/push`. Every sample is
//! checked by the domain's own rules ([`inlet_domain::BatchLimits`]) while
//! it is mapped: an item that breaks one is left out and counted in
//! `partial_success`, never dead-lettered later. `docs/otlp.md` has the
//! mapping as tables.
//!
//! Exporters retry on 429, 503 and timeouts, and OTLP has no idempotency
//! key: each batch gets a batch id derived from the digest of the decoded
//! request ([`Export::batches`]), so a re-sent export is stored once (the
//! worker deduplicates batch ids per key).
//!
//! # Layout
//!
//! - [`Signal`], [`Format`], [`map`] (decode + map), [`Export`].
//! - [`answer`]: the success response and the error `Status`.
//! - [`example`]: realistic requests for benchmarks and tests.
//! - `group`: resources → batches; `attributes`: reading `KeyValue`s;
//!   `traces`, `metrics`, `logs`: one mapping each; [`stacktrace`]:
//!   `exception.stacktrace` → frames.
//!
//! # Using it from another service
//!
//! ```
//! use inlet_otlp::{Format, Signal};
//! let body = br#"{"resourceSpans": []}"#;
//! let export = inlet_otlp::map(
//!     Signal::Traces,
//!     Format::Json,
//!     body,
//!     &inlet_domain::BatchLimits::default(),
//!     inlet_domain::now_ms(),
//! )
//! .unwrap();
//! assert!(export.batches.is_empty());
//! ```

pub mod answer;
mod attributes;
pub mod example;
mod group;
mod logs;
mod metrics;
pub mod stacktrace;
mod traces;

use inlet_domain::{BatchLimits, WireBatch};
use sha2::{Digest as _, Sha256};

/// The generated OTLP message types (`opentelemetry-proto`), for callers
/// that build requests (tests, benchmarks, a client).
pub use opentelemetry_proto::tonic as proto;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `POST /v1/traces`.
    Traces,
    /// `POST /v1/metrics`.
    Metrics,
    /// `POST /v1/logs`.
    Logs,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The route of the signal.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The items the signal counts (`rejected_<items>` in OTLP), also a
    /// metrics label.
    pub fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data_points",
            Signal::Logs => "log_records",
        }
    }

    fn letter(self) -> char {
        match self {
            Signal::Traces => 't',
            Signal::Metrics => 'm',
            Signal::Logs => 'l',
        }
    }
}

/// The body format of a request (and of its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (the OTLP JSON mapping).
    Json,
}

impl Format {
    /// The format a `Content-Type` names, if OTLP defines it. Parameters
    /// (`; charset=utf-8`) are ignored.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf")
            || essence.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Format::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// An export request that could not be decoded (HTTP 400, never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable OTLP {format} request: {message}")]
pub struct DecodeError {
    /// `protobuf` or `JSON`.
    pub format: &'static str,
    /// What the decoder said.
    pub message: String,
}

/// What one export request becomes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Export {
    /// The batches to publish, each with its derived batch id
    /// (`otlp-<signal><digest>-<n>`). Empty when nothing in the request
    /// maps to a sample (e.g. only child spans without exceptions).
    pub batches: Vec<WireBatch>,
    /// Spans, data points or log records in the request.
    pub received: u64,
    /// Of those, how many were left out because they break a rule.
    pub rejected: u64,
    /// Why the first of them was left out.
    pub message: Option<String>,
}

impl Export {
    /// Leaves one item out, keeping the first reason.
    fn reject(&mut self, why: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.message.is_none() {
            self.message = Some(why());
        }
    }
}

/// Decodes an export request and maps it. `body` is the decoded
/// (decompressed) request; `received_at_ms` is the receive time the
/// timestamp window is measured from.
pub fn map(
    signal: Signal,
    format: Format,
    body: &[u8],
    limits: &BatchLimits,
    received_at_ms: i64,
) -> Result<Export, DecodeError> {
    let mut export = match signal {
        Signal::Traces => traces::map(&decode(format, body)?, limits, received_at_ms),
        Signal::Metrics => metrics::map(&decode(format, body)?, limits, received_at_ms),
        Signal::Logs => logs::map(&decode(format, body)?, limits, received_at_ms),
    };
    let digest = hex::encode(&Sha256::digest(body)[..20]);
    for (n, batch) in export.batches.iter_mut().enumerate() {
        batch.batch_id = Some(format!("otlp-{}{digest}-{n}", signal.letter()));
    }
    Ok(export)
}

fn decode<T>(format: Format, body: &[u8]) -> Result<T, DecodeError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match format {
        Format::Protobuf => T::decode(body).map_err(|e| DecodeError {
            format: "protobuf",
            message: e.to_string(),
        }),
        Format::Json => {
            // The OTLP JSON mapping is an object; serde's derive would also
            // read a struct from an array of its fields.
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first.is_some_and(|&b| b != b'{') {
                return Err(DecodeError {
                    format: "JSON",
                    message: "an export request is a JSON object".into(),
                });
            }
            serde_json::from_slice(body).map_err(|e| DecodeError {
                format: "JSON",
                message: e.to_string(),
            })
        }
    }
}

/// Encodes a message in `format` (protobuf, or the OTLP JSON mapping).
fn encode<T: prost::Message + serde::Serialize>(format: Format, message: &T) -> Vec<u8> {
    match format {
        Format::Protobuf => message.encode_to_vec(),
        // Serialising generated message types to a Vec cannot fail: no map
        // has non-string keys and no Serialize impl returns an error.
        Format::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// Nanoseconds since the epoch → milliseconds (`None` for 0, "unset").
fn ms(unix_nano: u64) -> Option<i64> {
    (unix_nano > 0).then_some((unix_nano / 1_000_000) as i64)
}

/// At most `max` characters of `s`, without control characters (other than
/// newline and tab): names are cut, not refused, so a long span name does
/// not cost the span.
fn fit(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    const NOW: i64 = 1_790_000_000_000;

    #[test]
    fn json_and_protobuf_map_alike_and_retries_get_the_same_ids() {
        let start = (NOW - 1_000) as u64 * 1_000_000;
        // The OTLP JSON mapping: hex ids, integer enums, 64-bit integers
        // as strings or numbers.
        let json = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[
                {{"key":"service.name","value":{{"stringValue":"shop"}}}}]}},
              "scopeSpans":[{{"scope":{{"name":"x"}},"spans":[{{
                "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
                "name":"GET /","kind":2,"startTimeUnixNano":"{start}","endTimeUnixNano":{end},
                "attributes":[{{"key":"http.response.status_code","value":{{"intValue":"200"}}}}],
                "status":{{}}}}]}}]}}]}}"#,
            end = start + 2_000_000
        );
        let limits = BatchLimits::default();
        let a = map(Signal::Traces, Format::Json, json.as_bytes(), &limits, NOW).unwrap();
        assert_eq!((a.received, a.rejected), (1, 0));
        let t = &a.batches[0].transactions[0];
        assert_eq!((t.status, t.duration_ms), (Some(200), 2.0));

        let req: proto::collector::trace::v1::ExportTraceServiceRequest =
            serde_json::from_str(&json).unwrap();
        let bytes = req.encode_to_vec();
        let b = map(Signal::Traces, Format::Protobuf, &bytes, &limits, NOW).unwrap();
        assert_eq!(a.batches[0].transactions, b.batches[0].transactions);
        let again = map(Signal::Traces, Format::Protobuf, &bytes, &limits, NOW + 5).unwrap();
        assert_eq!(b.batches[0].batch_id, again.batches[0].batch_id);
        let id = b.batches[0].batch_id.as_deref().unwrap();
        assert!(inlet_domain::BatchId::parse(id).is_some(), "{id}");
        assert_ne!(a.batches[0].batch_id, b.batches[0].batch_id, "other bytes");
    }

    #[test]
    fn undecodable_bodies_are_errors_not_panics() {
        let limits = BatchLimits::default();
        for signal in Signal::ALL {
            for (format, body) in [
                (Format::Protobuf, &b"\xff\xff\xff"[..]),
                (Format::Json, &b"{\"resourceSpans\": 3"[..]),
                (Format::Json, &b""[..]),
                // serde would read a struct from an array; OTLP JSON is an
                // object.
                (Format::Json, &b"[[]]"[..]),
                (Format::Json, &b" [] "[..]),
            ] {
                assert!(
                    map(signal, format, body, &limits, NOW).is_err(),
                    "{signal:?} {format:?}"
                );
            }
            let empty = map(signal, Format::Protobuf, b"", &limits, NOW).unwrap();
            assert!(empty.batches.is_empty());
        }
        assert_eq!(
            Format::from_content_type("application/x-protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(
            Format::from_content_type("Application/JSON; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
    }
}
