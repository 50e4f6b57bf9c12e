//! The confirmed publisher: "202 means durable".
//!
//! [`Publisher::publish`] returns `Ok` only after the broker's publisher
//! confirm (`basic.ack`) for that message, and fails fast with a typed
//! [`PublishError`] otherwise. A supervisor task owns the connection:
//!
//! - it connects (bounded by `connect_timeout_ms`), declares the topology,
//!   opens `publisher_channels` channels in confirm mode and publishes them
//!   as the current *link*;
//! - it listens to the connection's events: `blocked`/`unblocked` flip the
//!   link's blocked flag (publishing on a blocked connection would hang
//!   until the alarm clears, so new publishes fail with `Unavailable`); a
//!   connection error, a closed event stream, or a watchdog seeing the
//!   connection not `connected()` ends the link;
//! - a broker-closed channel (e.g. a `publish_raw` to a missing exchange)
//!   is replaced without dropping the connection;
//! - when a link ends, it is withdrawn (new publishes fail with
//!   `Unavailable` at once) and its `lost` token is cancelled, which
//!   resolves every in-flight publish on it with `Unavailable` right away
//!   instead of waiting for lapin or the confirm timeout; then the
//!   supervisor reconnects with jittered exponential backoff and declares
//!   the topology again.
//!
//! # The hot path
//!
//! One publish: a `try_acquire` on the in-flight semaphore (full means
//! `Backpressure`, never a queue), a read-locked clone of the current link,
//! a round-robin channel pick, `basic_publish`, then awaiting the confirm
//! under one deadline (`confirm_timeout_ms`) raced against the link's
//! `lost` token. No task is spawned, no lock is held across an await, and
//! nothing is allocated besides what lapin needs for the frames and the
//! message properties.
//!
//! lapin assigns a publish its confirm sequence number and queues its
//! frames under two different locks, so two threads publishing on one
//! channel at once could reach the socket in the other order than their
//! numbers, and a broker ack would then resolve the wrong publish (a false
//! "durable"). Both steps happen synchronously in the first poll of
//! lapin's `basic_publish` future (lapin 4.12.3, `generated/channel.rs`
//! `basic_publish` → `before_basic_publish` + `send_method_frame_with_body`
//! → `push_frames`), so that first poll runs under a per-channel
//! `std::sync::Mutex`; the lock is never held across an await.
//!
//! # Returned (unroutable) messages
//!
//! With `mandatory`, an unroutable message is `basic.return`ed before its
//! ack, and lapin hands the return to the next confirm it completes. Within
//! one multiple-ack batch that may be a different publish of the batch, so
//! the returned message's `message_id` is compared with ours and a mismatch
//! is logged. A whole batch is unroutable in practice only when the
//! topology was deleted under a running publisher; then every publish of
//! the batch gets a return and fails with `Unroutable`, whichever it is.
//! An unroutable publish also wakes the supervisor, which declares the
//! topology again (at most once a second), so a deleted queue or exchange
//! costs a few 503s rather than an outage until the next reconnect.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{FutureExt as _, Stream, StreamExt};
use inlet_domain::{ENVELOPE_CONTENT_TYPE, Envelope};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Event};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use crate::connection::{Backoff, ConnectionState, close_quietly, open};
use crate::error::{PublishError, QueueError, UnavailableReason};
use crate::metrics::{QueueMetrics, Role};
use crate::settings::QueueSettings;
use crate::topology::{self, Names, short};

/// Header naming the account a push belongs to (absent while a
/// provisional push's account is unknown).
pub const HEADER_ACCOUNT: &str = "x-inlet-account";
/// Header naming the key id that authenticated a push.
pub const HEADER_KEY_ID: &str = "x-inlet-key-id";
/// Header with the auth mode (`confirmed` / `provisional`).
pub const HEADER_AUTH_MODE: &str = "x-inlet-auth-mode";

/// How often the supervisor double-checks the connection status besides
/// listening to events (covers lapin paths that end without an event).
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);
/// Unroutable publishes declare the topology again at most this often.
const REDECLARE_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A successful, broker-confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// From the call to the broker's ack.
    pub elapsed: Duration,
}

/// A confirmed AMQP publisher with fail-fast errors, backpressure and its
/// own reconnecting supervisor. Cheap to clone; all clones share one
/// connection. The supervisor stops (closing the connection) when the last
/// clone is dropped or [`Publisher::close`] is called.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<DropGuard>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("role", &self.inner.role)
            .field("prefix", &self.inner.names.prefix)
            .field("state", &*self.inner.state_tx.borrow())
            .finish()
    }
}

struct Inner {
    role: Role,
    settings: QueueSettings,
    names: Names,
    exchange: ShortString,
    routing_key: ShortString,
    metrics: QueueMetrics,
    permits: Semaphore,
    /// The current link, `None` while disconnected.
    link: RwLock<Option<Arc<Link>>>,
    next_channel: AtomicUsize,
    state_tx: watch::Sender<ConnectionState>,
    /// Set by `close`: new publishes are refused.
    closing: AtomicBool,
    /// Stops the supervisor.
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// Woken by an unroutable publish: the supervisor declares the
    /// topology again (someone may have deleted a queue or exchange).
    redeclare: Notify,
}

/// One established connection's channels, as publishes see them.
struct Link {
    channels: Box<[Arc<PubChannel>]>,
    conn: Arc<ConnFlags>,
}

/// Per-connection flags shared by every link built on that connection.
struct ConnFlags {
    /// Cancelled when the connection is gone: in-flight publishes resolve.
    lost: CancellationToken,
    /// The broker blocked the connection.
    blocked: AtomicBool,
}

struct PubChannel {
    channel: Channel,
    /// Serialises the first poll of `basic_publish` (see module docs).
    order: Mutex<()>,
}

impl Publisher {
    /// Starts a publisher with role `publisher` (connection name
    /// `{connection_name}-publisher`). Must be called inside a tokio
    /// runtime: lapin binds its I/O to the runtime that connects.
    ///
    /// Returns at once: the connection is made in the background, and a
    /// broker that is down is not an error (see [`Self::state`] and
    /// [`Self::wait_connected`]). Fails only on invalid settings or when no
    /// tokio runtime is running.
    pub fn start(settings: QueueSettings, metrics: QueueMetrics) -> Result<Publisher, QueueError> {
        Publisher::start_with_role(settings, metrics, Role::Publisher)
    }

    pub(crate) fn start_with_role(
        settings: QueueSettings,
        metrics: QueueMetrics,
        role: Role,
    ) -> Result<Publisher, QueueError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| QueueError::Connect {
            url: settings.redacted_url(),
            reason: "Publisher::start must be called inside a tokio runtime".into(),
        })?;
        let inner = Inner::new(settings, metrics, role)?;
        let stop = inner.stop.clone();
        let task = runtime.spawn(supervise(inner.clone()));
        *lock(&inner.supervisor) = Some(task);
        Ok(Publisher {
            inner,
            _stop_on_drop: Arc::new(stop.drop_guard()),
        })
    }

    /// Publishes one envelope to the push exchange and waits for the
    /// broker's confirm. `Ok` means the broker has taken responsibility for
    /// the message (persistent, on a durable queue).
    ///
    /// The message carries `message_id` (the envelope's UUID),
    /// `content_type` [`ENVELOPE_CONTENT_TYPE`], a timestamp in seconds,
    /// delivery mode 2, and the headers [`HEADER_ACCOUNT`] (when the
    /// account is known), [`HEADER_KEY_ID`] and [`HEADER_AUTH_MODE`].
    pub async fn publish(&self, envelope: &Envelope) -> Result<Confirmed, PublishError> {
        let payload = envelope.encode();
        let mut id_buf = [0u8; 36];
        let id: &str = envelope.message_id.hyphenated().encode_lower(&mut id_buf);
        let properties = envelope_properties(envelope, id);
        self.inner
            .publish(
                self.inner.exchange.clone(),
                self.inner.routing_key.clone(),
                &payload,
                properties,
                Some(id),
                true,
            )
            .await
    }

    /// Publishes raw bytes to any exchange with the same confirm semantics
    /// as [`Self::publish`] (mandatory, so a missing route is `Unroutable`).
    /// The caller chooses every property; set `delivery_mode` 2 for a
    /// persistent message. Publishing to a missing exchange fails with
    /// `Unroutable` (reply code 404); the broker closes that channel and
    /// the supervisor replaces it.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<Confirmed, PublishError> {
        let in_topology = self.inner.in_topology(exchange, routing_key);
        let exchange =
            ShortString::try_new(exchange).map_err(|_| PublishError::Invalid("exchange name"))?;
        let routing_key =
            ShortString::try_new(routing_key).map_err(|_| PublishError::Invalid("routing key"))?;
        let expected_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        self.inner
            .publish(
                exchange,
                routing_key,
                payload,
                properties,
                expected_id.as_deref(),
                in_topology,
            )
            .await
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state_tx.borrow().clone()
    }

    /// A receiver of state changes (for readiness probes).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state_tx.subscribe()
    }

    /// Waits until connected (true) or `timeout` passes (false).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.state_tx.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(ConnectionState::is_connected)).await,
            Ok(Ok(_))
        )
    }

    /// The names of the topology this publisher declares.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// The settings it was started with.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// Publishes currently awaiting a confirm.
    pub fn in_flight(&self) -> usize {
        self.inner.settings.max_in_flight - self.inner.permits.available_permits()
    }

    /// Graceful shutdown: refuses new publishes (`Unavailable`/`Closed`),
    /// waits for in-flight publishes to resolve (at most
    /// `confirm_timeout_ms`), then closes the connection and stops the
    /// supervisor. Idempotent.
    pub async fn close(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        let limit = u32::try_from(inner.settings.max_in_flight).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            inner.settings.confirm_timeout(),
            inner.permits.acquire_many(limit),
        )
        .await;
        if drained.is_err() {
            warn!(
                role = inner.role.as_str(),
                in_flight = self.in_flight(),
                "closing the publisher with publishes still awaiting confirms"
            );
        }
        drop(drained);
        inner.stop.cancel();
        let task = lock(&inner.supervisor).take();
        if let Some(task) = task {
            // The supervisor's own close is bounded; this is a backstop.
            let bound = inner.settings.connect_timeout() + Duration::from_secs(1);
            if tokio::time::timeout(bound, task).await.is_err() {
                warn!(
                    role = inner.role.as_str(),
                    "publisher supervisor did not stop in time"
                );
            }
        }
    }
}

/// The AMQP properties of an envelope message (`id`: its message id as
/// text).
fn envelope_properties(envelope: &Envelope, id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    // A provisional push may not know its account yet: no header then.
    if let Some(account) = &envelope.account_id {
        headers.insert(
            HEADER_ACCOUNT.into(),
            AMQPValue::LongString(LongString::from(account.as_str())),
        );
    }
    headers.insert(
        HEADER_KEY_ID.into(),
        AMQPValue::LongString(LongString::from(envelope.key_id.to_string())),
    );
    headers.insert(
        HEADER_AUTH_MODE.into(),
        AMQPValue::LongString(LongString::from(envelope.auth_mode.as_str())),
    );
    BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_content_type(ShortString::from(ENVELOPE_CONTENT_TYPE))
        .with_timestamp(unix_seconds())
        .with_delivery_mode(2)
        .with_headers(headers)
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds an in-flight permit and keeps the gauge honest even when the
/// caller drops the publish future.
struct InFlight<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    metrics: &'a QueueMetrics,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.publish_in_flight.dec();
    }
}

impl Inner {
    fn new(
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
        }))
    }

    async fn publish(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        payload: &[u8],
        properties: BasicProperties,
        expected_id: Option<&str>,
        // The target is part of this publisher's topology: failing to
        // route means the topology needs declaring again.
        in_topology: bool,
    ) -> Result<Confirmed, PublishError> {
        let started = Instant::now();
        let m = &self.metrics;
        if self.closing.load(Ordering::Relaxed) {
            m.outcomes.unavailable.inc();
            return Err(PublishError::unavailable(UnavailableReason::Closed));
        }
        let Ok(permit) = self.permits.try_acquire() else {
            m.outcomes.backpressure.inc();
            return Err(PublishError::Backpressure {
                limit: self.settings.max_in_flight,
            });
        };
        m.publish_in_flight.inc();
        let _in_flight = InFlight {
            _permit: permit,
            metrics: m,
        };
        let Some(link) = self.current_link() else {
            m.outcomes.unavailable.inc();
            return Err(PublishError::unavailable(UnavailableReason::NotConnected));
        };
        if link.conn.blocked.load(Ordering::Relaxed) {
            m.outcomes.unavailable.inc();
            return Err(PublishError::unavailable(UnavailableReason::Blocked));
        }
        let Some(ch) = self.pick_channel(&link) else {
            m.outcomes.unavailable.inc();
            return Err(PublishError::unavailable(UnavailableReason::NotConnected));
        };

        let deadline = tokio::time::Instant::from_std(started + self.settings.confirm_timeout());
        let confirm = async {
            let publish = ch.channel.basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                payload,
                properties,
            );
            let mut publish = std::pin::pin!(publish);
            let mut first = true;
            let written = poll_fn(|cx| {
                if first {
                    first = false;
                    let _order = lock(&ch.order);
                    publish.as_mut().poll(cx)
                } else {
                    publish.as_mut().poll(cx)
                }
            })
            .await;
            match written {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            }
        };
        let result = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, confirm) => r,
            () = link.conn.lost.cancelled() => {
                m.outcomes.unavailable.inc();
                m.publish_duration_seconds.observe(started.elapsed().as_secs_f64());
                return Err(PublishError::unavailable(UnavailableReason::ConnectionLost));
            }
        };
        let elapsed = started.elapsed();
        m.publish_duration_seconds.observe(elapsed.as_secs_f64());
        let outcome = match result {
            Ok(Ok(Confirmation::Ack(None))) => {
                m.outcomes.ack.inc();
                return Ok(Confirmed { elapsed });
            }
            Ok(Ok(Confirmation::Ack(Some(ret)))) => {
                let returned = ret
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ShortString::as_str);
                if expected_id.is_some() && returned != expected_id {
                    error!(
                        role = self.role.as_str(),
                        ours = ?expected_id,
                        ?returned,
                        "a returned message was attributed to another publish of the same confirm batch"
                    );
                }
                PublishError::Unroutable {
                    reply_code: ret.reply_code,
                    reply_text: ret.reply_text.to_string(),
                }
            }
            Ok(Ok(Confirmation::Nack(_))) => PublishError::Nacked,
            Ok(Ok(Confirmation::NotRequested)) => {
                // Every publisher channel is put in confirm mode before it
                // is used; this would be a bug, and is not a confirm.
                error!(
                    role = self.role.as_str(),
                    "publish on a channel without confirms"
                );
                PublishError::unavailable(UnavailableReason::ConnectionLost)
            }
            Ok(Err(e)) => {
                debug!(role = self.role.as_str(), error = %e, "publish failed");
                match e.kind() {
                    // The exchange does not exist: the broker closed the
                    // channel (the supervisor replaces it) without storing
                    // anything. A missing route, like a 312 return.
                    lapin::ErrorKind::ProtocolError(amqp)
                        if amqp.kind()
                            == &lapin::protocol::AMQPErrorKind::Soft(
                                lapin::protocol::AMQPSoftError::NOTFOUND,
                            ) =>
                    {
                        PublishError::Unroutable {
                            reply_code: amqp.get_id(),
                            reply_text: amqp.get_message().to_string(),
                        }
                    }
                    // The channel or connection failed under this publish:
                    // the frames may or may not have reached the broker.
                    _ => PublishError::unavailable(UnavailableReason::ConnectionLost),
                }
            }
            Err(_) => PublishError::Timeout(self.settings.confirm_timeout()),
        };
        match &outcome {
            PublishError::Unroutable { .. } => {
                m.outcomes.returned.inc();
                if in_topology {
                    self.redeclare.notify_one();
                }
            }
            PublishError::Nacked => m.outcomes.nack.inc(),
            PublishError::Timeout(_) => m.outcomes.timeout.inc(),
            _ => m.outcomes.unavailable.inc(),
        }
        Err(outcome)
    }

    /// Whether a publish to `exchange` / `routing_key` targets the
    /// topology this publisher declares (its failing to route then means
    /// part of the topology is gone).
    fn in_topology(&self, exchange: &str, routing_key: &str) -> bool {
        let n = &self.names;
        if exchange.is_empty() {
            return routing_key == n.queue
                || routing_key == n.dead_queue
                || n.delay_queues.iter().any(|(_, q)| q == routing_key);
        }
        (exchange == n.exchange && routing_key == n.routing_key) || exchange == n.dead_exchange
    }

    fn current_link(&self) -> Option<Arc<Link>> {
        self.link
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Round-robin over the link's channels, skipping any the broker closed
    /// (the supervisor replaces those).
    fn pick_channel<'a>(&self, link: &'a Link) -> Option<&'a PubChannel> {
        let n = link.channels.len();
        let start = self.next_channel.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &*link.channels[(start + i) % n])
            .find(|c| c.channel.status().connected())
    }

    fn take_link(&self) -> Option<Arc<Link>> {
        self.link
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn set_link(&self, link: Option<Arc<Link>>) {
        *self
            .link
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
    }

    fn set_state(&self, state: ConnectionState) {
        self.state_tx.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                *s = state;
                true
            }
        });
    }
}

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Why a connection's watch ended.
enum Ended {
    Stop,
    Lost(String),
}

async fn supervise(inner: Arc<Inner>) {
    let role = inner.role.as_str();
    let mut backoff = Backoff::new(&inner.settings);
    let mut connected_before = false;
    loop {
        let attempt = tokio::select! {
            biased;
            () = inner.stop.cancelled() => break,
            r = establish(&inner) => r,
        };
        let reason = match attempt {
            Ok((conn, link, events)) => {
                backoff.reset();
                if connected_before {
                    inner.metrics.reconnected(inner.role);
                    info!(role, "reconnected to the broker");
                } else {
                    info!(role, url = %inner.settings.redacted_url(), "connected to the broker");
                }
                connected_before = true;
                let flags = link.conn.clone();
                inner.set_link(Some(link));
                inner.metrics.set_up(inner.role, true);
                inner.set_state(ConnectionState::Connected);

                let ended = watch_connection(&inner, &conn, events, &flags).await;

                // The channels are dropped only once the connection is
                // closed: lapin closes a channel whose last handle drops
                // while the connection is open, in the background, which
                // races the connection close and logs an ERROR.
                let old_link = inner.take_link();
                flags.lost.cancel();
                inner.metrics.set_up(inner.role, false);
                inner.metrics.set_blocked(inner.role, false);
                match ended {
                    Ended::Stop => {
                        close_quietly(&conn, "publisher closed", inner.settings.connect_timeout())
                            .await;
                        drop(old_link);
                        break;
                    }
                    Ended::Lost(reason) => {
                        warn!(role, %reason, "broker connection lost; reconnecting");
                        close_quietly(&conn, "connection abandoned", Duration::from_secs(1)).await;
                        drop(old_link);
                        reason
                    }
                }
            }
            Err(e) => {
                warn!(role, error = %e, "cannot connect to the broker; retrying");
                e.to_string()
            }
        };
        // Keep the first "since" of an outage.
        let since = match &*inner.state_tx.borrow() {
            ConnectionState::Disconnected { since, .. } => *since,
            _ => Instant::now(),
        };
        inner.set_state(ConnectionState::Disconnected { since, reason });
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = inner.stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    inner.set_link(None);
    inner.metrics.set_up(inner.role, false);
    inner.set_state(ConnectionState::Closed);
    debug!(role, "publisher supervisor stopped");
}

/// Connects, declares the topology and opens the confirm channels, all
/// within `connect_timeout_ms`.
async fn establish(inner: &Inner) -> Result<(Connection, Arc<Link>, Events), QueueError> {
    let conn = open(&inner.settings, inner.role).await?;
    // Listen right away: events are only queued while a listener exists.
    let events: Events = Box::pin(conn.events_listener());
    // The channels live outside the setup future: if it fails or times
    // out, they are dropped only after the connection is closed (see
    // `supervise`: a channel dropped while its connection is open is closed
    // by lapin in the background, racing the connection close).
    let mut topology_channel: Option<Channel> = None;
    let mut channels = Vec::with_capacity(inner.settings.publisher_channels);
    let setup = async {
        declare_topology(&conn, &inner.settings, &mut topology_channel).await?;
        for _ in 0..inner.settings.publisher_channels {
            channels.push(Arc::new(open_confirm_channel(&conn).await?));
        }
        Ok::<_, QueueError>(())
    };
    let failure = match tokio::time::timeout(inner.settings.connect_timeout(), setup).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(("setup failed", e)),
        Err(_) => Some((
            "setup timed out",
            QueueError::Connect {
                url: inner.settings.redacted_url(),
                reason: "topology and channels not ready within connect_timeout_ms".into(),
            },
        )),
    };
    if let Some((why, e)) = failure {
        close_quietly(&conn, why, Duration::from_secs(1)).await;
        drop((topology_channel, channels));
        return Err(e);
    }
    let link = Arc::new(Link {
        channels: channels.into_boxed_slice(),
        conn: Arc::new(ConnFlags {
            lost: CancellationToken::new(),
            blocked: AtomicBool::new(false),
        }),
    });
    Ok((conn, link, events))
}

async fn open_confirm_channel(conn: &Connection) -> Result<PubChannel, QueueError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| QueueError::amqp("open channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| QueueError::amqp("confirm.select", e))?;
    Ok(PubChannel {
        channel,
        order: Mutex::new(()),
    })
}

/// Follows one connection until it is lost or the publisher stops.
async fn watch_connection(
    inner: &Inner,
    conn: &Connection,
    mut events: Events,
    flags: &Arc<ConnFlags>,
) -> Ended {
    let role = inner.role.as_str();
    let mut watchdog = tokio::time::interval(WATCHDOG_PERIOD);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A re-declaration asked for by an unroutable publish: due at once, or
    // REDECLARE_MIN_INTERVAL after the previous one, however many bounce.
    // It runs beside the loop (`redeclaring`), so events, the watchdog and
    // a stop are never held up by it.
    let mut redeclare_due: Option<tokio::time::Instant> = None;
    let mut next_redeclare_allowed = tokio::time::Instant::now();
    let mut redeclaring: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
    // A request left over from the previous connection: `establish` has
    // just declared everything.
    let _ = inner.redeclare.notified().now_or_never();
    loop {
        tokio::select! {
            biased;
            () = inner.stop.cancelled() => return Ended::Stop,
            ev = events.next() => match ev {
                None => return Ended::Lost("connection event stream ended".into()),
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!(role, %reason, "broker blocked the connection; publishes fail fast until it unblocks");
                    set_blocked(inner, flags, Some(reason));
                }
                Some(Event::ConnectionUnblocked) => {
                    info!(role, "broker unblocked the connection");
                    set_blocked(inner, flags, None);
                }
                Some(Event::SendFlow(active)) => {
                    // lapin holds back every publish while a channel has
                    // flow off: the same as blocked for us.
                    set_blocked(inner, flags, (!active).then(|| "channel.flow".to_owned()));
                }
                Some(Event::Error(e)) if e.is_amqp_soft_error() => {
                    // A channel was closed by the broker (e.g. a publish to
                    // a missing exchange). Replace ours if it was one.
                    debug!(role, error = %e, "channel-level error");
                    if let Err(reason) = repair_channels(inner, conn).await {
                        return Ended::Lost(reason);
                    }
                }
                Some(Event::Error(e)) => return Ended::Lost(e.to_string()),
                Some(_) => {}
            },
            () = run_redeclare(&mut redeclaring), if redeclaring.is_some() => {
                redeclaring = None;
            }
            () = inner.redeclare.notified(), if redeclare_due.is_none() => {
                redeclare_due = Some(next_redeclare_allowed.max(tokio::time::Instant::now()));
            }
            () = sleep_until_due(redeclare_due), if redeclare_due.is_some() && redeclaring.is_none() => {
                redeclare_due = None;
                next_redeclare_allowed = tokio::time::Instant::now() + REDECLARE_MIN_INTERVAL;
                redeclaring = Some(Box::pin(redeclare_topology(inner, conn)));
            }
            _ = watchdog.tick() => {
                if !conn.status().connected() {
                    return Ended::Lost("connection no longer connected".into());
                }
                if let Err(reason) = repair_channels(inner, conn).await {
                    return Ended::Lost(reason);
                }
            }
        }
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

async fn run_redeclare(redeclaring: &mut Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>>) {
    match redeclaring {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Declares the topology on a channel of its own, then closes it. The
/// channel is kept in `slot` so that the caller decides when it is dropped.
async fn declare_topology(
    conn: &Connection,
    settings: &QueueSettings,
    slot: &mut Option<Channel>,
) -> Result<(), QueueError> {
    let ch = slot.insert(
        conn.create_channel()
            .await
            .map_err(|e| QueueError::amqp("open channel", e))?,
    );
    topology::declare(ch, settings).await?;
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(())
}

/// Declares the topology again on a channel of its own, after a publish
/// came back unroutable: a deleted queue or exchange is back at once
/// instead of at the next reconnect. Failures are logged; the publishes
/// keep failing `Unroutable` (503) until it works.
async fn redeclare_topology(inner: &Inner, conn: &Connection) {
    let role = inner.role.as_str();
    let mut channel = None;
    let declare = declare_topology(conn, &inner.settings, &mut channel);
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

/// Replaces broker-closed channels of the current link with fresh confirm
/// channels on the same connection. Err means the connection is unusable.
async fn repair_channels(inner: &Inner, conn: &Connection) -> Result<(), String> {
    let Some(link) = inner.current_link() else {
        return Ok(());
    };
    if link.channels.iter().all(|c| c.channel.status().connected()) {
        return Ok(());
    }
    let mut channels = Vec::with_capacity(link.channels.len());
    for c in link.channels.iter() {
        if c.channel.status().connected() {
            channels.push(c.clone());
        } else {
            let fresh =
                tokio::time::timeout(inner.settings.connect_timeout(), open_confirm_channel(conn))
                    .await
                    .map_err(|_| "timed out replacing a closed channel".to_owned())?
                    .map_err(|e| format!("cannot replace a closed channel: {e}"))?;
            channels.push(Arc::new(fresh));
        }
    }
    debug!(
        role = inner.role.as_str(),
        "replaced broker-closed publisher channel(s)"
    );
    inner.set_link(Some(Arc::new(Link {
        channels: channels.into_boxed_slice(),
        conn: link.conn.clone(),
    })));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_domain::{AccountId, AuthMode, ContentEncoding, KeyDigest, KeyId};

    fn envelope() -> Envelope {
        Envelope {
            message_id: Envelope::new_message_id(),
            account_id: Some(AccountId::parse("acme").unwrap()),
            key_id: KeyId::from_u64(0xabc),
            key_digest: KeyDigest::of_secret("k"),
            auth_mode: AuthMode::Provisional,
            received_at_ms: 1,
            content_encoding: ContentEncoding::Identity,
            batch_id: None,
            body: b"{}".to_vec().into(),
        }
    }

    #[test]
    fn envelope_properties_carry_ids_and_long_string_headers() {
        let e = envelope();
        let id = e.message_id.to_string();
        let p = envelope_properties(&e, &id);
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some(e.message_id.to_string().as_str())
        );
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some(ENVELOPE_CONTENT_TYPE)
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert!(p.timestamp().is_some());
        let h = p.headers().as_ref().unwrap().inner();
        for (k, v) in [
            (HEADER_ACCOUNT, "acme"),
            (HEADER_KEY_ID, "0000000000000abc"),
            (HEADER_AUTH_MODE, "provisional"),
        ] {
            match h.get(k) {
                Some(AMQPValue::LongString(s)) => assert_eq!(s.to_string(), v),
                other => panic!("{k}: {other:?} (must be a LongString)"),
            }
        }
    }

    #[tokio::test]
    async fn a_blocked_connection_fails_fast_and_unblocks() {
        let m = QueueMetrics::unregistered().unwrap();
        let inner = Inner::new(QueueSettings::default(), m.clone(), Role::Publisher).unwrap();
        let flags = Arc::new(ConnFlags {
            lost: CancellationToken::new(),
            blocked: AtomicBool::new(false),
        });
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

    #[tokio::test]
    async fn invalid_settings_are_refused_at_start() {
        let s = QueueSettings {
            prefetch: 0,
            ..QueueSettings::default()
        };
        let err = Publisher::start(s, QueueMetrics::unregistered().unwrap()).unwrap_err();
        assert!(err.to_string().contains("queue.prefetch"), "{err}");
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Publisher::start(
            QueueSettings::default(),
            QueueMetrics::unregistered().unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_broker_fails_fast_and_reports_disconnected() {
        // A port nobody listens on: refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let s = QueueSettings {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            ..QueueSettings::default()
        };
        let p = Publisher::start(s, QueueMetrics::unregistered().unwrap()).unwrap();
        let t = Instant::now();
        let err = p.publish(&envelope()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(
            err,
            PublishError::unavailable(UnavailableReason::NotConnected)
        );
        let mut rx = p.watch_state();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!p.wait_connected(Duration::from_millis(50)).await);
        p.close().await;
        assert_eq!(p.state(), ConnectionState::Closed);
        assert_eq!(
            p.publish(&envelope()).await.unwrap_err(),
            PublishError::unavailable(UnavailableReason::Closed)
        );
    }
}
