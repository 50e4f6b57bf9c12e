//! Prometheus metrics of the worker.

use inlet_domain::LATENCY_BUCKETS;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Worker metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    /// `inlet_worker_messages_total{outcome}`: `processed`, `duplicate`,
    /// `retried`, `dead_lettered`, `dropped_provisional`.
    pub messages: IntCounterVec,
    /// `inlet_worker_dropped_provisional_total{reason}`: provisional pushes
    /// whose key the source of truth rejected (`unknown_key`,
    /// `revoked_key`, `account_suspended`, `app_forbidden`).
    pub dropped_provisional: IntCounterVec,
    /// `inlet_worker_dead_letters_total{reason}`: `undecodable`,
    /// `invalid_body`, `invalid_batch`, `no_account`, `max_attempts`.
    pub dead_letters: IntCounterVec,
    /// `inlet_worker_items_total{kind}`: samples written (`transaction`,
    /// `metric`, `error`).
    pub items: IntCounterVec,
    /// `inlet_worker_batch_duration_seconds`: one delivery batch, from
    /// receipt to ack.
    pub batch_duration: Histogram,
    /// `inlet_worker_batch_messages`: messages per delivery batch.
    pub batch_messages: Histogram,
    /// `inlet_worker_mongo_write_duration_seconds`: MongoDB's part of one
    /// write (its attempts and conflict retries, not the waits for its
    /// turn).
    pub write_duration: Histogram,
    /// `inlet_worker_stage_duration_seconds{stage}`: one delivery batch's
    /// time in each step but the write (which is
    /// `inlet_worker_mongo_write_duration_seconds`): `check` (decode,
    /// validate, re-check provisional keys), `dedup` (the applied-marker
    /// lookup), `settle` (the acks of written and duplicate messages).
    pub stage_duration: HistogramVec,
    /// `inlet_worker_transaction_retries_total`: write conflicts retried,
    /// counted as they happen (also those of writes that never commit).
    pub transaction_retries: IntCounter,
    /// `inlet_worker_lag_seconds`: receive-to-processing delay of the
    /// latest message (consumer lag in time).
    pub lag_seconds: prometheus::Gauge,
    /// `inlet_worker_freshness_seconds`: per message written, from the API
    /// receiving it to its effect committed in MongoDB (how stale the
    /// aggregates are; queueing, retries and outages included).
    pub freshness: Histogram,
    /// `inlet_worker_paused`: pipelines paused because MongoDB is
    /// unreachable (they pull nothing meanwhile).
    pub paused: IntGauge,
}

/// Buckets of `inlet_worker_freshness_seconds`: from a quiet pipeline's
/// milliseconds to a backlog drained after an outage.
const FRESHNESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

impl WorkerMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = WorkerMetrics::unregistered()?;
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every collector, for registration and for the metrics-reference
    /// check (which reads their descriptions).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.messages.clone()),
            Box::new(self.dropped_provisional.clone()),
            Box::new(self.dead_letters.clone()),
            Box::new(self.items.clone()),
            Box::new(self.batch_duration.clone()),
            Box::new(self.batch_messages.clone()),
            Box::new(self.write_duration.clone()),
            Box::new(self.stage_duration.clone()),
            Box::new(self.transaction_retries.clone()),
            Box::new(self.lag_seconds.clone()),
            Box::new(self.freshness.clone()),
            Box::new(self.paused.clone()),
        ]
    }

    /// Creates the metrics without registering them.
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(WorkerMetrics {
            messages: IntCounterVec::new(
                Opts::new(
                    "inlet_worker_messages_total",
                    "Messages handled, by outcome.",
                ),
                &["outcome"],
            )?,
            dropped_provisional: IntCounterVec::new(
                Opts::new(
                    "inlet_worker_dropped_provisional_total",
                    "Provisional pushes dropped because the source of truth rejected the key, by reason.",
                ),
                &["reason"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "inlet_worker_dead_letters_total",
                    "Messages dead-lettered, by reason.",
                ),
                &["reason"],
            )?,
            items: IntCounterVec::new(
                Opts::new("inlet_worker_items_total", "Samples written, by kind."),
                &["kind"],
            )?,
            batch_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_worker_batch_duration_seconds",
                    "One delivery batch, receipt to ack.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            batch_messages: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_worker_batch_messages",
                    "Pushes per delivery batch.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ]),
            )?,
            write_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_worker_mongo_write_duration_seconds",
                    "One MongoDB transaction.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            stage_duration: HistogramVec::new(
                HistogramOpts::new(
                    "inlet_worker_stage_duration_seconds",
                    "One delivery batch's time in a step besides the write: check, dedup, settle.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stage"],
            )?,
            transaction_retries: IntCounter::new(
                "inlet_worker_transaction_retries_total",
                "Transactions retried after a write conflict.",
            )?,
            lag_seconds: prometheus::Gauge::new(
                "inlet_worker_lag_seconds",
                "Delay from the API receiving the latest processed message to its processing.",
            )?,
            freshness: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_worker_freshness_seconds",
                    "Per message written: from the API receiving it to its effect committed in MongoDB.",
                )
                .buckets(FRESHNESS_BUCKETS.to_vec()),
            )?,
            paused: IntGauge::new(
                "inlet_worker_paused",
                "Pipelines paused because MongoDB is unreachable.",
            )?,
        })
    }
}
