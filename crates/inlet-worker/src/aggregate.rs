//! Folding batches into per-minute aggregates, in memory (pure; no I/O).
//!
//! Many messages touch the same minute buckets (one busy action, one
//! metric series), so the worker folds every message of a delivery batch
//! into one [`Aggregates`] first and writes each bucket once: fewer, larger
//! writes than one upsert per sample.
//!
//! Cumulative samples cannot be folded without the series' stored last
//! point: they are collected per series ([`Aggregates::cumulative`]) and
//! resolved into increases inside the write's transaction
//! ([`Aggregates::resolve`], [`crate::cumulative`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use inlet_domain::{
    AccountId, Batch, DurationHistogram, ErrorSample, Frame, Metric, MetricKind, Minute,
    StatusClass,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::cumulative::{self, Point};
use crate::observations::Observations;

/// Identity of a transaction bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey {
    /// Account.
    pub account: String,
    /// App.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Namespace (`web`, `background`, …).
    pub namespace: String,
    /// Action.
    pub action: String,
    /// Minute.
    pub minute: Minute,
}

/// Transaction statistics of one bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TxStats {
    /// Transactions.
    pub count: u64,
    /// Transactions that failed (error or 5xx).
    pub errors: u64,
    /// Sum of durations, ms.
    pub duration_sum: f64,
    /// Shortest, ms.
    pub duration_min: f64,
    /// Longest, ms.
    pub duration_max: f64,
    /// Duration histogram: bucket index → count (sparse).
    pub histogram: BTreeMap<usize, u64>,
    /// Status class → count.
    pub status: BTreeMap<&'static str, u64>,
}

impl TxStats {
    fn add(&mut self, duration_ms: f64, is_error: bool, class: StatusClass) {
        if self.count == 0 {
            self.duration_min = duration_ms;
            self.duration_max = duration_ms;
        } else {
            self.duration_min = self.duration_min.min(duration_ms);
            self.duration_max = self.duration_max.max(duration_ms);
        }
        self.count += 1;
        self.errors += u64::from(is_error);
        self.duration_sum += duration_ms;
        *self
            .histogram
            .entry(DurationHistogram::bucket(duration_ms))
            .or_default() += 1;
        *self.status.entry(class.as_str()).or_default() += 1;
    }
}

/// Identity of a metric bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    /// Account.
    pub account: String,
    /// App.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Series id (kind, name, sorted tags).
    pub series: String,
    /// Minute.
    pub minute: Minute,
}

/// A metric bucket's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricStats {
    /// Kind.
    pub kind: MetricKind,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Samples.
    pub count: u64,
    /// Sum of values (counters: the total; distributions: the sum).
    pub sum: f64,
    /// Smallest value (distributions).
    pub min: f64,
    /// Largest value (distributions).
    pub max: f64,
    /// Distribution histogram (bucket → count), same layout as durations.
    pub histogram: BTreeMap<usize, u64>,
    /// Gauges: the value with the latest timestamp, and that timestamp.
    pub last: Option<(i64, f64)>,
}

impl MetricStats {
    fn new(kind: MetricKind, name: &str, tags: &BTreeMap<String, String>) -> Self {
        MetricStats {
            kind,
            name: name.to_owned(),
            tags: tags.clone(),
            count: 0,
            sum: 0.0,
            // Only ever read once an observation set them.
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            histogram: BTreeMap::new(),
            last: None,
        }
    }

    /// One counter increment (a sample, or a cumulative series' increase).
    fn add_increment(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
    }

    /// Observations of a distribution.
    fn add_observations(&mut self, o: &Observations) {
        self.count += o.count;
        self.sum += o.sum;
        for (b, n) in &o.buckets {
            *self.histogram.entry(*b).or_default() += n;
        }
        if let Some((min, max)) = o.range {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
    }
}

/// Identity of a cumulative series (a metric bucket without its minute).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// Account.
    pub account: String,
    /// App.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Series id (kind, name, sorted tags).
    pub series: String,
}

impl SeriesKey {
    /// The `_id` of the series' stored last point.
    pub fn state_id(&self) -> String {
        bucket_id(&[&self.account, &self.app, &self.environment, &self.series])
    }

    fn minute(&self, timestamp_ms: i64) -> MetricKey {
        MetricKey {
            account: self.account.clone(),
            app: self.app.clone(),
            environment: self.environment.clone(),
            series: self.series.clone(),
            minute: Minute::containing(timestamp_ms),
        }
    }
}

/// The cumulative points of one series in a delivery batch.
#[derive(Debug, Clone, PartialEq)]
pub struct CumulativeSeries {
    /// Counter or distribution.
    pub kind: MetricKind,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The points, in arrival order.
    pub points: Vec<Point>,
}

/// The metric buckets of a delivery batch once the cumulative series are
/// resolved against their stored points.
#[derive(Debug)]
pub struct Resolved<'a> {
    /// Every metric bucket: the deltas and the increases.
    pub metrics: Cow<'a, HashMap<MetricKey, MetricStats>>,
    /// The new last point of each series that moved.
    pub points: Vec<(&'a SeriesKey, &'a CumulativeSeries, Point)>,
}

/// Identity of an error group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorKey {
    /// Account.
    pub account: String,
    /// App.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Fingerprint (class + action + top in-app frame).
    pub fingerprint: String,
}

/// An error group's statistics within a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorStats {
    /// Exception class.
    pub class: String,
    /// Action, if known.
    pub action: Option<String>,
    /// Occurrences per minute.
    pub per_minute: BTreeMap<Minute, u64>,
    /// Earliest occurrence, Unix ms.
    pub first_seen_ms: i64,
    /// Latest occurrence, Unix ms.
    pub last_seen_ms: i64,
    /// The latest occurrence.
    pub latest: LatestSample,
}

/// What is kept of an error group's latest occurrence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestSample {
    /// Message.
    pub message: String,
    /// Backtrace.
    pub backtrace: Vec<Frame>,
    /// When, Unix ms.
    pub timestamp_ms: i64,
}

/// Everything a set of batches adds to the store.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Aggregates {
    /// Transaction buckets.
    pub transactions: HashMap<TxKey, TxStats>,
    /// Metric buckets.
    pub metrics: HashMap<MetricKey, MetricStats>,
    /// Error groups.
    pub errors: HashMap<ErrorKey, ErrorStats>,
    /// Cumulative samples, per series, to be resolved against the stored
    /// points ([`Self::resolve`]).
    pub cumulative: HashMap<SeriesKey, CumulativeSeries>,
    /// Samples folded in, by kind: transactions, metrics, errors.
    pub items: (u64, u64, u64),
}

impl Aggregates {
    /// Whether nothing was folded in.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
            && self.metrics.is_empty()
            && self.errors.is_empty()
            && self.cumulative.is_empty()
    }

    /// Folds one validated batch of `account` in.
    pub fn add(&mut self, account: &AccountId, batch: &Batch) {
        let account = account.as_str();
        let app = batch.app().as_str();
        let env = batch.environment().as_str();
        for t in batch.transactions() {
            let key = TxKey {
                account: account.to_owned(),
                app: app.to_owned(),
                environment: env.to_owned(),
                namespace: t.namespace.clone(),
                action: t.action.clone(),
                minute: t.minute(),
            };
            self.transactions.entry(key).or_default().add(
                t.duration_ms,
                t.is_error(),
                t.status_class(),
            );
        }
        for m in batch.metrics() {
            self.add_metric(account, app, env, m);
        }
        for e in batch.errors() {
            self.add_error(account, app, env, e);
        }
        self.items.0 += batch.transactions().len() as u64;
        self.items.1 += batch.metrics().len() as u64;
        self.items.2 += batch.errors().len() as u64;
    }

    fn add_metric(&mut self, account: &str, app: &str, env: &str, m: &Metric) {
        if let Some(point) = Point::of(m) {
            let key = SeriesKey {
                account: account.to_owned(),
                app: app.to_owned(),
                environment: env.to_owned(),
                series: m.series_id(),
            };
            self.cumulative
                .entry(key)
                .or_insert_with(|| CumulativeSeries {
                    kind: m.kind,
                    name: m.name.clone(),
                    tags: m.tags.clone(),
                    points: Vec::new(),
                })
                .points
                .push(point);
            return;
        }
        let key = MetricKey {
            account: account.to_owned(),
            app: app.to_owned(),
            environment: env.to_owned(),
            series: m.series_id(),
            minute: m.minute(),
        };
        let s = self
            .metrics
            .entry(key)
            .or_insert_with(|| MetricStats::new(m.kind, &m.name, &m.tags));
        match m.kind {
            MetricKind::Counter => s.add_increment(m.value),
            MetricKind::Distribution => s.add_observations(&match &m.histogram {
                Some(h) => Observations::of_histogram(m.value, h),
                None => Observations::one(m.value),
            }),
            MetricKind::Gauge => {
                s.count += 1;
                // Latest timestamp wins; on a tie, the later sample.
                if s.last.is_none_or(|(ts, _)| m.timestamp_ms >= ts) {
                    s.last = Some((m.timestamp_ms, m.value));
                }
            }
        }
    }

    /// The metric buckets with what every cumulative series adds over its
    /// `stored` last point folded in (as counter increments and delta
    /// distributions, each into the minute of its point), and the new last
    /// point of each series that moved. Without cumulative series, the
    /// buckets as they are.
    pub fn resolve<'a>(&'a self, stored: &HashMap<String, Point>) -> Resolved<'a> {
        if self.cumulative.is_empty() {
            return Resolved {
                metrics: Cow::Borrowed(&self.metrics),
                points: Vec::new(),
            };
        }
        let mut metrics = self.metrics.clone();
        let mut points = Vec::new();
        for (key, series) in &self.cumulative {
            let (increases, last) =
                cumulative::advance(series.kind, stored.get(&key.state_id()), &series.points);
            for (timestamp_ms, o) in increases {
                let s = metrics
                    .entry(key.minute(timestamp_ms))
                    .or_insert_with(|| MetricStats::new(series.kind, &series.name, &series.tags));
                match series.kind {
                    MetricKind::Distribution => s.add_observations(&o),
                    _ => s.add_increment(o.sum),
                }
            }
            if let Some(last) = last {
                points.push((key, series, last));
            }
        }
        Resolved {
            metrics: Cow::Owned(metrics),
            points,
        }
    }

    fn add_error(&mut self, account: &str, app: &str, env: &str, e: &ErrorSample) {
        let key = ErrorKey {
            account: account.to_owned(),
            app: app.to_owned(),
            environment: env.to_owned(),
            fingerprint: e.fingerprint(),
        };
        let sample = || LatestSample {
            message: e.message.clone(),
            backtrace: e.backtrace.clone(),
            timestamp_ms: e.timestamp_ms,
        };
        let s = self.errors.entry(key).or_insert_with(|| ErrorStats {
            class: e.class.clone(),
            action: e.action.clone(),
            per_minute: BTreeMap::new(),
            first_seen_ms: e.timestamp_ms,
            last_seen_ms: e.timestamp_ms,
            latest: sample(),
        });
        *s.per_minute.entry(e.minute()).or_default() += 1;
        s.first_seen_ms = s.first_seen_ms.min(e.timestamp_ms);
        if e.timestamp_ms >= s.last_seen_ms {
            s.last_seen_ms = e.timestamp_ms;
            s.latest = sample();
        }
    }
}

/// A stable document id from the parts of a bucket's identity
/// (SHA-256, 32 hex digits). Parts are separated by NUL, which no part can
/// contain (names reject control characters).
pub fn bucket_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0]);
        }
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_domain::BatchLimits;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000_000;

    fn batch(v: serde_json::Value) -> Batch {
        Batch::decode(
            &serde_json::to_vec(&v).unwrap(),
            &BatchLimits::default(),
            NOW,
        )
        .unwrap()
    }

    fn acct() -> AccountId {
        AccountId::parse("acme").unwrap()
    }

    #[test]
    fn transactions_fold_per_action_and_minute() {
        let minute = Minute::containing(NOW).start_ms();
        let b = batch(json!({
            "agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "prod",
            "transactions": [
                {"action": "A", "start_ms": minute + 1, "duration_ms": 10.0, "status": 200},
                {"action": "A", "start_ms": minute + 2, "duration_ms": 30.0, "status": 503},
                {"action": "A", "start_ms": minute + 3, "duration_ms": 2.0, "error": {"class": "E"}},
                {"action": "B", "start_ms": minute + 4, "duration_ms": 1.0},
                {"action": "A", "start_ms": minute - 1, "duration_ms": 1.0}
            ]
        }));
        let mut agg = Aggregates::default();
        agg.add(&acct(), &b);
        agg.add(&acct(), &b);
        assert_eq!(
            agg.transactions.len(),
            3,
            "A this minute, B, A previous minute"
        );
        let a = agg
            .transactions
            .iter()
            .find(|(k, _)| k.action == "A" && k.minute == Minute::containing(minute))
            .unwrap()
            .1;
        assert_eq!(a.count, 6);
        assert_eq!(a.errors, 4);
        assert_eq!(a.duration_sum, 84.0);
        assert_eq!((a.duration_min, a.duration_max), (2.0, 30.0));
        assert_eq!(a.histogram.values().sum::<u64>(), 6);
        assert_eq!(a.status["2xx"], 2);
        assert_eq!(a.status["5xx"], 2);
        assert_eq!(a.status["none"], 2);
        assert_eq!(agg.items, (10, 0, 0));
    }

    #[test]
    fn metrics_fold_by_kind() {
        let b = batch(json!({
            "agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "prod",
            "metrics": [
                {"kind": "counter", "name": "c", "value": 2, "timestamp_ms": NOW},
                {"kind": "counter", "name": "c", "value": 3, "timestamp_ms": NOW},
                {"kind": "gauge", "name": "g", "value": 7, "timestamp_ms": NOW - 10},
                {"kind": "gauge", "name": "g", "value": 5, "timestamp_ms": NOW},
                {"kind": "gauge", "name": "g", "value": 9, "timestamp_ms": NOW - 20},
                {"kind": "distribution", "name": "d", "value": 4, "timestamp_ms": NOW},
                {"kind": "distribution", "name": "d", "value": 40, "timestamp_ms": NOW},
                {"kind": "counter", "name": "c", "value": 1, "tags": {"q": "x"}, "timestamp_ms": NOW}
            ]
        }));
        let mut agg = Aggregates::default();
        agg.add(&acct(), &b);
        assert_eq!(agg.metrics.len(), 4, "c, c{{q=x}}, g, d");
        let get = |name: &str, tags: usize| {
            agg.metrics
                .values()
                .find(|s| s.name == name && s.tags.len() == tags)
                .unwrap()
        };
        assert_eq!((get("c", 0).sum, get("c", 0).count), (5.0, 2));
        assert_eq!(get("g", 0).last, Some((NOW, 5.0)), "latest timestamp wins");
        let d = get("d", 0);
        assert_eq!((d.count, d.sum, d.min, d.max), (2, 44.0, 4.0, 40.0));
    }

    #[test]
    fn bucketed_distributions_fold_their_observations() {
        let (b20, b28) = (DurationHistogram::bounds(20), DurationHistogram::bounds(28));
        let b = batch(json!({
            "agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "prod",
            "metrics": [
                // Three observations with known min and max.
                {"kind": "distribution", "name": "d", "value": 300.0, "timestamp_ms": NOW,
                 "histogram": {"count": 3, "min": 25.0, "max": 150.0, "buckets": {"20": 1, "28": 2}}},
                // Two more, without min/max: the bucket bounds stand in.
                {"kind": "distribution", "name": "d", "value": 120.0, "timestamp_ms": NOW,
                 "histogram": {"count": 2, "buckets": {"20": 1, "28": 1}}},
                // A plain sample still counts as one observation.
                {"kind": "distribution", "name": "d", "value": 40.0, "timestamp_ms": NOW}
            ]
        }));
        let mut agg = Aggregates::default();
        agg.add(&acct(), &b);
        assert_eq!(agg.metrics.len(), 1);
        let d = agg.metrics.values().next().unwrap();
        assert_eq!((d.count, d.sum), (6, 460.0));
        assert_eq!(d.histogram[&20], 2);
        assert_eq!(d.histogram[&28], 3);
        assert_eq!(d.histogram[&DurationHistogram::bucket(40.0)], 1);
        assert_eq!(d.histogram.values().sum::<u64>(), 6);
        assert_eq!(d.min, 25.0f64.min(b20.0));
        assert_eq!(d.max, 150.0f64.max(b28.1));

        // Alone, the one without min/max takes the bounds of its lowest
        // and highest non-empty buckets.
        let only = batch(json!({
            "agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "prod",
            "metrics": [{"kind": "distribution", "name": "d", "value": 120.0, "timestamp_ms": NOW,
                         "histogram": {"count": 2, "buckets": {"20": 1, "28": 1}}}]
        }));
        let mut agg = Aggregates::default();
        agg.add(&acct(), &only);
        let d = agg.metrics.values().next().unwrap();
        assert_eq!((d.count, d.sum, d.min, d.max), (2, 120.0, b20.0, b28.1));
        assert_eq!(agg.items, (0, 1, 0));
    }

    #[test]
    fn bucket_bounds_are_clamped_to_what_the_sum_allows() {
        let last = inlet_domain::HISTOGRAM_BUCKETS - 1;
        let b = batch(json!({
            "agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "prod",
            "metrics": [
                // The overflow bucket has no upper bound: the max is at
                // least its lower bound and at least the mean.
                {"kind": "distribution", "name": "over", "value": 500_000.0, "timestamp_ms": NOW,
                 "histogram": {"count": 2, "buckets": {(last.to_string()): 2}}},
                // Bounds that contradict the sum: min never above the mean,
                // max never below it.
                {"kind": "distribution", "name": "odd", "value": 2.0, "timestamp_ms": NOW,
                 "histogram": {"count": 2, "buckets": {"40": 2}}},
                // One observation is the sum, whatever its bucket says.
                {"kind": "distribution", "name": "one", "value": 7.0, "timestamp_ms": NOW,
                 "histogram": {"count": 1, "buckets": {"40": 1}}},
                // No observations: nothing but the (zero) sum.
                {"kind": "distribution", "name": "none", "value": 0.0, "timestamp_ms": NOW,
                 "histogram": {"count": 0}}
            ]
        }));
        let mut agg = Aggregates::default();
        agg.add(&acct(), &b);
        let get = |name: &str| agg.metrics.values().find(|s| s.name == name).unwrap();
        let over = get("over");
        assert!(over.max.is_finite());
        assert_eq!(
            over.max, 250_000.0,
            "the mean, above the bucket's lower bound"
        );
        assert_eq!(over.min, DurationHistogram::bounds(last).0);
        let odd = get("odd");
        assert_eq!((odd.min, odd.max), (1.0, DurationHistogram::bounds(40).1));
        let one = get("one");
        assert_eq!((one.count, one.min, one.max), (1, 7.0, 7.0));
        let none = get("none");
        assert_eq!((none.count, none.sum), (0, 0.0));
        assert!(none.histogram.is_empty());
    }

    #[test]
    fn errors_group_by_fingerprint() {
        let b = batch(json!({
            "agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "prod",
            "errors": [
                {"class": "E", "message": "first", "action": "A", "timestamp_ms": NOW - 70_000,
                 "backtrace": [{"file": "app/x.rb", "line": 1, "function": "f"}]},
                {"class": "E", "message": "latest", "action": "A", "timestamp_ms": NOW,
                 "backtrace": [{"file": "app/x.rb", "line": 9, "function": "f"}]},
                {"class": "F", "message": "other", "timestamp_ms": NOW}
            ]
        }));
        let mut agg = Aggregates::default();
        agg.add(&acct(), &b);
        assert_eq!(agg.errors.len(), 2);
        let e = agg.errors.values().find(|s| s.class == "E").unwrap();
        assert_eq!(e.per_minute.values().sum::<u64>(), 2);
        assert_eq!(e.per_minute.len(), 2, "two different minutes");
        assert_eq!(e.first_seen_ms, NOW - 70_000);
        assert_eq!(e.latest.message, "latest");
    }

    #[test]
    fn bucket_ids_are_stable_and_unambiguous() {
        assert_eq!(bucket_id(&["a", "b"]), bucket_id(&["a", "b"]));
        assert_ne!(bucket_id(&["ab", ""]), bucket_id(&["a", "b"]));
        assert_eq!(bucket_id(&["x"]).len(), 32);
    }
}
