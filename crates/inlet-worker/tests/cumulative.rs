//! Cumulative samples (`start_ms`, OpenTelemetry's default temporality)
//! against real RabbitMQ and a MongoDB-wire server: the worker stores the
//! increase over the series' previous point, exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, test_minute_start};
use futures::TryStreamExt as _;
use inlet_domain::{MINUTE_MS, Minute};
use inlet_worker::Outcome;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A batch of metric samples.
fn metrics(batch_id: &str, samples: Vec<Value>) -> Value {
    json!({
        "batch_id": batch_id,
        "agent": {"name": "otel", "version": "1"},
        "app": "shop", "environment": "production",
        "metrics": samples,
    })
}

/// A cumulative counter point of the series `requests{route=/}`.
fn counter(start_ms: i64, timestamp_ms: i64, value: f64) -> Value {
    json!({"kind": "counter", "name": "requests", "tags": {"route": "/"},
           "value": value, "timestamp_ms": timestamp_ms, "start_ms": start_ms})
}

/// A cumulative histogram point of the series `latency`.
fn histogram(
    start_ms: i64,
    timestamp_ms: i64,
    sum: f64,
    buckets: Value,
    min: f64,
    max: f64,
) -> Value {
    let count: u64 = buckets
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    json!({"kind": "distribution", "name": "latency", "value": sum,
           "timestamp_ms": timestamp_ms, "start_ms": start_ms,
           "histogram": {"count": count, "min": min, "max": max, "buckets": buckets}})
}

/// The metric bucket of `name` in the minute containing `ms`, if any.
async fn bucket(h: &Harness, name: &str, ms: i64) -> Option<Document> {
    h.db.collection::<Document>("metric_minutes")
        .find_one(doc! { "name": name, "minute": Minute::containing(ms).index() })
        .await
        .unwrap()
}

/// `sum` of that bucket (0 when there is none).
async fn sum_at(h: &Harness, name: &str, ms: i64) -> f64 {
    bucket(h, name, ms)
        .await
        .map_or(0.0, |d| d.get_f64("sum").unwrap())
}

/// `sum` over every bucket of `name`.
async fn total(h: &Harness, name: &str) -> f64 {
    let docs: Vec<Document> =
        h.db.collection::<Document>("metric_minutes")
            .find(doc! { "name": name })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
    docs.iter().map(|d| d.get_f64("sum").unwrap()).sum()
}

async fn states(h: &Harness) -> Vec<Document> {
    h.db.collection::<Document>("metric_cumulative")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Publishes one message and processes it alone.
async fn push(
    h: &Harness,
    pipeline: &mut inlet_worker::Pipeline,
    id: &str,
    samples: Vec<Value>,
) -> Outcome {
    h.publish_json(&metrics(id, samples)).await;
    pipeline.process_one(Duration::from_secs(10)).await
}

#[tokio::test]
async fn cumulative_counters_store_their_increases_per_minute() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let start = t - 3_600_000;
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    let processed = |o: Outcome| assert!(matches!(o, Outcome::Processed { .. }), "{o:?}");

    // The first point of a series counts whole: the series began at its
    // start (the SDK's process start), and nothing of it was stored before.
    processed(push(&h, &mut pipeline, "c1", vec![counter(start, t, 10.0)]).await);
    assert_eq!(sum_at(&h, "requests", t).await, 10.0);
    let first = bucket(&h, "requests", t).await.unwrap();
    assert_eq!(first.get_str("kind").unwrap(), "counter");
    assert_eq!(first.get_i64("count").unwrap(), 1);

    // Then each point adds its increase over the previous one, in the
    // minute of its own timestamp.
    let t1 = t + MINUTE_MS;
    processed(push(&h, &mut pipeline, "c2", vec![counter(start, t1, 25.0)]).await);
    assert_eq!(sum_at(&h, "requests", t1).await, 15.0);

    // An older point (out of order) and the same point again (a duplicate
    // delivery under another id) add nothing.
    processed(
        push(
            &h,
            &mut pipeline,
            "c3",
            vec![counter(start, t + 30_000, 18.0)],
        )
        .await,
    );
    processed(push(&h, &mut pipeline, "c4", vec![counter(start, t1, 25.0)]).await);
    assert_eq!(total(&h, "requests").await, 25.0);

    // A new, later start is a reset: the whole value is new.
    let restart = t1 + 10_000;
    let t2 = t + 2 * MINUTE_MS;
    processed(push(&h, &mut pipeline, "c5", vec![counter(restart, t2, 4.0)]).await);
    assert_eq!(sum_at(&h, "requests", t2).await, 4.0);

    // Going down without a new start is a reset too (never a negative
    // increase).
    let t3 = t + 3 * MINUTE_MS;
    processed(push(&h, &mut pipeline, "c6", vec![counter(restart, t3, 1.0)]).await);
    assert_eq!(sum_at(&h, "requests", t3).await, 1.0);

    // A point of the earlier start, arriving late, is stale.
    processed(
        push(
            &h,
            &mut pipeline,
            "c7",
            vec![counter(start, t3 + 1_000, 90.0)],
        )
        .await,
    );
    assert_eq!(total(&h, "requests").await, 30.0);

    // One state document per series: the last point.
    let states = states(&h).await;
    assert_eq!(states.len(), 1, "{states:?}");
    let s = &states[0];
    assert_eq!(s.get_i64("start_ms").unwrap(), restart);
    assert_eq!(s.get_i64("timestamp_ms").unwrap(), t3);
    assert_eq!(s.get_f64("sum").unwrap(), 1.0);
    assert_eq!(s.get_str("account").unwrap(), "acme");
    // Its retention runs from the last point.
    assert_eq!(s.get_datetime("at").unwrap().timestamp_millis(), t3);
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_cumulative_message_counts_once() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let start = t - 60_000;
    let body = metrics(
        "r1",
        vec![counter(start, t, 7.0), counter(start, t + MINUTE_MS, 12.0)],
    );
    h.publish_json(&body).await;
    // A first worker writes the message and dies before acking it.
    let cancel = CancellationToken::new();
    let mut consumer = inlet_queue::Consumer::start(
        h.queue.clone(),
        inlet_queue::QueueMetrics::unregistered().unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let taken = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap();
    let env = taken.envelope.clone().unwrap();
    let raw = env.content_encoding.decode(&env.body, 1 << 20).unwrap();
    let batch = inlet_domain::Batch::decode(&raw, &Default::default(), env.received_at_ms).unwrap();
    let mut agg = inlet_worker::aggregate::Aggregates::default();
    agg.add(env.account_id.as_ref().unwrap(), &batch);
    inlet_worker::AggregateStore::new(h.db.clone(), true)
        .write(&[env.dedup_key()], &agg)
        .await
        .unwrap();
    assert_eq!(total(&h, "requests").await, 12.0);
    drop(taken);
    cancel.cancel();
    consumer.shutdown().await;

    // The broker redelivers it; then the agent retries the same batch.
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Duplicate
    );
    h.publish_json(&body).await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Duplicate
    );
    assert_eq!(total(&h, "requests").await, 12.0);
    assert_eq!(sum_at(&h, "requests", t).await, 7.0);
    assert_eq!(sum_at(&h, "requests", t + MINUTE_MS).await, 5.0);
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn points_of_one_series_in_one_delivery_batch_chain_in_timestamp_order() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let start = t - 60_000;
    let (t1, t2) = (t + MINUTE_MS, t + 2 * MINUTE_MS);
    // Out of order within a message and across the messages of one batch.
    h.publish_json(&metrics(
        "b1",
        vec![counter(start, t2, 30.0), counter(start, t, 10.0)],
    ))
    .await;
    h.publish_json(&metrics("b2", vec![counter(start, t1, 16.0)]))
        .await;
    let cancel = CancellationToken::new();
    let mut consumer = inlet_queue::Consumer::start(
        h.queue.clone(),
        inlet_queue::QueueMetrics::unregistered().unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let mut batch = Vec::new();
    while batch.len() < 2 {
        batch.push(
            tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let outcomes = h.processor().process(batch, &cancel).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Processed { .. })),
        "{outcomes:?}"
    );
    assert_eq!(sum_at(&h, "requests", t).await, 10.0);
    assert_eq!(sum_at(&h, "requests", t1).await, 6.0);
    assert_eq!(sum_at(&h, "requests", t2).await, 14.0);
    let states = states(&h).await;
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].get_i64("timestamp_ms").unwrap(), t2);
    cancel.cancel();
    consumer.shutdown().await;
    h.cleanup().await;
}

#[tokio::test]
async fn cumulative_histograms_store_their_increases_by_bucket() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let start = t - 60_000;
    let (t1, t2) = (t + MINUTE_MS, t + 2 * MINUTE_MS);
    let b = inlet_domain::DurationHistogram::bucket;
    let (b5, b20, b40, b7) = (b(5.0), b(20.0), b(40.0), b(7.0));
    let buckets = |pairs: &[(usize, u64)]| {
        Value::Object(
            pairs
                .iter()
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect(),
        )
    };
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    let processed = |o: Outcome| assert!(matches!(o, Outcome::Processed { .. }), "{o:?}");
    // Observations 5, 20, 25 ...
    let p1 = histogram(start, t, 50.0, buckets(&[(b5, 1), (b20, 2)]), 5.0, 25.0);
    processed(push(&h, &mut pipeline, "h1", vec![p1]).await);
    // ... then 21 and 45 as well.
    let p2 = histogram(
        start,
        t1,
        116.0,
        buckets(&[(b5, 1), (b20, 3), (b40, 1)]),
        5.0,
        45.0,
    );
    processed(push(&h, &mut pipeline, "h2", vec![p2.clone()]).await);
    // Again, under another id: stale, nothing added.
    processed(push(&h, &mut pipeline, "h3", vec![p2]).await);
    // The process restarted: 7.
    let p3 = histogram(t1 + 1, t2, 7.0, buckets(&[(b7, 1)]), 7.0, 7.0);
    processed(push(&h, &mut pipeline, "h4", vec![p3]).await);

    let hist = |d: &Document| -> Vec<(usize, i64)> {
        d.get_document("hist")
            .unwrap()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_i64().unwrap()))
            .collect()
    };
    let m0 = bucket(&h, "latency", t).await.unwrap();
    assert_eq!(m0.get_str("kind").unwrap(), "distribution");
    assert_eq!(m0.get_i64("count").unwrap(), 3);
    assert_eq!(m0.get_f64("sum").unwrap(), 50.0);
    assert_eq!(hist(&m0), vec![(b5, 1), (b20, 2)]);
    assert_eq!(
        (m0.get_f64("min").unwrap(), m0.get_f64("max").unwrap()),
        (5.0, 25.0)
    );

    let m1 = bucket(&h, "latency", t1).await.unwrap();
    assert_eq!(m1.get_i64("count").unwrap(), 2, "21 and 45");
    assert_eq!(m1.get_f64("sum").unwrap(), 66.0);
    assert_eq!(hist(&m1), vec![(b20, 1), (b40, 1)]);
    // The new maximum is exact (it rose); the minimum, unchanged since
    // the start, is estimated from the lowest bucket that grew.
    assert_eq!(m1.get_f64("max").unwrap(), 45.0);
    assert_eq!(
        m1.get_f64("min").unwrap(),
        inlet_domain::DurationHistogram::bounds(b20).0
    );

    let m2 = bucket(&h, "latency", t2).await.unwrap();
    assert_eq!(m2.get_i64("count").unwrap(), 1);
    assert_eq!(m2.get_f64("sum").unwrap(), 7.0);
    assert_eq!(hist(&m2), vec![(b7, 1)]);
    assert_eq!(
        (m2.get_f64("min").unwrap(), m2.get_f64("max").unwrap()),
        (7.0, 7.0)
    );

    let states = states(&h).await;
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].get_i64("count").unwrap(), 1);
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn at_least_once_mode_tracks_cumulative_series_too() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let start = t - 60_000;
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor_with(h.db.clone(), false), &cancel);
    for (id, ts, v) in [
        ("a1", t, 3.0),
        ("a2", t + MINUTE_MS, 8.0),
        ("a3", t + 1, 5.0),
    ] {
        let o = push(&h, &mut pipeline, id, vec![counter(start, ts, v)]).await;
        assert!(matches!(o, Outcome::Processed { .. }), "{o:?}");
    }
    assert_eq!(sum_at(&h, "requests", t).await, 3.0);
    assert_eq!(sum_at(&h, "requests", t + MINUTE_MS).await, 5.0);
    cancel.cancel();
    h.cleanup().await;
}

/// Two workers on one series: the one that reads the state second must see
/// the first one's point, or one increase would be applied twice. Another
/// transaction holds the series' state document (written, not committed)
/// while the worker writes a point of that series: the worker's
/// transaction conflicts, is retried (not failed, not dead-lettered) and,
/// once the other commits, reads the state it left.
#[tokio::test]
async fn a_write_conflict_on_a_series_retries_and_rereads_its_state() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let start = t - 60_000;
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    let o = push(&h, &mut pipeline, "w1", vec![counter(start, t, 10.0)]).await;
    assert!(matches!(o, Outcome::Processed { .. }), "{o:?}");
    let state = states(&h).await.remove(0);

    // The other worker: it has applied the point (t + 2 min, 40) of the
    // series and not committed yet.
    let client = h.db.client().clone();
    let mut other = client.start_session().await.unwrap();
    other.start_transaction().await.unwrap();
    h.db.collection::<Document>("metric_cumulative")
        .update_one(
            doc! { "_id": state.get_str("_id").unwrap() },
            doc! { "$set": { "timestamp_ms": t + 2 * MINUTE_MS, "sum": 40.0 } },
        )
        .session(&mut other)
        .await
        .unwrap();

    // This worker writes (t + 1 min, 25): against the committed state it
    // would add 15, against the other worker's it is stale.
    let batch = inlet_domain::Batch::decode(
        &serde_json::to_vec(&metrics("w2", vec![counter(start, t + MINUTE_MS, 25.0)])).unwrap(),
        &Default::default(),
        inlet_domain::now_ms(),
    )
    .unwrap();
    let mut agg = inlet_worker::aggregate::Aggregates::default();
    agg.add(&h.account, &batch);
    let store = inlet_worker::AggregateStore::new(h.db.clone(), true);
    let mut write = tokio::spawn(async move { store.write(&["w2".to_owned()], &agg).await });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut write)
            .await
            .is_err(),
        "the write waits for the other transaction"
    );
    other.commit_transaction().await.unwrap();
    let report = write.await.unwrap().unwrap();
    assert!(report.retries >= 1, "{report:?}");
    assert_eq!(
        sum_at(&h, "requests", t + MINUTE_MS).await,
        0.0,
        "stale against what the other worker committed"
    );
    assert_eq!(states(&h).await[0].get_f64("sum").unwrap(), 40.0);
    cancel.cancel();
    h.cleanup().await;
}

/// A write that never gets through (another transaction holds its applied
/// marker for longer than the conflict retry budget) still counts every
/// conflict it retried: the counter is what shows workers fighting over
/// buckets, and the writes that lose are the ones that matter most.
#[tokio::test]
async fn conflicts_are_counted_also_for_a_write_that_never_commits() {
    let h = Harness::new().await;
    let t = test_minute_start();
    let client = h.db.client().clone();
    let mut other = client.start_session().await.unwrap();
    other.start_transaction().await.unwrap();
    h.db.collection::<Document>(inlet_worker::store::APPLIED)
        .insert_one(doc! { "_id": "held", "at": mongodb::bson::DateTime::now() })
        .session(&mut other)
        .await
        .unwrap();

    let batch = inlet_domain::Batch::decode(
        &serde_json::to_vec(&metrics("held", vec![counter(t - 60_000, t, 1.0)])).unwrap(),
        &Default::default(),
        inlet_domain::now_ms(),
    )
    .unwrap();
    let mut agg = inlet_worker::aggregate::Aggregates::default();
    agg.add(&h.account, &batch);
    let counter = prometheus::IntCounter::new("conflicts", "test").unwrap();
    let store = inlet_worker::AggregateStore::new(h.db.clone(), true)
        .counting_conflicts_in(counter.clone());
    let written = store.write(&["held".to_owned()], &agg).await;
    assert!(written.is_err(), "{written:?}");
    assert!(counter.get() >= 1, "retried conflicts: {}", counter.get());
    other.abort_transaction().await.unwrap();
    h.cleanup().await;
}
