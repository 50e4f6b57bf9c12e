//! Topology declaration against the real broker, including the check that
//! delay queues really dead-letter back to the main queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use inlet_queue::topology::{self, Names};
use inlet_queue::{Consumer, QueueError, QueueType, RetryOutcome};
use inlet_testkit::TestAmqp;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_is_idempotent() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let probe = Probe::new(&t).await;
    let a = topology::declare(&probe.ch, &s).await.unwrap();
    let b = topology::declare(&probe.ch, &s).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a, Names::from_settings(&s));
    // Every queue exists (a passive declare on a missing one would fail).
    for q in a.all_queues() {
        assert_eq!(probe.count(q).await, 0, "{q}");
    }
    assert_eq!(a.delay_queues.len(), 5);
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_with_another_queue_type_is_a_typed_error() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let probe = Probe::new(&t).await;
    topology::declare(&probe.ch, &s).await.unwrap();
    let classic = inlet_queue::QueueSettings {
        queue_type: QueueType::Classic,
        ..s.clone()
    };
    let ch = probe.conn.create_channel().await.unwrap();
    let err = topology::declare(&ch, &classic).await.unwrap_err();
    match &err {
        QueueError::Amqp { op, source } => {
            assert!(op.starts_with("declare queue"), "{op}");
            assert!(source.is_amqp_soft_error(), "{source}");
        }
        other => panic!("unexpected {other:?}"),
    }
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_before_touching_the_broker() {
    let t = TestAmqp::new();
    let s = inlet_queue::QueueSettings {
        prefix: "amq.reserved".into(),
        ..settings(&t)
    };
    let probe = Probe::new(&t).await;
    let err = topology::declare(&probe.ch, &s).await.unwrap_err();
    assert!(
        matches!(err, QueueError::Settings(ref e) if e.key == "queue.prefix"),
        "{err}"
    );
    probe.close().await;
}

/// The verification the design depends on: a message put in a delay
/// queue comes back to the main queue after the queue's TTL, through
/// dead-lettering to the push exchange, with quorum queues
/// (at-least-once dead-lettering) and with classic queues.
async fn delay_queue_round_trip(queue_type: QueueType) {
    let t = TestAmqp::new();
    let s = inlet_queue::QueueSettings {
        queue_type,
        retry_delays_ms: vec![300, 1200],
        ..settings(&t)
    };
    let _cleanup = Cleanup::new(&s);
    let publisher = connected_publisher(s.clone(), metrics()).await;
    let names = publisher.names().clone();
    let probe = Probe::new(&t).await;

    // One message per delay level, the long one first: each queue has a
    // fixed TTL, so the short one must not wait behind the long one.
    let t0 = Instant::now();
    for (ms, queue) in names.delay_queues.iter().rev() {
        let props = BasicProperties::default()
            .with_message_id(format!("delayed-{ms}").into())
            .with_delivery_mode(2);
        publisher
            .publish_raw("", queue, b"payload", props)
            .await
            .unwrap();
    }
    let first = probe
        .drain_at_least(&names.queue, 1, Duration::from_secs(10))
        .await;
    let first_at = t0.elapsed();
    assert_eq!(message_id(&first[0]), "delayed-300", "shortest delay first");
    assert!(
        first_at >= Duration::from_millis(290),
        "came back after {first_at:?}, before its TTL"
    );
    assert!(
        first_at < Duration::from_millis(1200),
        "came back after {first_at:?}: blocked behind the longer delay?"
    );
    let rest = if first.len() >= 2 {
        first[1..].iter().map(message_id).collect::<Vec<_>>()
    } else {
        probe
            .drain_at_least(&names.queue, 1, Duration::from_secs(10))
            .await
            .iter()
            .map(message_id)
            .collect()
    };
    assert_eq!(rest, vec!["delayed-1200".to_owned()]);
    assert!(t0.elapsed() >= Duration::from_millis(1190));

    // It came back through dead-lettering ("expired"), to the push
    // exchange with the push routing key, body intact.
    let m = &first[0];
    assert_eq!(m.delivery.exchange.as_str(), names.exchange);
    assert_eq!(m.delivery.routing_key.as_str(), names.routing_key);
    assert_eq!(m.delivery.data, b"payload");
    let death = header(m, "x-death").and_then(AMQPValue::as_array).unwrap();
    let entry = death.as_slice()[0].as_field_table().unwrap().inner();
    assert_eq!(
        entry
            .get("reason")
            .and_then(AMQPValue::as_long_string)
            .map(|s| s.to_string()),
        Some("expired".to_owned())
    );
    for (_, q) in &names.delay_queues {
        assert_eq!(probe.count(q).await, 0, "{q} drained by expiry");
    }
    probe.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_queue_returns_messages_to_main_quorum() {
    delay_queue_round_trip(QueueType::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_queue_returns_messages_to_main_classic() {
    delay_queue_round_trip(QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_configuration_works_end_to_end() {
    let t = TestAmqp::new();
    let s = inlet_queue::QueueSettings {
        queue_type: QueueType::Classic,
        retry_delays_ms: vec![100],
        max_attempts: 2,
        ..settings(&t)
    };
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let e = envelope(1);
    publisher.publish(&e).await.unwrap();

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let first = next_within(&mut consumer, 10).await;
    assert_eq!(first.envelope.as_ref().unwrap(), &e);
    assert_eq!(first.attempt, 1);
    let out = first.retry("transient").await.unwrap();
    assert_eq!(
        out,
        RetryOutcome::Scheduled {
            attempt: 2,
            delay: Duration::from_millis(100)
        }
    );
    let second = next_within(&mut consumer, 10).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.envelope.as_ref().unwrap(), &e);
    assert_eq!(
        second.header_str(inlet_queue::HEADER_LAST_ERROR).as_deref(),
        Some("transient")
    );
    second.ack().await.unwrap();
    consumer.shutdown().await;
    publisher.close().await;

    let probe = Probe::new(&t).await;
    for q in Names::from_settings(&s).all_queues() {
        assert_eq!(probe.count(q).await, 0, "{q}");
    }
    probe.close().await;
}
