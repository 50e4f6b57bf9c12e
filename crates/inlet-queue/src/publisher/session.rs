//! The publisher as the supervisor sees it: its setup (topology, confirm
//! channels), what it does with connection events (blocked, unblocked,
//! broker-closed channels), re-declarations as its own work, channel
//! repair as its watchdog check, and its shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lapin::{Channel, Connection, Event};
use tracing::{debug, info, warn};

use crate::connection::{ConnectionState, close_quietly};
use crate::error::QueueError;
use crate::metrics::{QueueMetrics, Role};
use crate::publisher::link::{ConnFlags, Inner, Link};
use crate::publisher::redeclare::{Redeclare, declare_topology};
use crate::publisher::repair::{open_confirm_channel, repair_channels};
use crate::settings::QueueSettings;
use crate::supervisor::{self, Ended, Session, Step, Stopped, Supervised};

/// The supervisor task of one publisher.
pub(super) async fn run(inner: Arc<Inner>) {
    if let Some(Stopped { conn, kept }) = supervisor::supervise(&*inner).await {
        close_quietly(&conn, "publisher closed", inner.settings.connect_timeout()).await;
        // The channels are dropped only once the connection is closed:
        // lapin closes a channel whose last handle drops while the
        // connection is open, in the background, which races the
        // connection close and logs an ERROR.
        drop(kept);
    }
    inner.set_link(None);
    inner.metrics.set_up(inner.role, false);
    inner.set_state(ConnectionState::Closed);
    debug!(role = inner.role.as_str(), "publisher supervisor stopped");
}

impl Supervised for Inner {
    type Parts = Arc<Link>;
    /// The link withdrawn at the end of the session.
    type Kept = Option<Arc<Link>>;
    type Session<'c> = PubSession<'c>;
    const NOT_READY: &'static str = "topology and channels not ready within connect_timeout_ms";

    fn role(&self) -> Role {
        self.role
    }

    fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn metrics(&self) -> &QueueMetrics {
        &self.metrics
    }

    fn state(&self) -> &tokio::sync::watch::Sender<ConnectionState> {
        &self.state_tx
    }

    fn stop(&self) -> &tokio_util::sync::CancellationToken {
        &self.stop
    }

    /// Declares the topology and opens `publisher_channels` channels in
    /// confirm mode.
    async fn setup(
        &self,
        conn: &Connection,
        keep: &mut Vec<Channel>,
    ) -> Result<Arc<Link>, QueueError> {
        declare_topology(conn, &self.settings, keep).await?;
        let mut channels = Vec::with_capacity(self.settings.publisher_channels);
        for _ in 0..self.settings.publisher_channels {
            let channel = open_confirm_channel(conn).await?;
            keep.push(channel.channel.clone());
            channels.push(Arc::new(channel));
        }
        Ok(Arc::new(Link {
            channels: channels.into_boxed_slice(),
            conn: Arc::new(ConnFlags::new()),
        }))
    }

    /// Publishes the link: publishes use it from now on.
    fn start<'c>(&'c self, conn: &'c Connection, link: Arc<Link>) -> PubSession<'c> {
        let flags = link.conn.clone();
        self.forget_answers();
        self.set_link(Some(link));
        PubSession {
            inner: self,
            conn,
            flags,
            redeclare: Redeclare::new(self, conn),
        }
    }
}

/// How long every publish may be nacked before the connection is replaced.
/// A queue refusing for a reason of its own (`reject-publish` at its
/// length limit) costs a reconnect this often, which is harmless.
const NACKED_FOR_RECONNECT: Duration = Duration::from_secs(2);

/// One connection of a publisher.
pub(super) struct PubSession<'c> {
    inner: &'c Inner,
    conn: &'c Connection,
    flags: Arc<ConnFlags>,
    redeclare: Redeclare<'c>,
}

impl Session for PubSession<'_> {
    type Kept = Option<Arc<Link>>;
    type Work = ();

    async fn on_event(&mut self, event: Event) -> Step {
        let (inner, role) = (self.inner, self.inner.role.as_str());
        match event {
            Event::ConnectionBlocked(reason) => {
                warn!(role, %reason, "broker blocked the connection; publishes fail fast until it unblocks");
                set_blocked(inner, &self.flags, Some(reason));
            }
            Event::ConnectionUnblocked => {
                info!(role, "broker unblocked the connection");
                set_blocked(inner, &self.flags, None);
            }
            Event::SendFlow(active) => {
                // lapin holds back every publish while a channel has flow
                // off: the same as blocked for us.
                set_blocked(
                    inner,
                    &self.flags,
                    (!active).then(|| "channel.flow".to_owned()),
                );
            }
            Event::Error(e) => {
                // (Only channel-level errors reach here.) A channel was
                // closed by the broker (e.g. a publish to a missing
                // exchange). Replace ours if it was one.
                debug!(role, error = %e, "channel-level error");
                if let Err(reason) = repair_channels(inner, self.conn).await {
                    return Step::Break(Ended::Lost(reason));
                }
            }
            _ => {}
        }
        Step::Continue(())
    }

    async fn work(&mut self) {
        self.redeclare.step().await;
    }

    async fn on_work(&mut self, (): ()) -> Step {
        Step::Continue(())
    }

    async fn check(&mut self) -> Step {
        // A quorum queue whose leader moved can leave a channel whose
        // every publish is nacked while new connections publish fine
        // (seen in resilience scenario 17: 503 `queue_nacked` for a
        // minute after the leader's node was killed). A fresh connection
        // gets a fresh view of the queue.
        if let Some(nacked) = self.inner.nacked_for()
            && nacked >= NACKED_FOR_RECONNECT
        {
            return Step::Break(Ended::Lost(format!(
                "every publish answered in the last {nacked:?} was nacked; reconnecting"
            )));
        }
        match repair_channels(self.inner, self.conn).await {
            Ok(()) => Step::Continue(()),
            Err(reason) => Step::Break(Ended::Lost(reason)),
        }
    }

    async fn stopping(&mut self) {}

    /// Withdraws the link (new publishes fail with `Unavailable` at once)
    /// and resolves every publish in flight on it.
    fn end(self) -> Option<Arc<Link>> {
        let PubSession {
            inner,
            flags,
            redeclare,
            ..
        } = self;
        drop(redeclare);
        let old_link = inner.take_link();
        flags.lost.cancel();
        old_link
    }
}

fn set_blocked(inner: &Inner, flags: &ConnFlags, reason: Option<String>) {
    flags.blocked.store(reason.is_some(), Ordering::SeqCst);
    inner.metrics.set_blocked(inner.role, reason.is_some());
    inner.set_state(match reason {
        Some(reason) => ConnectionState::Blocked {
            since: Instant::now(),
            reason,
        },
        None => ConnectionState::Connected,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{PublishError, UnavailableReason};
    use lapin::BasicProperties;
    use std::time::Duration;

    #[tokio::test]
    async fn a_blocked_connection_fails_fast_and_unblocks() {
        let m = QueueMetrics::unregistered().unwrap();
        let inner = Inner::new(QueueSettings::default(), m.clone(), Role::Publisher).unwrap();
        let flags = Arc::new(ConnFlags::new());
        // A link without channels: enough to exercise the gates before
        // any channel is touched.
        inner.set_link(Some(Arc::new(Link {
            channels: Box::new([]),
            conn: flags.clone(),
        })));
        inner.set_state(ConnectionState::Connected);
        let publish = || {
            inner.publish(
                "x".into(),
                "k".into(),
                b"",
                BasicProperties::default(),
                None,
                false,
            )
        };

        set_blocked(&inner, &flags, Some("low on memory".into()));
        assert!(matches!(
            &*inner.state_tx.borrow(),
            ConnectionState::Blocked { reason, .. } if reason == "low on memory"
        ));
        assert_eq!(
            m.connection_blocked.with_label_values(&["publisher"]).get(),
            1
        );
        let t = Instant::now();
        assert_eq!(
            publish().await.unwrap_err(),
            PublishError::unavailable(UnavailableReason::Blocked)
        );
        assert!(t.elapsed() < Duration::from_millis(50));

        set_blocked(&inner, &flags, None);
        assert_eq!(*inner.state_tx.borrow(), ConnectionState::Connected);
        assert_eq!(
            m.connection_blocked.with_label_values(&["publisher"]).get(),
            0
        );
        // Unblocked, the gate opens (here no channel is open, so the next
        // refusal is about the channels, not the block).
        assert_eq!(
            publish().await.unwrap_err(),
            PublishError::unavailable(UnavailableReason::NotConnected)
        );
        assert_eq!(m.publish_total.with_label_values(&["unavailable"]).get(), 2);
        assert_eq!(m.publish_in_flight.get(), 0, "permits and gauge released");
        assert_eq!(
            inner.permits.available_permits(),
            inner.settings.max_in_flight
        );
    }
}
