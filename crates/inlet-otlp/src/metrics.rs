//! Metric data points → metric samples.
//!
//! | OTLP                               | Inlet                                 |
//! |------------------------------------|---------------------------------------|
//! | Sum, monotonic, delta              | counter                               |
//! | Sum, monotonic, cumulative         | counter with `start_ms` (the worker stores per-minute increases) |
//! | Sum, not monotonic, cumulative     | gauge (a level)                       |
//! | Sum, not monotonic, delta          | rejected                              |
//! | Gauge                              | gauge                                 |
//! | Histogram, ExponentialHistogram    | distribution with `histogram` (and `start_ms` when cumulative) |
//! | Summary                            | rejected                              |
//!
//! Buckets: each OTLP bucket's count goes to the Inlet bucket
//! ([`inlet_domain::DurationHistogram`], 9 per decade from 0.1 to 100 000)
//! that holds the OTLP bucket's midpoint — the open first and last
//! buckets use the point's min and max when present, else their finite
//! bound; an exponential bucket uses its geometric midpoint; values at or
//! below zero land in the underflow bucket. Count, sum, min and max are
//! exact; a quantile is as precise as the coarser of the two layouts.

use std::collections::BTreeMap;

use inlet_domain::{BatchLimits, DurationHistogram, Histogram, MetricKind, WireMetric};

use crate::attributes::display;
use crate::export::Export;
use crate::fit::{fit, ms};
use crate::group::{Batches, Origin};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
    number_data_point,
};

/// `FLAG_NO_RECORDED_VALUE`: a point that marks a gap, not a value.
const NO_RECORDED_VALUE: u32 = 1;

pub(crate) fn map(req: &ExportMetricsServiceRequest, limits: &BatchLimits, now_ms: i64) -> Export {
    let mut export = Export::default();
    let mut batches = Batches::default();
    for rm in &req.resource_metrics {
        let origin = Origin::of(rm.resource.as_ref(), limits);
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let name = fit(metric.name.trim(), limits.max_name_len);
            let mut points: Vec<Result<Option<WireMetric>, String>> = Vec::new();
            match &metric.data {
                None => {}
                Some(Data::Gauge(g)) => points.extend(
                    g.data_points
                        .iter()
                        .map(|p| number(&name, MetricKind::Gauge, false, p, limits)),
                ),
                Some(Data::Sum(s)) => {
                    let cumulative =
                        s.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                    let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
                    for p in &s.data_points {
                        points.push(match (s.is_monotonic, cumulative, delta) {
                            (true, true, _) => number(&name, MetricKind::Counter, true, p, limits),
                            (true, _, true) => number(&name, MetricKind::Counter, false, p, limits),
                            (false, true, _) => number(&name, MetricKind::Gauge, false, p, limits),
                            (false, _, true) => {
                                Err("non-monotonic delta sums are not supported".into())
                            }
                            _ => Err("aggregation temporality unspecified".into()),
                        });
                    }
                }
                Some(Data::Histogram(h)) => {
                    let cumulative =
                        h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                    points.extend(
                        h.data_points
                            .iter()
                            .map(|p| histogram(&name, cumulative, p, limits)),
                    );
                }
                Some(Data::ExponentialHistogram(h)) => {
                    let cumulative =
                        h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                    points.extend(
                        h.data_points
                            .iter()
                            .map(|p| exponential(&name, cumulative, p, limits)),
                    );
                }
                Some(Data::Summary(s)) => points.extend(
                    s.data_points
                        .iter()
                        .map(|_| Err("summary data points are not supported".into())),
                ),
            }
            for point in points {
                export.received += 1;
                let checked = point.and_then(|m| match m {
                    Some(m) => limits
                        .check_metric(&m, now_ms)
                        .map(|()| Some(m))
                        .map_err(|v| v.message),
                    None => Ok(None),
                });
                match checked {
                    Ok(Some(m)) => batches.metric(&origin, limits, m),
                    Ok(None) => {}
                    Err(why) => export.reject(|| format!("metric {name:?}: {why}")),
                }
            }
        }
    }
    export.batches = batches.finish();
    export
}

/// A point's attributes as tags (values as text, both cut to the limits).
fn tags(attrs: &[KeyValue], limits: &BatchLimits) -> Result<BTreeMap<String, String>, String> {
    if attrs.len() > limits.max_tags {
        return Err(format!(
            "{} attributes, at most {} allowed",
            attrs.len(),
            limits.max_tags
        ));
    }
    Ok(attrs
        .iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .map(display)
                .unwrap_or_default();
            (
                fit(&kv.key, limits.max_tag_key_len),
                fit(&value, limits.max_tag_value_len),
            )
        })
        .filter(|(k, _)| !k.is_empty())
        .collect())
}

/// The common part of a sample; `None` for a point with no recorded value.
fn sample(
    name: &str,
    kind: MetricKind,
    attrs: &[KeyValue],
    (start, time, flags): (u64, u64, u32),
    cumulative: bool,
    limits: &BatchLimits,
) -> Result<Option<WireMetric>, String> {
    if flags & NO_RECORDED_VALUE != 0 {
        return Ok(None);
    }
    let Some(timestamp_ms) = ms(time) else {
        return Err("no time".into());
    };
    Ok(Some(WireMetric {
        kind,
        name: name.to_owned(),
        value: 0.0,
        tags: tags(attrs, limits)?,
        timestamp_ms,
        // An unset start (0) stays 0: resets are then seen only when the
        // value goes down.
        start_ms: cumulative.then(|| ms(start).unwrap_or(0).min(timestamp_ms)),
        histogram: None,
    }))
}

fn number(
    name: &str,
    kind: MetricKind,
    cumulative: bool,
    p: &NumberDataPoint,
    limits: &BatchLimits,
) -> Result<Option<WireMetric>, String> {
    let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
    let Some(mut m) = sample(name, kind, &p.attributes, times, cumulative, limits)? else {
        return Ok(None);
    };
    m.value = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => return Err("no value".into()),
    };
    Ok(Some(m))
}

fn histogram(
    name: &str,
    cumulative: bool,
    p: &HistogramDataPoint,
    limits: &BatchLimits,
) -> Result<Option<WireMetric>, String> {
    let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
    let kind = MetricKind::Distribution;
    let Some(m) = sample(name, kind, &p.attributes, times, cumulative, limits)? else {
        return Ok(None);
    };
    let bounds = &p.explicit_bounds;
    let mut buckets = BTreeMap::new();
    if p.bucket_counts.is_empty() {
        // Count and sum only: every observation at the mean.
        if p.count > 0 {
            let mean = p.sum.unwrap_or(0.0) / p.count as f64;
            buckets.insert(DurationHistogram::bucket(mean), p.count);
        }
    } else {
        if p.bucket_counts.len() != bounds.len() + 1 {
            return Err("bucket_counts must have one more entry than explicit_bounds".into());
        }
        let last = bounds.len();
        for (i, &n) in p.bucket_counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let at = match (i, last) {
                (_, 0) => p.sum.map_or(0.0, |s| s / p.count.max(1) as f64),
                (0, _) => p.min.map_or(bounds[0], |m| m.min(bounds[0])),
                (i, _) if i == last => p.max.map_or(bounds[last - 1], |m| m.max(bounds[last - 1])),
                (i, _) => (bounds[i - 1] + bounds[i]) / 2.0,
            };
            *buckets.entry(DurationHistogram::bucket(at)).or_insert(0) += n;
        }
    }
    let estimate = || {
        buckets
            .iter()
            .map(|(&b, &n)| {
                let (lo, hi) = DurationHistogram::bounds(b);
                n as f64 * if hi.is_finite() { (lo + hi) / 2.0 } else { lo }
            })
            .sum()
    };
    let sum = p.sum.unwrap_or_else(estimate);
    Ok(Some(bucketed(m, sum, (p.count, p.min, p.max), buckets)))
}

/// A distribution sample carrying `count` observations summing to `sum`
/// (its `value`), with their min and max when the point has them.
fn bucketed(
    m: WireMetric,
    sum: f64,
    (count, min, max): (u64, Option<f64>, Option<f64>),
    buckets: BTreeMap<usize, u64>,
) -> WireMetric {
    WireMetric {
        value: sum,
        histogram: Some(Histogram {
            count,
            min,
            max,
            buckets,
        }),
        ..m
    }
}

fn exponential(
    name: &str,
    cumulative: bool,
    p: &ExponentialHistogramDataPoint,
    limits: &BatchLimits,
) -> Result<Option<WireMetric>, String> {
    let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
    let kind = MetricKind::Distribution;
    let Some(m) = sample(name, kind, &p.attributes, times, cumulative, limits)? else {
        return Ok(None);
    };
    if !(-10..=20).contains(&p.scale) {
        return Err(format!("scale {} outside -10..=20", p.scale));
    }
    let mut buckets = BTreeMap::new();
    let mut add = |at: f64, n: u64| {
        if n > 0 {
            *buckets.entry(DurationHistogram::bucket(at)).or_insert(0) += n;
        }
    };
    add(0.0, p.zero_count);
    let step = (-f64::from(p.scale)).exp2();
    if let Some(pos) = &p.positive {
        for (k, &n) in pos.bucket_counts.iter().enumerate() {
            // Bucket `index` spans (base^index, base^(index+1)].
            let index = f64::from(pos.offset) + k as f64;
            add(((index + 0.5) * step).exp2(), n);
        }
    }
    if let Some(neg) = &p.negative {
        for &n in &neg.bucket_counts {
            add(-1.0, n);
        }
    }
    let total: u64 = buckets.values().sum();
    if total != p.count {
        return Err(format!(
            "bucket counts sum to {total}, the point's count is {}",
            p.count
        ));
    }
    let sum = p.sum.unwrap_or(0.0);
    Ok(Some(bucketed(m, sum, (p.count, p.min, p.max), buckets)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::kv;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram as OtlpHistogram, Metric, ResourceMetrics,
        ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };

    const NOW: i64 = 1_790_000_000_000;
    const NS: u64 = NOW as u64 * 1_000_000;

    fn export(metrics: Vec<Metric>) -> Export {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        map(&req, &BatchLimits::default(), NOW)
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn point(v: i64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: vec![kv("queue", Value::StringValue("default".into()))],
            start_time_unix_nano: NS - 60_000_000_000,
            time_unix_nano: NS,
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        }
    }

    fn sum(monotonic: bool, temporality: AggregationTemporality) -> Data {
        Data::Sum(Sum {
            data_points: vec![point(7)],
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })
    }

    #[test]
    fn sums_and_gauges_by_temporality() {
        let e = export(vec![
            metric("delta", sum(true, AggregationTemporality::Delta)),
            metric("total", sum(true, AggregationTemporality::Cumulative)),
            metric("level", sum(false, AggregationTemporality::Cumulative)),
            metric("bad", sum(false, AggregationTemporality::Delta)),
            metric(
                "gauge",
                Data::Gauge(Gauge {
                    data_points: vec![point(3)],
                }),
            ),
        ]);
        assert_eq!((e.received, e.rejected), (5, 1));
        assert!(
            e.message
                .as_deref()
                .unwrap()
                .contains("non-monotonic delta")
        );
        let got: Vec<_> = e.batches[0]
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.kind, m.value, m.start_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("delta", MetricKind::Counter, 7.0, None),
                ("total", MetricKind::Counter, 7.0, Some(NOW - 60_000)),
                ("level", MetricKind::Gauge, 7.0, None),
                ("gauge", MetricKind::Gauge, 3.0, None),
            ]
        );
        assert_eq!(e.batches[0].metrics[0].tags["queue"], "default");
    }

    #[test]
    fn histograms_map_onto_inlet_buckets() {
        let p = HistogramDataPoint {
            start_time_unix_nano: NS - 1,
            time_unix_nano: NS,
            count: 6,
            sum: Some(130.0),
            bucket_counts: vec![1, 2, 0, 3],
            explicit_bounds: vec![5.0, 10.0, 25.0],
            min: Some(2.0),
            max: Some(40.0),
            ..Default::default()
        };
        let e = export(vec![metric(
            "latency",
            Data::Histogram(OtlpHistogram {
                data_points: vec![p],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )]);
        let m = &e.batches[0].metrics[0];
        assert_eq!(
            (m.kind, m.value, m.start_ms),
            (MetricKind::Distribution, 130.0, Some(NOW - 1))
        );
        let h = m.histogram.as_ref().unwrap();
        assert_eq!((h.count, h.min, h.max), (6, Some(2.0), Some(40.0)));
        let expected: BTreeMap<usize, u64> = [
            (DurationHistogram::bucket(2.0), 1),
            (DurationHistogram::bucket(7.5), 2),
            (DurationHistogram::bucket(40.0), 3),
        ]
        .into();
        assert_eq!(h.buckets, expected);
        assert_eq!(BatchLimits::default().check_metric(m, NOW), Ok(()));
    }

    #[test]
    fn exponential_histograms_and_summaries() {
        let p = ExponentialHistogramDataPoint {
            time_unix_nano: NS,
            count: 4,
            sum: Some(11.0),
            scale: 0,
            zero_count: 1,
            positive: Some(Buckets {
                offset: 1,
                bucket_counts: vec![2, 0, 1],
            }),
            ..Default::default()
        };
        let mut broken = p.clone();
        broken.count = 9;
        let e = export(vec![
            metric(
                "size",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![p, broken],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            ),
            metric(
                "summary",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint::default()],
                }),
            ),
        ]);
        assert_eq!((e.received, e.rejected), (3, 2));
        let h = e.batches[0].metrics[0].histogram.as_ref().unwrap();
        // (2, 4] midpoint 2^1.5 ≈ 2.83, (8, 16] midpoint ≈ 11.3, zero → underflow.
        let expected: BTreeMap<usize, u64> = [
            (0, 1),
            (DurationHistogram::bucket(2.83), 2),
            (DurationHistogram::bucket(11.3), 1),
        ]
        .into();
        assert_eq!(h.buckets, expected);
        assert_eq!(e.batches[0].metrics[0].start_ms, None);
    }

    #[test]
    fn gaps_and_broken_points() {
        let mut gap = point(1);
        gap.flags = NO_RECORDED_VALUE;
        let mut untimed = point(1);
        untimed.time_unix_nano = 0;
        let mut negative = point(-3);
        negative.start_time_unix_nano = 0;
        let mut crowded = point(1);
        crowded.attributes = (0..40)
            .map(|i| kv(&format!("k{i}"), Value::IntValue(i)))
            .collect();
        let e = export(vec![metric(
            "c",
            Data::Sum(Sum {
                data_points: vec![gap, untimed, negative, crowded, point(2)],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        )]);
        assert_eq!((e.received, e.rejected), (5, 3));
        assert_eq!(e.batches[0].metrics.len(), 1);
    }
}
