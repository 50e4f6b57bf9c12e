//! The hot path: one publish and its confirm (see the module docs of
//! `publisher`: no task, no lock across an await, one deadline).

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tracing::{debug, error};

use crate::error::{PublishError, UnavailableReason};
use crate::metrics::QueueMetrics;
use crate::publisher::link::{Inner, Link, PubChannel, lock};

/// A successful, broker-confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// From the call to the broker's ack.
    pub elapsed: Duration,
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
    pub(super) async fn publish(
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
        // The permit first, then `closing`: `close` sets `closing` before
        // it takes every permit (the semaphore orders the two), so a
        // publish holding a permit that still reads `closing` false is one
        // `close` waits for, and one refused a permit while `close` holds
        // them reads it true. Read the other way round, a publish could
        // see `closing` false, then be refused as backpressure by the
        // drain, or take a permit after it and meet a closed connection.
        let permit = self.permits.try_acquire();
        if self.closing.load(Ordering::SeqCst) {
            m.outcomes.unavailable.inc();
            return Err(PublishError::unavailable(UnavailableReason::Closed));
        }
        let Ok(permit) = permit else {
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
                self.answered_ack();
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
            Ok(Ok(Confirmation::Nack(_))) => {
                self.answered_nack();
                PublishError::Nacked
            }
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

    /// Publishes one message (a push's envelope, or a bundle of them) to
    /// the push exchange, expecting `id` back should it be returned.
    pub(super) async fn publish_push(
        &self,
        payload: &[u8],
        properties: BasicProperties,
        id: &str,
    ) -> Result<Confirmed, PublishError> {
        self.publish(
            self.exchange.clone(),
            self.routing_key.clone(),
            payload,
            properties,
            Some(id),
            true,
        )
        .await
    }

    /// Whether a publish to `exchange` / `routing_key` targets the
    /// topology this publisher declares (its failing to route then means
    /// part of the topology is gone).
    pub(super) fn in_topology(&self, exchange: &str, routing_key: &str) -> bool {
        let n = &self.names;
        if exchange.is_empty() {
            return routing_key == n.queue
                || routing_key == n.dead_queue
                || n.delay_queues.iter().any(|(_, q)| q == routing_key);
        }
        (exchange == n.exchange && routing_key == n.routing_key) || exchange == n.dead_exchange
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
}
