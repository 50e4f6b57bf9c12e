//! Minute buckets, the duration histogram layout the worker aggregates
//! into, and the latency bucket layout of the process metrics.
//!
//! # Histogram layout
//!
//! Log-linear: each decade from 0.1 ms to 100 s is split into nine linear
//! steps (1, 2, … 9 × 10^k), plus one underflow bucket below 0.1 ms and one
//! overflow bucket from 100 s. That is 56 buckets with a worst-case relative
//! error of 50 % in the first step of a decade and ~11 % in the last,
//! enough for p50/p95/p99 of request durations, and cheap: the index is a
//! `log10` and a division.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Upper bounds, in seconds, of every latency histogram Inlet exports to
/// Prometheus (`inlet_*_duration_seconds`): 0.1 ms … 10 s, 1-2.5-5 steps
/// per decade. One layout for every crate, so that latencies compare
/// across them; it holds every bound the dashboards and alerts in
/// `deploy/` read. (The Prometheus crate is not a dependency here: each
/// crate passes this to its `HistogramOpts::buckets`.)
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;

/// A whole minute since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Minute(i64);

impl Minute {
    /// The minute containing a Unix timestamp in milliseconds (floor, also
    /// for times before the epoch).
    pub const fn containing(ms: i64) -> Self {
        Minute(ms.div_euclid(MINUTE_MS))
    }

    /// The minute number itself.
    pub const fn index(self) -> i64 {
        self.0
    }

    /// Wraps a minute number.
    pub const fn from_index(index: i64) -> Self {
        Minute(index)
    }

    /// The first millisecond of the minute.
    pub const fn start_ms(self) -> i64 {
        self.0 * MINUTE_MS
    }
}

impl fmt::Debug for Minute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Minute({})", self.0)
    }
}

/// Number of buckets in the duration histogram.
pub const HISTOGRAM_BUCKETS: usize = 2 + DECADES * 9;
const DECADES: usize = 6;
/// Lower edge of the first decade, in milliseconds.
const FLOOR_MS: f64 = 0.1;
/// Upper edge of the last decade, in milliseconds.
const CEILING_MS: f64 = 100_000.0;
/// Lower edge of each decade, in milliseconds.
const DECADE_BASES: [f64; DECADES] = [FLOOR_MS, 1.0, 10.0, 100.0, 1_000.0, 10_000.0];

/// The duration histogram layout, as pure functions.
#[derive(Debug, Clone, Copy)]
pub struct DurationHistogram;

impl DurationHistogram {
    /// The bucket a duration (milliseconds, finite, non-negative) falls in.
    /// Negative or NaN inputs go to the underflow bucket rather than panic.
    pub fn bucket(ms: f64) -> usize {
        if ms.is_nan() || ms < FLOOR_MS {
            return 0;
        }
        if ms >= CEILING_MS {
            return HISTOGRAM_BUCKETS - 1;
        }
        // Comparisons against exact decade edges, not log10, so that 1.0 ms
        // lands in the 1–2 ms bucket and not, by rounding, below it.
        let decade = DECADE_BASES
            .iter()
            .rposition(|&base| ms >= base)
            .unwrap_or(0);
        let base = DECADE_BASES[decade];
        // 1.0 ..< 10.0 → step 0..=8; clamp guards against float error.
        let step = ((ms / base).floor() as usize).clamp(1, 9) - 1;
        1 + decade * 9 + step
    }

    /// The `[lower, upper)` bounds of a bucket in milliseconds. The
    /// underflow bucket starts at 0, the overflow bucket ends at infinity.
    pub fn bounds(bucket: usize) -> (f64, f64) {
        if bucket == 0 {
            return (0.0, FLOOR_MS);
        }
        if bucket >= HISTOGRAM_BUCKETS - 1 {
            return (CEILING_MS, f64::INFINITY);
        }
        let decade = (bucket - 1) / 9;
        let step = (bucket - 1) % 9 + 1;
        let base = DECADE_BASES[decade];
        (base * step as f64, base * (step + 1) as f64)
    }

    /// Estimates the `q` quantile (0..=1) from bucket counts, as the upper
    /// bound of the bucket holding it (clamped to the observed max when
    /// given). `None` when there are no observations.
    pub fn quantile(counts: &[u64], q: f64, observed_max: Option<f64>) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = Self::bounds(bucket).1;
                return Some(match observed_max {
                    Some(max) => upper.min(max),
                    None => upper,
                });
            }
        }
        observed_max
    }
}

/// HTTP status class of a transaction, for per-class counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No HTTP status (e.g. a background job).
    None,
}

impl StatusClass {
    /// The class of an optional status code (validated to 100..=599).
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(100..=199) => StatusClass::Informational,
            Some(200..=299) => StatusClass::Success,
            Some(300..=399) => StatusClass::Redirect,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..=599) => StatusClass::ServerError,
            _ => StatusClass::None,
        }
    }

    /// Label used as a field name in stored aggregates.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minutes_floor() {
        assert_eq!(Minute::containing(0).index(), 0);
        assert_eq!(Minute::containing(59_999).index(), 0);
        assert_eq!(Minute::containing(60_000).index(), 1);
        assert_eq!(Minute::containing(-1).index(), -1);
        assert_eq!(Minute::containing(125_000).start_ms(), 120_000);
    }

    #[test]
    fn latency_buckets_ascend_and_keep_the_dashboards_bounds() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        // The bounds `deploy/grafana` quantiles of
        // `inlet_queue_publish_duration_seconds` were drawn from.
        for bound in [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ] {
            assert!(LATENCY_BUCKETS.contains(&bound), "{bound}");
        }
    }

    #[test]
    fn bucket_edges() {
        assert_eq!(DurationHistogram::bucket(0.0), 0);
        assert_eq!(DurationHistogram::bucket(0.099), 0);
        assert_eq!(DurationHistogram::bucket(0.1), 1);
        assert_eq!(DurationHistogram::bucket(0.2), 2);
        assert_eq!(DurationHistogram::bucket(0.999), 9);
        assert_eq!(DurationHistogram::bucket(1.0), 10);
        assert_eq!(DurationHistogram::bucket(1.5), 10);
        assert_eq!(DurationHistogram::bucket(99_999.0), HISTOGRAM_BUCKETS - 2);
        assert_eq!(DurationHistogram::bucket(100_000.0), HISTOGRAM_BUCKETS - 1);
        assert_eq!(
            DurationHistogram::bucket(f64::INFINITY),
            HISTOGRAM_BUCKETS - 1
        );
        assert_eq!(DurationHistogram::bucket(-5.0), 0);
        assert_eq!(DurationHistogram::bucket(f64::NAN), 0);
        assert_eq!(DurationHistogram::bounds(10), (1.0, 2.0));
        assert_eq!(HISTOGRAM_BUCKETS, 56);
    }

    #[test]
    fn quantiles() {
        let mut counts = vec![0u64; HISTOGRAM_BUCKETS];
        for ms in [1.0, 1.2, 1.4, 5.0, 5.5, 50.0, 50.0, 50.0, 50.0, 900.0] {
            counts[DurationHistogram::bucket(ms)] += 1;
        }
        assert_eq!(DurationHistogram::quantile(&counts, 0.5, None), Some(6.0));
        assert_eq!(
            DurationHistogram::quantile(&counts, 1.0, Some(900.0)),
            Some(900.0)
        );
        assert_eq!(DurationHistogram::quantile(&counts, 0.1, None), Some(2.0));
        assert_eq!(DurationHistogram::quantile(&[0; 4], 0.5, None), None);
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(Some(204)).as_str(), "2xx");
        assert_eq!(StatusClass::of(Some(503)).as_str(), "5xx");
        assert_eq!(StatusClass::of(None).as_str(), "none");
    }

    proptest! {
        #[test]
        fn value_lies_within_its_bucket(ms in 0.0f64..1e6) {
            let b = DurationHistogram::bucket(ms);
            prop_assert!(b < HISTOGRAM_BUCKETS);
            let (lo, hi) = DurationHistogram::bounds(b);
            // Allow for float error at the exact edges.
            prop_assert!(ms >= lo * (1.0 - 1e-9) && ms < hi * (1.0 + 1e-9), "{ms} in {b}: {lo}..{hi}");
        }

        #[test]
        fn buckets_are_monotonic(a in 0.0f64..2e5, b in 0.0f64..2e5) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(DurationHistogram::bucket(lo) <= DurationHistogram::bucket(hi));
        }
    }
}
