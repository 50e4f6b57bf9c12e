//! Failure behaviour against the real broker: connections closed by the
//! broker or cut by a proxy, a black-holed broker, unroutable messages, the
//! in-flight bound. Publishes must fail fast with a typed error, never
//! hang, and every publish that returned `Ok` must be in the queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use inlet_queue::{
    ConnectionState, Consumer, PublishError, Publisher, QueueError, QueueMetrics, QueueSettings,
    UnavailableReason,
};
use inlet_testkit::{FaultProxy, TestAmqp, wait_until};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

/// What a background publishing loop saw.
#[derive(Default)]
struct Ledger {
    attempted: HashSet<String>,
    ok: HashSet<String>,
    errors: Vec<PublishError>,
}

/// Publishes continuously (16 at a time) until `stop` is set.
fn publish_loop(
    publisher: Publisher,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        futures::stream::iter(0..)
            .take_while(|_| {
                let go = !stop.load(Ordering::SeqCst);
                async move { go }
            })
            .for_each_concurrent(16, |i| {
                let p = publisher.clone();
                let ledger = ledger.clone();
                async move {
                    let e = envelope(i);
                    let id = e.message_id.to_string();
                    ledger.lock().unwrap().attempted.insert(id.clone());
                    let started = Instant::now();
                    let r = p.publish(&e).await;
                    assert!(
                        started.elapsed()
                            < p.settings().confirm_timeout() + Duration::from_millis(500),
                        "a publish hung for {:?}",
                        started.elapsed()
                    );
                    let failed = {
                        let mut l = ledger.lock().unwrap();
                        match r {
                            Ok(_) => {
                                l.ok.insert(id);
                                false
                            }
                            Err(e) => {
                                l.errors.push(e);
                                true
                            }
                        }
                    };
                    // Paced (at most ~1600/s), so the queue stays small
                    // while slow rabbitmqctl calls run; never a hot spin
                    // while the broker is away.
                    let pause = if failed { 20 } else { 10 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            })
            .await;
    })
}

fn ok_count(l: &Mutex<Ledger>) -> usize {
    l.lock().unwrap().ok.len()
}

/// Every confirmed id is in the queue; everything in the queue was
/// attempted; nothing is there twice.
async fn assert_confirmed_are_stored(t: &TestAmqp, queue: &str, ledger: &Ledger) {
    let probe = Probe::new(t).await;
    let msgs = probe
        .drain_at_least(queue, ledger.ok.len(), Duration::from_secs(20))
        .await;
    let counts = id_counts(&msgs);
    let missing: Vec<_> = ledger
        .ok
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} confirmed publishes are not in the queue, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for (id, n) in &counts {
        assert!(ledger.attempted.contains(id), "unknown message {id}");
        assert_eq!(*n, 1, "{id} stored twice");
    }
    probe.close().await;
}

fn reconnects(m: &QueueMetrics, role: &str) -> u64 {
    m.reconnects_total.with_label_values(&[role]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_closes_the_publisher_connection_mid_stream() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let task = publish_loop(publisher.clone(), ledger.clone(), stop.clone());
    wait_until(
        Duration::from_secs(30),
        "300 confirmed before the close",
        || async { ok_count(&ledger) >= 300 },
    )
    .await;

    // Close exactly this test's publisher connection, from the broker.
    let name = format!("{}-publisher", s.connection_name);
    let closed = inlet_testkit::wait_for(Duration::from_secs(15), "the connection listed", || {
        let name = name.clone();
        async move {
            let n = close_connections_named(&name).await;
            (n > 0).then_some(n)
        }
    })
    .await;
    assert_eq!(closed, 1);
    let before = ok_count(&ledger);
    // The broker stayed reachable: the promise is a reconnect within 5 s.
    wait_until(Duration::from_secs(5), "a reconnect within 5 s", || async {
        reconnects(&m, "publisher") >= 1
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "300 more confirmed after it",
        || async { ok_count(&ledger) >= before + 300 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    publisher.close().await;

    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    for e in &ledger.errors {
        assert!(
            matches!(
                e,
                PublishError::Unavailable { .. } | PublishError::Timeout(_)
            ),
            "{e:?}"
        );
    }
    assert_confirmed_are_stored(&t, &publisher.names().queue, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_fails_fast_and_reconnects_after_restore() {
    let t = TestAmqp::new();
    let direct = settings(&t);
    let _cleanup = Cleanup::new(&direct);
    let proxy = FaultProxy::start(broker_addr(&t)).await;
    let s = QueueSettings {
        confirm_timeout_ms: 3000,
        ..via_proxy(direct.clone(), proxy.addr())
    };
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let task = publish_loop(publisher.clone(), ledger.clone(), stop.clone());
    wait_until(
        Duration::from_secs(30),
        "200 confirmed before the cut",
        || async { ok_count(&ledger) >= 200 },
    )
    .await;

    // Cut mid-stream: in-flight publishes resolve at once.
    proxy.cut();
    let cut_at = Instant::now();
    let mut rx = publisher.watch_state();
    tokio::time::timeout(
        Duration::from_secs(2),
        rx.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .expect("the loss is noticed at once")
    .unwrap();
    wait_until(
        Duration::from_secs(1),
        "in-flight publishes resolved",
        || async { publisher.in_flight() == 0 },
    )
    .await;
    assert!(cut_at.elapsed() < Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();

    // During the outage every publish fails fast.
    for i in 0..20 {
        let started = Instant::now();
        let err = publisher.publish(&envelope(i)).await.unwrap_err();
        assert!(matches!(err, PublishError::Unavailable { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    proxy.restore();
    let restored = Instant::now();
    assert!(
        publisher.wait_connected(Duration::from_secs(5)).await,
        "reconnected within 5 s of the restore"
    );
    assert!(restored.elapsed() < Duration::from_secs(5));
    assert!(reconnects(&m, "publisher") >= 1);

    let mut ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    for i in 0..50 {
        let e = envelope(i);
        ledger.attempted.insert(e.message_id.to_string());
        publisher.publish(&e).await.unwrap();
        ledger.ok.insert(e.message_id.to_string());
    }
    publisher.close().await;
    assert_confirmed_are_stored(&t, &publisher.names().queue, &ledger).await;
}

/// A cluster's nodes, played by two proxies in front of the one broker:
/// when the node the publisher is on goes away for good, it moves to the
/// next URL of `failover_urls` at once (no backoff round first), and
/// nothing it confirmed is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_fails_over_to_the_next_broker_url_within_5_s() {
    let t = TestAmqp::new();
    let direct = settings(&t);
    let _cleanup = Cleanup::new(&direct);
    let (node_a, node_b) = (
        FaultProxy::start(broker_addr(&t)).await,
        FaultProxy::start(broker_addr(&t)).await,
    );
    let on_b = via_proxy(direct.clone(), node_b.addr());
    let s = QueueSettings {
        confirm_timeout_ms: 3000,
        // A long backoff, so that only an immediate failover meets 5 s.
        reconnect_initial_ms: 8000,
        reconnect_max_ms: 8000,
        failover_urls: vec![on_b.url.clone()],
        ..via_proxy(direct.clone(), node_a.addr())
    };
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    assert_eq!((node_a.accepted(), node_b.accepted()), (1, 0), "url first");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let task = publish_loop(publisher.clone(), ledger.clone(), stop.clone());
    wait_until(
        Duration::from_secs(30),
        "200 confirmed on the first node",
        || async { ok_count(&ledger) >= 200 },
    )
    .await;

    node_a.cut();
    let lost_at = Instant::now();
    // The reconnect counter, not the state: the state may go Disconnected
    // and back to Connected before this task looks.
    wait_until(
        Duration::from_secs(5),
        "reconnected to the other node within 5 s",
        || async { reconnects(&m, "publisher") >= 1 && publisher.state().is_connected() },
    )
    .await;
    assert!(lost_at.elapsed() < Duration::from_secs(5));
    assert!(node_b.accepted() >= 1, "the failover URL was used");
    let before = ok_count(&ledger);
    wait_until(
        Duration::from_secs(30),
        "200 more confirmed on the second node",
        || async { ok_count(&ledger) >= before + 200 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    publisher.close().await;

    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    for e in &ledger.errors {
        assert!(
            matches!(
                e,
                PublishError::Unavailable { .. } | PublishError::Timeout(_)
            ),
            "{e:?}"
        );
    }
    assert_confirmed_are_stored(&t, &publisher.names().queue, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_broker_times_out_and_the_heartbeat_notices() {
    let t = TestAmqp::new();
    let direct = settings(&t);
    let _cleanup = Cleanup::new(&direct);
    let proxy = FaultProxy::start(broker_addr(&t)).await;
    let s = QueueSettings {
        heartbeat_s: 1,
        confirm_timeout_ms: 600,
        connect_timeout_ms: 1000,
        ..via_proxy(direct.clone(), proxy.addr())
    };
    let publisher = connected_publisher(s.clone(), metrics()).await;
    publisher.publish(&envelope(0)).await.unwrap();

    proxy.blackhole();
    let holed = Instant::now();
    let started = Instant::now();
    let err = publisher.publish(&envelope(1)).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            PublishError::Timeout(_) | PublishError::Unavailable { .. }
        ),
        "{err:?}"
    );
    assert!(took < Duration::from_millis(900), "took {took:?}");

    // The heartbeat (1 s) declares the connection dead within ~2 s.
    let mut rx = publisher.watch_state();
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .expect("heartbeat loss detected")
    .unwrap();
    assert!(holed.elapsed() < Duration::from_secs(5));

    // Reconnect attempts hang in the handshake and time out; meanwhile
    // publishes fail fast.
    let started = Instant::now();
    let err = publisher.publish(&envelope(2)).await.unwrap_err();
    assert_eq!(
        err,
        PublishError::Unavailable {
            reason: UnavailableReason::NotConnected
        }
    );
    assert!(started.elapsed() < Duration::from_millis(50));

    proxy.restore();
    assert!(publisher.wait_connected(Duration::from_secs(5)).await);
    publisher.publish(&envelope(3)).await.unwrap();
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_are_errors_not_successes() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let names = publisher.names().clone();

    // The main queue unbound under a running publisher: unroutable, and
    // the publisher binds it again by itself. (First: any unroutable
    // publish makes the publisher re-declare, which would undo an unbind
    // made just after it.)
    let probe = Probe::new(&t).await;
    probe
        .ch
        .queue_unbind(
            names.queue.as_str().into(),
            names.exchange.as_str().into(),
            names.routing_key.as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    let err = publisher.publish(&envelope(0)).await.unwrap_err();
    assert!(matches!(err, PublishError::Unroutable { .. }), "{err:?}");
    let unroutable = publish_until_routable(&publisher).await;
    assert_eq!(probe.count(&names.queue).await, 1);
    assert_eq!(
        m.publish_total.with_label_values(&["returned"]).get(),
        1 + unroutable
    );
    assert_eq!(m.publish_total.with_label_values(&["ack"]).get(), 1);

    // An unbound routing key on the push exchange: re-declaring does not
    // bind it, so it stays unroutable.
    for _ in 0..2 {
        let err = publisher
            .publish_raw(
                &names.exchange,
                "no-such-key",
                b"x",
                BasicProperties::default().with_message_id("raw-1".into()),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            PublishError::Unroutable {
                reply_code: 312,
                reply_text: "NO_ROUTE".into()
            }
        );
        assert_eq!(err.code(), "queue_unroutable");
    }
    probe.close().await;
    publisher.close().await;
}

/// The refusal of a publish to an exchange that does not exist.
fn assert_missing_exchange(err: &PublishError) {
    assert!(
        matches!(
            err,
            PublishError::Unroutable {
                reply_code: 404,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Publishes until one is confirmed (within 5 s). Every failure must be
/// `Unroutable`, or `Unavailable` while a channel the broker closed (404)
/// is replaced. Returns how many were `Unroutable`.
async fn publish_until_routable(publisher: &Publisher) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut attempts, mut unroutable) = (0, 0);
    loop {
        match publisher.publish(&envelope(100 + attempts)).await {
            Ok(_) => return unroutable,
            Err(PublishError::Unroutable { .. }) => unroutable += 1,
            Err(e) => assert!(matches!(e, PublishError::Unavailable { .. }), "{e:?}"),
        }
        attempts += 1;
        assert!(Instant::now() < deadline, "still unroutable after 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topology_is_declared_again_without_a_reconnect() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    publisher.publish(&envelope(0)).await.unwrap();
    let names = publisher.names().clone();

    // Exchanges and queues deleted under the running publisher (the one
    // message stored goes with them).
    let probe = Probe::new(&t).await;
    inlet_queue::topology::delete(&probe.ch, &names)
        .await
        .unwrap();
    let err = publisher.publish(&envelope(1)).await.unwrap_err();
    assert_missing_exchange(&err);
    publish_until_routable(&publisher).await;
    // The main queue is back and holds exactly the confirmed message; it
    // was declared as configured (declaring it again is no conflict).
    assert_eq!(probe.count(&names.queue).await, 1);
    inlet_queue::topology::declare(&probe.ch, &s).await.unwrap();
    assert_still_connected_and_close(&m, &publisher).await;
    probe.close().await;
}

/// A queue that refuses everything: length limit 0 with reject-publish.
/// Exclusive, so the broker deletes it with the probe's connection.
async fn refusing_queue(t: &TestAmqp, probe: &Probe) -> String {
    let full = format!("{}.full", t.prefix);
    let mut args = lapin::types::FieldTable::default();
    args.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    probe
        .ch
        .queue_declare(
            full.as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    full
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_an_error_not_a_success() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;

    let probe = Probe::new(&t).await;
    let full = refusing_queue(&t, &probe).await;
    let err = publisher
        .publish_raw(
            "",
            &full,
            b"x",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap_err();
    assert_eq!(err, PublishError::Nacked);
    assert_eq!(err.code(), "queue_nacked");
    assert_eq!(m.publish_total.with_label_values(&["nack"]).get(), 1);
    probe.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_nacked_for_two_seconds_get_a_fresh_connection_and_one_ack_resets_the_clock() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    let probe = Probe::new(&t).await;
    let full = refusing_queue(&t, &probe).await;
    let refused = || async {
        publisher
            .publish_raw(
                "",
                &full,
                b"x",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
    };
    let reconnects = || m.reconnects_total.with_label_values(&["publisher"]).get();

    // Nacks with an ack among them: the broker's view works, no reconnect.
    for _ in 0..30 {
        assert_eq!(refused().await.unwrap_err(), PublishError::Nacked);
        publisher.publish(&envelope(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reconnects(), 0, "an ack every 100 ms resets the clock");

    // Nothing but nacks for two seconds: a fresh connection.
    inlet_testkit::wait_until(
        Duration::from_secs(10),
        "the publisher to reconnect after 2 s of nacks",
        || async {
            let _ = refused().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reconnects() >= 1
        },
    )
    .await;
    assert!(publisher.wait_connected(Duration::from_secs(10)).await);
    publisher.publish(&envelope(2)).await.unwrap();
    probe.close().await;
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_closed_channel_is_replaced_without_reconnecting() {
    let (_cleanup, m, publisher) = publisher_with_a_channel_closed_by_a_404(2).await;

    // With a second channel, other publishes keep working at once, and
    // keep working after the closed channel was replaced; the connection
    // was never dropped.
    for round in 0..2 {
        for i in 0..20 {
            publisher.publish(&envelope(i)).await.unwrap();
        }
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(600)).await; // one watchdog period
        }
    }
    assert_still_connected_and_close(&m, &publisher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_channel_closed_by_the_broker_is_replaced_at_once() {
    let (_cleanup, m, publisher) = publisher_with_a_channel_closed_by_a_404(1).await;

    // The supervisor replaces the channel on the broker's error event, not
    // on the next watchdog tick: publishing works again well within one
    // watchdog period (500 ms). Meanwhile a publish fails fast as
    // `Unavailable` (a 503 for the API), never hangs, never a false Ok.
    let started = Instant::now();
    loop {
        match publisher.publish(&envelope(0)).await {
            Ok(_) => break,
            Err(e) => assert!(matches!(e, PublishError::Unavailable { .. }), "{e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "the channel was not replaced in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..20 {
        publisher.publish(&envelope(i)).await.unwrap();
    }
    assert_still_connected_and_close(&m, &publisher).await;
}

/// A connected publisher with `channels` confirm channels, one of which
/// the broker has just closed: a publish to a missing exchange (404).
async fn publisher_with_a_channel_closed_by_a_404(
    channels: usize,
) -> (Cleanup, QueueMetrics, Publisher) {
    let t = TestAmqp::new();
    let s = QueueSettings {
        publisher_channels: channels,
        ..settings(&t)
    };
    let cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s, m.clone()).await;

    let missing = format!("{}.missing", t.prefix);
    let err = publisher
        .publish_raw(&missing, "k", b"x", BasicProperties::default())
        .await
        .unwrap_err();
    assert_missing_exchange(&err);
    (cleanup, m, publisher)
}

/// The connection was never dropped.
async fn assert_still_connected_and_close(m: &QueueMetrics, publisher: &Publisher) {
    assert_eq!(reconnects(m, "publisher"), 0);
    assert_eq!(publisher.state(), ConnectionState::Connected);
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_in_flight_bound_answers_backpressure_at_once() {
    let t = TestAmqp::new();
    let direct = settings(&t);
    let _cleanup = Cleanup::new(&direct);
    let proxy = FaultProxy::start(broker_addr(&t)).await;
    let s = QueueSettings {
        max_in_flight: 2,
        confirm_timeout_ms: 5000,
        ..via_proxy(direct.clone(), proxy.addr())
    };
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;

    // Confirms stop coming: two publishes fill the bound.
    proxy.blackhole();
    let stuck: Vec<_> = (0..2)
        .map(|i| {
            let p = publisher.clone();
            tokio::spawn(async move { p.publish(&envelope(i)).await })
        })
        .collect();
    wait_until(
        Duration::from_secs(2),
        "two publishes in flight",
        || async { publisher.in_flight() == 2 },
    )
    .await;
    assert_eq!(m.publish_in_flight.get(), 2);

    let started = Instant::now();
    let err = publisher.publish(&envelope(3)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err, PublishError::Backpressure { limit: 2 });
    assert_eq!(err.code(), "queue_backpressure");
    assert_eq!(
        m.publish_total.with_label_values(&["backpressure"]).get(),
        1
    );

    // Restoring drops the stalled connection: the stuck publishes resolve.
    proxy.restore();
    for h in stuck {
        let r = tokio::time::timeout(Duration::from_secs(6), h)
            .await
            .expect("stuck publish resolved")
            .unwrap();
        assert!(
            matches!(
                r,
                Err(PublishError::Unavailable { .. } | PublishError::Timeout(_)) | Ok(_)
            ),
            "{r:?}"
        );
    }
    assert_eq!(m.publish_in_flight.get(), 0);
    // The publishes can fail before the supervisor has seen the loss: the
    // state may still say connected until it has. Wait for the new session.
    wait_until(Duration::from_secs(5), "reconnected", || async {
        reconnects(&m, "publisher") >= 1
    })
    .await;
    assert!(publisher.wait_connected(Duration::from_secs(5)).await);
    publisher.publish(&envelope(4)).await.unwrap();
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reconnects_after_the_broker_closes_its_connection() {
    let t = TestAmqp::new();
    let s = settings(&t);
    let _cleanup = Cleanup::new(&s);
    let m = metrics();
    let publisher = connected_publisher(s.clone(), m.clone()).await;
    // Five messages: one is handed out and held, the others sit in the
    // consumer's prefetch buffer when the connection dies.
    let sent: Vec<_> = (0..5).map(envelope).collect();
    for e in &sent {
        publisher.publish(e).await.unwrap();
    }

    let stop = CancellationToken::new();
    let mut consumer = Consumer::start(s.clone(), m.clone(), stop.clone()).unwrap();
    let held = next_within(&mut consumer, 10).await;
    assert!(!held.redelivered);
    wait_until(Duration::from_secs(5), "the rest prefetched", || async {
        m.consumer_deliveries_total.get() == 5
    })
    .await;

    let name = format!("{}-consumer", s.connection_name);
    let closed =
        inlet_testkit::wait_for(Duration::from_secs(15), "the consumer connection", || {
            let name = name.clone();
            async move {
                let n = close_connections_named(&name).await;
                (n > 0).then_some(n)
            }
        })
        .await;
    assert_eq!(closed, 1);

    // The old delivery cannot be settled any more: lapin says Ok(false),
    // which must surface as an error, not as success.
    wait_until(
        Duration::from_secs(10),
        "the consumer reconnected",
        || async { reconnects(&m, "consumer") >= 1 },
    )
    .await;
    let err = held.ack().await.unwrap_err();
    assert!(
        matches!(err, QueueError::NotSettled { .. } | QueueError::Amqp { .. }),
        "{err:?}"
    );

    // All five come back on the new connection, once each; the stale
    // buffered copies are never handed out (their acks would fail).
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let again = next_within(&mut consumer, 10).await;
        assert!(again.redelivered);
        assert!(ids.insert(again.message_id.clone().unwrap()));
        again.ack().await.unwrap();
    }
    let want: HashSet<_> = sent.iter().map(|e| e.message_id.to_string()).collect();
    assert_eq!(ids, want);

    // New messages flow.
    let fresh = envelope(7);
    publisher.publish(&fresh).await.unwrap();
    let next = next_within(&mut consumer, 10).await;
    assert_eq!(next.envelope.as_ref().unwrap(), &fresh);
    assert!(!next.redelivered);
    next.ack().await.unwrap();
    let probe = Probe::new(&t).await;
    assert_eq!(probe.count(&publisher.names().queue).await, 0);
    probe.close().await;

    consumer.shutdown().await;
    publisher.close().await;
}
