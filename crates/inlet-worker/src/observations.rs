//! Observations of a distribution — one sample, a bucketed histogram, or
//! what a cumulative histogram added since its last point — in the form
//! both the fold ([`crate::aggregate`]) and the cumulative rule
//! ([`crate::cumulative`]) work with.

use std::collections::BTreeMap;

use inlet_domain::{DurationHistogram, Histogram};

/// Observations of a distribution: one sample, a histogram, or what a
/// cumulative histogram added.
#[derive(Debug, Clone, PartialEq)]
pub struct Observations {
    /// How many.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Bucket → observations (sparse, [`DurationHistogram`] layout).
    pub buckets: BTreeMap<usize, u64>,
    /// Smallest and largest, unless there are none.
    pub range: Option<(f64, f64)>,
}

impl Observations {
    /// One observation.
    pub fn one(value: f64) -> Self {
        Observations {
            count: 1,
            sum: value,
            buckets: BTreeMap::from([(DurationHistogram::bucket(value), 1)]),
            range: Some((value, value)),
        }
    }

    /// A sum without observations (a counter's increase; a cumulative
    /// distribution sent without a histogram).
    pub fn sum_only(sum: f64) -> Self {
        Observations {
            count: 0,
            sum,
            buckets: BTreeMap::new(),
            range: None,
        }
    }

    /// The observations of a histogram sample whose value is `sum`.
    pub fn of_histogram(sum: f64, h: &Histogram) -> Self {
        Self::bucketed(
            h.count,
            sum,
            h.buckets.clone(),
            (h.min, h.max),
            (None, None),
        )
    }

    /// `count` observations summing to `sum`. Their min and max are `known`
    /// where given; otherwise estimated from the bounds of the lowest and
    /// highest non-empty bucket (the overflow bucket, unbounded above,
    /// by its lower bound), kept within `limits`, and never beyond the
    /// mean (the min is at most the mean, the max at least). One
    /// observation is its sum.
    pub fn bucketed(
        count: u64,
        sum: f64,
        buckets: BTreeMap<usize, u64>,
        known: (Option<f64>, Option<f64>),
        limits: (Option<f64>, Option<f64>),
    ) -> Self {
        let range = match count {
            0 => None,
            1 => Some((known.0.unwrap_or(sum), known.1.unwrap_or(sum))),
            _ => {
                let mean = sum / count as f64;
                let mut filled = buckets.iter().filter(|(_, n)| **n > 0).map(|(b, _)| *b);
                let (lowest, highest) = (filled.next(), filled.next_back());
                let min = known.0.unwrap_or_else(|| {
                    let lo = lowest.map_or(mean, |b| DurationHistogram::bounds(b).0);
                    limits.0.map_or(lo, |l| lo.max(l)).min(mean)
                });
                let max = known.1.unwrap_or_else(|| {
                    let (lower, upper) = highest
                        .or(lowest)
                        .map_or((mean, mean), DurationHistogram::bounds);
                    let hi = if upper.is_finite() { upper } else { lower };
                    limits.1.map_or(hi, |l| hi.min(l)).max(mean)
                });
                Some((min, max))
            }
        };
        Observations {
            count,
            sum,
            buckets,
            range,
        }
    }
}
