//! [`Client`]: the handle the application records through, and the state it
//! shares with the flusher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inlet_domain::{WireErrorSample, WireMetric, WireTransaction, now_ms};
use tokio::sync::{Notify, watch};

use crate::buffer::{BatchHeader, Buffer, Encoded, Item, Shape};
use crate::builder::{ClientBuilder, Config, Hook};
use crate::flusher::{self, Lifecycle};
use crate::health::{ClientEvent, ClientState, ClientStats, Counters, DropReason, Status, lock};
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

/// State shared by the client handles and the flusher.
pub(crate) struct Shared {
    pub config: Config,
    pub header: BatchHeader,
    pub shape: Shape,
    /// Bytes of a batch body without items.
    pub overhead: usize,
    pub buffer: Mutex<Buffer>,
    /// Wakes the flusher: a full batch is waiting, or `flush` was called.
    pub wake: Notify,
    /// Set by `flush`, cleared when the flusher forms a batch.
    pub flush_requested: AtomicBool,
    pub counters: Counters,
    pub status: Mutex<Status>,
    pub hook: Option<Hook>,
    /// Set when the flusher has stopped: records are dropped (`shutdown`).
    pub stopped: AtomicBool,
    /// Set while auth is paused in [`WhenAuthPaused::Drop`] mode.
    ///
    /// [`WhenAuthPaused::Drop`]: crate::WhenAuthPaused::Drop
    pub dropping_while_paused: AtomicBool,
    /// Whether a `buffer_full` warning was logged since the flusher last
    /// took a batch (one warning per episode, not one per item).
    pub full_warned: AtomicBool,
}

impl Shared {
    pub(crate) fn emit(&self, event: &ClientEvent) {
        if let Some(hook) = &self.hook {
            hook(event);
        }
    }

    /// Counts dropped items (and batches) and tells the hook.
    pub(crate) fn dropped(&self, reason: DropReason, items: u64, batch_id: Option<String>) {
        if items == 0 {
            return;
        }
        let batches = u64::from(batch_id.is_some());
        self.counters.dropped(reason, batches, items);
        self.emit(&ClientEvent::Dropped {
            reason,
            items,
            batch_id,
        });
    }

    pub(crate) fn stats(&self) -> ClientStats {
        let (buffered_items, buffered_bytes) = {
            let b = lock(&self.buffer);
            (b.len(), b.bytes())
        };
        let status = lock(&self.status);
        let c = &self.counters;
        ClientStats {
            state: status.state,
            last_error: status.last_error.clone(),
            recorded_items: c.recorded.load(Ordering::Relaxed),
            buffered_items,
            buffered_bytes,
            in_flight_items: status.in_flight_items,
            sent: Counters::tally(&c.sent_batches, &c.sent_items),
            accepted: Counters::tally(&c.accepted_batches, &c.accepted_items),
            retried: Counters::tally(&c.retried_batches, &c.retried_items),
            probes: c.probes.load(Ordering::Relaxed),
            dropped_items: c.dropped_items(),
            dropped_batches: c.dropped_batches(),
        }
    }

    fn record_many(&self, items: impl IntoIterator<Item = Item>) {
        let now = now_ms();
        let mut encoded = Vec::new();
        let mut rejected = [0u64; 2];
        for item in items {
            Counters::add(&self.counters.recorded, 1);
            match Encoded::encode(&item, &self.config.limits, now) {
                Ok(e) if e.cost() + self.overhead > self.config.max_batch_bytes => rejected[1] += 1,
                Ok(e) => encoded.push(e),
                Err(_) => rejected[0] += 1,
            }
        }
        if rejected[0] > 0 {
            tracing::debug!(target: "inlet_client", items = rejected[0], "dropping items the server would reject");
            self.dropped(DropReason::InvalidItem, rejected[0], None);
        }
        if rejected[1] > 0 {
            tracing::debug!(target: "inlet_client", items = rejected[1], "dropping items larger than max_batch_bytes");
            self.dropped(DropReason::ItemTooLarge, rejected[1], None);
        }
        if encoded.is_empty() {
            return;
        }
        let n = encoded.len() as u64;
        if self.stopped.load(Ordering::Acquire) {
            self.dropped(DropReason::Shutdown, n, None);
            return;
        }
        if self.dropping_while_paused.load(Ordering::Acquire) {
            self.dropped(DropReason::AuthPausedDrop, n, None);
            return;
        }
        let (overflow, full) = {
            let mut buffer = lock(&self.buffer);
            let overflow: usize = encoded.into_iter().map(|e| buffer.push(e)).sum();
            (overflow, buffer.has_full_batch(&self.shape, self.overhead))
        };
        if overflow > 0 {
            if !self.full_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "inlet_client",
                    max_buffer_bytes = self.config.max_buffer_bytes,
                    "buffer full: dropping the oldest items"
                );
            }
            self.dropped(DropReason::BufferFull, overflow as u64, None);
        }
        if full {
            self.wake.notify_one();
        }
    }
}

impl Client {
    /// Starts configuring a client for the push API at `endpoint` (a base
    /// URL such as `https://inlet.example.com`; `/v1/push` is appended) with
    /// the API key `key`.
    pub fn builder(endpoint: &str, key: &str) -> ClientBuilder {
        ClientBuilder::new(endpoint, key)
    }

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
            None => flusher::abandoned_report(&self.handle.shared),
        }
    }
}

/// What [`Client::shutdown`] achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownReport {
    /// Items accepted by the server between the call and the end.
    pub delivered_items: u64,
    /// Items not delivered: still buffered or in a batch that was not
    /// accepted by the deadline. Counted as dropped (`shutdown`).
    pub left_items: u64,
    /// Of `left_items`, those in a request cut off by the deadline: the
    /// server may have received them.
    pub unconfirmed_items: u64,
    /// Whether the deadline ended the flush (rather than an empty buffer).
    pub deadline_reached: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
    /// The final counters.
    pub stats: ClientStats,
}
