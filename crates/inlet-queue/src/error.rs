//! Typed errors: [`PublishError`] for one publish (the API maps it to a
//! status and a stable code) and [`QueueError`] for everything else
//! (connecting, declaring, settling deliveries).

use std::time::Duration;

use inlet_domain::InvalidSetting;

/// Why a publish was not confirmed. Every variant means "the push is NOT
/// known to be durable": the API must not answer 202.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No usable connection: the broker is down or unreachable, the
    /// connection is blocked by a broker resource alarm, the publisher is
    /// shutting down, or the connection was lost while this publish waited
    /// for its confirm (then the message may or may not have been stored).
    /// Failing fast is deliberate: retry later, or answer 503.
    #[error("queue unavailable: {reason}")]
    Unavailable {
        /// What made it unavailable (for logs, not for matching).
        reason: UnavailableReason,
    },
    /// The in-flight bound (`max_in_flight`) is reached: the broker is
    /// slower than the incoming rate. Refused at once, never queued.
    #[error("queue backpressure: {limit} publishes already awaiting confirms")]
    Backpressure {
        /// The configured bound.
        limit: usize,
    },
    /// The broker refused the message (`basic.nack`), e.g. a queue at its
    /// length limit with `reject-publish` overflow. Not stored.
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// The broker found no queue to route the message to and returned it,
    /// or the exchange does not exist: the topology is missing or broken.
    /// Not stored.
    #[error("the message was unroutable ({reply_code} {reply_text})")]
    Unroutable {
        /// AMQP reply code: 312 NO_ROUTE, or 404 NOT_FOUND for a missing
        /// exchange.
        reply_code: u16,
        /// The broker's reply text.
        reply_text: String,
    },
    /// No confirm within `confirm_timeout_ms`. The outcome is unknown: the
    /// message may still be stored, so a retry can duplicate it (the
    /// worker deduplicates).
    #[error("no broker confirm within {0:?}")]
    Timeout(Duration),
    /// The call itself was malformed (e.g. an exchange name longer than
    /// 255 bytes): a programming error, retrying does not help.
    #[error("invalid publish: {0}")]
    Invalid(&'static str),
}

/// Why the publisher could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnavailableReason {
    /// Not connected to the broker (never was, or the connection is lost
    /// and being re-established).
    NotConnected,
    /// The broker blocked the connection (memory or disk alarm).
    Blocked,
    /// The connection or channel failed while this publish was under way;
    /// the message may or may not have been stored.
    ConnectionLost,
    /// [`crate::Publisher::close`] was called.
    Closed,
}

impl std::fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnavailableReason::NotConnected => "not connected to the broker",
            UnavailableReason::Blocked => "connection blocked by a broker resource alarm",
            UnavailableReason::ConnectionLost => "connection lost before the confirm",
            UnavailableReason::Closed => "publisher closed",
        })
    }
}

impl PublishError {
    /// A stable machine-readable code for HTTP error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Unavailable { .. } => "queue_unavailable",
            PublishError::Backpressure { .. } => "queue_backpressure",
            PublishError::Nacked => "queue_nacked",
            PublishError::Unroutable { .. } => "queue_unroutable",
            PublishError::Timeout(_) => "queue_timeout",
            PublishError::Invalid(_) => "queue_invalid",
        }
    }

    /// Whether trying again later can succeed (everything but a malformed
    /// call). An unroutable publish makes the publisher declare its
    /// topology again, so it is worth a retry too.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PublishError::Invalid(_))
    }

    /// Whether the message may have been stored despite the error (so a
    /// retry may duplicate it): a timeout or a connection lost mid-flight.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            PublishError::Timeout(_)
                | PublishError::Unavailable {
                    reason: UnavailableReason::ConnectionLost
                }
        )
    }

    pub(crate) fn unavailable(reason: UnavailableReason) -> Self {
        PublishError::Unavailable { reason }
    }
}

/// Connection, topology and delivery-settlement failures.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The settings are invalid (start-up misconfiguration).
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    /// Could not open a connection in time (or at all).
    #[error("cannot connect to the broker at {url}: {reason}")]
    Connect {
        /// The broker URL without its password.
        url: String,
        /// What failed.
        reason: String,
    },
    /// An AMQP operation failed (declare, bind, channel open, qos, ...).
    #[error("AMQP {op} failed: {source}")]
    Amqp {
        /// What we were doing, e.g. `declare queue inlet.push`.
        op: String,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// A retry or dead-letter copy was not confirmed by the broker, so the
    /// original was not acknowledged. When `requeued`, it was handed back
    /// to the broker for redelivery; otherwise it is redelivered once its
    /// channel closes.
    #[error("could not publish the {what} copy ({source}); original requeued: {requeued}")]
    Republish {
        /// `retry` or `dead-letter`.
        what: &'static str,
        /// Why the copy was not confirmed.
        #[source]
        source: PublishError,
        /// Whether the original was nacked with requeue.
        requeued: bool,
    },
    /// lapin answered `Ok(false)` to an ack/nack: the delivery was already
    /// settled or its channel is gone. It will be redelivered (if it was
    /// not settled), so the worker may see it again.
    #[error("delivery not settled by {op}: its channel is closed or it was already settled")]
    NotSettled {
        /// `ack`, `nack` or `requeue`.
        op: &'static str,
    },
}

impl QueueError {
    pub(crate) fn amqp(op: impl Into<String>, source: lapin::Error) -> Self {
        QueueError::Amqp {
            op: op.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (
                PublishError::unavailable(UnavailableReason::Blocked),
                "queue_unavailable",
            ),
            (
                PublishError::Backpressure { limit: 1 },
                "queue_backpressure",
            ),
            (PublishError::Nacked, "queue_nacked"),
            (
                PublishError::Unroutable {
                    reply_code: 312,
                    reply_text: "NO_ROUTE".into(),
                },
                "queue_unroutable",
            ),
            (
                PublishError::Timeout(Duration::from_secs(1)),
                "queue_timeout",
            ),
            (PublishError::Invalid("x"), "queue_invalid"),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code);
        }
    }

    #[test]
    fn unknown_outcomes_are_flagged() {
        assert!(PublishError::Timeout(Duration::from_secs(1)).outcome_unknown());
        assert!(PublishError::unavailable(UnavailableReason::ConnectionLost).outcome_unknown());
        assert!(!PublishError::unavailable(UnavailableReason::NotConnected).outcome_unknown());
        assert!(!PublishError::Backpressure { limit: 3 }.outcome_unknown());
    }
}
