//! The client against a scripted push API: the status contract, the auth
//! grace window and pause/probe/resume, `Retry-After`, jitter, the buffer
//! bound, batching and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{Events, Recorded, Reply, ScriptedServer, builder, tx, wait_stats};
use inlet_api::ApiError;
use inlet_client::{ClientEvent, ClientState, DropReason, KeyHeader, WhenAuthPaused};
use inlet_domain::BatchError;

const LONG: Duration = Duration::from_secs(30);

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("T#{n}")).collect()
}

/// Every action in requests answered 202, with how often it arrived.
fn delivered(server: &ScriptedServer) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for (req, status) in server.requests().iter().zip(server.answers()) {
        if status == 202 {
            for a in req.actions() {
                *seen.entry(a).or_insert(0) += 1;
            }
        }
    }
    seen
}

fn exactly_once(server: &ScriptedServer, expected: &[String]) {
    let seen = delivered(server);
    let want: BTreeMap<String, usize> = expected.iter().map(|a| (a.clone(), 1)).collect();
    assert_eq!(seen, want, "every recorded item is delivered exactly once");
}

#[tokio::test]
async fn an_auth_blip_within_the_grace_window_loses_nothing() {
    let server = ScriptedServer::sequence(
        vec![
            Reply::unauthorized().body_field("probe_after_s", 300.into()),
            Reply::unauthorized(),
            Reply::suspended(),
            Reply::unauthorized(),
        ],
        Reply::accepted(),
    )
    .await;
    let events = Events::default();
    let client = builder(&server)
        .auth_grace(Duration::from_secs(60))
        .on_event(events.hook())
        .build()
        .unwrap();
    client.send_batch((0..50).map(tx));
    client.flush();
    wait_stats(&client, "the batch to be accepted", LONG, |s| {
        s.accepted.items == 50
    })
    .await;

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        5,
        "four rejections, then the accepted retry"
    );
    let id = requests[0].batch_id();
    assert!(!id.is_empty());
    assert!(
        requests.iter().all(|r| r.batch_id() == id),
        "the batch keeps its batch_id across every retry"
    );
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "and its exact bytes"
    );
    exactly_once(&server, &names(0..50));

    let stats = client.stats();
    assert_eq!(stats.state, ClientState::Sending);
    assert_eq!(stats.sent.batches, 5);
    assert_eq!(stats.retried.batches, 4);
    assert_eq!(stats.probes, 0, "never paused");
    assert_eq!(stats.dropped_items.total(), 0);
    let last = stats.last_error.unwrap();
    assert_eq!(
        (last.status, last.code.as_deref()),
        (Some(401), Some("unknown_key"))
    );
    let retrying: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::Retrying {
                auth_grace_left, ..
            } => Some(auth_grace_left),
            _ => None,
        })
        .collect();
    assert_eq!(retrying.len(), 4);
    assert!(
        retrying
            .iter()
            .all(|g| g.is_some_and(|g| g <= Duration::from_secs(60)))
    );
    assert!(
        events
            .first(|e| matches!(e, ClientEvent::AuthPaused { .. }))
            .is_none()
    );
    client.shutdown(Duration::from_secs(5)).await;
}

/// Drives a client into AuthPaused with a 2 s grace window and 1 s probe
/// interval, checks the probes' spacing, then lets the server accept.
async fn pause_probe_resume(mode: WhenAuthPaused) {
    let server = ScriptedServer::always(Reply::unauthorized()).await;
    let events = Events::default();
    let grace = Duration::from_secs(2);
    let probe = Duration::from_secs(1);
    let client = builder(&server)
        .auth_grace(grace)
        .probe_interval(probe)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(400))
        .when_auth_paused(mode)
        .on_event(events.hook())
        .build()
        .unwrap();
    client.send_batch((0..10).map(tx));
    client.flush();
    wait_stats(&client, "AuthPaused", LONG, |s| {
        matches!(s.state, ClientState::AuthPaused { .. })
    })
    .await;
    let first = server.requests()[0].at;
    let (paused_at, _) = events
        .first(|e| matches!(e, ClientEvent::AuthPaused { .. }))
        .expect("an AuthPaused event");
    assert!(
        paused_at.duration_since(first) >= grace,
        "paused only after the whole grace window ({:?})",
        paused_at.duration_since(first)
    );
    let before_pause = server.count();

    // Recorded while paused.
    client.send_batch((10..25).map(tx));
    client.flush();

    // Probes: one batch at a time, at the probe interval.
    let requests = server.wait_requests(before_pause + 3, LONG).await;
    let probes: Vec<&Recorded> = requests[before_pause - 1..].iter().collect();
    for pair in probes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= probe,
            "probes are at least {probe:?} apart, got {gap:?}"
        );
    }
    let id = requests[0].batch_id();
    assert!(
        requests.iter().all(|r| r.batch_id() == id),
        "the first batch is retried and then probes, with its batch_id"
    );
    assert!(client.stats().probes >= 2);

    // The key is accepted again: resumed by itself, no restart.
    server.set_default(Reply::accepted());
    let expected = match mode {
        WhenAuthPaused::Keep => 25,
        WhenAuthPaused::Drop => 10,
    };
    wait_stats(&client, "everything kept to be delivered", LONG, |s| {
        s.accepted.items == expected && s.buffered_items == 0
    })
    .await;
    let stats = client.stats();
    assert_eq!(stats.state, ClientState::Sending);
    let resumed = events.first(|e| matches!(e, ClientEvent::Resumed { .. }));
    assert!(
        matches!(resumed, Some((_, ClientEvent::Resumed { rejected_for })) if rejected_for >= grace + probe)
    );
    match mode {
        WhenAuthPaused::Keep => {
            exactly_once(&server, &names(0..25));
            assert_eq!(stats.dropped_items.total(), 0);
        }
        WhenAuthPaused::Drop => {
            exactly_once(&server, &names(0..10));
            assert_eq!(stats.dropped_items.get(DropReason::AuthPausedDrop), 15);
            assert_eq!(stats.dropped_items.total(), 15);
            // After resuming, records are kept again.
            client.send_batch((25..30).map(tx));
            client.flush();
            wait_stats(&client, "new items after resuming", LONG, |s| {
                s.accepted.items == 15
            })
            .await;
            let mut want = names(0..10);
            want.extend(names(25..30));
            exactly_once(&server, &want);
        }
    }
    let report = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.left_items, 0);
}

#[tokio::test]
async fn continuous_rejection_pauses_probes_and_resumes_keeping_data() {
    pause_probe_resume(WhenAuthPaused::Keep).await;
}

#[tokio::test]
async fn continuous_rejection_in_drop_mode_drops_with_counters() {
    pause_probe_resume(WhenAuthPaused::Drop).await;
}

#[tokio::test]
async fn the_servers_probe_after_overrides_the_probe_interval() {
    let server = ScriptedServer::sequence(
        vec![
            Reply::unauthorized().body_field("probe_after_s", 2.into()),
            Reply::unauthorized().body_field("probe_after_s", 2.into()),
        ],
        Reply::accepted(),
    )
    .await;
    let client = builder(&server)
        .auth_grace(Duration::ZERO)
        .probe_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    client.record(tx(0));
    client.flush();
    wait_stats(&client, "delivery", LONG, |s| s.accepted.items == 1).await;
    let r = server.requests();
    assert_eq!(r.len(), 3);
    for pair in r.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_secs(2));
    }
    client.shutdown(Duration::from_secs(5)).await;
}

async fn assert_min_gap(first: Reply, min: Duration) {
    let server = ScriptedServer::sequence(vec![first], Reply::accepted()).await;
    let client = builder(&server)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    client.record(tx(0));
    client.flush();
    wait_stats(&client, "delivery", LONG, |s| s.accepted.items == 1).await;
    let r = server.requests();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].batch_id(), r[1].batch_id());
    let gap = r[1].at.duration_since(r[0].at);
    assert!(gap >= min, "no retry before {min:?}: retried after {gap:?}");
    client.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn retry_after_header_is_a_minimum() {
    assert_min_gap(
        Reply::unavailable().header("Retry-After", "3"),
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn retry_after_s_in_the_body_is_a_minimum() {
    assert_min_gap(
        // The body alone: the API's Retry-After header would say the same.
        Reply::api(ApiError::RateLimited { wait_s: 2 }).without_header("Retry-After"),
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_a_minimum() {
    // Two seconds from now, whole seconds: at least one full second away.
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let date = http_date(secs);
    assert_min_gap(
        Reply::unavailable().header("Retry-After", &date),
        Duration::from_secs(1),
    )
    .await;
}

fn http_date(secs: u64) -> String {
    // Civil from days (Hinnant), enough for a test.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test]
async fn rejected_batches_are_dropped_not_retried() {
    for (error, reason) in [
        (
            ApiError::Batch(BatchError::Syntax {
                path: ".".into(),
                message: "expected an object".into(),
            }),
            DropReason::Rejected400,
        ),
        (
            ApiError::PayloadTooLarge {
                limit: 1 << 20,
                decompressed: false,
            },
            DropReason::TooLarge413,
        ),
        (
            ApiError::UnsupportedMediaType {
                got: "text/plain".into(),
                expected: "application/json",
            },
            DropReason::Unsupported415,
        ),
    ] {
        let (status, code) = error.status_and_code();
        let server = ScriptedServer::sequence(vec![Reply::api(error)], Reply::accepted()).await;
        let client = builder(&server).build().unwrap();
        client.send_batch((0..3).map(tx));
        client.flush();
        wait_stats(&client, "the drop", LONG, |s| {
            s.dropped_items.get(reason) == 3
        })
        .await;
        // The next batch carries only new data: the rejected one was not
        // retried (one batch is in flight at a time, so a retry would have
        // come first).
        client.record(tx(3));
        client.flush();
        wait_stats(&client, "the next batch", LONG, |s| s.accepted.items == 1).await;
        let r = server.requests();
        assert_eq!(r.len(), 2, "{status}");
        assert_ne!(r[0].batch_id(), r[1].batch_id());
        assert_eq!(r[1].actions(), names(3..4));
        let stats = client.stats();
        assert_eq!(stats.dropped_batches.get(reason), 1);
        assert_eq!(stats.retried.batches, 0);
        assert_eq!(stats.last_error.unwrap().code.as_deref(), Some(code));
        client.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_the_retries_of_many_clients() {
    // The first attempt of every batch is refused without Retry-After (as
    // a proxy in front of the API might): only the client's jitter spreads.
    let server = ScriptedServer::custom(|req, earlier| {
        let id = req.batch_id();
        if earlier.iter().any(|r| r.batch_id() == id) {
            Reply::accepted()
        } else {
            Reply::foreign(503, "proxy_unavailable", true)
        }
    })
    .await;
    let clients: Vec<_> = (0..100)
        .map(|n| {
            builder(&server)
                .hostname(&format!("host-{n}"))
                .initial_backoff(Duration::from_secs(1))
                .max_backoff(Duration::from_secs(1))
                .build()
                .unwrap()
        })
        .collect();
    for (n, c) in clients.iter().enumerate() {
        c.record(tx(n));
    }
    for c in &clients {
        c.flush();
    }
    for c in &clients {
        wait_stats(c, "every client to deliver", LONG, |s| {
            s.accepted.items == 1
        })
        .await;
    }
    let mut arrivals: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in server.requests() {
        arrivals.entry(r.batch_id()).or_default().push(r.at);
    }
    assert_eq!(arrivals.len(), 100);
    let delays: Vec<f64> = arrivals
        .values()
        .map(|a| {
            assert_eq!(a.len(), 2);
            a[1].duration_since(a[0]).as_secs_f64()
        })
        .collect();
    let n = delays.len() as f64;
    let mean = delays.iter().sum::<f64>() / n;
    let sd = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    let spread = delays.iter().cloned().fold(f64::MIN, f64::max)
        - delays.iter().cloned().fold(f64::MAX, f64::min);
    // Full jitter over [0, 1 s]: a standard deviation near 0.29 s and a
    // spread near 1 s. Clients retrying in lockstep would show neither.
    assert!(
        sd > 0.15,
        "standard deviation of first-retry delays {sd:.3} s"
    );
    assert!(spread > 0.5, "spread of first-retry delays {spread:.3} s");
    for c in &clients {
        c.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_first_and_counts_them() {
    let server = ScriptedServer::always(Reply::accepted()).await;
    let max_buffer = 4096;
    let client = builder(&server)
        .max_batch_bytes(2048)
        .max_buffer_bytes(max_buffer)
        .build()
        .unwrap();
    // Recording is synchronous: on this single-threaded runtime the
    // flusher does not run until the test awaits, so every item lands in
    // the buffer first.
    for n in 0..200 {
        client.record(tx(n));
    }
    let stats = client.stats();
    assert!(
        stats.buffered_bytes <= max_buffer,
        "{}",
        stats.buffered_bytes
    );
    let kept = stats.buffered_items;
    assert!(kept > 10 && kept < 200, "{kept}");
    assert_eq!(
        stats.dropped_items.get(DropReason::BufferFull),
        (200 - kept) as u64
    );
    assert_eq!(stats.recorded_items, 200);

    let report = client.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.left_items, 0);
    assert_eq!(report.delivered_items, kept as u64);
    // The newest survived, in order.
    let got: Vec<String> = server
        .requests()
        .iter()
        .flat_map(Recorded::actions)
        .collect();
    assert_eq!(got, names(200 - kept..200));
}

#[tokio::test]
async fn batches_are_cut_by_items_and_bytes() {
    let server = ScriptedServer::always(Reply::accepted()).await;
    let client = builder(&server).max_batch_items(10).build().unwrap();
    client.send_batch((0..35).map(tx));
    let report = client.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.delivered_items, 35);
    let sizes: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| r.actions().len())
        .collect();
    assert_eq!(sizes, [10, 10, 10, 5]);

    let server = ScriptedServer::always(Reply::accepted()).await;
    let client = builder(&server).max_batch_bytes(2048).build().unwrap();
    client.send_batch((0..100).map(tx));
    let report = client.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.delivered_items, 100);
    let requests = server.requests();
    assert!(requests.len() > 3);
    for r in &requests {
        assert!(r.body.len() <= 2048, "{}", r.body.len());
    }
    let got: Vec<String> = requests.iter().flat_map(Recorded::actions).collect();
    assert_eq!(got, names(0..100));
}

#[tokio::test]
async fn the_flush_interval_sends_partial_batches() {
    let server = ScriptedServer::always(Reply::accepted()).await;
    let client = builder(&server)
        .flush_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    client.send_batch((0..3).map(tx));
    // No flush() and no full batch: the interval alone sends it.
    wait_stats(&client, "an interval flush", LONG, |s| {
        s.accepted.items == 3
    })
    .await;
    client.record(tx(3));
    wait_stats(&client, "a second interval flush", LONG, |s| {
        s.accepted.items == 4
    })
    .await;
    assert_eq!(server.count(), 2);
    client.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn timeouts_and_lost_connections_are_retried_with_the_same_batch_id() {
    let server = ScriptedServer::sequence(
        vec![
            Reply::hang(Duration::from_secs(5)),
            Reply::close(),
            Reply::foreign(500, "internal", true),
            Reply::foreign(502, "bad_gateway", true),
        ],
        Reply::accepted(),
    )
    .await;
    let client = builder(&server)
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    client.send_batch((0..5).map(tx));
    client.flush();
    wait_stats(&client, "delivery", LONG, |s| s.accepted.items == 5).await;
    let r = server.requests();
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|x| x.batch_id() == r[0].batch_id()));
    // The server received the timed-out request too: it deduplicates by
    // batch_id, so the data counts once.
    exactly_once(&server, &names(0..5));
    assert_eq!(client.stats().retried.batches, 4);
    client.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_flushes_everything_when_it_can() {
    let server = ScriptedServer::always(Reply::accepted()).await;
    let events = Events::default();
    let client = builder(&server)
        .max_batch_items(1000)
        .on_event(events.hook())
        .build()
        .unwrap();
    client.send_batch((0..2500).map(tx));
    let report = client.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.delivered_items, 2500);
    assert_eq!(report.left_items, 0);
    assert!(!report.deadline_reached);
    assert_eq!(report.stats.state, ClientState::Stopped);
    let sizes: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| r.actions().len())
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert!(
        events
            .first(|e| matches!(e, ClientEvent::Stopped { left_items: 0 }))
            .is_some()
    );
    // Later records are dropped and counted; a second shutdown returns the
    // same report.
    client.record(tx(9999));
    assert_eq!(client.stats().dropped_items.get(DropReason::Shutdown), 1);
    let again = client.shutdown(Duration::from_secs(1)).await;
    assert_eq!(again.delivered_items, 2500);
}

#[tokio::test]
async fn shutdown_stops_at_its_deadline_and_reports_what_is_left() {
    // Backing off for a minute when the deadline comes.
    let server = ScriptedServer::always(Reply::unavailable().header("Retry-After", "60")).await;
    let client = builder(&server).build().unwrap();
    client.send_batch((0..30).map(tx));
    client.flush();
    wait_stats(&client, "backing off", LONG, |s| {
        matches!(s.state, ClientState::BackingOff { .. })
    })
    .await;
    client.send_batch((30..40).map(tx));
    let started = Instant::now();
    let report = client.shutdown(Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(990), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(report.deadline_reached);
    assert_eq!(report.delivered_items, 0);
    assert_eq!(report.left_items, 40);
    assert_eq!(report.unconfirmed_items, 0, "the server answered");
    assert_eq!(report.stats.dropped_items.get(DropReason::Shutdown), 40);
    assert_eq!(
        server.count(),
        1,
        "Retry-After is honoured even when shutting down"
    );

    // A request hanging at the deadline: abandoned, reported unconfirmed.
    let server = ScriptedServer::always(Reply::hang(Duration::from_secs(30))).await;
    let client = builder(&server)
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    client.send_batch((0..7).map(tx));
    client.flush();
    server.wait_requests(1, LONG).await;
    let report = client.shutdown(Duration::from_millis(500)).await;
    assert!(report.deadline_reached, "{report:#?}");
    assert_eq!((report.left_items, report.unconfirmed_items), (7, 7));
}

#[tokio::test]
async fn requests_carry_the_key_gzip_and_the_agent() {
    let server = ScriptedServer::always(Reply::accepted()).await;
    let client = builder(&server).build().unwrap();
    client.record(tx(0));
    client.shutdown(Duration::from_secs(5)).await;
    let r = &server.requests()[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {}", common::KEY).as_str())
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("user-agent").unwrap().starts_with("inlet-client/"));
    let b = r.batch.as_ref().unwrap();
    assert_eq!(
        (b.agent.name.as_str(), b.agent.version.as_str()),
        ("inlet-test", "9.9.9")
    );
    assert_eq!(b.agent.hostname.as_deref(), Some("test-host"));
    assert_eq!((b.app.as_str(), b.environment.as_str()), ("shop", "test"));

    let server = ScriptedServer::always(Reply::accepted()).await;
    let client = builder(&server)
        .gzip(false)
        .key_header(KeyHeader::XInletKey)
        .build()
        .unwrap();
    client.record(tx(0));
    client.shutdown(Duration::from_secs(5)).await;
    let r = &server.requests()[0];
    assert_eq!(r.header("x-inlet-key"), Some(common::KEY));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("content-encoding"), None);
    assert!(r.batch.is_some());
}

#[tokio::test]
async fn one_bad_item_does_not_poison_a_batch() {
    let server = ScriptedServer::always(Reply::accepted()).await;
    let client = builder(&server).build().unwrap();
    client.send_batch((0..5).map(tx));
    let mut bad = tx(5);
    bad.duration_ms = f64::NAN;
    client.record(bad);
    let report = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered_items, 5);
    assert_eq!(report.stats.dropped_items.get(DropReason::InvalidItem), 1);
    assert_eq!(report.stats.recorded_items, 6);
}
