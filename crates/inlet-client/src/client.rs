//! [`Client`]: the handle the application records through, and what its
//! shutdown reports ([`ShutdownReport`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inlet_domain::{WireErrorSample, WireMetric, WireTransaction};
use tokio::sync::{Notify, watch};

use crate::buffer::{BatchHeader, Buffer, Item, Shape};
use crate::config::{Config, Hook};
use crate::flusher;
pub use crate::shared::ShutdownReport;
use crate::shared::{Lifecycle, Shared};
use crate::status::{ClientState, ClientStats, Counters, Status, lock};
use crate::transport::Transport;

/// An Inlet client: record telemetry from anywhere, it is batched, sent
/// and retried in the background.
///
/// Cheap to clone (all clones share one buffer and one flusher). Recording
/// never blocks and never awaits. Call [`Client::shutdown`] before the
/// process exits to flush what is buffered; dropping every clone without it
/// stops the flusher and discards the buffer.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.handle.shared;
        f.debug_struct("Client")
            .field("app", &s.config.app)
            .field("state", &lock(&s.status).state)
            .finish_non_exhaustive()
    }
}

/// What the last clone's drop ends: dropping the lifecycle sender tells the
/// flusher to stop.
struct Handle {
    shared: Arc<Shared>,
    lifecycle: watch::Sender<Lifecycle>,
    done: watch::Receiver<Option<ShutdownReport>>,
}

impl Client {
    pub(crate) fn start(
        config: Config,
        transport: Transport,
        hook: Option<Hook>,
        runtime: &tokio::runtime::Handle,
    ) -> Client {
        let header = BatchHeader::new(&config.agent, &config.app, &config.environment);
        let overhead = header.overhead();
        let shape = Shape::new(
            config.max_batch_items,
            config.max_batch_bytes,
            &config.limits,
        );
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::new(config.max_buffer_bytes)),
            config,
            header,
            shape,
            overhead,
            wake: Notify::new(),
            flush_requested: AtomicBool::new(false),
            counters: Counters::default(),
            status: Mutex::new(Status::default()),
            hook,
            stopped: AtomicBool::new(false),
            dropping_while_paused: AtomicBool::new(false),
            full_warned: AtomicBool::new(false),
        });
        let (lifecycle, life_rx) = watch::channel(Lifecycle::Running);
        let (done_tx, done) = watch::channel(None);
        runtime.spawn(flusher::run(shared.clone(), transport, life_rx, done_tx));
        Client {
            handle: Arc::new(Handle {
                shared,
                lifecycle,
                done,
            }),
        }
    }

    /// Records a transaction. Never blocks.
    pub fn record_transaction(&self, transaction: WireTransaction) {
        self.record(Item::Transaction(transaction));
    }

    /// Records a metric sample. Never blocks.
    pub fn record_metric(&self, metric: WireMetric) {
        self.record(Item::Metric(metric));
    }

    /// Records an error occurrence. Never blocks.
    pub fn record_error(&self, error: WireErrorSample) {
        self.record(Item::Error(error));
    }

    /// Records one item of any kind. Never blocks.
    pub fn record(&self, item: impl Into<Item>) {
        self.handle.shared.record_many(std::iter::once(item.into()));
    }

    /// Records many items at once (one lock for all of them). Never blocks;
    /// they are sent in the background like any other record, possibly
    /// split over several batches.
    #[doc(alias = "send")]
    pub fn send_batch<I>(&self, items: I)
    where
        I: IntoIterator,
        I::Item: Into<Item>,
    {
        self.handle
            .shared
            .record_many(items.into_iter().map(Into::into));
    }

    /// Asks the flusher to send what is buffered now instead of at the
    /// next interval. Returns at once; a backoff or pause in progress is
    /// still honoured.
    pub fn flush(&self) {
        let s = &self.handle.shared;
        s.flush_requested.store(true, Ordering::Release);
        s.wake.notify_one();
    }

    /// A snapshot of the counters and state.
    pub fn stats(&self) -> ClientStats {
        self.handle.shared.stats()
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        lock(&self.handle.shared.status).state
    }

    /// Flushes what it can within `timeout`, then stops.
    ///
    /// Batches keep going out (backoffs and pauses are honoured, never cut
    /// short) until the buffer is empty or the deadline passes; a request
    /// still running at the deadline is abandoned. What is left is counted
    /// as dropped (`shutdown`) and reported. Items recorded after the
    /// flusher stopped are dropped too. Calling it again (from any clone)
    /// waits for the same end and returns the same report.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let started = tokio::time::Instant::now();
        let accepted_before = self
            .handle
            .shared
            .counters
            .accepted_items
            .load(Ordering::Relaxed);
        self.handle.lifecycle.send_if_modified(|l| {
            if matches!(l, Lifecycle::Running) {
                *l = Lifecycle::Draining {
                    deadline: started + timeout,
                    started,
                    accepted_before,
                };
                true
            } else {
                false
            }
        });
        self.handle.shared.wake.notify_one();
        let mut done = self.handle.done.clone();
        let report = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        match report {
            Some(r) => r,
            // The flusher is gone (its runtime shut down): account for
            // what it left.
            None => self.handle.shared.abandoned_report(),
        }
    }
}
