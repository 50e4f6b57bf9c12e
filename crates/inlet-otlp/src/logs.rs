//! Log records → a count per app, minute and severity (counter
//! `log.records`, tag `severity`), and error samples for records that
//! carry `exception.*` attributes.

use std::collections::BTreeMap;

use inlet_domain::{BatchLimits, MetricKind, Minute, WireMetric};

use crate::attributes::get;
use crate::export::Export;
use crate::fit::{fit, ms};
use crate::group::{Batches, Origin};
use crate::traces::error_sample;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// The counter every log record adds 1 to.
pub const LOG_RECORDS_METRIC: &str = "log.records";

pub(crate) fn map(req: &ExportLogsServiceRequest, limits: &BatchLimits, now_ms: i64) -> Export {
    let mut export = Export::default();
    let mut batches = Batches::default();
    for rl in &req.resource_logs {
        let origin = Origin::of(rl.resource.as_ref(), limits);
        // (minute, severity) → records, in first-seen order of minutes.
        let mut counts: BTreeMap<(Minute, String), u64> = BTreeMap::new();
        for record in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
            export.received += 1;
            let Some(timestamp_ms) =
                ms(record.time_unix_nano).or(ms(record.observed_time_unix_nano))
            else {
                export.reject(|| "log record without a time".into());
                continue;
            };
            let severity = severity(record);
            // The sample the record will be counted in, checked as the
            // worker will check it.
            let probe = count_sample(&severity, Minute::containing(timestamp_ms), 1);
            if let Err(v) = limits.check_metric(&probe, now_ms) {
                export.reject(|| format!("log record: {}", v.message));
                continue;
            }
            let has_exception = ["exception.type", "exception.message"]
                .iter()
                .any(|k| get(&record.attributes, k).is_some());
            if has_exception {
                let e = error_sample(&record.attributes, None, timestamp_ms, limits);
                if let Err(v) = limits.check_error(&e, now_ms) {
                    export.reject(|| format!("log record: {}", v.message));
                    continue;
                }
                batches.error(&origin, limits, e);
            }
            *counts
                .entry((Minute::containing(timestamp_ms), severity))
                .or_insert(0) += 1;
        }
        for ((minute, severity), n) in counts {
            batches.metric(&origin, limits, count_sample(&severity, minute, n));
        }
    }
    export.batches = batches.finish();
    export
}

/// `n` records of `severity` in `minute`, stamped at the minute's start
/// (one sample per minute and severity, whatever the records' order).
fn count_sample(severity: &str, minute: Minute, n: u64) -> WireMetric {
    WireMetric {
        kind: MetricKind::Counter,
        name: LOG_RECORDS_METRIC.to_owned(),
        value: n as f64,
        tags: [("severity".to_owned(), severity.to_owned())].into(),
        timestamp_ms: minute.start_ms(),
        start_ms: None,
        histogram: None,
    }
}

/// The record's severity text, lower-cased, else the name of its
/// severity number's range.
fn severity(record: &LogRecord) -> String {
    let text = fit(record.severity_text.trim(), 16).to_ascii_lowercase();
    if !text.is_empty() {
        return text;
    }
    match record.severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unspecified",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::kv;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};

    const NOW: i64 = 1_790_000_000_000;
    const NS: u64 = NOW as u64 * 1_000_000;

    fn record(number: i32, text: &str, at: u64) -> LogRecord {
        LogRecord {
            time_unix_nano: at,
            severity_number: number,
            severity_text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_are_counted_per_minute_and_severity() {
        let mut failing = record(17, "", NS);
        failing.attributes = vec![
            kv("exception.type", Value::StringValue("KeyError".into())),
            kv("exception.message", Value::StringValue("'sku'".into())),
        ];
        let mut observed_only = record(9, "", 0);
        observed_only.observed_time_unix_nano = NS;
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        record(9, "INFO", NS),
                        record(9, "", NS + 1),
                        observed_only,
                        failing,
                        record(13, "", NS - 60_000_000_000),
                        record(0, "", 0),
                        record(9, "", 1_000),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let e = map(&req, &BatchLimits::default(), NOW);
        assert_eq!((e.received, e.rejected), (7, 2));
        let b = &e.batches[0];
        let counts: Vec<_> = b
            .metrics
            .iter()
            .map(|m| {
                (
                    m.tags["severity"].as_str(),
                    m.value,
                    Minute::containing(m.timestamp_ms),
                )
            })
            .collect();
        let now = Minute::containing(NOW);
        let before = Minute::containing(NOW - 60_000);
        assert!(counts.contains(&("info", 3.0, now)), "{counts:?}");
        assert!(counts.contains(&("error", 1.0, now)), "{counts:?}");
        assert!(counts.contains(&("warn", 1.0, before)), "{counts:?}");
        assert_eq!(b.errors.len(), 1);
        assert_eq!(b.errors[0].class, "KeyError");
    }
}
