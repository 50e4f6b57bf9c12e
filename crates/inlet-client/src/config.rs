//! The client's configuration: every option in one struct, held by the
//! [`ClientBuilder`](crate::ClientBuilder) while it is set and by the
//! running client once validated. A leaf module: the builder, the client
//! and the flusher all read it, it reads none of them.

use std::sync::Arc;
use std::time::Duration;

use inlet_domain::{BatchLimits, WireAgent};

use crate::status::ClientEvent;

/// What to do with data while the key is paused (rejected for longer than
/// the auth grace window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenAuthPaused {
    /// Keep recording into the bounded buffer (oldest dropped first when it
    /// is full): nothing is lost if the key is restored before the buffer
    /// wraps. The default.
    #[default]
    Keep,
    /// Drop the buffer when the pause begins and every item recorded while
    /// paused (counted as `auth_paused_drop`); only the probe batch is
    /// kept. For hosts that cannot spare the memory.
    Drop,
}

/// The hook set with [`ClientBuilder::on_event`](crate::ClientBuilder::on_event).
pub(crate) type Hook = Arc<dyn Fn(&ClientEvent) + Send + Sync>;

/// Every option of a client. The builder's setters write these fields; its
/// `build` validates them (and normalizes `environment`) and the client
/// runs with the result.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Name, version and host of the agent, sent with every batch.
    pub agent: WireAgent,
    /// The monitored application; empty until set (it has no default).
    pub app: String,
    pub environment: String,
    pub max_buffer_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_items: usize,
    pub flush_interval: Duration,
    pub request_timeout: Duration,
    pub gzip: bool,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub auth_grace: Duration,
    pub probe_interval: Duration,
    pub when_auth_paused: WhenAuthPaused,
    pub limits: BatchLimits,
}
