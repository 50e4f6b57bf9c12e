//! The state shared by the [`Client`](crate::Client) handles and the
//! flusher task, what the handles ask of the flusher ([`Lifecycle`]), and
//! what a shutdown reports ([`ShutdownReport`]).
//!
//! A leaf below both: the client and the flusher import it, it imports
//! neither of them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inlet_domain::now_ms;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::buffer::{BatchHeader, Buffer, Encoded, Item, Shape};
use crate::config::{Config, Hook};
use crate::status::{ClientEvent, ClientState, ClientStats, Counters, DropReason, Status, lock};

/// What the client asks of the flusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Running,
    /// Flush everything, then stop; stop anyway at `deadline`.
    Draining {
        deadline: Instant,
        /// When `shutdown` was called.
        started: Instant,
        /// Items accepted before the call (for the report).
        accepted_before: u64,
    },
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

    pub(crate) fn record_many(&self, items: impl IntoIterator<Item = Item>) {
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

    /// Stops the client from outside the flusher (every handle dropped, or
    /// the flusher gone with its runtime) and reports what was left.
    pub(crate) fn abandoned_report(&self) -> ShutdownReport {
        self.stopped.store(true, Ordering::Release);
        let in_flight = {
            let mut status = lock(&self.status);
            status.state = ClientState::Stopped;
            std::mem::take(&mut status.in_flight_items) as u64
        };
        let buffered = lock(&self.buffer).clear() as u64;
        self.dropped(DropReason::Shutdown, buffered + in_flight, None);
        ShutdownReport {
            delivered_items: 0,
            left_items: buffered + in_flight,
            unconfirmed_items: in_flight,
            deadline_reached: false,
            elapsed: Duration::ZERO,
            stats: self.stats(),
        }
    }
}

/// What [`Client::shutdown`](crate::Client::shutdown) achieved.
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
