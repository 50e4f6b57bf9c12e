//! The answers of the OTLP routes, in the request's format: the
//! `Export*ServiceResponse` of a success (with `partial_success` when
//! items were left out), and the `google.rpc.Status` of a failure, whose
//! `details` carry Inlet's machine-readable code and directive as a
//! `google.rpc.ErrorInfo`.

use std::collections::BTreeMap;

use crate::export::{Format, Signal};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

/// The success body: `Export<Signal>ServiceResponse`, with
/// `partial_success` set when `rejected > 0` or there is a message.
pub fn success(signal: Signal, format: Format, rejected: u64, message: Option<&str>) -> Vec<u8> {
    let set = rejected > 0 || message.is_some_and(|m| !m.is_empty());
    if !set && format == Format::Json {
        // The generated types would write `"partialSuccess": null`.
        return b"{}".to_vec();
    }
    let rejected = i64::try_from(rejected).unwrap_or(i64::MAX);
    let error_message = message.unwrap_or_default().to_owned();
    match signal {
        Signal::Traces => encode(
            format,
            &ExportTraceServiceResponse {
                partial_success: set.then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message,
                }),
            },
        ),
        Signal::Metrics => encode(
            format,
            &ExportMetricsServiceResponse {
                partial_success: set.then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message,
                }),
            },
        ),
        Signal::Logs => encode(
            format,
            &ExportLogsServiceResponse {
                partial_success: set.then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message,
                }),
            },
        ),
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

/// The `google.rpc.ErrorInfo` domain of Inlet's details.
pub const ERROR_DOMAIN: &str = "inlet";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// The gRPC status code ([`grpc_code`]).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// `google.protobuf.Any`s; here one `google.rpc.ErrorInfo`.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The type of `value`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    /// Inlet's stable error code (`unknown_key`, `rate_limited`, …).
    #[prost(string, tag = "1")]
    pub reason: String,
    /// [`ERROR_DOMAIN`].
    #[prost(string, tag = "2")]
    pub domain: String,
    /// `directive` (what the agent should do) and any further fields.
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: BTreeMap<String, String>,
}

/// The gRPC code OTLP pairs with an HTTP status.
pub fn grpc_code(http_status: u16) -> i32 {
    match http_status {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 5,             // NOT_FOUND
        405 => 12,            // UNIMPLEMENTED
        429 => 8,             // RESOURCE_EXHAUSTED
        502..=504 => 14,      // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

/// The failure body: a `google.rpc.Status` with Inlet's `code` and
/// `metadata` (the directive first) in an `ErrorInfo`.
pub fn failure(
    format: Format,
    http_status: u16,
    message: &str,
    code: &str,
    metadata: BTreeMap<String, String>,
) -> Vec<u8> {
    let info = ErrorInfo {
        reason: code.to_owned(),
        domain: ERROR_DOMAIN.to_owned(),
        metadata,
    };
    let grpc = grpc_code(http_status);
    match format {
        Format::Protobuf => prost::Message::encode_to_vec(&Status {
            code: grpc,
            message: message.to_owned(),
            details: vec![Any {
                type_url: ERROR_INFO_TYPE.to_owned(),
                value: prost::Message::encode_to_vec(&info),
            }],
        }),
        // The proto3 JSON form of a Status with an Any holding ErrorInfo.
        Format::Json => serde_json::to_vec(&serde_json::json!({
            "code": grpc,
            "message": message,
            "details": [{
                "@type": ERROR_INFO_TYPE,
                "reason": info.reason,
                "domain": info.domain,
                "metadata": info.metadata,
            }],
        }))
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn success_sets_partial_success_only_when_needed() {
        let full = success(Signal::Traces, Format::Json, 0, None);
        let r: ExportTraceServiceResponse = serde_json::from_slice(&full).unwrap();
        assert_eq!(
            r.partial_success,
            None,
            "{}",
            String::from_utf8_lossy(&full)
        );
        assert!(success(Signal::Logs, Format::Protobuf, 0, None).is_empty());
        let partial = success(
            Signal::Metrics,
            Format::Json,
            2,
            Some("metric \"x\": no time"),
        );
        let v: serde_json::Value = serde_json::from_slice(&partial).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedDataPoints"], 2);
        assert_eq!(v["partialSuccess"]["errorMessage"], "metric \"x\": no time");
        let bytes = success(Signal::Traces, Format::Protobuf, 3, Some("m"));
        let r = ExportTraceServiceResponse::decode(&bytes[..]).unwrap();
        assert_eq!(r.partial_success.unwrap().rejected_spans, 3);
    }

    #[test]
    fn failures_carry_the_inlet_code_in_error_info() {
        let meta: BTreeMap<_, _> = [("directive".to_owned(), "retry".to_owned())].into();
        let bytes = failure(
            Format::Protobuf,
            503,
            "try later",
            "auth_unavailable",
            meta.clone(),
        );
        let s = Status::decode(&bytes[..]).unwrap();
        assert_eq!((s.code, s.message.as_str()), (14, "try later"));
        assert_eq!(s.details[0].type_url, ERROR_INFO_TYPE);
        let info = ErrorInfo::decode(&s.details[0].value[..]).unwrap();
        assert_eq!(
            (info.reason.as_str(), info.metadata["directive"].as_str()),
            ("auth_unavailable", "retry")
        );
        let json = failure(Format::Json, 401, "no", "unknown_key", meta);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["code"], 16);
        assert_eq!(v["details"][0]["reason"], "unknown_key");
    }
}
