//! Publish-and-consume round trips against the real broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use inlet_domain::{ENVELOPE_CONTENT_TYPE, Envelope};
use inlet_queue::{Consumer, HEADER_ACCOUNT, HEADER_AUTH_MODE, HEADER_KEY_ID, QueueMetrics};
use inlet_testkit::TestAmqp;
use tokio_util::sync::CancellationToken;

const N: usize = 10_000;

/// Publishes every envelope, `depth` at a time; the results in completion
/// order.
async fn publish_concurrently(
    publisher: &inlet_queue::Publisher,
    envelopes: &Arc<Vec<Envelope>>,
    depth: usize,
) -> Vec<Result<inlet_queue::Confirmed, inlet_queue::PublishError>> {
    futures::stream::iter(0..envelopes.len())
        .map(|i| {
            let p = publisher.clone();
            let envs = envelopes.clone();
            async move { p.publish(&envs[i]).await }
        })
        .buffer_unordered(depth)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_envelopes_round_trip_exactly_once() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let registry = prometheus::Registry::new();
    let m = QueueMetrics::register(&registry).unwrap();

    let publisher = connected_publisher(s.clone(), m.clone()).await;

    // Publish concurrently: many confirms in flight at once, over both
    // channels.
    let envelopes: Arc<Vec<Envelope>> = Arc::new((0..N).map(envelope).collect());
    let results = publish_concurrently(&publisher, &envelopes, 512).await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} publishes failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(m.publish_total.with_label_values(&["ack"]).get(), N as u64);
    assert_eq!(m.publish_in_flight.get(), 0);

    // Consume them all back through the Consumer.
    let expected: HashMap<String, &Envelope> = envelopes
        .iter()
        .map(|e| (e.message_id.to_string(), e))
        .collect();
    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let mut seen = HashSet::new();
    let mut deliveries = 0usize;
    let consume = async {
        while seen.len() < N {
            let incoming = consumer.next().await.expect("consumer ended early");
            deliveries += 1;
            let id = incoming.message_id.clone().expect("message id");
            let env = incoming.envelope.as_ref().expect("decodable envelope");
            let want = expected.get(&id).expect("an id we published");
            assert_eq!(env, *want, "body and fields intact");
            assert_eq!(env.message_id.to_string(), id);
            assert_eq!(incoming.attempt, 1);
            assert!(!incoming.redelivered);
            let p = incoming.properties();
            assert_eq!(
                p.content_type().as_ref().map(|c| c.as_str()),
                Some(ENVELOPE_CONTENT_TYPE)
            );
            assert_eq!(*p.delivery_mode(), Some(2), "persistent");
            assert!(p.timestamp().is_some());
            assert_eq!(incoming.header_str(HEADER_ACCOUNT).as_deref(), Some("acme"));
            assert_eq!(
                incoming.header_str(HEADER_KEY_ID).as_deref(),
                Some("0000000000000007")
            );
            assert_eq!(
                incoming.header_str(HEADER_AUTH_MODE).as_deref(),
                Some("confirmed")
            );
            seen.insert(id);
            incoming.ack().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), consume)
        .await
        .expect("consumed all within 2 minutes");
    assert_eq!(deliveries, N, "no duplicates in a normal run");
    assert_eq!(seen.len(), N);
    assert_eq!(m.consumer_acks_total.get(), N as u64);

    stop.cancel();
    assert!(consumer.next().await.is_none(), "None once cancelled");
    tokio::time::timeout(Duration::from_secs(20), consumer.shutdown())
        .await
        .expect("consumer shut down");
    publisher.close().await;

    let probe = Probe::new(&t).await;
    assert_eq!(
        probe.count(&publisher.names().queue).await,
        0,
        "nothing left"
    );
    probe.close().await;

    // The metrics are exposed under their documented names.
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    assert!(
        text.contains(&format!("inlet_queue_publish_total{{outcome=\"ack\"}} {N}")),
        "{text}"
    );
    assert!(text.contains("inlet_queue_publish_duration_seconds_count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_consumer_still_acks_in_flight_work() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    for i in 0..3 {
        publisher.publish(&envelope(i)).await.unwrap();
    }

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let held = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap();
    stop.cancel();
    assert!(consumer.next().await.is_none());
    // The two never handed out are back in the queue at once, for other
    // consumers, while the one handed out is still being worked on.
    let probe = Probe::new(&t).await;
    let queue = publisher.names().queue.clone();
    inlet_testkit::wait_until(
        Duration::from_secs(5),
        "the unsent two requeued",
        || async { probe.count(&queue).await == 2 },
    )
    .await;
    // The connection and its channel stay open for work already handed
    // out, however long it takes (the pause lets any background channel
    // close land first; the ack then failed `NotSettled`).
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.ack().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), consumer.shutdown())
        .await
        .expect("shutdown completes once the in-flight delivery is settled");

    // The acked one is gone; the two never handed out are in the queue.
    let left = probe
        .drain_at_least(&publisher.names().queue, 2, Duration::from_secs(10))
        .await;
    assert_eq!(left.len(), 2);
    probe.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_publisher_drains_in_flight_then_refuses() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;

    let in_flight: Vec<_> = (0..2000)
        .map(|i| {
            let p = publisher.clone();
            tokio::spawn(async move { p.publish(&envelope(i)).await })
        })
        .collect();
    inlet_testkit::wait_until(Duration::from_secs(5), "publishes in flight", || async {
        publisher.in_flight() > 0
    })
    .await;
    // Close while they are under way: those already started complete
    // (confirmed), later ones are refused as closed (not as backpressure,
    // whatever the moment they raced the close); none is left hanging.
    // One deadline for all: a task the runtime had not polled yet when
    // close returned still has to run to be refused.
    publisher.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut ok = 0;
    for h in in_flight {
        let r = tokio::time::timeout_at(deadline, h)
            .await
            .expect("no publish outlives close()")
            .unwrap();
        match r {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(
                e,
                inlet_queue::PublishError::Unavailable {
                    reason: inlet_queue::UnavailableReason::Closed
                }
            ),
        }
    }
    assert!(ok > 0);
    assert_eq!(
        m.publish_total.with_label_values(&["backpressure"]).get(),
        0
    );
    assert_eq!(m.publish_in_flight.get(), 0);
    let err = publisher.publish(&envelope(0)).await.unwrap_err();
    assert_eq!(err.code(), "queue_unavailable");
    assert_eq!(publisher.state(), inlet_queue::ConnectionState::Closed);

    let probe = Probe::new(&t).await;
    assert_eq!(probe.count(&publisher.names().queue).await, ok);
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_are_combined_and_consumed_one_by_one_exactly_once() {
    const PUSHES: usize = 2_000;
    let t = TestAmqp::new();
    let s = inlet_queue::QueueSettings {
        combine_max_parts: 64,
        combine_linger_us: 2_000,
        ..settings(&t)
    };
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let envelopes: Arc<Vec<Envelope>> = Arc::new((0..PUSHES).map(envelope).collect());
    let results = publish_concurrently(&publisher, &envelopes, 256).await;
    assert!(results.iter().all(Result::is_ok), "every push confirmed");
    // Fewer, fuller messages: every push in exactly one of them.
    let messages = m.publish_total.with_label_values(&["ack"]).get();
    assert_eq!(m.publish_parts.get_sample_sum() as usize, PUSHES);
    assert_eq!(m.publish_parts.get_sample_count(), messages);
    assert!(
        messages * 4 <= PUSHES as u64,
        "{messages} messages for {PUSHES} pushes: hardly combined"
    );

    // The consumer hands out every push alone, as it was published.
    let expected: HashMap<String, &Envelope> = envelopes
        .iter()
        .map(|e| (e.message_id.to_string(), e))
        .collect();
    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let mut seen = HashSet::new();
    let consume = async {
        while seen.len() < PUSHES {
            let incoming = consumer.next().await.expect("consumer ended early");
            let id = incoming.message_id.clone().expect("the push's message id");
            let env = incoming.envelope.as_ref().expect("decodable envelope");
            assert_eq!(env, *expected.get(&id).expect("an id we published"));
            assert_eq!(
                incoming
                    .properties()
                    .content_type()
                    .as_ref()
                    .map(|c| c.as_str()),
                Some(ENVELOPE_CONTENT_TYPE)
            );
            assert_eq!(incoming.header_str(HEADER_ACCOUNT).as_deref(), Some("acme"));
            assert_eq!(
                incoming.header_str(HEADER_AUTH_MODE).as_deref(),
                Some("confirmed")
            );
            assert!(seen.insert(id), "a push handed out twice");
            incoming.ack().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), consume)
        .await
        .expect("consumed all within 2 minutes");
    assert_eq!(m.consumer_deliveries_total.get(), messages);
    assert_eq!(m.consumer_acks_total.get(), messages, "one ack per message");
    stop.cancel();
    consumer.shutdown().await;
    publisher.close().await;
    let probe = Probe::new(&t).await;
    assert_eq!(
        probe.count(&publisher.names().queue).await,
        0,
        "nothing left"
    );
    probe.close().await;
}

/// Combining on with a window of `window` and the longest linger
/// (100 ms): long enough to notice, were a push to wait for it.
fn long_linger(t: &TestAmqp, window: usize) -> inlet_queue::QueueSettings {
    inlet_queue::QueueSettings {
        combine_max_parts: 64,
        combine_in_flight: window,
        combine_linger_us: 100_000,
        ..settings(t)
    }
}

/// Five rounds of four pushes at once through a publisher with a window
/// of `window` and a linger long enough to notice (100 ms): how long the
/// rounds took, and how many broker messages carried how many pushes.
/// `publish_concurrently` polls the four in one task, so each takes its
/// place in the window (or gathers) before the next is looked at.
async fn rounds_of_four(window: usize) -> (Duration, u64, u64) {
    let t = TestAmqp::new();
    let s = long_linger(&t, window);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let envelopes: Vec<Envelope> = (0..20).map(envelope).collect();
    let started = std::time::Instant::now();
    for round in envelopes.chunks(4) {
        let round: Arc<Vec<Envelope>> = Arc::new(round.to_vec());
        let results = publish_concurrently(&publisher, &round, 4).await;
        assert!(results.iter().all(Result::is_ok));
    }
    let took = started.elapsed();
    publisher.close().await;
    (
        took,
        m.publish_parts.get_sample_count(),
        m.publish_parts.get_sample_sum() as u64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_combine_in_flight_concurrent_pushes_go_alone_at_once() {
    // Never more than four in flight, below the window of eight, so none
    // gathers. Had the later pushes of a round waited the linger, the
    // rounds would take 500 ms.
    let (took, messages, pushes) = rounds_of_four(8).await;
    assert!(took < Duration::from_millis(450), "{took:?}");
    assert_eq!(messages, 20, "each alone");
    assert_eq!(pushes, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathered_pushes_go_at_the_confirm_that_frees_the_window_not_the_linger() {
    // Each round: the first push fills the window of one (nothing was in
    // flight: it goes alone); the other three gather behind it. Its
    // confirm frees the window, and the three go then as one message: had
    // they waited the linger, five rounds would take at least 500 ms.
    let (took, messages, pushes) = rounds_of_four(1).await;
    assert!(took < Duration::from_millis(450), "{took:?}");
    assert_eq!(pushes, 20, "every push once");
    assert_eq!(
        messages, 10,
        "each round: one alone, then the three behind it in one message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_nothing_in_flight_goes_alone_at_once() {
    let t = TestAmqp::new();
    // The default window: a lone push finds it empty.
    let s = long_linger(&t, inlet_queue::QueueSettings::default().combine_in_flight);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    // One at a time: each finds nothing in flight. Had any waited the
    // linger, the five would take at least 500 ms.
    let started = std::time::Instant::now();
    for i in 0..5 {
        publisher.publish(&envelope(i)).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(450), "{took:?}");
    assert_eq!(m.publish_parts.get_sample_count(), 5);
    assert_eq!(m.publish_parts.get_sample_sum() as u64, 5);
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_gathered_when_close_begins_is_published_not_refused() {
    let t = TestAmqp::new();
    // The linger is longer than the test: only close (or the first
    // confirm) can publish the gathered push.
    let s = long_linger(&t, 1);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let (first, second) = (envelope(0), envelope(1));
    // Polled in this order in one task (`biased`): the first push takes
    // the window of one and goes alone; the second gathers behind it;
    // close begins while both await the broker. Its pushes were accepted
    // before close: close publishes the gathered one, instead of letting
    // it wait for the first one's confirm and then be refused as closed.
    let (a, b, ()) = tokio::join!(
        biased;
        publisher.publish(&first),
        publisher.publish(&second),
        publisher.close()
    );
    a.expect("the push in flight is confirmed");
    b.expect("the gathered push is published by close, and confirmed");
    assert_eq!(m.publish_parts.get_sample_count(), 2, "each in its message");
    assert_eq!(m.publish_parts.get_sample_sum() as u64, 2);
    let probe = Probe::new(&t).await;
    assert_eq!(probe.count(&publisher.names().queue).await, 2);
    probe.close().await;
}
