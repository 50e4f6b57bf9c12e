//! The state every HTTP worker shares: what the handlers and the
//! middleware read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use inlet_auth::Authenticator;
use inlet_domain::BatchLimits;
use inlet_obs::{Health, ReadinessDetail};
use inlet_queue::Publisher;
use prometheus::Registry;

use crate::budget::Budget;
use crate::metrics::ApiMetrics;
use crate::ratelimit::RateLimiter;
use crate::settings::ApiSettings;

/// Shared state of all workers.
#[derive(Debug)]
pub struct AppState {
    pub(crate) auth: Authenticator,
    pub(crate) publisher: Publisher,
    pub(crate) limiter: RateLimiter,
    pub(crate) settings: ApiSettings,
    pub(crate) limits: BatchLimits,
    pub(crate) metrics: ApiMetrics,
    pub(crate) health: Health,
    pub(crate) registry: Registry,
    /// Push bodies held, until their answer (`api.max_in_flight_bytes`).
    pub(crate) bodies: Budget,
    /// Decompressed bodies while validated: one `api.max_decoded_bytes`
    /// per HTTP worker.
    pub(crate) decoding: Budget,
    /// What the push listener's `/health/ready` says: the details go where
    /// `/metrics` goes (the admin listener, when there is one).
    pub(crate) ready_detail: ReadinessDetail,
    pub(crate) draining: Arc<AtomicBool>,
}

impl AppState {
    /// Whether the listener is closing: new pushes are refused
    /// (`shutting_down`).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on, new pushes are refused.
    pub(crate) fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
