//! Topology (re-)declaration: on each connection before the first
//! publish, and again while connected when a publish to the publisher's
//! own topology came back unroutable (someone deleted or unbound a queue
//! or exchange), at most once per [`REDECLARE_MIN_INTERVAL`].

use std::pin::Pin;

use lapin::{Channel, Connection};
use tokio::time::{Duration, Instant};
use tracing::warn;

use crate::error::QueueError;
use crate::publisher::link::Inner;
use crate::settings::QueueSettings;
use crate::topology;

/// Unroutable publishes declare the topology again at most this often.
const REDECLARE_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Declares the topology on a channel of its own, then closes it. The
/// channel is also pushed to `keep`, so that the caller decides when it is
/// dropped.
pub(super) async fn declare_topology(
    conn: &Connection,
    settings: &QueueSettings,
    keep: &mut Vec<Channel>,
) -> Result<(), QueueError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| QueueError::amqp("open channel", e))?;
    keep.push(ch.clone());
    topology::declare(&ch, settings).await?;
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(())
}

/// Declares the topology again on a channel of its own, after a publish
/// came back unroutable: a deleted queue or exchange is back at once
/// instead of at the next reconnect. Failures are logged; the publishes
/// keep failing `Unroutable` (503) until it works.
async fn redeclare_topology(inner: &Inner, conn: &Connection) {
    let role = inner.role.as_str();
    let mut keep = Vec::new();
    let declare = declare_topology(conn, &inner.settings, &mut keep);
    match tokio::time::timeout(inner.settings.connect_timeout(), declare).await {
        Ok(Ok(())) => warn!(
            role,
            "a publish was unroutable: declared the topology again (was a queue or exchange deleted?)"
        ),
        Ok(Err(e)) => {
            warn!(role, error = %e, "a publish was unroutable and declaring the topology failed")
        }
        Err(_) => warn!(
            role,
            "a publish was unroutable and declaring the topology timed out"
        ),
    }
}

type Running<'c> = Pin<Box<dyn Future<Output = ()> + Send + 'c>>;

/// The re-declarations asked for by unroutable publishes on one
/// connection (`Inner::redeclare` is the doorbell).
pub(super) struct Redeclare<'c> {
    inner: &'c Inner,
    conn: &'c Connection,
    /// A request is pending: due at once, or [`REDECLARE_MIN_INTERVAL`]
    /// after the previous declaration, however many publishes bounce.
    due: Option<Instant>,
    next_allowed: Instant,
    /// The declaration under way. It runs beside the session (one
    /// [`Self::step`] at a time), so events, the watchdog and a stop are
    /// never held up by it; it is dropped with the session.
    running: Option<Running<'c>>,
}

impl<'c> Redeclare<'c> {
    /// For a connection whose setup has just declared everything: a
    /// request left over from the previous connection is dropped.
    pub(super) fn new(inner: &'c Inner, conn: &'c Connection) -> Redeclare<'c> {
        let _ = futures::FutureExt::now_or_never(inner.redeclare.notified());
        Redeclare {
            inner,
            conn,
            due: None,
            next_allowed: Instant::now(),
            running: None,
        }
    }

    /// Waits for the next thing to do and does it: a running declaration
    /// finished, a request came in, or a pending request is due (then its
    /// declaration starts). Cancel-safe: nothing awaits after a state
    /// change.
    pub(super) async fn step(&mut self) {
        let (inner, conn) = (self.inner, self.conn);
        tokio::select! {
            biased;
            () = run(&mut self.running), if self.running.is_some() => {
                self.running = None;
            }
            () = inner.redeclare.notified(), if self.due.is_none() => {
                self.due = Some(self.next_allowed.max(Instant::now()));
            }
            () = sleep_until_due(self.due), if self.due.is_some() && self.running.is_none() => {
                self.due = None;
                self.next_allowed = Instant::now() + REDECLARE_MIN_INTERVAL;
                self.running = Some(Box::pin(redeclare_topology(inner, conn)));
            }
        }
    }
}

async fn run(running: &mut Option<Running<'_>>) {
    match running {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
