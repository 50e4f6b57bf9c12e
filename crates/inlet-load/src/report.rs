//! What a run measured: [`LoadReport`] and its [`Latency`] percentiles, and
//! the tallies the in-flight requests add to.

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency percentiles of answered requests, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `micros` (sorted in place).
    pub fn of(micros: &mut [u32]) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let rank = |p: f64| {
            let i = ((p / 100.0) * micros.len() as f64).ceil() as usize;
            f64::from(micros[i.clamp(1, micros.len()) - 1]) / 1e3
        };
        let sum: u64 = micros.iter().map(|m| u64::from(*m)).sum();
        Latency {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: f64::from(micros[micros.len() - 1]) / 1e3,
            mean: sum as f64 / micros.len() as f64 / 1e3,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The target rate, requests per second.
    pub target_rps: f64,
    /// Simulated agents.
    pub agents: usize,
    /// Distinct keys used.
    pub keys: usize,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Answers per status.
    pub statuses: BTreeMap<u16, u64>,
    /// Problem codes of non-2xx answers.
    pub codes: BTreeMap<String, u64>,
    /// Requests that got no answer, by kind (`timeout`, `connect`, …).
    pub transport_errors: BTreeMap<String, u64>,
    /// Dispatches more than 10 ms behind schedule (the generator or the
    /// in-flight limit could not keep up).
    pub late: u64,
    /// Items (transactions + metrics + errors) sent.
    pub items_sent: u64,
    /// Body bytes sent (as compressed).
    pub bytes_sent: u64,
    /// Seconds spent dispatching.
    pub dispatch_s: f64,
    /// Seconds from the first dispatch to the last answer.
    pub elapsed_s: f64,
    /// Requests finished (answered or failed) per second over `elapsed_s`.
    pub achieved_rps: f64,
    /// Latency of answered requests.
    pub latency_ms: Latency,
}

impl LoadReport {
    /// Answers with a 2xx status.
    pub fn accepted(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Tallies {
    pub statuses: BTreeMap<u16, u64>,
    pub codes: BTreeMap<String, u64>,
    pub transport_errors: BTreeMap<String, u64>,
    pub micros: Vec<u32>,
    pub items: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(&mut []), Latency::default());
        let mut one = vec![7_000];
        assert_eq!(Latency::of(&mut one).p99, 7.0);
    }
}
