//! Prometheus metrics of the auth path and the key sync.

use inlet_domain::LATENCY_BUCKETS;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Metrics of the [`crate::Authenticator`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthMetrics {
    /// `inlet_auth_decisions_total{verdict, source}`: decisions by verdict
    /// code (`accepted`, `accepted_provisional`, `unknown_key`, …,
    /// `auth_unavailable`) and deciding source (`local`, `cache`, `redis`,
    /// `mongo`, `file`, `memory`, `stale`, `signature`, `none`).
    pub decisions: IntCounterVec,
    /// `inlet_auth_undecidable_total{reason}`: undecidable outcomes (before
    /// stale/provisional rescue) by reason.
    pub undecidable: IntCounterVec,
    /// `inlet_auth_store_lookup_duration_seconds{store}`: one store lookup.
    pub lookup_duration: HistogramVec,
    /// `inlet_auth_store_lookups_total{store, outcome}`: outcome is
    /// `found`, `absent`, `not_loaded`, `timeout`, `unavailable`, `corrupt`.
    pub lookups: IntCounterVec,
    /// `inlet_auth_cache_requests_total{result}`: `hit` or `miss`.
    pub cache_requests: IntCounterVec,
    /// `inlet_auth_cache_evictions_total{cause}`: `expired`, `size`,
    /// `invalidated`.
    pub cache_evictions: IntCounterVec,
    /// `inlet_auth_cache_entries`: entries in the decision cache.
    pub cache_entries: IntGauge,
    /// `inlet_auth_confirmations_throttled_total`: a primary's rejections
    /// (absent, revoked, suspended) the source of truth was not asked to
    /// confirm (rate limit).
    pub confirmations_throttled: IntCounter,
    /// `inlet_auth_confirmations_total{kind}`: a primary's rejections the
    /// source of truth was asked to confirm, by budget (`absent`,
    /// `rejection`).
    pub confirmations: IntCounterVec,
    /// `inlet_auth_store_ready{store}`: 1 when the store can decide.
    pub store_ready: IntGaugeVec,
    /// `inlet_auth_can_decide`: 1 when some store can decide.
    pub can_decide: IntGauge,
    /// `inlet_auth_invalidations_total{scope}`: cache invalidations received
    /// (`key` or `all`).
    pub invalidations: IntCounterVec,
    /// `inlet_auth_invalidation_listener_up`: 1 while subscribed to the
    /// invalidation channel.
    pub invalidation_listener_up: IntGauge,
}

impl AuthMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = AuthMetrics::unregistered()?;
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every collector, for registration and for the metrics-reference
    /// check (which reads their descriptions).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.decisions.clone()),
            Box::new(self.undecidable.clone()),
            Box::new(self.lookup_duration.clone()),
            Box::new(self.lookups.clone()),
            Box::new(self.cache_requests.clone()),
            Box::new(self.cache_evictions.clone()),
            Box::new(self.cache_entries.clone()),
            Box::new(self.confirmations_throttled.clone()),
            Box::new(self.confirmations.clone()),
            Box::new(self.store_ready.clone()),
            Box::new(self.can_decide.clone()),
            Box::new(self.invalidations.clone()),
            Box::new(self.invalidation_listener_up.clone()),
        ]
    }

    /// Creates the metrics without registering them (tests, tools).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(AuthMetrics {
            decisions: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_decisions_total",
                    "Auth decisions by verdict and deciding source.",
                ),
                &["verdict", "source"],
            )?,
            undecidable: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_undecidable_total",
                    "Lookups no store could decide, by reason (before stale or provisional acceptance).",
                ),
                &["reason"],
            )?,
            lookup_duration: HistogramVec::new(
                HistogramOpts::new(
                    "inlet_auth_store_lookup_duration_seconds",
                    "Duration of one key-store lookup.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["store"],
            )?,
            lookups: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_store_lookups_total",
                    "Key-store lookups by store and outcome.",
                ),
                &["store", "outcome"],
            )?,
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_cache_requests_total",
                    "Decision-cache requests by result (hit, miss).",
                ),
                &["result"],
            )?,
            cache_evictions: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_cache_evictions_total",
                    "Decision-cache evictions by cause.",
                ),
                &["cause"],
            )?,
            cache_entries: IntGauge::new(
                "inlet_auth_cache_entries",
                "Entries in the decision cache.",
            )?,
            confirmations_throttled: IntCounter::new(
                "inlet_auth_confirmations_throttled_total",
                "A primary's rejections not confirmed with the source of truth because of the confirmation rate limit.",
            )?,
            confirmations: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_confirmations_total",
                    "A primary's rejections confirmed with the source of truth, by budget (absent, rejection).",
                ),
                &["kind"],
            )?,
            store_ready: IntGaugeVec::new(
                Opts::new(
                    "inlet_auth_store_ready",
                    "1 when the key store can decide (populated and reachable).",
                ),
                &["store"],
            )?,
            can_decide: IntGauge::new(
                "inlet_auth_can_decide",
                "1 when at least one key store can decide; readiness follows it.",
            )?,
            invalidations: IntCounterVec::new(
                Opts::new(
                    "inlet_auth_invalidations_total",
                    "Cache invalidations received, by scope (key, all).",
                ),
                &["scope"],
            )?,
            invalidation_listener_up: IntGauge::new(
                "inlet_auth_invalidation_listener_up",
                "1 while subscribed to the key invalidation channel.",
            )?,
        })
    }
}

/// Metrics of the key sync (`inlet sync`).
#[derive(Clone, Debug)]
pub struct SyncMetrics {
    /// `inlet_sync_generation`: the generation the marker points to.
    pub generation: IntGauge,
    /// `inlet_sync_keys`: keys in the current generation.
    pub keys: IntGauge,
    /// `inlet_sync_backfill_duration_seconds`: one full load.
    pub backfill_duration: Histogram,
    /// `inlet_sync_backfills_total{outcome}`: `completed`, `superseded` (another
    /// sync committed a newer generation), `lease_lost` (Redis flushed during
    /// the load) or `failed`.
    pub backfills: IntCounterVec,
    /// `inlet_sync_changes_total{mode, kind}`: changes applied while
    /// following (`mode`: `stream` or `poll`; `kind`: `key`, `account`,
    /// `key_deleted`, `account_deleted`).
    pub changes: IntCounterVec,
    /// `inlet_sync_lag_seconds`: age of the newest change applied when it
    /// was applied (source-of-truth `updated_at` to Redis write).
    pub lag_seconds: prometheus::Gauge,
    /// `inlet_sync_last_change_timestamp_seconds`: when a change was last
    /// applied (Unix seconds).
    pub last_change: prometheus::Gauge,
    /// `inlet_sync_following`: 1 while following changes, 0 otherwise.
    pub following: IntGauge,
    /// `inlet_sync_unusable_keys{reason}`: key documents left out of Redis
    /// at the last load (`unreadable`: the document or its account's cannot
    /// be read — pushes with such a key get 503 `key_record_unreadable`;
    /// `no_account`: the account does not exist — 401).
    pub unusable_keys: IntGaugeVec,
}

impl SyncMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = SyncMetrics::unregistered()?;
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every collector, for registration and for the metrics-reference
    /// check (which reads their descriptions).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.generation.clone()),
            Box::new(self.keys.clone()),
            Box::new(self.backfill_duration.clone()),
            Box::new(self.backfills.clone()),
            Box::new(self.changes.clone()),
            Box::new(self.lag_seconds.clone()),
            Box::new(self.last_change.clone()),
            Box::new(self.following.clone()),
            Box::new(self.unusable_keys.clone()),
        ]
    }

    /// Creates the metrics without registering them.
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(SyncMetrics {
            generation: IntGauge::new(
                "inlet_sync_generation",
                "Key generation the Redis marker points to.",
            )?,
            keys: IntGauge::new("inlet_sync_keys", "Keys in the current Redis generation.")?,
            backfill_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "inlet_sync_backfill_duration_seconds",
                    "Duration of one full key load.",
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ]),
            )?,
            backfills: IntCounterVec::new(
                Opts::new(
                    "inlet_sync_backfills_total",
                    "Full key loads by outcome (completed, superseded, lease_lost, failed).",
                ),
                &["outcome"],
            )?,
            changes: IntCounterVec::new(
                Opts::new(
                    "inlet_sync_changes_total",
                    "Changes applied while following, by mode and kind.",
                ),
                &["mode", "kind"],
            )?,
            lag_seconds: prometheus::Gauge::new(
                "inlet_sync_lag_seconds",
                "Age of the latest applied change when it reached Redis.",
            )?,
            last_change: prometheus::Gauge::new(
                "inlet_sync_last_change_timestamp_seconds",
                "When a change was last applied to Redis (Unix seconds).",
            )?,
            following: IntGauge::new("inlet_sync_following", "1 while the sync follows changes.")?,
            unusable_keys: IntGaugeVec::new(
                Opts::new(
                    "inlet_sync_unusable_keys",
                    "Key documents left out of Redis at the last load, by reason (unreadable, no_account).",
                ),
                &["reason"],
            )?,
        })
    }
}
