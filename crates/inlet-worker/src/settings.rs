//! `[worker]`: the worker's own settings.

use inlet_domain::InvalidSetting;
use serde::{Deserialize, Serialize};

/// `[worker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Parallel pipelines, each with its own consumer connection (prefetch
    /// per pipeline comes from `[queue] prefetch`). They check, look up
    /// markers and ack in parallel and take turns writing, one
    /// transaction attempt at a time (their transactions would conflict on
    /// the same hot buckets). Default 2.
    pub concurrency: usize,
    /// Most pushes folded into one MongoDB transaction (a combined broker
    /// message holds several; see `[queue] combine_max_parts`). A batch
    /// also ends when the consumer has nothing more to hand out within
    /// `batch_linger_ms`, so without combining it holds at most `[queue]
    /// prefetch` pushes. Default 512: the write's cost is mostly per
    /// transaction, so with combined messages larger batches are what
    /// lets the worker keep up (docs/benchmarks.md, "Worker").
    pub batch_max_messages: usize,
    /// How long a pipeline waits for more messages to fill a batch once it
    /// has one, milliseconds. Default 5.
    pub batch_linger_ms: u64,
    /// Exactly-once effect through MongoDB transactions (needs a replica
    /// set). `false` selects an at-least-once path for standalone servers:
    /// a crash between write and ack may then double count. Default `true`.
    pub exactly_once: bool,
    /// Largest decompressed body the worker decodes, bytes. At least
    /// `[api] max_decoded_bytes` (the settings refuse less: the worker
    /// would dead-letter bodies the API accepted). Default 8388608.
    pub max_decoded_bytes: usize,
    /// First pause before re-checking an unreachable MongoDB,
    /// milliseconds. Default 250.
    pub mongo_retry_initial_ms: u64,
    /// Longest pause between such checks, milliseconds. Default 5000.
    pub mongo_retry_max_ms: u64,
    /// Retention of transaction aggregates, days. Default 30.
    pub retention_transactions_days: u32,
    /// Retention of metric aggregates, days. Default 30.
    pub retention_metrics_days: u32,
    /// Retention of error aggregates and groups (from their last
    /// occurrence), days. Default 30.
    pub retention_errors_days: u32,
    /// How long applied-message markers are kept, hours. A redelivery or
    /// an agent's retry of the same batch later than this would count
    /// twice; batches older than `[limits] max_age_s` (48 h) are refused
    /// anyway. Default 72.
    pub retention_applied_hours: u32,
    /// How long the last point of a cumulative series (`metric_cumulative`)
    /// is kept after it was measured, days. A series silent for longer
    /// starts over: its next point counts whole, as a first point does, so
    /// this should exceed the longest pause of a live series. At least 3
    /// (points up to 48 h old are accepted). Default 30.
    pub retention_cumulative_days: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 2,
            batch_max_messages: 512,
            batch_linger_ms: 5,
            exactly_once: true,
            max_decoded_bytes: 8 << 20,
            mongo_retry_initial_ms: 250,
            mongo_retry_max_ms: 5_000,
            retention_transactions_days: 30,
            retention_metrics_days: 30,
            retention_errors_days: 30,
            retention_applied_hours: 72,
            retention_cumulative_days: 30,
        }
    }
}

impl WorkerSettings {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |key: &str, message: &str| InvalidSetting::err(key, message);
        if self.concurrency == 0 {
            return bad("worker.concurrency", "must be at least 1");
        }
        if self.batch_max_messages == 0 {
            return bad("worker.batch_max_messages", "must be at least 1");
        }
        if self.max_decoded_bytes == 0 {
            return bad("worker.max_decoded_bytes", "must be at least 1");
        }
        if self.retention_applied_hours < 49 {
            return bad(
                "worker.retention_applied_hours",
                "must exceed the 48 h a batch may be old, or retried batches could count twice",
            );
        }
        if self.retention_transactions_days == 0
            || self.retention_metrics_days == 0
            || self.retention_errors_days == 0
        {
            return bad(
                "worker.retention_transactions_days",
                "retention must be at least 1 day",
            );
        }
        if self.retention_cumulative_days < 3 {
            return bad(
                "worker.retention_cumulative_days",
                "must exceed the 48 h a point may be old, or a late point could count whole again",
            );
        }
        if self.mongo_retry_max_ms < self.mongo_retry_initial_ms {
            return bad(
                "worker.mongo_retry_max_ms",
                "must be at least worker.mongo_retry_initial_ms",
            );
        }
        Ok(())
    }
}
