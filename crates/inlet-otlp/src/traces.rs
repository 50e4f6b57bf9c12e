//! Spans → transaction samples and error samples.
//!
//! A span is a transaction sample when it is where work entered the
//! process: kind SERVER or CONSUMER, or a local root (no parent, or a
//! remote one). Other spans (INTERNAL and CLIENT children, PRODUCER) are
//! accepted and not stored — unless they carry `exception` events, which
//! every span turns into error samples.

use inlet_domain::{BatchLimits, WireErrorSample, WireTransaction, WireTransactionError};

use crate::attributes::{any_prefixed, first_text, int, text};
use crate::export::Export;
use crate::fit::{fit, ms};
use crate::group::{Batches, Origin};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`.
const PARENT_IS_REMOTE: u32 = 0x100 | 0x200;

pub(crate) fn map(req: &ExportTraceServiceRequest, limits: &BatchLimits, now_ms: i64) -> Export {
    let mut export = Export::default();
    let mut batches = Batches::default();
    for rs in &req.resource_spans {
        let origin = Origin::of(rs.resource.as_ref(), limits);
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            export.received += 1;
            match samples(span, limits, now_ms) {
                Ok((transaction, errors)) => {
                    if let Some(t) = transaction {
                        batches.transaction(&origin, limits, t);
                    }
                    for e in errors {
                        batches.error(&origin, limits, e);
                    }
                }
                Err(why) => export.reject(|| format!("span {:?}: {why}", fit(&span.name, 64))),
            }
        }
    }
    export.batches = batches.finish();
    export
}

type Samples = (Option<WireTransaction>, Vec<WireErrorSample>);

/// What one span becomes, or why it is left out (all its samples go
/// together: a rejected span stores nothing).
fn samples(span: &Span, limits: &BatchLimits, now_ms: i64) -> Result<Samples, String> {
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
    let local_root =
        span.parent_span_id.is_empty() || span.flags & PARENT_IS_REMOTE == PARENT_IS_REMOTE;
    let is_transaction = matches!(kind, SpanKind::Server | SpanKind::Consumer) || local_root;
    let action = action(span, limits);
    let exceptions = span.events.iter().filter(|e| e.name == "exception");

    let mut errors = Vec::new();
    for event in exceptions {
        let at = ms(event.time_unix_nano).or(ms(span.start_time_unix_nano));
        let Some(timestamp_ms) = at else {
            return Err("exception event without a time".into());
        };
        let e = error_sample(
            &event.attributes,
            is_transaction.then(|| action.clone()),
            timestamp_ms,
            limits,
        );
        limits
            .check_error(&e, now_ms)
            .map_err(|v| format!("exception: {}", v.message))?;
        errors.push(e);
    }
    if !is_transaction {
        return Ok((None, errors));
    }

    let Some(start_ms) = ms(span.start_time_unix_nano) else {
        return Err("no start time".into());
    };
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err("ends before it starts".into());
    }
    let duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
    let status = first_status(&span.attributes);
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    let error = failed.then(|| WireTransactionError {
        class: errors
            .first()
            .map_or_else(|| "SpanError".to_owned(), |e| e.class.clone()),
        message: span
            .status
            .as_ref()
            .map(|s| fit(&s.message, limits.max_message_len))
            .filter(|m| !m.is_empty()),
    });
    let messaging = kind == SpanKind::Consumer || any_prefixed(&span.attributes, "messaging.");
    let namespace = if messaging || kind != SpanKind::Server {
        "background"
    } else {
        "web"
    };
    let t = WireTransaction {
        action,
        namespace: Some(namespace.to_owned()),
        start_ms,
        duration_ms,
        status,
        error,
    };
    limits
        .check_transaction(&t, now_ms)
        .map_err(|v| v.message)?;
    Ok((Some(t), errors))
}

/// `<METHOD> <http.route>` when the span has a route, else its name.
fn action(span: &Span, limits: &BatchLimits) -> String {
    let a = &span.attributes;
    let route = text(a, "http.route").filter(|r| !r.trim().is_empty());
    let method = first_text(a, &["http.request.method", "http.method"]);
    let action = match (route, method) {
        (Some(r), Some(m)) => format!("{m} {r}"),
        (Some(r), None) => r.into_owned(),
        _ => span.name.clone(),
    };
    let action = fit(action.trim(), limits.max_name_len);
    if action.is_empty() {
        "unnamed".to_owned()
    } else {
        action
    }
}

/// The HTTP status of a span, when it has a valid one.
fn first_status(attrs: &[KeyValue]) -> Option<u16> {
    ["http.response.status_code", "http.status_code"]
        .iter()
        .find_map(|k| int(attrs, k))
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s))
}

/// An error sample from `exception.*` attributes (a span event's or a log
/// record's).
pub(crate) fn error_sample(
    attrs: &[KeyValue],
    action: Option<String>,
    timestamp_ms: i64,
    limits: &BatchLimits,
) -> WireErrorSample {
    let class = text(attrs, "exception.type")
        .map(|c| fit(c.trim(), limits.max_name_len))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "Exception".to_owned());
    WireErrorSample {
        class,
        message: text(attrs, "exception.message")
            .map(|m| fit(&m, limits.max_message_len))
            .unwrap_or_default(),
        backtrace: text(attrs, "exception.stacktrace")
            .map(|t| crate::stacktrace::parse(&t, limits.max_backtrace_frames, limits.max_name_len))
            .unwrap_or_default(),
        action,
        timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::kv;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    const NOW: i64 = 1_790_000_000_000;
    const NS: u64 = NOW as u64 * 1_000_000;

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn span(name: &str, kind: SpanKind, parent: bool, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: if parent { vec![3; 8] } else { vec![] },
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: NS,
            end_time_unix_nano: NS + 12_500_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn export(spans: Vec<Span>) -> Export {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("shop"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        map(&req, &BatchLimits::default(), NOW)
    }

    #[test]
    fn server_consumer_and_root_spans_are_transactions() {
        let mut failed = span(
            "GET /orders/{id}",
            SpanKind::Server,
            true,
            vec![
                kv("http.route", s("/orders/{id}")),
                kv("http.request.method", s("GET")),
                kv("http.response.status_code", Value::IntValue(503)),
            ],
        );
        failed.flags = PARENT_IS_REMOTE;
        failed.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "upstream down".into(),
        });
        let e = export(vec![
            failed,
            span("process order", SpanKind::Consumer, true, vec![]),
            span("nightly", SpanKind::Internal, false, vec![]),
            span("SELECT", SpanKind::Client, true, vec![]),
            span("child", SpanKind::Internal, true, vec![]),
        ]);
        assert_eq!((e.received, e.rejected), (5, 0));
        let b = &e.batches[0];
        assert_eq!(b.app, "shop");
        let tx: Vec<_> = b
            .transactions
            .iter()
            .map(|t| {
                (
                    t.action.as_str(),
                    t.namespace.as_deref().unwrap_or(""),
                    t.status,
                )
            })
            .collect();
        assert_eq!(
            tx,
            [
                ("GET /orders/{id}", "web", Some(503)),
                ("process order", "background", None),
                ("nightly", "background", None),
            ]
        );
        assert_eq!(b.transactions[0].duration_ms, 12.5);
        let err = b.transactions[0].error.as_ref().unwrap();
        assert_eq!(
            (err.class.as_str(), err.message.as_deref()),
            ("SpanError", Some("upstream down"))
        );
        assert!(b.transactions[1].error.is_none());
    }

    #[test]
    fn exception_events_become_errors_on_any_span() {
        let mut child = span("charge", SpanKind::Internal, true, vec![]);
        child.events.push(Event {
            time_unix_nano: NS + 1_000_000,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", s("ValueError")),
                kv("exception.message", s("bad card")),
                kv(
                    "exception.stacktrace",
                    s("Traceback (most recent call last):\n  File \"/app/pay.py\", line 9, in charge\nValueError: bad card"),
                ),
            ],
            ..Default::default()
        });
        child.events.push(Event {
            name: "retry".into(),
            ..Default::default()
        });
        let e = export(vec![child]);
        let b = &e.batches[0];
        assert!(b.transactions.is_empty());
        assert_eq!(b.errors.len(), 1);
        let err = &b.errors[0];
        assert_eq!(
            (err.class.as_str(), err.message.as_str()),
            ("ValueError", "bad card")
        );
        assert_eq!(err.backtrace[0].function.as_deref(), Some("charge"));
        assert_eq!(err.action, None);
        assert_eq!(err.timestamp_ms, NOW + 1);
    }

    #[test]
    fn broken_spans_are_rejected_alone() {
        let mut backwards = span("backwards", SpanKind::Server, false, vec![]);
        backwards.end_time_unix_nano = NS - 1;
        let mut ancient = span("ancient", SpanKind::Server, false, vec![]);
        ancient.start_time_unix_nano = 1_000;
        let mut unnamed = span("", SpanKind::Server, false, vec![]);
        unnamed.name = "\u{1}".repeat(3);
        let e = export(vec![
            backwards,
            ancient,
            unnamed,
            span("fine", SpanKind::Server, false, vec![]),
        ]);
        assert_eq!((e.received, e.rejected), (4, 2));
        assert!(
            e.message.as_deref().unwrap().contains("backwards"),
            "{:?}",
            e.message
        );
        let actions: Vec<_> = e.batches[0]
            .transactions
            .iter()
            .map(|t| t.action.as_str())
            .collect();
        assert_eq!(actions, ["unnamed", "fine"]);
    }
}
