//! The one connection supervisor behind [`Publisher`](crate::Publisher)
//! and [`Consumer`](crate::Consumer).
//!
//! [`supervise`] keeps one role connected until its stop token is
//! cancelled. It owns everything the roles have in common:
//!
//! - **establish**: [`open`] to one of the settings' broker URLs (bounded
//!   by `connect_timeout_ms`), listen to
//!   the connection's events at once, then the role's
//!   [`Supervised::setup`] (topology, channels, consumer) under one more
//!   `connect_timeout_ms`. On failure the connection is closed quietly
//!   (at most 1 s), and the channels the setup opened are dropped only
//!   after that close (lapin closes a channel whose last handle drops while
//!   its connection is open, in the background, racing the connection
//!   close and logging an ERROR);
//! - **the session**: `up` metric, [`ConnectionState::Connected`], then one
//!   loop, in this order of priority: the stop token (the role's
//!   [`Session::stopping`], then [`Ended::Stop`]); the connection's events
//!   (the stream ending or a connection-level error is
//!   [`Ended::Lost`], anything else goes to [`Session::on_event`]); the
//!   role's own [`Session::work`]; a watchdog every [`WATCHDOG_PERIOD`]
//!   (covers lapin paths that end without an event: the connection not
//!   `connected()` is lost, otherwise [`Session::check`]). Each handler runs
//!   to its end before the next one starts;
//! - **after a loss**: `up` and `blocked` metrics down, the connection
//!   closed quietly, [`ConnectionState::Disconnected`] keeping the `since`
//!   of the first failure of the outage, a jittered exponential backoff
//!   (reset after each successful establish), and again;
//! - **on stop**: the connection and what the session kept are handed back
//!   to the caller, which closes them when its own shutdown allows (the
//!   publisher at once, the consumer once the work handed out is settled).

use std::ops::ControlFlow;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use inlet_domain::backoff::{Backoff, Jitter};
use lapin::{Channel, Connection, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::connection::{ConnectionState, close_quietly, open};
use crate::error::QueueError;
use crate::metrics::{QueueMetrics, Role};
use crate::settings::{QueueSettings, redacted};

/// How often the supervisor double-checks the connection status besides
/// listening to events.
pub(crate) const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);

/// How long a session must have lasted for its loss to start a new row of
/// failures (every other node tried at once again): a node that accepts
/// connections and drops them at once counts as failed, so flapping nodes
/// are never retried in a hot loop.
pub(crate) const STABLE_SESSION: Duration = Duration::from_secs(2);

/// How long closing an abandoned (lost, or half set up) connection may take.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection's event stream.
pub(crate) type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Why a session ended.
pub(crate) enum Ended {
    /// Stopped on request (or nobody is left to serve): no reconnect.
    Stop,
    /// The connection (or something the role needs on it) is gone: the
    /// reason, for logs and [`ConnectionState::Disconnected`].
    Lost(String),
}

/// What a session hook says: go on, or end the session.
pub(crate) type Step = ControlFlow<Ended>;

/// A role the supervisor keeps connected.
pub(crate) trait Supervised: Sync {
    /// What [`Self::setup`] builds on a fresh connection.
    type Parts: Send;
    /// What a session leaves behind when it ends, dropped only after its
    /// connection is closed.
    type Kept: Send;
    /// One established connection, as the role follows it.
    type Session<'c>: Session<Kept = Self::Kept>
    where
        Self: 'c;
    /// The reason of a setup that took longer than `connect_timeout_ms`.
    const NOT_READY: &'static str;

    /// The metrics label and connection-name suffix.
    fn role(&self) -> Role;
    fn settings(&self) -> &QueueSettings;
    fn metrics(&self) -> &QueueMetrics;
    /// Where the connection state is published.
    fn state(&self) -> &watch::Sender<ConnectionState>;
    /// Cancelled to stop for good.
    fn stop(&self) -> &CancellationToken;

    /// Declares the topology and opens what the role needs on `conn`.
    /// Every channel it opens is also pushed to `keep`, so that a setup
    /// that fails or times out drops it only after the connection is
    /// closed.
    fn setup(
        &self,
        conn: &Connection,
        keep: &mut Vec<Channel>,
    ) -> impl Future<Output = Result<Self::Parts, QueueError>> + Send;

    /// Makes what the setup built live (called before the state says
    /// `Connected`).
    fn start<'c>(&'c self, conn: &'c Connection, parts: Self::Parts) -> Self::Session<'c>;
}

/// The role-specific hooks of one session (see the module docs for when
/// each is called).
pub(crate) trait Session: Send {
    /// See [`Supervised::Kept`].
    type Kept: Send;
    /// What [`Self::work`] yields.
    type Work: Send;

    /// A connection event other than a connection-level error.
    fn on_event(&mut self, event: Event) -> impl Future<Output = Step> + Send;
    /// The role's own next thing to handle. Must be cancel-safe: it is
    /// dropped whenever something of higher priority is ready.
    fn work(&mut self) -> impl Future<Output = Self::Work> + Send;
    /// Handles what [`Self::work`] yielded.
    fn on_work(&mut self, work: Self::Work) -> impl Future<Output = Step> + Send;
    /// The watchdog's role-specific check (the connection is connected).
    fn check(&mut self) -> impl Future<Output = Step> + Send;
    /// The stop token was cancelled: wind down before the session ends.
    fn stopping(&mut self) -> impl Future<Output = ()> + Send;
    /// The session is over (the connection is not closed yet).
    fn end(self) -> Self::Kept;
}

/// A session that ended with [`Ended::Stop`]: the caller closes `conn`,
/// then drops `kept`.
pub(crate) struct Stopped<K> {
    pub(crate) conn: Connection,
    pub(crate) kept: K,
}

/// Keeps `role` connected until its stop token is cancelled. Returns the
/// connection of a session that ended with [`Ended::Stop`], or `None` when
/// the stop came while not connected.
pub(crate) async fn supervise<R: Supervised>(role: &R) -> Option<Stopped<R::Kept>> {
    let label = role.role().as_str();
    let settings = role.settings();
    let metrics = role.metrics();
    let mut backoff = reconnect_backoff(settings);
    let mut nodes = Nodes::new(settings);
    let mut connected_before = false;
    loop {
        let url = nodes.current();
        let attempt = tokio::select! {
            biased;
            () = role.stop().cancelled() => return None,
            r = establish(role, url) => r,
        };
        match attempt {
            Ok((conn, parts, events)) => {
                backoff.reset();
                if connected_before {
                    metrics.reconnected(role.role());
                    info!(role = label, url = %redacted(url), "reconnected to the broker");
                } else {
                    info!(role = label, url = %redacted(url), "connected to the broker");
                }
                connected_before = true;
                let since = Instant::now();
                let (ended, kept) = {
                    let mut session = role.start(&conn, parts);
                    metrics.set_up(role.role(), true);
                    set_state(role.state(), ConnectionState::Connected);
                    let ended = follow(&conn, &mut session, events, role.stop()).await;
                    (ended, session.end())
                };
                metrics.set_up(role.role(), false);
                metrics.set_blocked(role.role(), false);
                match ended {
                    Ended::Stop => return Some(Stopped { conn, kept }),
                    Ended::Lost(reason) => {
                        warn!(role = label, url = %redacted(url), %reason, "broker connection lost; reconnecting");
                        if since.elapsed() >= STABLE_SESSION {
                            nodes.connected();
                        }
                        // Not connected from here on: the state must not
                        // call the abandoned connection live while it closes.
                        set_disconnected(role.state(), reason);
                        close_quietly(&conn, "connection abandoned", ABANDON_TIMEOUT).await;
                        drop(kept);
                    }
                }
            }
            Err(e) => {
                warn!(role = label, error = %e, "cannot connect to the broker; retrying");
                set_disconnected(role.state(), e.to_string());
            }
        }
        if nodes.failed() {
            continue;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = role.stop().cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Which broker URL the supervisor connects to next.
struct Nodes<'s> {
    urls: Vec<&'s str>,
    at: usize,
    /// Failures in a row since the last established connection.
    failures: usize,
}

impl<'s> Nodes<'s> {
    fn new(settings: &'s QueueSettings) -> Nodes<'s> {
        Nodes {
            urls: settings.broker_urls().collect(),
            at: 0,
            failures: 0,
        }
    }

    fn current(&self) -> &'s str {
        self.urls[self.at]
    }

    /// A session on the current node lasted (see [`STABLE_SESSION`]):
    /// its loss starts a new row of failures.
    fn connected(&mut self) {
        self.failures = 0;
    }

    /// The current node failed (or was lost): moves to the next one.
    /// Whether it is tried at once, because some node has not failed yet in
    /// this row of failures; otherwise the caller backs off first.
    fn failed(&mut self) -> bool {
        self.at = (self.at + 1) % self.urls.len();
        self.failures += 1;
        if self.failures < self.urls.len() {
            true
        } else {
            self.failures = 0;
            false
        }
    }
}

/// Connects to `url` and runs the role's setup, each within
/// `connect_timeout_ms`.
async fn establish<R: Supervised>(
    role: &R,
    url: &str,
) -> Result<(Connection, R::Parts, Events), QueueError> {
    let settings = role.settings();
    let conn = open(settings, url, role.role()).await?;
    // Listen right away: events are only queued while a listener exists.
    let events: Events = Box::pin(conn.events_listener());
    let mut keep = Vec::new();
    let failure = match tokio::time::timeout(
        settings.connect_timeout(),
        role.setup(&conn, &mut keep),
    )
    .await
    {
        Ok(Ok(parts)) => return Ok((conn, parts, events)),
        Ok(Err(e)) => ("setup failed", e),
        Err(_) => (
            "setup timed out",
            QueueError::Connect {
                url: redacted(url),
                reason: R::NOT_READY.into(),
            },
        ),
    };
    close_quietly(&conn, failure.0, ABANDON_TIMEOUT).await;
    drop(keep);
    Err(failure.1)
}

/// Follows one connection until the session ends.
async fn follow<S: Session>(
    conn: &Connection,
    session: &mut S,
    mut events: Events,
    stop: &CancellationToken,
) -> Ended {
    let mut watchdog = tokio::time::interval(WATCHDOG_PERIOD);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            biased;
            () = stop.cancelled() => {
                session.stopping().await;
                ControlFlow::Break(Ended::Stop)
            }
            ev = events.next() => match ev {
                None => ControlFlow::Break(Ended::Lost("connection event stream ended".into())),
                Some(Event::Error(e)) if !e.is_amqp_soft_error() => {
                    ControlFlow::Break(Ended::Lost(e.to_string()))
                }
                Some(event) => session.on_event(event).await,
            },
            work = session.work() => session.on_work(work).await,
            _ = watchdog.tick() => {
                if conn.status().connected() {
                    session.check().await
                } else {
                    ControlFlow::Break(Ended::Lost("connection no longer connected".into()))
                }
            }
        };
        if let ControlFlow::Break(ended) = step {
            return ended;
        }
    }
}

/// The reconnect schedule: doubling from `reconnect_initial_ms` to
/// `reconnect_max_ms`, each delay drawn from `[initial, ceiling]` (full
/// jitter with a floor, so a flapping broker is never hammered in a hot
/// loop).
fn reconnect_backoff(settings: &QueueSettings) -> Backoff {
    Backoff::new(
        Duration::from_millis(settings.reconnect_initial_ms),
        Duration::from_millis(settings.reconnect_max_ms),
    )
    .with_jitter(Jitter::Floor)
}

/// Publishes `state` (watchers are woken only by a change).
pub(crate) fn set_state(tx: &watch::Sender<ConnectionState>, state: ConnectionState) {
    tx.send_if_modified(|s| {
        if *s == state {
            false
        } else {
            *s = state;
            true
        }
    });
}

/// [`ConnectionState::Disconnected`] with `reason`, keeping the `since` of
/// the first failure of an outage.
fn set_disconnected(tx: &watch::Sender<ConnectionState>, reason: String) {
    let since = match &*tx.borrow() {
        ConnectionState::Disconnected { since, .. } => *since,
        _ => Instant::now(),
    };
    set_state(tx, ConnectionState::Disconnected { since, reason });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reconnect_delays_follow_the_settings_and_reset_after_success() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let s = QueueSettings::default();
        let (initial, max) = (100 * MS, 2000 * MS);
        assert_eq!((s.reconnect_initial_ms, s.reconnect_max_ms), (100, 2000));
        let mut b = reconnect_backoff(&s);
        assert_eq!(
            b.next_delay_with(&mut rng),
            initial,
            "first delay is the initial one"
        );
        let mut seen = Vec::new();
        for _ in 0..200 {
            let d = b.next_delay_with(&mut rng);
            assert!(
                d >= initial && d <= max,
                "{d:?} outside [{initial:?}, {max:?}]"
            );
            seen.push(d);
        }
        // Jittered: spread over the range, not one value.
        let (lo, hi) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
        assert!(
            *hi - *lo > (max - initial) / 2,
            "poor spread: {lo:?}..{hi:?}"
        );
        b.reset();
        assert_eq!(b.next_delay_with(&mut rng), initial);
    }

    #[test]
    fn a_failed_node_hands_over_to_the_next_at_once_until_all_failed() {
        let one = QueueSettings::default();
        let mut n = Nodes::new(&one);
        assert!(!n.failed(), "one broker: every failure backs off");
        assert!(!n.failed());
        assert_eq!(n.current(), one.url);

        let three = QueueSettings {
            failover_urls: vec!["amqp://b/%2f".into(), "amqp://c/%2f".into()],
            ..QueueSettings::default()
        };
        let mut n = Nodes::new(&three);
        assert_eq!(n.current(), three.url);
        // The first node is lost after a session: b and c at once, then a
        // backoff before a again.
        assert!(n.failed());
        assert_eq!(n.current(), "amqp://b/%2f");
        assert!(n.failed());
        assert_eq!(n.current(), "amqp://c/%2f");
        assert!(!n.failed());
        assert_eq!(n.current(), three.url);
        // A session that lasted resets the row: b connects and is lost
        // later, then c and a are tried at once.
        assert!(n.failed());
        n.connected();
        assert!(n.failed());
        assert!(n.failed());
        assert_eq!(n.current(), three.url);
    }

    #[test]
    fn an_outage_keeps_its_first_since() {
        let (tx, _rx) = watch::channel(ConnectionState::Connecting);
        set_disconnected(&tx, "refused".into());
        let ConnectionState::Disconnected { since: first, .. } = tx.borrow().clone() else {
            panic!("not disconnected: {:?}", tx.borrow());
        };
        std::thread::sleep(Duration::from_millis(5));
        set_disconnected(&tx, "timed out".into());
        assert_eq!(
            *tx.borrow(),
            ConnectionState::Disconnected {
                since: first,
                reason: "timed out".into()
            }
        );
        // A new outage after being connected starts a new `since`.
        set_state(&tx, ConnectionState::Connected);
        std::thread::sleep(Duration::from_millis(5));
        set_disconnected(&tx, "lost".into());
        match &*tx.borrow() {
            ConnectionState::Disconnected { since, .. } => assert!(*since > first),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unchanged_state_wakes_nobody() {
        let (tx, mut rx) = watch::channel(ConnectionState::Connecting);
        rx.mark_unchanged();
        set_state(&tx, ConnectionState::Connecting);
        assert!(!rx.has_changed().unwrap());
        set_state(&tx, ConnectionState::Connected);
        assert!(rx.has_changed().unwrap());
    }
}
