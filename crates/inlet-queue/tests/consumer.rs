//! Consumer primitives against the real broker: poison messages, retries
//! through the delay queues, dead letters, requeues.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use inlet_queue::{
    Consumer, HEADER_ATTEMPT, HEADER_DEATH_REASON, HEADER_LAST_ERROR, QueueSettings, RetryOutcome,
};
use inlet_testkit::TestAmqp;
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_transient_failures_retry_then_dead_letter() {
    let t = TestAmqp::new();
    let s = QueueSettings {
        retry_delays_ms: vec![100, 200],
        max_attempts: 3,
        ..settings(&t)
    };
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let names = publisher.names().clone();

    // A poison message first, then two valid ones behind it.
    let poison_props = BasicProperties::default()
        .with_message_id("poison-1".into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    publisher
        .publish_raw(
            &names.exchange,
            &names.routing_key,
            b"{\"not\":\"an envelope\"}",
            poison_props,
        )
        .await
        .unwrap();
    let flaky = envelope(1);
    let fine = envelope(2);
    publisher.publish(&flaky).await.unwrap();
    publisher.publish(&fine).await.unwrap();
    let flaky_id = flaky.message_id.to_string();
    let fine_id = fine.message_id.to_string();

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let mut flaky_attempts: Vec<(u32, Instant)> = Vec::new();
    let mut fine_acked = 0;
    let mut poison_seen = 0;
    let mut flaky_done = false;
    while !(flaky_done && fine_acked == 1 && poison_seen == 1) {
        let incoming = next_within(&mut consumer, 10).await;
        match (&incoming.envelope, incoming.message_id.as_deref()) {
            (Err(e), _) => {
                poison_seen += 1;
                assert_eq!(incoming.message_id.as_deref(), Some("poison-1"));
                let reason = format!("undecodable: {e}");
                incoming.dead_letter(&reason).await.unwrap();
            }
            (Ok(_), Some(id)) if id == flaky_id => {
                flaky_attempts.push((incoming.attempt, Instant::now()));
                if incoming.attempt > 1 {
                    assert_eq!(
                        incoming.header_str(HEADER_LAST_ERROR).as_deref(),
                        Some("transient: database timeout")
                    );
                }
                match incoming.retry("transient: database timeout").await.unwrap() {
                    RetryOutcome::Scheduled { attempt, delay } => {
                        let n = flaky_attempts.len() as u32;
                        assert_eq!(attempt, n + 1);
                        assert_eq!(delay, s.retry_delay(n));
                    }
                    RetryOutcome::DeadLettered => flaky_done = true,
                }
            }
            (Ok(env), Some(id)) if id == fine_id => {
                assert_eq!(env, &fine);
                fine_acked += 1;
                incoming.ack().await.unwrap();
            }
            other => panic!("unexpected delivery {other:?}"),
        }
    }
    // Attempts 1, 2, 3, with the configured delays between them.
    let attempts: Vec<u32> = flaky_attempts.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let gap1 = flaky_attempts[1].1 - flaky_attempts[0].1;
    let gap2 = flaky_attempts[2].1 - flaky_attempts[1].1;
    assert!(gap1 >= Duration::from_millis(95), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(195), "{gap2:?}");
    assert_eq!(
        fine_acked, 1,
        "the valid message behind the poison is unaffected"
    );

    stop.cancel();
    consumer.shutdown().await;

    // The dead-letter queue holds the poison and the exhausted message,
    // with their reasons, bodies and ids intact.
    let probe = Probe::new(&t).await;
    let dead = probe
        .drain_at_least(&names.dead_queue, 2, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 2);
    let poison = dead.iter().find(|d| message_id(d) == "poison-1").unwrap();
    let reason = header_str(poison, HEADER_DEATH_REASON).unwrap();
    assert!(reason.starts_with("undecodable: "), "{reason}");
    assert_eq!(header_int(poison, HEADER_ATTEMPT), Some(1));
    assert_eq!(poison.delivery.data, b"{\"not\":\"an envelope\"}");
    assert_eq!(
        poison
            .delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("application/json"),
        "original properties kept"
    );
    let exhausted = dead.iter().find(|d| message_id(d) == flaky_id).unwrap();
    let reason = header_str(exhausted, HEADER_DEATH_REASON).unwrap();
    assert!(reason.contains("max_attempts (3)"), "{reason}");
    assert!(reason.contains("transient: database timeout"), "{reason}");
    assert_eq!(header_int(exhausted, HEADER_ATTEMPT), Some(3));
    assert_eq!(
        inlet_domain::Envelope::decode(&exhausted.delivery.data).unwrap(),
        flaky
    );
    for q in names.all_queues() {
        assert_eq!(probe.count(q).await, 0, "{q} is empty");
    }
    probe.close().await;

    assert_eq!(m.consumer_retries_total.get(), 2);
    assert_eq!(m.consumer_acks_total.get(), 1);
    let dl = &m.consumer_dead_letters_total;
    assert_eq!(dl.with_label_values(&["undecodable"]).get(), 1);
    assert_eq!(dl.with_label_values(&["max_attempts"]).get(), 1);
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_hands_the_message_back() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let e = envelope(5);
    publisher.publish(&e).await.unwrap();

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let first = next_within(&mut consumer, 10).await;
    assert!(!first.redelivered);
    first.requeue().await.unwrap();
    let again = next_within(&mut consumer, 10).await;
    assert!(again.redelivered, "the broker redelivers it");
    assert_eq!(again.attempt, 1, "a requeue is not a retry attempt");
    assert_eq!(again.envelope.as_ref().unwrap(), &e);
    again.ack().await.unwrap();
    assert_eq!(m.consumer_requeues_total.get(), 1);
    assert_eq!(m.consumer_deliveries_total.get(), 2);
    consumer.shutdown().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_beyond_the_delivery_limit_is_dead_lettered_by_the_broker() {
    // The broker-side guard: a message requeued more than delivery_limit
    // times (e.g. a worker that crashes on it) ends in the dead-letter
    // queue even if the worker never dead-letters it.
    let t = TestAmqp::new();
    let s = QueueSettings {
        delivery_limit: 2,
        ..settings(&t)
    };
    let _cleanup = Cleanup::new(&s);
    let publisher = connected_publisher(s.clone(), metrics()).await;
    let e = envelope(9);
    publisher.publish(&e).await.unwrap();

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), metrics(), stop.clone()).unwrap();
    for _ in 0..3 {
        next_within(&mut consumer, 10)
            .await
            .requeue()
            .await
            .unwrap();
    }
    let probe = Probe::new(&t).await;
    let dead = probe
        .drain_at_least(&publisher.names().dead_queue, 1, Duration::from_secs(10))
        .await;
    assert_eq!(message_id(&dead[0]), e.message_id.to_string());
    consumer.shutdown().await;
    probe.close().await;
    publisher.close().await;
}

/// Publishes `parts` (encoded envelopes, or any bytes) as one bundle, the
/// way `Publisher::publish` combines concurrent pushes.
async fn publish_bundle(publisher: &inlet_queue::Publisher, parts: &[Vec<u8>]) {
    let mut bundle = inlet_domain::Bundle::new();
    for p in parts {
        assert!(bundle.push(p));
    }
    let names = publisher.names();
    let props = BasicProperties::default()
        .with_message_id("bundle-1".into())
        .with_content_type(inlet_domain::BUNDLE_CONTENT_TYPE.into())
        .with_delivery_mode(2);
    publisher
        .publish_raw(
            &names.exchange,
            &names.routing_key,
            &bundle.into_bytes(),
            props,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_push_of_a_bundle_is_settled_on_its_own() {
    let t = TestAmqp::new();
    let s = QueueSettings {
        retry_delays_ms: vec![100],
        ..settings(&t)
    };
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let names = publisher.names().clone();
    let (fine, flaky, bad) = (envelope(1), envelope(2), envelope(3));
    let other = envelope(4);
    let garbage = b"not an envelope".to_vec();
    publish_bundle(
        &publisher,
        &[
            fine.encode(),
            flaky.encode(),
            bad.encode(),
            garbage.clone(),
            other.encode(),
        ],
    )
    .await;

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    // One Incoming per push, in order, each as if published alone.
    let mut parts = Vec::new();
    for _ in 0..5 {
        parts.push(next_within(&mut consumer, 10).await);
    }
    for (part, want) in parts.iter().zip([&fine, &flaky, &bad]) {
        assert_eq!(part.envelope.as_ref().unwrap(), want);
        assert_eq!(part.message_id, Some(want.message_id.to_string()));
        assert_eq!(
            part.header_str(inlet_queue::HEADER_ACCOUNT).as_deref(),
            Some("acme")
        );
        assert_eq!(part.attempt, 1);
    }
    assert!(parts[3].envelope.is_err(), "a bad part is bad alone");
    assert_eq!(parts[4].envelope.as_ref().unwrap(), &other);
    let mut parts = parts.into_iter();
    let [p_fine, p_flaky, p_bad, p_garbage, p_other] =
        std::array::from_fn(|_| parts.next().unwrap());
    p_fine.ack().await.unwrap();
    assert!(matches!(
        p_flaky.retry("transient: database timeout").await.unwrap(),
        RetryOutcome::Scheduled { attempt: 2, .. }
    ));
    p_bad.dead_letter("invalid_batch: no").await.unwrap();
    p_garbage
        .dead_letter("undecodable: not an envelope")
        .await
        .unwrap();
    // The delivery is acked with its last part, not before.
    assert_eq!(m.consumer_acks_total.get(), 0);
    p_other.ack().await.unwrap();
    assert_eq!(m.consumer_acks_total.get(), 1);

    // Only the retried push comes back, alone, as attempt 2.
    let again = next_within(&mut consumer, 10).await;
    assert_eq!(again.envelope.as_ref().unwrap(), &flaky);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        again
            .properties()
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some(inlet_domain::ENVELOPE_CONTENT_TYPE)
    );
    again.ack().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), consumer.next())
            .await
            .is_err(),
        "nothing else is delivered again"
    );
    stop.cancel();
    consumer.shutdown().await;

    // The dead-letter queue holds exactly the two bad pushes, each alone.
    let probe = Probe::new(&t).await;
    let dead = probe
        .drain_at_least(&names.dead_queue, 2, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 2);
    let bad_copy = dead
        .iter()
        .find(|d| message_id(d) == bad.message_id.to_string())
        .expect("the bad push, under its own message id");
    assert_eq!(
        inlet_domain::Envelope::decode(&bad_copy.delivery.data).unwrap(),
        bad
    );
    assert_eq!(
        header_str(bad_copy, inlet_queue::HEADER_ACCOUNT).as_deref(),
        Some("acme")
    );
    assert_eq!(
        header_str(bad_copy, HEADER_DEATH_REASON).as_deref(),
        Some("invalid_batch: no")
    );
    let garbage_copy = dead
        .iter()
        .find(|d| d.delivery.data == garbage)
        .expect("the undecodable part, as it came");
    assert!(header_str(garbage_copy, HEADER_DEATH_REASON).is_some());
    for q in names.all_queues() {
        assert_eq!(probe.count(q).await, 0, "{q} is empty");
    }
    probe.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_a_bundle_handed_back_brings_the_whole_bundle_back() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let (a, b) = (envelope(1), envelope(2));
    publish_bundle(&publisher, &[a.encode(), b.encode()]).await;

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let first = next_within(&mut consumer, 10).await;
    let second = next_within(&mut consumer, 10).await;
    // `a` is done (its effect durable, say); `b` must wait.
    first.ack().await.unwrap();
    second.requeue().await.unwrap();
    assert_eq!(m.consumer_acks_total.get(), 0);
    // Both come back: the broker knows one delivery. The worker recognises
    // `a` as a duplicate by its dedup key.
    let again: Vec<_> = [
        next_within(&mut consumer, 10).await,
        next_within(&mut consumer, 10).await,
    ]
    .into();
    let ids: Vec<_> = again
        .iter()
        .map(|i| i.envelope.as_ref().unwrap().message_id)
        .collect();
    assert_eq!(ids, vec![a.message_id, b.message_id]);
    assert!(again.iter().all(|i| i.redelivered));
    for i in again {
        i.ack().await.unwrap();
    }
    assert_eq!(m.consumer_acks_total.get(), 1);
    assert_eq!(m.consumer_requeues_total.get(), 1);
    assert_eq!(m.consumer_deliveries_total.get(), 2);
    stop.cancel();
    consumer.shutdown().await;
    let probe = Probe::new(&t).await;
    assert_eq!(probe.count(&publisher.names().queue).await, 0);
    probe.close().await;
    publisher.close().await;
}
