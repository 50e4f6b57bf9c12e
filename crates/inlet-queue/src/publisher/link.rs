//! What the publisher's parts share: [`Inner`] (behind every `Publisher`
//! clone) and the current [`Link`], the channels publishes use.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::types::ShortString;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::ConnectionState;
use crate::error::QueueError;
use crate::metrics::{QueueMetrics, Role};
use crate::settings::QueueSettings;
use crate::supervisor::set_state;
use crate::topology::{Names, short};

pub(super) struct Inner {
    pub(super) role: Role,
    pub(super) settings: QueueSettings,
    pub(super) names: Names,
    pub(super) exchange: ShortString,
    pub(super) routing_key: ShortString,
    pub(super) metrics: QueueMetrics,
    pub(super) permits: Semaphore,
    /// The current link, `None` while disconnected.
    link: RwLock<Option<Arc<Link>>>,
    pub(super) next_channel: AtomicUsize,
    pub(super) state_tx: watch::Sender<ConnectionState>,
    /// Set by `close`: new publishes are refused.
    pub(super) closing: AtomicBool,
    /// Stops the supervisor.
    pub(super) stop: CancellationToken,
    pub(super) supervisor: Mutex<Option<JoinHandle<()>>>,
    /// Woken by an unroutable publish: the supervisor declares the
    /// topology again (someone may have deleted a queue or exchange).
    pub(super) redeclare: Notify,
    /// Since when every publish the broker answered was nacked, as
    /// milliseconds after `created` plus one (0: the last answer was an
    /// ack, or there was none). See `NACKED_FOR_RECONNECT`.
    pub(super) nacked_since: AtomicU64,
    pub(super) created: Instant,
}

/// One established connection's channels, as publishes see them.
pub(super) struct Link {
    pub(super) channels: Box<[Arc<PubChannel>]>,
    pub(super) conn: Arc<ConnFlags>,
}

/// Per-connection flags shared by every link built on that connection.
pub(super) struct ConnFlags {
    /// Cancelled when the connection is gone: in-flight publishes resolve.
    pub(super) lost: CancellationToken,
    /// The broker blocked the connection.
    pub(super) blocked: AtomicBool,
}

impl ConnFlags {
    pub(super) fn new() -> ConnFlags {
        ConnFlags {
            lost: CancellationToken::new(),
            blocked: AtomicBool::new(false),
        }
    }
}

pub(super) struct PubChannel {
    pub(super) channel: Channel,
    /// Serialises the first poll of `basic_publish` (see the module docs
    /// of `publisher`).
    pub(super) order: Mutex<()>,
}

impl Inner {
    pub(super) fn new(
        settings: QueueSettings,
        metrics: QueueMetrics,
        role: Role,
    ) -> Result<Arc<Inner>, QueueError> {
        settings.validate()?;
        let names = Names::from_settings(&settings);
        let exchange = short(&names.exchange)?;
        let routing_key = short(&names.routing_key)?;
        let (state_tx, _) = watch::channel(ConnectionState::Connecting);
        Ok(Arc::new(Inner {
            role,
            permits: Semaphore::new(settings.max_in_flight),
            settings,
            names,
            exchange,
            routing_key,
            metrics,
            link: RwLock::new(None),
            next_channel: AtomicUsize::new(0),
            state_tx,
            closing: AtomicBool::new(false),
            stop: CancellationToken::new(),
            supervisor: Mutex::new(None),
            redeclare: Notify::new(),
            nacked_since: AtomicU64::new(0),
            created: Instant::now(),
        }))
    }

    pub(super) fn current_link(&self) -> Option<Arc<Link>> {
        self.link
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn take_link(&self) -> Option<Arc<Link>> {
        self.link
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    pub(super) fn set_link(&self, link: Option<Arc<Link>>) {
        *self
            .link
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
    }

    pub(super) fn set_state(&self, state: ConnectionState) {
        set_state(&self.state_tx, state);
    }

    /// The broker acked a publish: its view of the queue works.
    pub(super) fn answered_ack(&self) {
        if self.nacked_since.load(Ordering::Relaxed) != 0 {
            self.nacked_since.store(0, Ordering::Relaxed);
        }
    }

    /// The broker nacked a publish: starts the clock, unless running.
    pub(super) fn answered_nack(&self) {
        let now = self.created.elapsed().as_millis() as u64 + 1;
        let _ = self
            .nacked_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How long every answered publish has been nacked (none: the last
    /// answer was an ack).
    pub(super) fn nacked_for(&self) -> Option<Duration> {
        match self.nacked_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(
                self.created
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since - 1)),
            ),
        }
    }

    /// A new link: no answers yet.
    pub(super) fn forget_answers(&self) {
        self.nacked_since.store(0, Ordering::Relaxed);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
