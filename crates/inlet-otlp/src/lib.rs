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
//! - [`map`] (decode + map); `export` (a leaf): [`Signal`], [`Format`],
//!   [`Export`], [`DecodeError`]; `fit` (a leaf): text cut to limits, times.
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
mod export;
mod fit;
mod group;
mod logs;
mod metrics;
pub mod stacktrace;
mod traces;

use inlet_domain::BatchLimits;
use sha2::{Digest as _, Sha256};

pub use export::{DecodeError, Export, Format, Signal};

/// The generated OTLP message types (`opentelemetry-proto`), for callers
/// that build requests (tests, benchmarks, a client).
pub use opentelemetry_proto::tonic as proto;

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
            let invalid = |message: String| DecodeError {
                format: "JSON",
                message,
            };
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
            if !value.is_object() {
                return Err(invalid("an export request is a JSON object".into()));
            }
            json_shape(&value, None).map_err(invalid)?;
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
        }
    }
}

/// The OTLP JSON fields whose value is a list.
const LIST_FIELDS: &[&str] = &[
    "resourceSpans",
    "scopeSpans",
    "spans",
    "events",
    "links",
    "resourceMetrics",
    "scopeMetrics",
    "metrics",
    "dataPoints",
    "exemplars",
    "bucketCounts",
    "explicitBounds",
    "quantileValues",
    "filteredAttributes",
    "resourceLogs",
    "scopeLogs",
    "logRecords",
    "attributes",
    "values",
    "metadata",
    "entityRefs",
    "idKeys",
    "descriptionKeys",
];

/// Checks the shape serde's derive would let through: a message is always
/// an object (the derive also reads a struct from an array of its
/// fields), and only list fields hold arrays, of non-arrays.
fn json_shape(v: &serde_json::Value, field: Option<&str>) -> Result<(), String> {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            let name = field.unwrap_or("the request");
            if !field.is_some_and(|f| LIST_FIELDS.contains(&f)) {
                return Err(format!("{name} must be an object, not an array"));
            }
            for item in items {
                if item.is_array() {
                    return Err(format!("{name} holds an array where an item belongs"));
                }
                json_shape(item, None)?;
            }
            Ok(())
        }
        Value::Object(map) => map.iter().try_for_each(|(k, v)| json_shape(v, Some(k))),
        _ => Ok(()),
    }
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
                (
                    Format::Json,
                    &br#"{"resourceLogs": [{"resource": [], "scopeLogs": []}]}"#[..],
                ),
                (
                    Format::Json,
                    &br#"{"resourceMetrics": [{"scopeMetrics": [[null], []]}]}"#[..],
                ),
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
