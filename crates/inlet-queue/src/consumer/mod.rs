//! Consumer primitives for the worker: a reconnecting consumer of the main
//! queue and [`Incoming`] deliveries that are settled exactly one way:
//! [`Incoming::ack`], [`Incoming::retry`], [`Incoming::dead_letter`] or
//! [`Incoming::requeue`].
//!
//! # Connections
//!
//! A [`Consumer`] has its own connection (`{connection_name}-consumer`),
//! and retry and dead-letter copies go through a separate [`Publisher`]
//! (its own connection, `{connection_name}-retry`, unless one is passed to
//! [`Consumer::start_with_publisher`]). The broker blocks a connection that
//! publishes during a resource alarm, and a blocked connection cannot send
//! acks either; keeping the two apart means a memory alarm never stops the
//! worker from acknowledging.
//!
//! # Retries and duplicates
//!
//! A retry publishes a copy to the delay queue for its attempt **with a
//! publisher confirm, then** acks the original; a dead letter does the same
//! towards the dead-letter exchange. A crash (or connection loss) between
//! the two leaves both the copy and the unacked original, which is
//! redelivered: a message can be processed twice, never lost. The worker
//! deduplicates (on `Envelope::dedup_key`).
//!
//! # Layout
//!
//! - `mod.rs` (this file): the public handle, [`Consumer`];
//! - `incoming`: [`Incoming`], settling one delivery, and the headers of
//!   retry and dead-letter copies;
//! - `session`: the consumer's hooks for the crate's connection supervisor
//!   (setup, forwarding deliveries, graceful stop).

mod incoming;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::connection::ConnectionState;
use crate::consumer::incoming::Shared;
use crate::consumer::session::{Feed, SHUTDOWN_STEP};
use crate::error::QueueError;
use crate::metrics::{QueueMetrics, Role};
use crate::publisher::Publisher;
use crate::settings::QueueSettings;
use crate::topology::Names;

pub use crate::consumer::incoming::{
    HEADER_ATTEMPT, HEADER_DEATH_REASON, HEADER_LAST_ERROR, Incoming, RetryOutcome,
};

/// A reconnecting consumer of the main queue.
///
/// Deliveries are pulled with [`Consumer::next`]. Cancelling the token
/// passed to [`Consumer::start`] (or calling [`Consumer::shutdown`]) stops
/// consuming: `next` returns `None`, the broker stops delivering
/// (`basic.cancel`), and the connection stays open until every
/// [`Incoming`] already handed out is settled or dropped, so in-flight work
/// can still be acked.
pub struct Consumer {
    rx: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
    state_rx: watch::Receiver<ConnectionState>,
    names: Names,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.names.queue)
            .field("state", &*self.state_rx.borrow())
            .finish()
    }
}

impl Consumer {
    /// Starts consuming the main queue with its own connection and its own
    /// retry publisher. Returns at once (a broker that is down is not an
    /// error: the consumer keeps reconnecting). Fails only on invalid
    /// settings or outside a tokio runtime.
    ///
    /// `cancel` stops it (a child token is used, so cancelling the
    /// consumer never cancels the caller's token).
    pub fn start(
        settings: QueueSettings,
        metrics: QueueMetrics,
        cancel: CancellationToken,
    ) -> Result<Consumer, QueueError> {
        let publisher = Publisher::start_with_role(settings.clone(), metrics.clone(), Role::Retry)?;
        Consumer::spawn(settings, metrics, cancel, publisher, true)
    }

    /// Like [`Consumer::start`], but retry and dead-letter copies go
    /// through `publisher` (which the caller keeps and closes).
    pub fn start_with_publisher(
        settings: QueueSettings,
        metrics: QueueMetrics,
        cancel: CancellationToken,
        publisher: Publisher,
    ) -> Result<Consumer, QueueError> {
        Consumer::spawn(settings, metrics, cancel, publisher, false)
    }

    fn spawn(
        settings: QueueSettings,
        metrics: QueueMetrics,
        cancel: CancellationToken,
        publisher: Publisher,
        owns_publisher: bool,
    ) -> Result<Consumer, QueueError> {
        settings.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| QueueError::Connect {
            url: settings.redacted_url(),
            reason: "Consumer::start must be called inside a tokio runtime".into(),
        })?;
        let names = Names::from_settings(&settings);
        let cancel = cancel.child_token();
        let (tx, rx) = mpsc::channel(usize::from(settings.prefetch));
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let (hold_tx, hold_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            settings,
            names: names.clone(),
            metrics,
            publisher: publisher.clone(),
            _hold: hold_tx,
        });
        let feed = Feed {
            shared,
            tx,
            state_tx,
            cancel: cancel.clone(),
        };
        let task = runtime.spawn(session::run(
            feed,
            hold_rx,
            owns_publisher.then_some(publisher),
        ));
        Ok(Consumer {
            rx,
            cancel,
            state_rx,
            names,
            task: Some(task),
        })
    }

    /// The next delivery, waiting as long as needed (the supervisor
    /// reconnects in the background; nothing spins while the broker is
    /// away). `None` once cancelled.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            if self.cancel.is_cancelled() {
                self.requeue_buffered().await;
                return None;
            }
            let got = tokio::select! {
                biased;
                () = self.cancel.cancelled() => None,
                m = self.rx.recv() => m,
            };
            match got {
                // Buffered before its connection was lost: it can no longer
                // be settled, and the broker redelivers it on the new
                // connection. Handing it out would only duplicate work.
                Some(incoming) if incoming.of_lost_connection() => {
                    debug!(message_id = ?incoming.message_id, "skipping a delivery of a lost connection");
                }
                Some(incoming) => return Some(incoming),
                None => {
                    self.requeue_buffered().await;
                    return None;
                }
            }
        }
    }

    /// Deliveries received but not handed out go back to the queue at
    /// once (for other consumers), rather than wait, unacked, until the
    /// work handed out is settled and the connection closes.
    async fn requeue_buffered(&mut self) {
        self.rx.close();
        while let Ok(incoming) = self.rx.try_recv() {
            if !incoming.of_lost_connection() {
                let _ = tokio::time::timeout(SHUTDOWN_STEP, incoming.requeue()).await;
            }
        }
    }

    /// The current connection state of the consuming connection.
    pub fn state(&self) -> ConnectionState {
        self.state_rx.borrow().clone()
    }

    /// A receiver of state changes (for readiness probes).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state_rx.clone()
    }

    /// Waits until consuming (true) or `timeout` passes (false).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.state_rx.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(ConnectionState::is_connected)).await,
            Ok(Ok(_))
        )
    }

    /// The topology names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Stops consuming and waits until the connection is closed, which
    /// happens once every `Incoming` handed out has been settled or
    /// dropped. Closes the retry publisher if the consumer started it.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.requeue_buffered().await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Without a consumer handle nobody can pull deliveries: stop.
        self.cancel.cancel();
    }
}
