//! Exchanges and queues, all named from one prefix, declared idempotently.
//!
//! ```text
//!   publisher ──► {prefix}.push (direct exchange) ──key "push"──► {prefix}.push (main queue)
//!                        ▲                                          │ x-delivery-limit exceeded
//!                        │ TTL expired: dead-lettered back          ▼
//!   retry ──(default exchange)──► {prefix}.push.delay.{ms}     {prefix}.dead (fanout)
//!                                 (one queue per delay level)       │
//!   dead_letter ────────────────────────────────────────────────────┴──► {prefix}.push.dead
//! ```
//!
//! **One delay queue per delay level.** RabbitMQ only expires messages at
//! the head of a queue, so per-message TTLs in one shared queue would make
//! a 1 s retry wait behind a 10 min one (head-of-line blocking). A queue per
//! level with a fixed `x-message-ttl` keeps every queue FIFO in expiry
//! order, so each message leaves exactly when its TTL ends.
//!
//! **At-least-once dead-lettering.** With quorum queues, the delay queues
//! and the main queue use `x-dead-letter-strategy: at-least-once` (which
//! RabbitMQ requires to be paired with `x-overflow: reject-publish`): the
//! broker keeps an expired retry until the push exchange has confirmed the
//! re-routed copy, so a retry is never lost between two queues. Verified
//! against RabbitMQ 3.10.8 by the `delay_queue_returns_messages_to_main`
//! integration test (quorum and classic). Classic queues only support
//! at-most-once dead-lettering; that configuration is for development
//! brokers.

use inlet_domain::InvalidSetting;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::error::QueueError;
use crate::settings::{QueueSettings, QueueType};

/// The routing key binding the main queue to the push exchange; also the
/// key dead-lettered retries come back with.
pub const PUSH_ROUTING_KEY: &str = "push";

/// Every name derived from a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix everything is named from.
    pub prefix: String,
    /// `{prefix}.push`: durable direct exchange the API publishes to.
    pub exchange: String,
    /// Routing key of pushes ([`PUSH_ROUTING_KEY`]).
    pub routing_key: String,
    /// `{prefix}.push`: the main (work) queue.
    pub queue: String,
    /// `{prefix}.dead`: durable fanout exchange for dead letters.
    pub dead_exchange: String,
    /// `{prefix}.push.dead`: the dead-letter queue.
    pub dead_queue: String,
    /// One `(delay in ms, queue name)` per distinct retry delay, in the
    /// order of `retry_delays_ms`: `{prefix}.push.delay.{ms}`.
    pub delay_queues: Vec<(u64, String)>,
}

impl Names {
    /// The names for `prefix` with delay queues for `delays_ms` (repeated
    /// values share a queue).
    pub fn new(prefix: &str, delays_ms: &[u64]) -> Names {
        let mut delay_queues: Vec<(u64, String)> = Vec::with_capacity(delays_ms.len());
        for &ms in delays_ms {
            if !delay_queues.iter().any(|(d, _)| *d == ms) {
                delay_queues.push((ms, format!("{prefix}.push.delay.{ms}")));
            }
        }
        Names {
            prefix: prefix.to_owned(),
            exchange: format!("{prefix}.push"),
            routing_key: PUSH_ROUTING_KEY.to_owned(),
            queue: format!("{prefix}.push"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.push.dead"),
            delay_queues,
        }
    }

    /// The names the settings describe.
    pub fn from_settings(settings: &QueueSettings) -> Names {
        Names::new(&settings.prefix, &settings.retry_delays_ms)
    }

    /// The delay queue holding messages for `delay_ms`, if declared.
    pub fn delay_queue(&self, delay_ms: u64) -> Option<&str> {
        self.delay_queues
            .iter()
            .find(|(d, _)| *d == delay_ms)
            .map(|(_, q)| q.as_str())
    }

    /// Every queue name (main, dead, delays).
    pub fn all_queues(&self) -> Vec<&str> {
        let mut v = vec![self.queue.as_str(), self.dead_queue.as_str()];
        v.extend(self.delay_queues.iter().map(|(_, q)| q.as_str()));
        v
    }

    /// Every exchange name (push, dead).
    pub fn all_exchanges(&self) -> Vec<&str> {
        vec![self.exchange.as_str(), self.dead_exchange.as_str()]
    }
}

/// A name as an AMQP short string, without the panic of `From<&str>` for
/// names over 255 bytes (validated settings never produce one).
pub(crate) fn short(name: &str) -> Result<ShortString, QueueError> {
    ShortString::try_new(name).map_err(|_| {
        QueueError::Settings(InvalidSetting::new(
            "queue.prefix",
            format!("derived name longer than 255 bytes: {name:.40}…"),
        ))
    })
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn queue_args(settings: &QueueSettings) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long(settings.queue_type.as_str()));
    args
}

/// Arguments shared by quorum queues that dead-letter: at-least-once
/// dead-lettering requires reject-publish overflow.
fn at_least_once(args: &mut FieldTable) {
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
}

/// Declares the whole topology (idempotent: declaring an existing,
/// identical topology is a no-op). Validates the settings first.
///
/// Fails with [`QueueError::Amqp`] when the broker refuses, e.g. a queue
/// of the same name exists with other arguments (`PRECONDITION_FAILED`,
/// which also closes `channel`).
#[tracing::instrument(skip_all, fields(prefix = %settings.prefix, queue_type = settings.queue_type.as_str()))]
pub async fn declare(channel: &Channel, settings: &QueueSettings) -> Result<Names, QueueError> {
    settings.validate()?;
    let names = Names::from_settings(settings);
    let quorum = settings.queue_type == QueueType::Quorum;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };

    channel
        .exchange_declare(
            short(&names.exchange)?,
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| QueueError::amqp(format!("declare exchange {}", names.exchange), e))?;
    channel
        .exchange_declare(
            short(&names.dead_exchange)?,
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| QueueError::amqp(format!("declare exchange {}", names.dead_exchange), e))?;

    // Dead-letter queue: where poison and exhausted messages wait for an
    // operator. No dead-lettering of its own.
    declare_queue(channel, &names.dead_queue, queue_args(settings)).await?;
    bind(channel, &names.dead_queue, &names.dead_exchange, "").await?;

    // Main queue.
    let mut main = queue_args(settings);
    main.insert("x-dead-letter-exchange".into(), long(&names.dead_exchange));
    if quorum {
        main.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(settings.delivery_limit).unwrap_or(i32::MAX)),
        );
        at_least_once(&mut main);
    }
    declare_queue(channel, &names.queue, main).await?;
    bind(channel, &names.queue, &names.exchange, &names.routing_key).await?;

    // Delay queues: no consumer; a message waits out the queue's TTL and
    // is dead-lettered back to the push exchange with the push key.
    for (ms, queue) in &names.delay_queues {
        let mut args = queue_args(settings);
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongInt(i32::try_from(*ms).unwrap_or(i32::MAX)),
        );
        args.insert("x-dead-letter-exchange".into(), long(&names.exchange));
        args.insert("x-dead-letter-routing-key".into(), long(&names.routing_key));
        if quorum {
            at_least_once(&mut args);
        }
        declare_queue(channel, queue, args).await?;
    }
    Ok(names)
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), QueueError> {
    channel
        .queue_declare(short(name)?, QueueDeclareOptions::durable(), args)
        .await
        .map(|_| ())
        .map_err(|e| QueueError::amqp(format!("declare queue {name}"), e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), QueueError> {
    channel
        .queue_bind(
            short(queue)?,
            short(exchange)?,
            short(key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| QueueError::amqp(format!("bind queue {queue} to {exchange}"), e))
}

/// Deletes every queue and exchange of `names` (tests and tools). Missing
/// ones are fine; the first error is returned after trying them all.
///
/// RabbitMQ treats deleting a missing queue or exchange as success; any
/// other broker error closes `channel` (and the deletes after it fail
/// too), so pass a dedicated channel.
pub async fn delete(channel: &Channel, names: &Names) -> Result<(), QueueError> {
    let mut first_err = None;
    for q in names.all_queues() {
        if let Err(e) = channel
            .queue_delete(short(q)?, QueueDeleteOptions::default())
            .await
        {
            first_err.get_or_insert(QueueError::amqp(format!("delete queue {q}"), e));
        }
    }
    for x in names.all_exchanges() {
        if let Err(e) = channel
            .exchange_delete(short(x)?, ExchangeDeleteOptions::default())
            .await
        {
            first_err.get_or_insert(QueueError::amqp(format!("delete exchange {x}"), e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_dedupe_delays() {
        let n = Names::new("p", &[100, 200, 200, 100, 300]);
        assert_eq!(n.exchange, "p.push");
        assert_eq!(n.queue, "p.push");
        assert_eq!(n.dead_exchange, "p.dead");
        assert_eq!(n.dead_queue, "p.push.dead");
        assert_eq!(
            n.delay_queues,
            vec![
                (100, "p.push.delay.100".to_owned()),
                (200, "p.push.delay.200".to_owned()),
                (300, "p.push.delay.300".to_owned()),
            ]
        );
        assert_eq!(n.delay_queue(200), Some("p.push.delay.200"));
        assert_eq!(n.delay_queue(999), None);
        assert_eq!(n.all_queues().len(), 5);
    }

    #[test]
    fn longest_valid_prefix_fits_a_short_string() {
        let s = QueueSettings {
            prefix: "x".repeat(crate::settings::MAX_PREFIX_LEN),
            retry_delays_ms: vec![i32::MAX as u64],
            ..QueueSettings::default()
        };
        s.validate().unwrap();
        let n = Names::from_settings(&s);
        for q in n.all_queues() {
            assert!(short(q).is_ok(), "{q}");
        }
    }

    #[test]
    fn overlong_names_are_errors_not_panics() {
        assert!(short(&"y".repeat(256)).is_err());
    }
}
