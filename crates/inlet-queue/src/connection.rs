//! What publishers and consumers share about connections: the observable
//! [`ConnectionState`], and opening a connection with a heartbeat, a
//! client-provided name and a hard time bound (and closing it quietly).
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

use crate::error::QueueError;
use crate::metrics::Role;
use crate::settings::{QueueSettings, parse_url, redacted};

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

/// Opens a connection for `role` to the broker at `url` (one of the
/// settings' [`broker_urls`](QueueSettings::broker_urls)), bounded by
/// `connect_timeout_ms`, with the settings' heartbeat and the name
/// `{connection_name}-{role}`.
pub(crate) async fn open(
    settings: &QueueSettings,
    url: &str,
    role: Role,
) -> Result<Connection, QueueError> {
    let connect_err = |reason: String| QueueError::Connect {
        url: redacted(url),
        reason,
    };
    let mut uri = parse_url(url).map_err(connect_err)?;
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
