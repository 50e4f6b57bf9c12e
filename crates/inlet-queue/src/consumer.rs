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

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, Stream, StreamExt};
use inlet_domain::{Envelope, EnvelopeError};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Acker, BasicProperties, Channel, Connection, Event};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Backoff, ConnectionState, close_quietly, open};
use crate::error::QueueError;
use crate::metrics::{QueueMetrics, Role, reason_label};
use crate::publisher::Publisher;
use crate::settings::QueueSettings;
use crate::topology::{self, Names, short};

/// Header counting attempts (1 = first delivery); set on retry copies.
pub const HEADER_ATTEMPT: &str = "x-inlet-attempt";
/// Header with the reason of the last failed attempt (retry copies).
pub const HEADER_LAST_ERROR: &str = "x-inlet-last-error";
/// Header with the reason a message was dead-lettered.
pub const HEADER_DEATH_REASON: &str = "x-inlet-death-reason";

/// Reason texts put in headers are cut to this many bytes.
const MAX_REASON_LEN: usize = 1024;
/// Bound on broker round trips during shutdown (cancel, close).
const SHUTDOWN_STEP: Duration = Duration::from_secs(5);
/// How often the supervisor double-checks the connection status.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);
/// How long an ack or nack may take before the delivery is left to
/// redelivery (see `bounded`).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`Incoming::retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// A copy waits in a delay queue and comes back as attempt `attempt`
    /// after `delay`.
    Scheduled {
        /// The attempt number the copy will carry (the failed one + 1).
        attempt: u32,
        /// How long it waits before redelivery.
        delay: Duration,
    },
    /// The attempts were exhausted: the message is in the dead-letter
    /// queue (reason label `max_attempts`).
    DeadLettered,
}

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

/// What every `Incoming` of one consumer shares.
struct Shared {
    settings: QueueSettings,
    names: Names,
    metrics: QueueMetrics,
    publisher: Publisher,
    /// Dropped when the last `Incoming` is gone (see `Supervisor::holds`).
    _hold: mpsc::Sender<()>,
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
        let sup = Supervisor {
            shared,
            tx,
            state_tx,
            cancel: cancel.clone(),
            holds: hold_rx,
            publisher: owns_publisher.then_some(publisher),
        };
        let task = runtime.spawn(sup.run());
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
                Some(incoming) if incoming.acker.poisoned() => {
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
            if !incoming.acker.poisoned() {
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

struct Supervisor {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Incoming>,
    state_tx: watch::Sender<ConnectionState>,
    cancel: CancellationToken,
    /// `recv` yields `None` once `Shared` (held by every `Incoming`) is
    /// gone.
    holds: mpsc::Receiver<()>,
    /// The retry publisher, when this consumer owns it.
    publisher: Option<Publisher>,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>;

enum Ended {
    Stop,
    Lost(String),
}

impl Supervisor {
    async fn run(self) {
        let Supervisor {
            shared,
            tx,
            state_tx,
            cancel,
            mut holds,
            publisher,
        } = self;
        let settings = &shared.settings;
        let metrics = &shared.metrics;
        let mut backoff = Backoff::new(settings);
        let mut connected_before = false;
        // The connection and channel of a graceful stop, kept open until
        // the work already handed out is settled. The channel handle must
        // live too: lapin closes a channel whose last handle is dropped
        // while the connection is open, and the broker then requeues every
        // delivery still unacked on it (their acks fail `NotSettled`).
        let mut last_conn: Option<(Connection, Channel)> = None;
        loop {
            let attempt = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                r = establish(settings) => r,
            };
            let reason = match attempt {
                Ok((conn, channel, consumer, events)) => {
                    backoff.reset();
                    if connected_before {
                        metrics.reconnected(Role::Consumer);
                        info!(role = "consumer", "reconnected; consuming again");
                    } else {
                        info!(role = "consumer", queue = %shared.names.queue, "consuming");
                    }
                    connected_before = true;
                    metrics.set_up(Role::Consumer, true);
                    state_tx.send_replace(ConnectionState::Connected);
                    let ended =
                        forward(&shared, &tx, &cancel, &conn, &channel, consumer, events).await;
                    metrics.set_up(Role::Consumer, false);
                    metrics.set_blocked(Role::Consumer, false);
                    match ended {
                        Ended::Stop => {
                            last_conn = Some((conn, channel));
                            break;
                        }
                        Ended::Lost(reason) => {
                            warn!(role = "consumer", %reason, "consumer connection lost; reconnecting");
                            close_quietly(&conn, "connection abandoned", Duration::from_secs(1))
                                .await;
                            reason
                        }
                    }
                }
                Err(e) => {
                    warn!(role = "consumer", error = %e, "cannot start consuming; retrying");
                    e.to_string()
                }
            };
            let since = match &*state_tx.borrow() {
                ConnectionState::Disconnected { since, .. } => *since,
                _ => Instant::now(),
            };
            state_tx.send_replace(ConnectionState::Disconnected { since, reason });
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        // Shutdown: no more deliveries are forwarded. Wait for every
        // Incoming already handed out to be settled or dropped, then close.
        drop(tx);
        drop(shared);
        while holds.recv().await.is_some() {}
        if let Some((conn, channel)) = last_conn {
            close_quietly(&conn, "consumer stopped", SHUTDOWN_STEP).await;
            // Dropped after the connection is closed: nothing left to close.
            drop(channel);
        }
        if let Some(p) = publisher {
            p.close().await;
        }
        state_tx.send_replace(ConnectionState::Closed);
        debug!(role = "consumer", "consumer supervisor stopped");
    }
}

/// Connects, declares the topology, sets the prefetch and starts
/// consuming, within `connect_timeout_ms` (after the connect itself).
async fn establish(
    settings: &QueueSettings,
) -> Result<(Connection, Channel, lapin::Consumer, Events), QueueError> {
    let conn = open(settings, Role::Consumer).await?;
    let events: Events = Box::pin(conn.events_listener());
    // Outside the setup future, so that on failure it is dropped only after
    // the connection is closed (see `Publisher`'s `establish`).
    let mut opened: Option<Channel> = None;
    let setup = async {
        let channel = opened.insert(
            conn.create_channel()
                .await
                .map_err(|e| QueueError::amqp("open channel", e))?,
        );
        let names = topology::declare(channel, settings).await?;
        channel
            .basic_qos(settings.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| QueueError::amqp("basic.qos", e))?;
        let tag = format!(
            "{}-{:08x}",
            settings.connection_name_for(Role::Consumer.as_str()),
            rand::random::<u32>()
        );
        let consumer = channel
            .basic_consume(
                short(&names.queue)?,
                short(&tag)?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| QueueError::amqp(format!("basic.consume on {}", names.queue), e))?;
        Ok::<_, QueueError>((channel.clone(), consumer))
    };
    let failure = match tokio::time::timeout(settings.connect_timeout(), setup).await {
        Ok(Ok((channel, consumer))) => return Ok((conn, channel, consumer, events)),
        Ok(Err(e)) => ("setup failed", e),
        Err(_) => (
            "setup timed out",
            QueueError::Connect {
                url: settings.redacted_url(),
                reason: "consumer not ready within connect_timeout_ms".into(),
            },
        ),
    };
    close_quietly(&conn, failure.0, Duration::from_secs(1)).await;
    drop(opened);
    Err(failure.1)
}

/// Hands deliveries of one connection to `tx` until it is lost or the
/// consumer is cancelled (then `basic.cancel` is sent).
async fn forward(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Incoming>,
    cancel: &CancellationToken,
    conn: &Connection,
    channel: &Channel,
    mut consumer: lapin::Consumer,
    mut events: Events,
) -> Ended {
    let mut watchdog = tokio::time::interval(WATCHDOG_PERIOD);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                stop_consuming(shared, channel, consumer, None).await;
                return Ended::Stop;
            }
            ev = events.next() => match ev {
                None => return Ended::Lost("connection event stream ended".into()),
                Some(Event::ConnectionBlocked(reason)) => {
                    // Should not happen: this connection never publishes.
                    warn!(role = "consumer", %reason, "broker blocked the consumer connection");
                    shared.metrics.set_blocked(Role::Consumer, true);
                }
                Some(Event::ConnectionUnblocked) => {
                    shared.metrics.set_blocked(Role::Consumer, false);
                }
                Some(Event::Error(e)) if e.is_amqp_soft_error() => {
                    if !channel.status().connected() {
                        return Ended::Lost(format!("channel closed by the broker: {e}"));
                    }
                }
                Some(Event::Error(e)) => return Ended::Lost(e.to_string()),
                Some(_) => {}
            },
            d = consumer.next() => match d {
                Some(Ok(delivery)) => {
                    shared.metrics.consumer_deliveries_total.inc();
                    let incoming = Incoming::new(shared.clone(), delivery);
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => {
                            // Not handed out: back to the queue.
                            stop_consuming(shared, channel, consumer, Some(incoming)).await;
                            return Ended::Stop;
                        }
                        permit = tx.reserve() => match permit {
                            Ok(permit) => permit.send(incoming),
                            // The Consumer handle is gone.
                            Err(_) => return Ended::Stop,
                        }
                    }
                }
                Some(Err(e)) => return Ended::Lost(format!("consumer stream failed: {e}")),
                None => return Ended::Lost("the broker cancelled the consumer (queue deleted?)".into()),
            },
            _ = watchdog.tick() => {
                if !conn.status().connected() || !channel.status().connected() {
                    return Ended::Lost("connection or channel no longer connected".into());
                }
            }
        }
    }
}

/// Ends consuming on a graceful stop: `basic.cancel`, then every delivery
/// received but not handed out (`held`, and what lapin has buffered) goes
/// back to the queue at once. Work already handed out is not touched.
async fn stop_consuming(
    shared: &Arc<Shared>,
    channel: &Channel,
    mut consumer: lapin::Consumer,
    held: Option<Incoming>,
) {
    match tokio::time::timeout(
        SHUTDOWN_STEP,
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await
    {
        Ok(Ok(())) => debug!(role = "consumer", "basic.cancel sent"),
        Ok(Err(e)) => warn!(role = "consumer", error = %e, "basic.cancel failed"),
        Err(_) => warn!(role = "consumer", "basic.cancel timed out"),
    }
    let mut unsent: Vec<Incoming> = held.into_iter().collect();
    // Only what is already buffered: never waits for the stream.
    while let Some(Some(Ok(delivery))) = consumer.next().now_or_never() {
        shared.metrics.consumer_deliveries_total.inc();
        unsent.push(Incoming::new(shared.clone(), delivery));
    }
    for incoming in unsent {
        let _ = tokio::time::timeout(SHUTDOWN_STEP, incoming.requeue()).await;
    }
}

/// One delivery of the main queue. Settle it exactly once: every method
/// takes `self`. Dropping it unsettled leaves it unacked; the broker
/// redelivers it when the consumer's connection closes.
pub struct Incoming {
    /// The decoded envelope, or why the bytes are not one (such a message
    /// can never succeed: dead-letter it, e.g. with reason `undecodable`).
    pub envelope: Result<Envelope, EnvelopeError>,
    /// 1 for the first delivery; retry copies carry the next number in the
    /// `x-inlet-attempt` header. Broker redeliveries keep the number.
    pub attempt: u32,
    /// The broker delivered it before (to a consumer that did not settle
    /// it, e.g. one that crashed): it may already have been processed.
    pub redelivered: bool,
    /// The AMQP message id (the envelope's UUID as text), if present.
    pub message_id: Option<String>,
    data: Vec<u8>,
    properties: BasicProperties,
    acker: Acker,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("message_id", &self.message_id)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .field("envelope_ok", &self.envelope.is_ok())
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Incoming {
    fn new(shared: Arc<Shared>, delivery: Delivery) -> Incoming {
        let Delivery {
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        Incoming {
            envelope: Envelope::decode(&data),
            attempt: read_attempt(properties.headers().as_ref()),
            redelivered,
            message_id: properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            data,
            properties,
            acker,
            shared,
        }
    }

    /// The message body as delivered.
    pub fn body(&self) -> &[u8] {
        &self.data
    }

    /// The message properties as delivered (headers included).
    pub fn properties(&self) -> &BasicProperties {
        &self.properties
    }

    /// A header's value, if present.
    pub fn header(&self, key: &str) -> Option<&AMQPValue> {
        self.properties.headers().as_ref()?.inner().get(key)
    }

    /// A text header (long or short string), if present.
    pub fn header_str(&self, key: &str) -> Option<String> {
        match self.header(key)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    /// Processing succeeded: remove the message.
    pub async fn ack(self) -> Result<(), QueueError> {
        settle_ack(&self.acker).await?;
        self.shared.metrics.consumer_acks_total.inc();
        Ok(())
    }

    /// Processing failed for a reason that may pass (a bad moment, not a
    /// bad message): schedule the next attempt through the delay queue for
    /// this attempt, or dead-letter it (label `max_attempts`) when this was
    /// attempt `max_attempts`. `reason` goes to the `x-inlet-last-error`
    /// header (and the death reason).
    ///
    /// The copy is confirmed before the original is acked (see the module
    /// docs on duplicates). If the copy cannot be published, the original
    /// is requeued and [`QueueError::Republish`] returned.
    pub async fn retry(self, reason: &str) -> Result<RetryOutcome, QueueError> {
        let s = &self.shared.settings;
        if self.attempt >= s.max_attempts {
            let why = format!(
                "max_attempts ({}) reached; last error: {reason}",
                s.max_attempts
            );
            self.dead_letter_as("max_attempts", &why).await?;
            return Ok(RetryOutcome::DeadLettered);
        }
        let delay_ms = s.retry_delay_ms(self.attempt);
        let next = self.attempt + 1;
        // Every configured delay has its queue; the fallback only guards
        // against Names and settings disagreeing.
        let queue = self
            .shared
            .names
            .delay_queue(delay_ms)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}.push.delay.{delay_ms}", self.shared.names.prefix));
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        headers.insert(HEADER_ATTEMPT.into(), attempt_value(next));
        headers.insert(HEADER_LAST_ERROR.into(), reason_value(reason));
        let properties = copy_properties(&self.properties, headers);
        // Default exchange: routes by queue name.
        if let Err(e) = self.republish("", &queue, properties).await {
            let requeued = self.requeue_after_failure().await;
            return Err(QueueError::Republish {
                what: "retry",
                source: e,
                requeued,
            });
        }
        settle_ack(&self.acker).await?;
        self.shared.metrics.consumer_retries_total.inc();
        Ok(RetryOutcome::Scheduled {
            attempt: next,
            delay: Duration::from_millis(delay_ms),
        })
    }

    /// The message can never succeed: move it to the dead-letter queue with
    /// `reason` in the `x-inlet-death-reason` header, keeping the original
    /// properties and body. `reason` also labels
    /// `inlet_queue_consumer_dead_letters_total`: a short stable label such
    /// as `undecodable` works best; for `"label: details"` the part before
    /// the colon is the label; anything else counts as `other`.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        let label = match reason.split_once(':') {
            Some((head, _)) if reason_label(head.trim()) != "other" => head.trim(),
            _ => reason_label(reason),
        }
        .to_owned();
        self.dead_letter_as(&label, reason).await
    }

    async fn dead_letter_as(self, label: &str, reason: &str) -> Result<(), QueueError> {
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        headers.insert(HEADER_DEATH_REASON.into(), reason_value(reason));
        headers.insert(HEADER_ATTEMPT.into(), attempt_value(self.attempt));
        let properties = copy_properties(&self.properties, headers);
        let names = &self.shared.names;
        if let Err(e) = self
            .republish(&names.dead_exchange, &names.routing_key, properties)
            .await
        {
            let requeued = self.requeue_after_failure().await;
            return Err(QueueError::Republish {
                what: "dead-letter",
                source: e,
                requeued,
            });
        }
        settle_ack(&self.acker).await?;
        self.shared.metrics.dead_lettered(label);
        Ok(())
    }

    /// Hand the message back to the broker for redelivery now (e.g. the
    /// worker's database is down and it must stop pulling). Each requeue
    /// counts against the quorum queue's `delivery_limit`: a message
    /// requeued that often is dead-lettered by the broker.
    pub async fn requeue(self) -> Result<(), QueueError> {
        match bounded(
            "requeue",
            self.acker.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            }),
        )
        .await
        {
            Ok(true) => {
                self.shared.metrics.consumer_requeues_total.inc();
                Ok(())
            }
            Ok(false) => Err(QueueError::NotSettled { op: "requeue" }),
            Err(e) => Err(QueueError::amqp("basic.nack (requeue)", e)),
        }
    }

    /// Publishes a copy through the retry publisher, first waiting (up to
    /// `confirm_timeout_ms`) for it to be connected: right after start, or
    /// during a short reconnect, failing would requeue the original, and
    /// every requeue counts against the broker's delivery limit.
    async fn republish(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> Result<(), crate::error::PublishError> {
        let publisher = &self.shared.publisher;
        if !publisher.state().is_connected() {
            publisher
                .wait_connected(self.shared.settings.confirm_timeout())
                .await;
        }
        publisher
            .publish_raw(exchange, routing_key, &self.data, properties)
            .await
            .map(|_| ())
    }

    async fn requeue_after_failure(&self) -> bool {
        let ok = matches!(
            bounded(
                "requeue",
                self.acker.nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                }),
            )
            .await,
            Ok(true)
        );
        if ok {
            self.shared.metrics.consumer_requeues_total.inc();
        }
        ok
    }
}

async fn settle_ack(acker: &Acker) -> Result<(), QueueError> {
    match bounded("ack", acker.ack(BasicAckOptions { multiple: false })).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError::NotSettled { op: "ack" }),
        Err(e) => Err(QueueError::amqp("basic.ack", e)),
    }
}

/// An ack or nack, bounded by [`SETTLE_TIMEOUT`]. Settling only writes a
/// frame, but one issued while its connection is dying may never be
/// answered; a pipeline waiting on it would hold every delivery of its new
/// connection. Past the bound the delivery counts as not settled (`false`):
/// the broker redelivers it once the old channel is gone.
async fn bounded(
    op: &'static str,
    settle: impl std::future::Future<Output = lapin::Result<bool>>,
) -> lapin::Result<bool> {
    match tokio::time::timeout(SETTLE_TIMEOUT, settle).await {
        Ok(r) => r,
        Err(_) => {
            warn!(op, timeout = ?SETTLE_TIMEOUT, "settling a delivery got no answer; leaving it to redelivery");
            Ok(false)
        }
    }
}

/// Reads `x-inlet-attempt` (any integer type, or digits as text); missing
/// or nonsensical values mean attempt 1.
pub(crate) fn read_attempt(headers: Option<&FieldTable>) -> u32 {
    let Some(v) = headers.and_then(|h| h.inner().get(HEADER_ATTEMPT)) else {
        return 1;
    };
    let n: Option<i64> = match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongString(s) => s.to_string().trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

fn attempt_value(attempt: u32) -> AMQPValue {
    AMQPValue::LongLongInt(i64::from(attempt))
}

fn reason_value(reason: &str) -> AMQPValue {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    AMQPValue::LongString(LongString::from(&reason[..end]))
}

/// The properties of a copy: the original's, persistent, with `headers`,
/// and without a per-message expiration (a delay queue's TTL decides).
fn copy_properties(p: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut out = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::ShortString;

    fn table(v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(HEADER_ATTEMPT.into(), v);
        t
    }

    #[test]
    fn attempt_header_is_read_leniently() {
        assert_eq!(read_attempt(None), 1);
        assert_eq!(read_attempt(Some(&FieldTable::default())), 1);
        assert_eq!(read_attempt(Some(&table(AMQPValue::LongLongInt(3)))), 3);
        assert_eq!(read_attempt(Some(&table(AMQPValue::LongInt(4)))), 4);
        assert_eq!(read_attempt(Some(&table(AMQPValue::ShortShortUInt(2)))), 2);
        assert_eq!(
            read_attempt(Some(&table(AMQPValue::LongString("5".into())))),
            5
        );
        assert_eq!(read_attempt(Some(&table(AMQPValue::LongLongInt(0)))), 1);
        assert_eq!(read_attempt(Some(&table(AMQPValue::LongLongInt(-7)))), 1);
        assert_eq!(
            read_attempt(Some(&table(AMQPValue::LongLongInt(i64::MAX)))),
            1
        );
        assert_eq!(read_attempt(Some(&table(AMQPValue::Boolean(true)))), 1);
        assert_eq!(
            read_attempt(Some(&table(AMQPValue::LongString("x".into())))),
            1
        );
    }

    #[test]
    fn reasons_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_REASON_LEN);
        match reason_value(&long) {
            AMQPValue::LongString(s) => {
                assert!(s.as_bytes().len() <= MAX_REASON_LEN);
                assert!(std::str::from_utf8(s.as_bytes()).is_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn copies_keep_properties_but_not_expiration() {
        let p = BasicProperties::default()
            .with_message_id("m1".into())
            .with_content_type("ct".into())
            .with_timestamp(42)
            .with_expiration("1000".into())
            .with_delivery_mode(1);
        let c = copy_properties(&p, FieldTable::default());
        assert_eq!(c.message_id().as_ref().map(ShortString::as_str), Some("m1"));
        assert_eq!(
            c.content_type().as_ref().map(ShortString::as_str),
            Some("ct")
        );
        assert_eq!(*c.timestamp(), Some(42));
        assert_eq!(*c.delivery_mode(), Some(2));
        assert!(c.expiration().is_none());
    }
}
