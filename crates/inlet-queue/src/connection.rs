//! What publishers and consumers share about connections: the observable
//! [`ConnectionState`], the reconnect backoff, and opening a connection
//! with a heartbeat, a client-provided name and a hard time bound.
//!
//! lapin's built-in auto-recovery is deliberately not used: with it,
//! pending confirms hang for the whole outage (and forever if its retries
//! run out), and broker-closed channels are never recovered. Instead each
//! publisher and consumer runs a task of the crate's one connection
//! supervisor (the private `supervisor` module), which drops a failed
//! connection, waits a jittered backoff, and builds everything again
//! (connection, topology, channels, consumer).

use std::time::{Duration, Instant};

use lapin::types::LongString;
use lapin::{Connection, ConnectionProperties};
use rand::Rng;

use crate::error::QueueError;
use crate::metrics::Role;
use crate::settings::{QueueSettings, parse_url};

/// The connection state a publisher or consumer reports (for readiness
/// probes, logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Started; the first connection attempt is under way.
    Connecting,
    /// Connected, topology declared, channels open: ready.
    Connected,
    /// Connected, but the broker blocked the connection (memory or disk
    /// alarm): publishes fail fast until it unblocks.
    Blocked {
        /// When the block started.
        since: Instant,
        /// The broker's reason, e.g. `low on memory`.
        reason: String,
    },
    /// Not connected: the last attempt failed or the connection was lost;
    /// the supervisor keeps retrying with backoff.
    Disconnected {
        /// When the connection was lost (or the first attempt failed).
        since: Instant,
        /// The last error, for logs and readiness details.
        reason: String,
    },
    /// Closed on request; no more reconnects.
    Closed,
}

impl ConnectionState {
    /// Whether publishing (or consuming) can work right now.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }

    /// A short label: `connecting`, `connected`, `blocked`, `disconnected`
    /// or `closed`.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Blocked { .. } => "blocked",
            ConnectionState::Disconnected { .. } => "disconnected",
            ConnectionState::Closed => "closed",
        }
    }
}

/// Exponential backoff with jitter between `initial` and the current cap.
///
/// The cap doubles from `initial` up to `max`; each delay is drawn
/// uniformly from `[initial, cap]` ("full jitter" with a floor of
/// `initial`, so a flapping broker is never hammered in a hot loop).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(settings: &QueueSettings) -> Backoff {
        Backoff {
            initial: Duration::from_millis(settings.reconnect_initial_ms),
            max: Duration::from_millis(settings.reconnect_max_ms),
            failures: 0,
        }
    }

    /// The next delay; each call counts one more consecutive failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = backoff_delay(self.failures, self.initial, self.max, &mut rand::rng());
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// After a success: start again from `initial`.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The cap after `failures` consecutive failures: `initial * 2^failures`,
/// at most `max`.
pub(crate) fn backoff_cap(failures: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    initial
        .saturating_mul(factor)
        .min(max)
        .max(initial.min(max))
}

/// One jittered delay in `[min(initial, max), cap]`.
pub(crate) fn backoff_delay(
    failures: u32,
    initial: Duration,
    max: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let cap = backoff_cap(failures, initial, max);
    let floor = initial.min(cap);
    if cap <= floor {
        return floor;
    }
    let floor_us = floor.as_micros() as u64;
    let cap_us = cap.as_micros() as u64;
    Duration::from_micros(rng.random_range(floor_us..=cap_us))
}

/// Opens a connection for `role`, bounded by `connect_timeout_ms`, with the
/// settings' heartbeat and the name `{connection_name}-{role}`.
pub(crate) async fn open(settings: &QueueSettings, role: Role) -> Result<Connection, QueueError> {
    let connect_err = |reason: String| QueueError::Connect {
        url: settings.redacted_url(),
        reason,
    };
    let mut uri = parse_url(&settings.url).map_err(connect_err)?;
    uri.query.heartbeat = Some(settings.heartbeat_s);
    let props = ConnectionProperties::default().with_connection_name(LongString::from(
        settings.connection_name_for(role.as_str()),
    ));
    match tokio::time::timeout(
        settings.connect_timeout(),
        Connection::connect_uri(uri, props),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect_err(e.to_string())),
        Err(_) => Err(connect_err(format!(
            "no AMQP handshake within {:?}",
            settings.connect_timeout()
        ))),
    }
}

/// Closes `conn` politely, bounded so a dead or blocked peer cannot hold
/// the caller.
pub(crate) async fn close_quietly(conn: &Connection, why: &str, timeout: Duration) {
    if conn.status().connected() {
        let text = lapin::types::ShortString::try_new(why).unwrap_or_else(|_| "closing".into());
        let _ = tokio::time::timeout(timeout, conn.close(200, text)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn cap_doubles_up_to_max() {
        let (i, m) = (100 * MS, 2000 * MS);
        let caps: Vec<u128> = (0..8).map(|f| backoff_cap(f, i, m).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(backoff_cap(u32::MAX, i, m), m, "no overflow");
        assert_eq!(backoff_cap(0, 5 * MS, 2 * MS), 2 * MS, "max wins");
    }

    #[test]
    fn delays_are_bounded_and_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (i, m) = (100 * MS, 2000 * MS);
        for failures in 0..20 {
            let cap = backoff_cap(failures, i, m);
            let mut seen = Vec::new();
            for _ in 0..200 {
                let d = backoff_delay(failures, i, m, &mut rng);
                assert!(d >= i && d <= cap, "{d:?} outside [{i:?}, {cap:?}]");
                seen.push(d);
            }
            if cap > i {
                // Jitter: draws are spread over the range, not one value.
                let min = seen.iter().min().copied().unwrap();
                let max = seen.iter().max().copied().unwrap();
                assert!(
                    max - min > (cap - i) / 2,
                    "poor spread at {failures}: {min:?}..{max:?}"
                );
            } else {
                assert!(seen.iter().all(|d| *d == i));
            }
        }
    }

    #[test]
    fn backoff_resets_after_success() {
        let s = QueueSettings::default();
        let mut b = Backoff::new(&s);
        assert_eq!(b.next_delay(), 100 * MS, "first delay is the initial one");
        for _ in 0..10 {
            assert!(b.next_delay() <= 2000 * MS);
        }
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn states_have_labels() {
        assert!(ConnectionState::Connected.is_connected());
        assert!(
            !ConnectionState::Blocked {
                since: Instant::now(),
                reason: "x".into()
            }
            .is_connected()
        );
        assert_eq!(ConnectionState::Closed.label(), "closed");
    }
}
