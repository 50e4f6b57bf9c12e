//! Prometheus metrics of the queue layer (`inlet_queue_*`).
//!
//! [`QueueMetrics::register`] registers them once on the process registry;
//! the struct is cheap to clone and shared by publishers and consumers.
//! Label values are fixed sets chosen here (or sanitised, for dead-letter
//! reasons), so cardinality stays bounded. Hot-path counters are resolved
//! to their label children once, at registration.

use inlet_domain::LATENCY_BUCKETS;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The role of a connection, the `role` label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A [`crate::Publisher`] started by the application (the API).
    Publisher,
    /// A [`crate::Consumer`]'s delivery connection.
    Consumer,
    /// The publisher a consumer uses for retry and dead-letter copies.
    Retry,
}

impl Role {
    /// The label value (`publisher`, `consumer`, `retry`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Consumer => "consumer",
            Role::Retry => "retry",
        }
    }
}

/// Per-outcome publish counters, resolved once.
#[derive(Clone, Debug)]
pub(crate) struct PublishOutcomes {
    pub(crate) ack: IntCounter,
    pub(crate) nack: IntCounter,
    pub(crate) returned: IntCounter,
    pub(crate) timeout: IntCounter,
    pub(crate) unavailable: IntCounter,
    pub(crate) backpressure: IntCounter,
}

/// Every `inlet_queue_*` metric.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    /// `inlet_queue_publish_duration_seconds` (histogram, no labels): from
    /// the publish call to the broker's confirm, for every outcome but
    /// `backpressure` and `unavailable` refusals that never reached the
    /// broker.
    pub publish_duration_seconds: Histogram,
    /// `inlet_queue_publish_total{outcome}`: publishes by outcome, one of
    /// `ack`, `nack`, `returned`, `timeout`, `unavailable`, `backpressure`.
    pub publish_total: IntCounterVec,
    /// `inlet_queue_publish_parts` (histogram, no labels): pushes per
    /// message published by `Publisher::publish` (1 unless pushes were
    /// combined; see `combine_max_parts`).
    pub publish_parts: Histogram,
    /// `inlet_queue_publish_in_flight` (gauge, no labels): publishes
    /// awaiting a confirm right now, over all publishers of the process.
    pub publish_in_flight: IntGauge,
    /// `inlet_queue_reconnects_total{role}`: successful re-connections
    /// after a lost connection; role is `publisher`, `consumer` or `retry`.
    pub reconnects_total: IntCounterVec,
    /// `inlet_queue_connection_up{role}` (gauge 0/1): whether the role's
    /// connection is established.
    pub connection_up: IntGaugeVec,
    /// `inlet_queue_connection_blocked{role}` (gauge 0/1): whether the
    /// broker blocked the role's connection (resource alarm).
    pub connection_blocked: IntGaugeVec,
    /// `inlet_queue_consumer_deliveries_total` (no labels): deliveries
    /// handed to the worker.
    pub consumer_deliveries_total: IntCounter,
    /// `inlet_queue_consumer_acks_total` (no labels): deliveries acked
    /// after successful processing.
    pub consumer_acks_total: IntCounter,
    /// `inlet_queue_consumer_requeues_total` (no labels): deliveries handed
    /// back with requeue (the worker could not process them now).
    pub consumer_requeues_total: IntCounter,
    /// `inlet_queue_consumer_retries_total` (no labels): retries scheduled
    /// through a delay queue.
    pub consumer_retries_total: IntCounter,
    /// `inlet_queue_consumer_dead_letters_total{reason}`: messages moved
    /// to the dead-letter queue; reason is a short label such as
    /// `undecodable` or `max_attempts` (anything that is not 1–32 chars of
    /// `a-z 0-9 _` is counted as `other`).
    pub consumer_dead_letters_total: IntCounterVec,
    pub(crate) outcomes: PublishOutcomes,
}

impl QueueMetrics {
    /// Creates the metrics and registers them on `registry`; fails only on
    /// a duplicate registration.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = QueueMetrics::unregistered()?;
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every collector, for registration and for the metrics-reference
    /// check (which reads their descriptions).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.publish_duration_seconds.clone()),
            Box::new(self.publish_total.clone()),
            Box::new(self.publish_parts.clone()),
            Box::new(self.publish_in_flight.clone()),
            Box::new(self.reconnects_total.clone()),
            Box::new(self.connection_up.clone()),
            Box::new(self.connection_blocked.clone()),
            Box::new(self.consumer_deliveries_total.clone()),
            Box::new(self.consumer_acks_total.clone()),
            Box::new(self.consumer_requeues_total.clone()),
            Box::new(self.consumer_retries_total.clone()),
            Box::new(self.consumer_dead_letters_total.clone()),
        ]
    }

    /// The metrics without a registry (tests, benchmarks, tools that do
    /// not expose metrics).
    pub fn unregistered() -> prometheus::Result<Self> {
        let publish_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "inlet_queue_publish_duration_seconds",
                "Time from a publish call to the broker's confirm, seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let publish_total = IntCounterVec::new(
            Opts::new(
                "inlet_queue_publish_total",
                "Publishes by outcome (ack, nack, returned, timeout, unavailable, backpressure).",
            ),
            &["outcome"],
        )?;
        let outcomes = PublishOutcomes {
            ack: publish_total.with_label_values(&["ack"]),
            nack: publish_total.with_label_values(&["nack"]),
            returned: publish_total.with_label_values(&["returned"]),
            timeout: publish_total.with_label_values(&["timeout"]),
            unavailable: publish_total.with_label_values(&["unavailable"]),
            backpressure: publish_total.with_label_values(&["backpressure"]),
        };
        let reconnects_total = IntCounterVec::new(
            Opts::new(
                "inlet_queue_reconnects_total",
                "Re-established connections after a loss, by role.",
            ),
            &["role"],
        )?;
        let connection_up = IntGaugeVec::new(
            Opts::new(
                "inlet_queue_connection_up",
                "Whether the role's broker connection is up (0/1).",
            ),
            &["role"],
        )?;
        let connection_blocked = IntGaugeVec::new(
            Opts::new(
                "inlet_queue_connection_blocked",
                "Whether the broker blocked the role's connection (0/1).",
            ),
            &["role"],
        )?;
        for role in [Role::Publisher, Role::Consumer, Role::Retry] {
            reconnects_total.with_label_values(&[role.as_str()]);
            connection_up.with_label_values(&[role.as_str()]);
            connection_blocked.with_label_values(&[role.as_str()]);
        }
        let consumer_dead_letters_total = IntCounterVec::new(
            Opts::new(
                "inlet_queue_consumer_dead_letters_total",
                "Messages moved to the dead-letter queue, by reason label.",
            ),
            &["reason"],
        )?;
        let publish_parts = Histogram::with_opts(
            HistogramOpts::new(
                "inlet_queue_publish_parts",
                "Pushes per published message (above 1 when pushes were combined).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        Ok(QueueMetrics {
            publish_duration_seconds,
            publish_total,
            publish_parts,
            publish_in_flight: IntGauge::new(
                "inlet_queue_publish_in_flight",
                "Publishes awaiting a broker confirm.",
            )?,
            reconnects_total,
            connection_up,
            connection_blocked,
            consumer_deliveries_total: IntCounter::new(
                "inlet_queue_consumer_deliveries_total",
                "Deliveries handed to the worker.",
            )?,
            consumer_acks_total: IntCounter::new(
                "inlet_queue_consumer_acks_total",
                "Deliveries acknowledged after processing.",
            )?,
            consumer_requeues_total: IntCounter::new(
                "inlet_queue_consumer_requeues_total",
                "Deliveries handed back to the broker with requeue.",
            )?,
            consumer_retries_total: IntCounter::new(
                "inlet_queue_consumer_retries_total",
                "Retries scheduled through a delay queue.",
            )?,
            consumer_dead_letters_total,
            outcomes,
        })
    }

    pub(crate) fn set_up(&self, role: Role, up: bool) {
        self.connection_up
            .with_label_values(&[role.as_str()])
            .set(i64::from(up));
    }

    pub(crate) fn set_blocked(&self, role: Role, blocked: bool) {
        self.connection_blocked
            .with_label_values(&[role.as_str()])
            .set(i64::from(blocked));
    }

    pub(crate) fn reconnected(&self, role: Role) {
        self.reconnects_total
            .with_label_values(&[role.as_str()])
            .inc();
    }

    pub(crate) fn dead_lettered(&self, reason: &str) {
        self.consumer_dead_letters_total
            .with_label_values(&[reason_label(reason)])
            .inc();
    }
}

/// The metric label for a dead-letter reason: the reason itself when it
/// is a short stable label (1–32 chars of `a-z 0-9 _`), else `other`.
pub(crate) fn reason_label(reason: &str) -> &str {
    let ok = !reason.is_empty()
        && reason.len() <= 32
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { reason } else { "other" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_with_documented_names() {
        let reg = Registry::new();
        let m = QueueMetrics::register(&reg).unwrap();
        m.outcomes.ack.inc();
        m.dead_lettered("undecodable");
        m.dead_lettered("Database exploded at 12:00");
        let names: Vec<String> = reg.gather().iter().map(|f| f.name().to_owned()).collect();
        for n in [
            "inlet_queue_publish_duration_seconds",
            "inlet_queue_publish_total",
            "inlet_queue_publish_in_flight",
            "inlet_queue_reconnects_total",
            "inlet_queue_connection_up",
            "inlet_queue_connection_blocked",
            "inlet_queue_consumer_deliveries_total",
            "inlet_queue_consumer_acks_total",
            "inlet_queue_consumer_requeues_total",
            "inlet_queue_consumer_retries_total",
            "inlet_queue_consumer_dead_letters_total",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert_eq!(
            m.publish_total.with_label_values(&["ack"]).get(),
            1,
            "the resolved child is the labelled series"
        );
        assert_eq!(
            m.consumer_dead_letters_total
                .with_label_values(&["other"])
                .get(),
            1
        );
        assert!(QueueMetrics::register(&reg).is_err(), "duplicates refused");
    }

    #[test]
    fn reason_labels_are_bounded() {
        assert_eq!(reason_label("max_attempts"), "max_attempts");
        assert_eq!(reason_label(""), "other");
        assert_eq!(reason_label("Bad Thing"), "other");
        assert_eq!(reason_label(&"a".repeat(33)), "other");
    }
}
