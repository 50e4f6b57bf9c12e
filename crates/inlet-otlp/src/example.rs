//! Realistic export requests, for benchmarks, load generators and tests:
//! what an instrumented web service's SDK sends.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// A traces export of `spans` SERVER spans (HTTP routes, methods and
/// statuses, a few errors) ending at `now_ms`, from service `app`.
pub fn traces(app: &str, spans: usize, now_ms: i64) -> ExportTraceServiceRequest {
    let end = now_ms as u64 * 1_000_000;
    let routes = ["/orders", "/orders/{id}", "/cart", "/checkout"];
    let spans = (0..spans)
        .map(|i| {
            let start = end - (5 + i as u64 % 40) * 1_000_000;
            Span {
                trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: format!("GET {}", routes[i % routes.len()]),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: vec![
                    kv("http.request.method", s("GET")),
                    kv("http.route", s(routes[i % routes.len()])),
                    kv(
                        "http.response.status_code",
                        Value::IntValue([200, 200, 200, 404, 500][i % 5]),
                    ),
                    kv("url.scheme", s("https")),
                    kv("server.address", s("shop.example")),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(app)),
                    kv("deployment.environment.name", s("production")),
                    kv("host.name", s("web-1")),
                    kv("telemetry.sdk.name", s("opentelemetry")),
                    kv("telemetry.sdk.language", s("python")),
                    kv("telemetry.sdk.version", s("1.39.0")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
