//! What the client tells its host application: counters, the current
//! state, the last error, and events.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// Why items were dropped. Every dropped item is counted under exactly one
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The buffer was full: the oldest items made room for new ones.
    BufferFull,
    /// The server answered 400: the batch breaks the schema.
    Rejected400,
    /// The server answered 413: the batch is over a size limit.
    TooLarge413,
    /// The server answered 415: content type or encoding refused.
    Unsupported415,
    /// Auth was paused with [`WhenAuthPaused::Drop`](crate::WhenAuthPaused::Drop).
    AuthPausedDrop,
    /// Left over when `shutdown` reached its deadline, or recorded after it.
    Shutdown,
    /// The item breaks a rule the server would reject the whole batch for
    /// (e.g. a NaN duration, an empty action): dropped alone at record time
    /// instead of poisoning a batch.
    InvalidItem,
    /// The item alone is larger than `max_batch_bytes`: it can never be sent.
    ItemTooLarge,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 8] = [
        DropReason::BufferFull,
        DropReason::Rejected400,
        DropReason::TooLarge413,
        DropReason::Unsupported415,
        DropReason::AuthPausedDrop,
        DropReason::Shutdown,
        DropReason::InvalidItem,
        DropReason::ItemTooLarge,
    ];

    /// Stable label, e.g. `buffer_full`, `rejected_400`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::Rejected400 => "rejected_400",
            DropReason::TooLarge413 => "too_large_413",
            DropReason::Unsupported415 => "unsupported_415",
            DropReason::AuthPausedDrop => "auth_paused_drop",
            DropReason::Shutdown => "shutdown",
            DropReason::InvalidItem => "invalid_item",
            DropReason::ItemTooLarge => "item_too_large",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dropped counts per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounts([u64; 8]);

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// The sum over every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

impl Serialize for DropCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(DropReason::ALL.len()))?;
        for (r, n) in self.iter() {
            m.serialize_entry(r.as_str(), &n)?;
        }
        m.end()
    }
}

/// A count of batches and of the items in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Tally {
    /// Batches (requests).
    pub batches: u64,
    /// Items in them.
    pub items: u64,
}

/// Where the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Sending as data comes in.
    Sending,
    /// The last attempt failed transiently (or the key was rejected within
    /// the grace window); the same batch is retried at `until`.
    BackingOff {
        /// When the next attempt is made.
        until: Instant,
    },
    /// The key has been rejected for the whole grace window. Data is kept
    /// (or dropped, per [`WhenAuthPaused`](crate::WhenAuthPaused)) and one
    /// batch probes at `until`; the first success resumes sending.
    AuthPaused {
        /// When the next probe is sent.
        until: Instant,
        /// The first rejection of this run.
        since: Instant,
    },
    /// `shutdown` has finished: nothing is sent any more.
    Stopped,
}

impl ClientState {
    /// Stable label: `sending`, `backing_off`, `auth_paused`, `stopped`.
    pub fn label(&self) -> &'static str {
        match self {
            ClientState::Sending => "sending",
            ClientState::BackingOff { .. } => "backing_off",
            ClientState::AuthPaused { .. } => "auth_paused",
            ClientState::Stopped => "stopped",
        }
    }
}

/// The last failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// The HTTP status; `None` when no response arrived (timeout,
    /// connection refused…).
    pub status: Option<u16>,
    /// The problem's `code` (e.g. `unknown_key`), or for transport errors
    /// `timeout`, `connect` or `request`.
    pub code: Option<String>,
    /// The problem's message, or the transport error.
    pub message: String,
    /// When it happened.
    #[serde(skip)]
    pub at: SystemTime,
}

/// A snapshot of the client's counters and state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientStats {
    /// The current state.
    #[serde(serialize_with = "state_label")]
    pub state: ClientState,
    /// The last failed attempt, if any (kept after recovery, for
    /// diagnosis).
    pub last_error: Option<LastError>,
    /// Items accepted by `record_*` (before any drop).
    pub recorded_items: u64,
    /// Items waiting in the buffer (not yet in a batch).
    pub buffered_items: usize,
    /// Their serialized size, bytes.
    pub buffered_bytes: usize,
    /// Items in the batch being sent or retried.
    pub in_flight_items: usize,
    /// Every attempt, retries and probes included.
    pub sent: Tally,
    /// Attempts answered 2xx.
    pub accepted: Tally,
    /// Attempts that re-sent a batch (a subset of `sent`).
    pub retried: Tally,
    /// Attempts that probed a paused key (a subset of `sent`).
    pub probes: u64,
    /// Dropped items per reason.
    pub dropped_items: DropCounts,
    /// Dropped batches per reason (only reasons that drop whole batches).
    pub dropped_batches: DropCounts,
}

fn state_label<S: serde::Serializer>(state: &ClientState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.label())
}

/// Something the host application may want to know, passed to the hook set
/// with [`ClientBuilder::on_event`](crate::ClientBuilder::on_event).
///
/// The hook runs on the flusher task (or, for buffer drops, on the thread
/// that recorded): keep it short and never block in it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A batch was accepted.
    Accepted {
        /// Its idempotency key.
        batch_id: String,
        /// Items in it.
        items: usize,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// An attempt failed; the batch is kept and retried after `delay`.
    Retrying {
        /// The batch's id (unchanged across retries).
        batch_id: String,
        /// The attempt that failed (1 = first).
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// For a rejected key within the grace window: how much of the
        /// window is left.
        auth_grace_left: Option<Duration>,
        /// What went wrong.
        error: LastError,
    },
    /// The key has been rejected for the whole grace window: sending is
    /// paused; the next probe is at `until`.
    AuthPaused {
        /// The next probe.
        until: Instant,
        /// The rejection.
        error: LastError,
    },
    /// A probe was sent while paused.
    Probing {
        /// The probe batch.
        batch_id: String,
    },
    /// A success ended an auth pause.
    Resumed {
        /// How long the key had been rejected.
        rejected_for: Duration,
    },
    /// Items were dropped.
    Dropped {
        /// Why.
        reason: DropReason,
        /// How many.
        items: u64,
        /// The batch, when a whole batch was dropped.
        batch_id: Option<String>,
    },
    /// `shutdown` finished.
    Stopped {
        /// Items left undelivered (counted as dropped, reason `shutdown`).
        left_items: u64,
    },
}

/// The atomic counters behind [`ClientStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub recorded: AtomicU64,
    pub sent_batches: AtomicU64,
    pub sent_items: AtomicU64,
    pub accepted_batches: AtomicU64,
    pub accepted_items: AtomicU64,
    pub retried_batches: AtomicU64,
    pub retried_items: AtomicU64,
    pub probes: AtomicU64,
    dropped_items: [AtomicU64; 8],
    dropped_batches: [AtomicU64; 8],
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, reason: DropReason, batches: u64, items: u64) {
        self.dropped_items[reason.index()].fetch_add(items, Ordering::Relaxed);
        self.dropped_batches[reason.index()].fetch_add(batches, Ordering::Relaxed);
    }

    fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn dropped_items(&self) -> DropCounts {
        DropCounts(std::array::from_fn(|i| Self::load(&self.dropped_items[i])))
    }

    pub(crate) fn dropped_batches(&self) -> DropCounts {
        DropCounts(std::array::from_fn(|i| {
            Self::load(&self.dropped_batches[i])
        }))
    }

    pub(crate) fn tally(batches: &AtomicU64, items: &AtomicU64) -> Tally {
        Tally {
            batches: Self::load(batches),
            items: Self::load(items),
        }
    }
}

/// State and last error, behind one lock.
#[derive(Debug)]
pub(crate) struct Status {
    pub state: ClientState,
    pub last_error: Option<LastError>,
    pub in_flight_items: usize,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: ClientState::Sending,
            last_error: None,
            in_flight_items: 0,
        }
    }
}

/// Locks a mutex, recovering from poisoning (a panicking hook must not
/// take the client down with it).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_index_their_slots() {
        let c = Counters::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            c.dropped(*r, 1, i as u64 + 10);
        }
        let items = c.dropped_items();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(items.get(*r), i as u64 + 10, "{r}");
        }
        assert_eq!(c.dropped_batches().total(), 8);
        let json = serde_json::to_value(items).unwrap_or_default();
        assert_eq!(json["buffer_full"], 10);
        assert_eq!(json["item_too_large"], 17);
    }
}
