//! Cumulative series → increases (pure; no I/O).
//!
//! A cumulative sample (`start_ms` set, OpenTelemetry's default temporality)
//! holds the total since its start, not an increment. The worker keeps the
//! last point of every cumulative series (`metric_cumulative`, see
//! [`crate::store`]) and folds what a new point *adds* over it, as an
//! ordinary counter increment or delta distribution, into the minute of the
//! new point's timestamp. [`step`] is that rule:
//!
//! | stored point | new point | adds |
//! |---|---|---|
//! | none (unknown series) | any | its whole value ([`Step::First`]) |
//! | same start, older | newer | new − stored ([`Step::Increase`]) |
//! | same start | a total went down | its whole value ([`Step::Reset`]) |
//! | earlier start | later start | its whole value ([`Step::Reset`]) |
//! | same start, as new or newer | older or equal timestamp | nothing ([`Step::Stale`]) |
//! | later start | earlier start | nothing ([`Step::Stale`]) |
//!
//! **The first point counts whole.** A series the worker has no point of
//! began at `start_ms` (the SDK's process start) and nothing of it was
//! stored: its whole value is new. The alternative, taking the first point
//! as a baseline only, would lose everything a process counted before its
//! first export, for every process start. The price: a series whose stored
//! point expired (`worker.retention_cumulative_days`) and that resumes with
//! the same start counts its total again.
//!
//! "Went down" is per kind: a counter's total; a distribution's count or
//! any bucket count (its sum may fall: observations may be negative).
//! A stale point leaves the stored point as it is; out-of-order and
//! duplicate deliveries add nothing, their increase is part of the newer
//! point's.

use std::collections::BTreeMap;

use inlet_domain::{Metric, MetricKind};

use crate::observations::Observations;

/// One point of a cumulative series (as sent, or as stored).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The series counts from here, Unix ms.
    pub start_ms: i64,
    /// When it was measured, Unix ms.
    pub timestamp_ms: i64,
    /// Counters: the total. Distributions: the sum of the observations.
    pub sum: f64,
    /// Distributions: observations since the start (0 for counters, and
    /// for a distribution sent without a histogram).
    pub count: u64,
    /// Smallest observation since the start, when known.
    pub min: Option<f64>,
    /// Largest observation since the start, when known.
    pub max: Option<f64>,
    /// Observations since the start, by bucket (sparse).
    pub buckets: BTreeMap<usize, u64>,
}

impl Point {
    /// The point a sample is, if it is cumulative (a counter or a
    /// distribution with `start_ms`; the domain refuses cumulative gauges).
    pub fn of(m: &Metric) -> Option<Point> {
        let start_ms = m.start_ms?;
        if m.kind == MetricKind::Gauge {
            return None;
        }
        let h = m.histogram.as_ref();
        Some(Point {
            start_ms,
            timestamp_ms: m.timestamp_ms,
            sum: m.value,
            count: h.map_or(0, |h| h.count),
            min: h.and_then(|h| h.min),
            max: h.and_then(|h| h.max),
            buckets: h.map(|h| h.buckets.clone()).unwrap_or_default(),
        })
    }

    /// Everything since the start, as observations.
    fn whole(&self) -> Observations {
        Observations::bucketed(
            self.count,
            self.sum,
            self.buckets.clone(),
            (self.min, self.max),
            (None, None),
        )
    }
}

/// What a new point adds over the stored one.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The series was unknown: the whole value.
    First(Observations),
    /// Same start, newer: the difference.
    Increase(Observations),
    /// A new start, or a total that went down: the whole value.
    Reset(Observations),
    /// Older, a duplicate, or of an earlier start: nothing.
    Stale,
}

impl Step {
    /// What to fold in, unless stale.
    pub fn increase(&self) -> Option<&Observations> {
        match self {
            Step::First(o) | Step::Increase(o) | Step::Reset(o) => Some(o),
            Step::Stale => None,
        }
    }
}

/// What `new` adds to a series of `kind` whose last point is `stored`
/// (see the module docs for the rule).
pub fn step(kind: MetricKind, stored: Option<&Point>, new: &Point) -> Step {
    let Some(old) = stored else {
        return Step::First(new.whole());
    };
    if new.start_ms > old.start_ms {
        return Step::Reset(new.whole());
    }
    if new.start_ms < old.start_ms || new.timestamp_ms <= old.timestamp_ms {
        return Step::Stale;
    }
    match difference(kind, old, new) {
        Some(o) => Step::Increase(o),
        None => Step::Reset(new.whole()),
    }
}

/// `new − old` of one start, or `None` if a total went down.
fn difference(kind: MetricKind, old: &Point, new: &Point) -> Option<Observations> {
    if kind != MetricKind::Distribution {
        let d = new.sum - old.sum;
        return (d >= 0.0).then(|| Observations::sum_only(d));
    }
    let count = new.count.checked_sub(old.count)?;
    if old
        .buckets
        .iter()
        .any(|(b, &n)| n > 0 && !new.buckets.contains_key(b))
    {
        return None;
    }
    let mut buckets = BTreeMap::new();
    for (&b, &n) in &new.buckets {
        let grew = n.checked_sub(old.buckets.get(&b).copied().unwrap_or(0))?;
        if grew > 0 {
            buckets.insert(b, grew);
        }
    }
    // The lifetime extremes are the increase's own only where they moved;
    // otherwise they bound its estimate.
    let moved = |new: Option<f64>, old: Option<f64>, beyond: fn(f64, f64) -> bool| match (new, old)
    {
        (Some(n), Some(o)) if beyond(n, o) => Some(n),
        _ => None,
    };
    let known = (
        moved(new.min, old.min, |n, o| n < o),
        moved(new.max, old.max, |n, o| n > o),
    );
    Some(Observations::bucketed(
        count,
        new.sum - old.sum,
        buckets,
        known,
        (new.min, new.max),
    ))
}

/// Chains the points of one series, in timestamp order, from its stored
/// last point: what each adds (with its timestamp), and the series' new
/// last point if it moved.
pub fn advance(
    kind: MetricKind,
    stored: Option<&Point>,
    points: &[Point],
) -> (Vec<(i64, Observations)>, Option<Point>) {
    let mut order: Vec<&Point> = points.iter().collect();
    order.sort_by_key(|p| (p.timestamp_ms, p.start_ms));
    let mut last = stored;
    let mut moved = false;
    let mut increases = Vec::new();
    for p in order {
        if let Some(o) = step(kind, last, p).increase() {
            increases.push((p.timestamp_ms, o.clone()));
            last = Some(p);
            moved = true;
        }
    }
    (increases, last.filter(|_| moved).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_domain::DurationHistogram;

    const C: MetricKind = MetricKind::Counter;
    const D: MetricKind = MetricKind::Distribution;

    fn counter(start_ms: i64, timestamp_ms: i64, sum: f64) -> Point {
        Point {
            start_ms,
            timestamp_ms,
            sum,
            count: 0,
            min: None,
            max: None,
            buckets: BTreeMap::new(),
        }
    }

    fn hist(
        start_ms: i64,
        timestamp_ms: i64,
        sum: f64,
        buckets: &[(usize, u64)],
        range: (f64, f64),
    ) -> Point {
        let buckets: BTreeMap<usize, u64> = buckets.iter().copied().collect();
        Point {
            start_ms,
            timestamp_ms,
            sum,
            count: buckets.values().sum(),
            min: Some(range.0),
            max: Some(range.1),
            buckets,
        }
    }

    fn sum(s: &Step) -> Option<f64> {
        s.increase().map(|o| o.sum)
    }

    #[test]
    fn a_first_point_counts_whole() {
        let s = step(C, None, &counter(0, 100, 7.0));
        assert!(matches!(s, Step::First(_)), "{s:?}");
        assert_eq!(sum(&s), Some(7.0));
    }

    #[test]
    fn a_newer_point_adds_its_difference() {
        let s = step(C, Some(&counter(0, 100, 7.0)), &counter(0, 200, 10.5));
        assert_eq!(s, Step::Increase(Observations::sum_only(3.5)));
        // Unchanged is an increase of zero, not stale: the series moved on.
        let s = step(C, Some(&counter(0, 100, 7.0)), &counter(0, 200, 7.0));
        assert_eq!(sum(&s), Some(0.0));
    }

    #[test]
    fn older_duplicate_and_earlier_start_points_are_stale() {
        let stored = counter(50, 100, 7.0);
        for p in [
            counter(50, 90, 6.0),
            counter(50, 100, 7.0),
            counter(50, 100, 9.0),
            counter(10, 200, 99.0),
        ] {
            assert_eq!(step(C, Some(&stored), &p), Step::Stale, "{p:?}");
        }
    }

    #[test]
    fn a_later_start_or_a_decrease_is_a_reset() {
        let stored = counter(0, 100, 7.0);
        let s = step(C, Some(&stored), &counter(150, 200, 2.0));
        assert_eq!(s, Step::Reset(Observations::sum_only(2.0)));
        // A later start resets even when the total is higher.
        let s = step(C, Some(&stored), &counter(150, 200, 20.0));
        assert_eq!(sum(&s), Some(20.0));
        let s = step(C, Some(&stored), &counter(0, 200, 3.0));
        assert_eq!(s, Step::Reset(Observations::sum_only(3.0)));
    }

    #[test]
    fn histograms_increase_by_bucket() {
        let b = DurationHistogram::bucket;
        let old = hist(0, 100, 50.0, &[(b(5.0), 1), (b(20.0), 2)], (5.0, 25.0));
        let new = hist(
            0,
            200,
            116.0,
            &[(b(5.0), 1), (b(20.0), 3), (b(40.0), 1)],
            (5.0, 45.0),
        );
        let Step::Increase(o) = step(D, Some(&old), &new) else {
            panic!()
        };
        assert_eq!((o.count, o.sum), (2, 66.0));
        assert_eq!(
            o.buckets,
            [(b(20.0), 1), (b(40.0), 1)].into_iter().collect()
        );
        // The max moved: exact. The min did not: the lowest bucket that
        // grew, within the lifetime min.
        assert_eq!(o.range, Some((DurationHistogram::bounds(b(20.0)).0, 45.0)));
    }

    #[test]
    fn a_histogram_that_lost_observations_was_reset() {
        let old = hist(0, 100, 30.0, &[(3, 2), (9, 1)], (1.0, 9.0));
        for new in [
            hist(0, 200, 30.0, &[(3, 1), (9, 1), (10, 5)], (1.0, 9.0)),
            hist(0, 200, 30.0, &[(3, 2), (10, 5)], (1.0, 9.0)),
        ] {
            let s = step(D, Some(&old), &new);
            assert!(matches!(s, Step::Reset(_)), "{s:?}");
            assert_eq!(s.increase().map(|o| o.count), Some(new.count));
        }
        // A falling sum alone is not a reset (negative observations).
        let new = hist(0, 200, 20.0, &[(3, 2), (9, 1), (0, 1)], (-10.0, 9.0));
        let Step::Increase(o) = step(D, Some(&old), &new) else {
            panic!()
        };
        assert_eq!((o.count, o.sum, o.range), (1, -10.0, Some((-10.0, -10.0))));
    }

    #[test]
    fn points_chain_in_timestamp_order() {
        let points = [
            counter(0, 300, 30.0),
            counter(0, 100, 10.0),
            counter(0, 200, 16.0),
            counter(0, 250, 16.0 - 1.0),
            counter(0, 200, 16.0),
        ];
        let (inc, last) = advance(C, Some(&counter(0, 50, 4.0)), &points);
        let got: Vec<(i64, f64)> = inc.iter().map(|(t, o)| (*t, o.sum)).collect();
        // 250 went down (a reset: 15 whole), then 300 adds 15 over it.
        assert_eq!(got, vec![(100, 6.0), (200, 6.0), (250, 15.0), (300, 15.0)]);
        assert_eq!(last, Some(counter(0, 300, 30.0)));
        // Nothing new: no state to write.
        let (inc, last) = advance(C, Some(&counter(0, 500, 40.0)), &points);
        assert!(inc.is_empty());
        assert_eq!(last, None);
    }
}
