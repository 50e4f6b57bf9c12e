//! One message, [`Incoming`], and the four ways to settle it; the
//! headers retry and dead-letter copies carry.
//!
//! # Combined messages
//!
//! A delivery that is a [`Bundle`] (several pushes the API combined into
//! one broker message) becomes one `Incoming` per push, each with its own
//! envelope and properties, as if it had been published alone. Each is
//! settled on its own: a retry or a dead letter publishes *that push* (as
//! a single envelope message, with its own headers) to the delay or
//! dead-letter queue, so one bad push never takes its neighbours with it.
//! The broker's delivery is acked once every part is settled; a part that
//! must go back (a requeue, or a retry or dead letter that could not be
//! published) hands the whole delivery back, and the parts already written
//! are recognised as duplicates when it comes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use inlet_domain::{Bundle, Envelope, EnvelopeError};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Acker, BasicProperties};
use tokio::sync::mpsc;
use tracing::warn;

use crate::error::{PublishError, QueueError};
use crate::metrics::{QueueMetrics, reason_label};
use crate::publisher::Publisher;
use crate::settings::QueueSettings;
use crate::topology::Names;

/// Header counting attempts (1 = first delivery); set on retry copies.
pub const HEADER_ATTEMPT: &str = "x-inlet-attempt";
/// Header with the reason of the last failed attempt (retry copies).
pub const HEADER_LAST_ERROR: &str = "x-inlet-last-error";
/// Header with the reason a message was dead-lettered.
pub const HEADER_DEATH_REASON: &str = "x-inlet-death-reason";

/// Reason texts put in headers are cut to this many bytes.
const MAX_REASON_LEN: usize = 1024;
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

/// What every `Incoming` of one consumer shares.
pub(super) struct Shared {
    pub(super) settings: QueueSettings,
    pub(super) names: Names,
    pub(super) metrics: QueueMetrics,
    pub(super) publisher: Publisher,
    /// Dropped when the last `Incoming` is gone (see `Consumer::spawn`).
    pub(super) _hold: mpsc::Sender<()>,
}

/// The broker's delivery behind one `Incoming`, or behind every part of a
/// bundle.
struct Delivered {
    acker: Acker,
    /// Parts not settled yet: the delivery is acked when the last one is.
    open: AtomicUsize,
    /// Handed back to the broker as a whole: later settlements of its
    /// parts do nothing (the broker redelivers them all).
    handed_back: AtomicBool,
}

impl Delivered {
    /// One part is settled (its effect durable, or its copy confirmed):
    /// acks the delivery if it was the last.
    async fn settle_part(&self) -> Result<bool, QueueError> {
        if self.handed_back.load(Ordering::Acquire) {
            // Redelivered as a whole; this part is a duplicate then.
            return Err(QueueError::NotSettled { op: "ack" });
        }
        if self.open.fetch_sub(1, Ordering::AcqRel) > 1 {
            return Ok(false);
        }
        settle_ack(&self.acker).await?;
        Ok(true)
    }

    /// Hands the whole delivery back (once, counted), for redelivery now.
    async fn hand_back(&self, metrics: &QueueMetrics) -> lapin::Result<bool> {
        if self.handed_back.swap(true, Ordering::AcqRel) {
            return Ok(true);
        }
        let nacked = bounded(
            "requeue",
            self.acker.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            }),
        )
        .await;
        if matches!(nacked, Ok(true)) {
            metrics.consumer_requeues_total.inc();
        }
        nacked
    }
}

/// One message of the main queue: a delivery, or one push of a delivered
/// bundle. Settle it exactly once: every method takes `self`. Dropping it
/// unsettled leaves its delivery unacked; the broker redelivers it when
/// the consumer's connection closes.
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
    delivery: Arc<Delivered>,
    /// The delivery's first (or only) message.
    starts_delivery: bool,
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
    /// The messages of one delivery: itself, or each push of a bundle.
    pub(super) fn split(shared: Arc<Shared>, delivery: Delivery) -> Vec<Incoming> {
        let Delivery {
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        let attempt = read_attempt(properties.headers().as_ref());
        let parts = if Bundle::is_bundle(&data) {
            Bundle::split(&data).map(|parts| parts.into_iter().map(<[u8]>::to_vec).collect())
        } else {
            Err(EnvelopeError::BadMagic)
        };
        let parts: Vec<Vec<u8>> = match parts {
            Ok(parts) => parts,
            // A single envelope (or bytes that are neither, which are
            // dead-lettered as they came).
            Err(_) => {
                let delivery = Arc::new(Delivered {
                    acker,
                    open: AtomicUsize::new(1),
                    handed_back: AtomicBool::new(false),
                });
                return vec![Incoming {
                    envelope: Envelope::decode(&data),
                    attempt,
                    redelivered,
                    message_id: properties
                        .message_id()
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    data,
                    properties,
                    delivery,
                    starts_delivery: true,
                    shared,
                }];
            }
        };
        let delivery = Arc::new(Delivered {
            acker,
            open: AtomicUsize::new(parts.len()),
            handed_back: AtomicBool::new(false),
        });
        parts
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                let envelope = Envelope::decode(&data);
                // As if published alone: its retry or dead-letter copy
                // carries its own message id and headers.
                let (message_id, mut part_properties) = match &envelope {
                    Ok(e) => {
                        let id = e.message_id.hyphenated().to_string();
                        let p = crate::publisher::envelope_properties(e, &id);
                        (Some(id), p)
                    }
                    Err(_) => (
                        None,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type(inlet_domain::ENVELOPE_CONTENT_TYPE.into()),
                    ),
                };
                if let Some(t) = properties.timestamp() {
                    part_properties = part_properties.with_timestamp(*t);
                }
                Incoming {
                    envelope,
                    attempt,
                    redelivered,
                    message_id,
                    data,
                    properties: part_properties,
                    delivery: delivery.clone(),
                    starts_delivery: i == 0,
                    shared: shared.clone(),
                }
            })
            .collect()
    }

    /// Whether this is its delivery's first (or only) message: counting
    /// these counts the broker's deliveries, which `[queue] prefetch`
    /// bounds (a bundle's other pushes come with its first).
    pub fn starts_delivery(&self) -> bool {
        self.starts_delivery
    }

    /// Delivered on a connection since lost: it can no longer be settled
    /// (the broker redelivers it on the new connection).
    pub(super) fn of_lost_connection(&self) -> bool {
        self.delivery.acker.poisoned()
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
        if self.delivery.settle_part().await? {
            self.shared.metrics.consumer_acks_total.inc();
        }
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
        self.delivery.settle_part().await?;
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
        self.delivery.settle_part().await?;
        self.shared.metrics.dead_lettered(label);
        Ok(())
    }

    /// Hand the message back to the broker for redelivery now (e.g. the
    /// worker's database is down and it must stop pulling). Each requeue
    /// counts against the quorum queue's `delivery_limit`: a message
    /// requeued that often is dead-lettered by the broker. A push of a
    /// bundle hands back the whole delivery (once for all its parts).
    pub async fn requeue(self) -> Result<(), QueueError> {
        match self.delivery.hand_back(&self.shared.metrics).await {
            Ok(true) => Ok(()),
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
    ) -> Result<(), PublishError> {
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
        matches!(
            self.delivery.hand_back(&self.shared.metrics).await,
            Ok(true)
        )
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
