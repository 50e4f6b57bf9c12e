//! The worker against real RabbitMQ and a MongoDB-wire server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, test_minute_start, tx_batch};
use inlet_domain::AuthMode;
use inlet_testkit::{SecantusServer, SecantusStorage, TestMongo, wait_until};
use inlet_worker::Outcome;
use mongodb::bson::{Document, doc};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn ten_thousand_transactions_in_100_messages_sum_exactly() {
    let h = Harness::new().await;
    let start = test_minute_start();
    // Two actions; durations chosen so min, max and sum are known.
    for i in 0..100 {
        let action = if i % 2 == 0 {
            "Orders#index"
        } else {
            "Orders#show"
        };
        h.publish_json(&tx_batch(&format!("b{i}"), action, 100, i as f64, start))
            .await;
    }
    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let pipeline = h.pipeline(processor, &cancel);
    let running = tokio::spawn(pipeline.run());
    // The data is visible the moment its transaction commits; the
    // counters move a moment later, when the batch is settled.
    wait_until(
        Duration::from_secs(60),
        "10,000 transactions stored and 100 messages settled",
        || async {
            h.tx_total().await >= 10_000
                && metrics.messages.with_label_values(&["processed"]).get() >= 100
        },
    )
    .await;
    assert_eq!(h.tx_total().await, 10_000);
    let docs = h.tx_docs().await;
    assert_eq!(docs.len(), 2, "one bucket per action in the minute");
    for d in &docs {
        let even = d.get_str("action").unwrap() == "Orders#index";
        // Message i (even or odd) carries durations i..i+99.
        let firsts: Vec<f64> = (0..100)
            .filter(|i| (i % 2 == 0) == even)
            .map(|i| i as f64)
            .collect();
        let sum: f64 = firsts.iter().map(|f| 100.0 * f + 4950.0).sum();
        assert_eq!(d.get_i64("count").unwrap(), 5_000);
        assert_eq!(d.get_i64("errors").unwrap(), 500);
        assert_eq!(d.get_f64("duration_sum").unwrap(), sum);
        assert_eq!(d.get_f64("duration_min").unwrap(), firsts[0]);
        assert_eq!(
            d.get_f64("duration_max").unwrap(),
            firsts[firsts.len() - 1] + 99.0
        );
        let hist: i64 = d
            .get_document("hist")
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(hist, 5_000);
        assert_eq!(
            d.get_document("status").unwrap().get_i64("5xx").unwrap(),
            500
        );
    }
    assert_eq!(
        metrics.messages.with_label_values(&["processed"]).get(),
        100
    );
    cancel.cancel();
    running.await.unwrap();
    h.cleanup().await;
}

#[tokio::test]
async fn a_crash_between_write_and_ack_does_not_double_count() {
    let h = Harness::new().await;
    let start = test_minute_start();
    // Published together: combined into a few broker messages, so the
    // crash leaves whole bundles unacked.
    let bodies: Vec<_> = (0..20)
        .map(|i| tx_batch(&format!("c{i}"), "Jobs#run", 50, 1.0, start))
        .collect();
    let messages = h.publish_json_together(&bodies).await;
    assert!(
        messages < 20,
        "20 pushes in {messages} messages: not combined"
    );
    // A first worker takes the pushes, writes them, and dies before acking.
    let cancel = CancellationToken::new();
    let mut consumer = inlet_queue::Consumer::start(
        h.queue.clone(),
        inlet_queue::QueueMetrics::unregistered().unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let mut taken = Vec::new();
    while taken.len() < 20 {
        taken.push(
            tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mut agg = inlet_worker::aggregate::Aggregates::default();
    let mut keys = Vec::new();
    for m in &taken {
        let env = m.envelope.clone().unwrap();
        let body = env.content_encoding.decode(&env.body, 1 << 20).unwrap();
        let batch =
            inlet_domain::Batch::decode(&body, &Default::default(), env.received_at_ms).unwrap();
        agg.add(env.account_id.as_ref().unwrap(), &batch);
        keys.push(env.dedup_key());
    }
    inlet_worker::AggregateStore::new(h.db.clone(), true)
        .write(&keys, &agg)
        .await
        .unwrap();
    assert_eq!(h.tx_total().await, 1_000);
    // The crash: the connection goes away with nothing acked.
    drop(taken);
    cancel.cancel();
    consumer.shutdown().await;

    // The broker redelivers everything; a new worker applies nothing twice.
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    let mut duplicates = 0;
    while duplicates < 20 {
        match pipeline.process_one(Duration::from_secs(10)).await {
            Outcome::Duplicate => duplicates += 1,
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }
    assert_eq!(h.tx_total().await, 1_000, "totals still exact");
    // An agent re-sending batch c0 (new message, same batch id) also counts once.
    h.publish_json(&tx_batch("c0", "Jobs#run", 50, 1.0, start))
        .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Duplicate
    );
    assert_eq!(h.tx_total().await, 1_000);
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn freshness_is_observed_per_message_committed_from_its_receive_time() {
    // Two messages the API received 90 s ago (queued through an outage)
    // and one just now; then a retry of the first, which is not written
    // again and so not observed again.
    let h = Harness::new().await;
    let start = test_minute_start();
    let mut envelopes = Vec::new();
    for (i, age_ms) in [(0, 90_000), (1, 90_000), (2, 0)] {
        let body = tx_batch(&format!("fresh{i}"), "Jobs#run", 5, 2.0, start);
        let mut env = h.envelope(&body, AuthMode::Confirmed, &h.key);
        env.received_at_ms -= age_ms;
        envelopes.push(env);
    }
    for env in &envelopes {
        h.publish(env).await;
    }
    let cancel = CancellationToken::new();
    let processor = h.processor();
    let freshness = processor.metrics().freshness.clone();
    let mut pipeline = h.pipeline(processor, &cancel);
    for _ in 0..3 {
        assert_eq!(
            pipeline.process_one(Duration::from_secs(10)).await,
            Outcome::Processed { items: 5 }
        );
    }
    assert_eq!(freshness.get_sample_count(), 3);
    let sum = freshness.get_sample_sum();
    // 90 + 90 + ~0 seconds, plus however long the test itself took.
    assert!((180.0..240.0).contains(&sum), "freshness sum {sum}");
    let mut again = envelopes[0].clone();
    again.message_id = inlet_domain::Envelope::new_message_id();
    h.publish(&again).await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Duplicate
    );
    assert_eq!(
        freshness.get_sample_count(),
        3,
        "a duplicate commits nothing"
    );
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn at_least_once_mode_counts_each_message_once_and_skips_applied_ones() {
    // `worker.exactly_once = false` (a standalone MongoDB without
    // transactions): effect, then markers. A redelivery after the markers
    // is still recognised; only a crash between the two can double count.
    let h = Harness::new().await;
    let start = test_minute_start();
    for i in 0..10 {
        h.publish_json(&tx_batch(&format!("alo{i}"), "Jobs#run", 10, 2.0, start))
            .await;
    }
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor_with(h.db.clone(), false), &cancel);
    for _ in 0..10 {
        let outcome = pipeline.process_one(Duration::from_secs(10)).await;
        assert_eq!(outcome, Outcome::Processed { items: 10 });
    }
    assert_eq!(h.tx_total().await, 100);
    // The same batch again (an agent retry after a lost answer).
    h.publish_json(&tx_batch("alo3", "Jobs#run", 10, 2.0, start))
        .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Duplicate
    );
    assert_eq!(h.tx_total().await, 100);
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn one_bad_push_in_a_combined_message_never_poisons_its_neighbours() {
    let h = Harness::new().await;
    let start = test_minute_start();
    let mut envs: Vec<_> = (0..10)
        .map(|i| {
            h.envelope(
                &tx_batch(&format!("n{i}"), "A", 10, 1.0, start),
                AuthMode::Confirmed,
                &h.key,
            )
        })
        .collect();
    // One the worker cannot read, one whose key the source of truth does
    // not hold (accepted provisionally), among valid ones.
    envs[3].body = inlet_domain::ContentEncoding::Gzip
        .encode(b"{\"agent\": 3}")
        .into();
    let unknown = h.issuer.issue();
    envs[6] = h.envelope(
        &tx_batch("n6", "A", 10, 1.0, start),
        AuthMode::Provisional,
        &unknown,
    );
    let bad = envs[3].clone();
    let messages = h.publish_together(&envs).await;
    assert!(
        messages < 10,
        "10 pushes in {messages} messages: not combined"
    );

    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let running = tokio::spawn(h.pipeline(processor, &cancel).run());
    wait_until(
        Duration::from_secs(30),
        "the 8 valid pushes stored",
        || async { h.tx_total().await >= 80 },
    )
    .await;
    wait_until(Duration::from_secs(10), "every push settled", || async {
        let m = &metrics.messages;
        m.with_label_values(&["processed"]).get() == 8
            && m.with_label_values(&["dead_lettered"]).get() == 1
            && m.with_label_values(&["dropped_provisional"]).get() == 1
    })
    .await;
    assert_eq!(h.tx_total().await, 80);
    // Only the bad push is in the dead-letter queue, alone, as it was sent.
    let dead = h.drain_dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(inlet_domain::Envelope::decode(&dead[0].data).unwrap(), bad);
    cancel.cancel();
    running.await.unwrap();
    h.cleanup().await;
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_queue_and_valid_messages_pass() {
    let h = Harness::new().await;
    let start = test_minute_start();
    let names = h.names();
    h.publisher
        .publish_raw(
            &names.exchange,
            &names.routing_key,
            b"not an envelope at all",
            Default::default(),
        )
        .await
        .unwrap();
    let mut invalid = h.envelope(
        &tx_batch("x", "A", 1, 1.0, start),
        AuthMode::Confirmed,
        &h.key,
    );
    invalid.body = inlet_domain::ContentEncoding::Gzip
        .encode(b"{\"agent\": 3}")
        .into();
    h.publish(&invalid).await;
    h.publish_json(&tx_batch("ok", "A", 10, 1.0, start)).await;

    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(pipeline.process_one(Duration::from_secs(10)).await);
    }
    assert!(
        matches!(&outcomes[0], Outcome::DeadLettered { reason } if reason.contains("undecodable")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], Outcome::DeadLettered { reason } if reason.contains("invalid batch")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], Outcome::Processed { items: 10 });
    assert_eq!(h.tx_total().await, 10);
    let dead = h.drain_dead_letters().await;
    assert_eq!(dead.len(), 2);
    for m in &dead {
        let reason = m
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-inlet-death-reason").cloned());
        assert!(reason.is_some(), "dead letters carry their reason");
    }
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn provisional_messages_are_rechecked_before_writing() {
    let h = Harness::new().await;
    let start = test_minute_start();
    let revoked = h
        .admin
        .create_key(&h.issuer, &h.account, None)
        .await
        .unwrap()
        .0;
    h.admin.revoke_key(revoked.key_id().unwrap()).await.unwrap();
    let stranger = h.issuer.issue();

    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let mut pipeline = h.pipeline(processor, &cancel);

    h.publish(&h.envelope(
        &tx_batch("p1", "A", 5, 1.0, start),
        AuthMode::Provisional,
        &revoked,
    ))
    .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::DroppedProvisional {
            reason: "revoked_key"
        }
    );
    h.publish(&h.envelope(
        &tx_batch("p2", "A", 5, 1.0, start),
        AuthMode::Provisional,
        &stranger,
    ))
    .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::DroppedProvisional {
            reason: "unknown_key"
        }
    );
    assert_eq!(h.tx_total().await, 0, "nothing written for rejected keys");

    h.publish(&h.envelope(
        &tx_batch("p3", "A", 5, 1.0, start),
        AuthMode::Provisional,
        &h.key,
    ))
    .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Processed { items: 5 }
    );
    let docs = h.tx_docs().await;
    assert_eq!(
        docs[0].get_str("account").unwrap(),
        "acme",
        "account resolved by the re-check"
    );
    assert_eq!(
        metrics
            .dropped_provisional
            .with_label_values(&["revoked_key"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .dropped_provisional
            .with_label_values(&["unknown_key"])
            .get(),
        1
    );
    cancel.cancel();
    h.cleanup().await;
}

/// Issue 13, point 4: another writer deleted a key's account document.
/// The source of truth's answer is "no such key" for the API (which asks
/// the same store when Redis cannot answer) and for the worker's re-check
/// alike, so the provisional push is dropped as `unknown_key`: never
/// written, never retried, never dead-lettered.
#[tokio::test]
async fn a_key_whose_account_was_deleted_is_unknown_to_the_recheck_as_to_the_api() {
    let h = Harness::new().await;
    let start = test_minute_start();
    let gone = inlet_domain::AccountId::parse("gone").unwrap();
    h.admin.create_account(&gone, None).await.unwrap();
    let orphan = h.admin.create_key(&h.issuer, &gone, None).await.unwrap().0;
    let deleted =
        h.db.collection::<Document>("accounts")
            .delete_one(doc! { "_id": "gone" })
            .await
            .unwrap();
    assert_eq!(deleted.deleted_count, 1);
    let truth = inlet_auth::MongoStore::new(h.db.clone());
    assert!(
        matches!(
            inlet_auth::KeyStore::lookup(&truth, &orphan.digest()).await,
            Ok(inlet_auth::Lookup::Absent)
        ),
        "the source of truth holds no usable key whose account is gone"
    );

    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    h.publish(&h.envelope(
        &tx_batch("orphan", "A", 4, 1.0, start),
        AuthMode::Provisional,
        &orphan,
    ))
    .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::DroppedProvisional {
            reason: "unknown_key"
        }
    );
    assert_eq!(
        h.tx_total().await,
        0,
        "nothing written for the orphaned key"
    );
    assert!(
        h.drain_dead_letters().await.is_empty(),
        "a verdict of the source of truth is not dead-lettered"
    );
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn an_unreadable_key_record_is_dead_lettered_and_never_stalls_the_pipeline() {
    let h = Harness::new().await;
    let start = test_minute_start();
    // A key accepted provisionally (stores were down at the API), whose
    // document another writer has since left unreadable.
    let bad = h
        .admin
        .create_key(&h.issuer, &h.account, None)
        .await
        .unwrap()
        .0;
    h.db.collection::<Document>("api_keys")
        .update_one(
            doc! { "_id": bad.key_id().unwrap().to_string() },
            doc! { "$set": { "app": " not an app name " } },
        )
        .await
        .unwrap();
    let mut healthy = 0;
    for i in 0..20 {
        if i == 5 {
            h.publish(&h.envelope(
                &tx_batch("bad", "A", 7, 1.0, start),
                AuthMode::Provisional,
                &bad,
            ))
            .await;
        }
        let mode = if i % 2 == 0 {
            AuthMode::Confirmed
        } else {
            AuthMode::Provisional
        };
        h.publish(&h.envelope(
            &tx_batch(&format!("ok{i}"), "A", 3, 1.0, start),
            mode,
            &h.key,
        ))
        .await;
        healthy += 3;
    }
    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let pipeline = h.pipeline(processor, &cancel);
    let run = tokio::spawn(pipeline.run());
    inlet_testkit::wait_until(
        Duration::from_secs(10),
        "every healthy message stored",
        || async { h.tx_total().await == healthy },
    )
    .await;
    inlet_testkit::wait_until(
        Duration::from_secs(10),
        "the bad key's data dead-lettered",
        || async {
            metrics
                .dead_letters
                .with_label_values(&["key_record_unreadable"])
                .get()
                == 1
        },
    )
    .await;
    assert_eq!(metrics.paused.get(), 0, "the pipeline is not paused");
    cancel.cancel();
    run.await.unwrap();
    let dead = h.drain_dead_letters().await;
    assert_eq!(dead.len(), 1, "kept, once");
    let reason = dead[0]
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-inlet-death-reason").cloned())
        .and_then(|v| v.as_long_string().map(|s| s.to_string()));
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("key record unreadable")),
        "{reason:?}"
    );
    assert_eq!(
        h.tx_total().await,
        healthy,
        "nothing of the bad key was written"
    );
    h.cleanup().await;
}

#[tokio::test]
async fn mongodb_stopped_while_messages_arrive_loses_nothing() {
    let mut server = SecantusServer::start(SecantusStorage::Disk);
    let mongo = TestMongo::at(&server.url()).await;
    let h = Harness::with_db(mongo.db(), server.url()).await;
    let start = test_minute_start();
    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let mut mongo_up = processor.watch_mongo();
    let queue_metrics = inlet_queue::QueueMetrics::unregistered().unwrap();
    let running = tokio::spawn(
        h.pipeline_with(processor, &cancel, queue_metrics.clone())
            .run(),
    );

    h.publish_json(&tx_batch("before", "A", 10, 1.0, start))
        .await;
    wait_until(
        Duration::from_secs(20),
        "the first batch stored",
        || async { h.tx_total().await == 10 },
    )
    .await;

    server.stop();
    for i in 0..30 {
        h.publish_json(&tx_batch(&format!("during-{i}"), "A", 10, 1.0, start))
            .await;
    }
    // The worker notices and pauses (it pulls nothing meanwhile).
    wait_until(Duration::from_secs(30), "the worker to pause", || {
        let up = *mongo_up.borrow_and_update();
        async move { !up }
    })
    .await;
    assert_eq!(metrics.paused.get(), 1);
    // Paused means no hot loop: nothing handed back to the broker, and no
    // new deliveries beyond what it already holds.
    let deliveries = queue_metrics.consumer_deliveries_total.get();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        queue_metrics.consumer_deliveries_total.get(),
        deliveries,
        "deliveries while paused"
    );
    assert_eq!(queue_metrics.consumer_requeues_total.get(), 0);
    server.restart();
    wait_until(
        Duration::from_secs(60),
        "every batch stored after the restart",
        || async { h.tx_total().await == 310 },
    )
    .await;
    assert_eq!(
        metrics.messages.with_label_values(&["dead_lettered"]).get(),
        0
    );
    assert_eq!(metrics.messages.with_label_values(&["retried"]).get(), 0);
    assert!(h.drain_dead_letters().await.is_empty());
    // Processed once: a marker published now is delivered after anything
    // still queued (a redelivery of an earlier batch included); once the
    // marker is stored, nothing of the 310 may have been stored again.
    h.publish_json(&tx_batch("marker", "Marker", 1, 1.0, start))
        .await;
    wait_until(Duration::from_secs(30), "the marker stored", || async {
        h.tx_docs()
            .await
            .iter()
            .any(|d| d.get_str("action") == Ok("Marker"))
    })
    .await;
    assert_eq!(h.tx_total().await, 311, "processed once (310 + the marker)");
    cancel.cancel();
    running.await.unwrap();
    h.cleanup().await;
}

#[tokio::test]
async fn retention_is_applied_from_settings() {
    let h = Harness::new().await;
    let mut settings = h.settings.clone();
    // Every setting differs from its default and from the others, so a
    // TTL applied to the wrong collection shows.
    settings.retention_transactions_days = 7;
    settings.retention_metrics_days = 11;
    settings.retention_errors_days = 13;
    settings.retention_applied_hours = 50;
    settings.retention_cumulative_days = 17;
    inlet_worker::retention::apply_retention(&h.db, &settings)
        .await
        .unwrap();
    let ttl_of = |collection: &'static str| {
        let db = h.db.clone();
        async move {
            let mut cursor = db
                .collection::<mongodb::bson::Document>(collection)
                .list_indexes()
                .await
                .unwrap();
            let mut ttl = None;
            while cursor.advance().await.unwrap() {
                let idx = cursor.deserialize_current().unwrap();
                if idx.options.as_ref().and_then(|o| o.name.clone()).as_deref() == Some("retention")
                {
                    ttl = idx.options.and_then(|o| o.expire_after);
                }
            }
            ttl
        }
    };
    let day = 86_400;
    for (collection, seconds) in [
        ("tx_minutes", 7 * day),
        ("metric_minutes", 11 * day),
        ("error_minutes", 13 * day),
        ("error_groups", 13 * day),
        ("applied", 50 * 3_600),
        ("metric_cumulative", 17 * day),
    ] {
        assert_eq!(
            ttl_of(collection).await,
            Some(Duration::from_secs(seconds)),
            "{collection}"
        );
    }
    h.cleanup().await;
}

#[tokio::test]
async fn metrics_and_errors_are_stored_with_their_semantics() {
    let h = Harness::new().await;
    let start = test_minute_start();
    let body = |id: &str, gauge: f64, gauge_ts: i64, msg: &str, err_ts: i64| {
        serde_json::json!({
            "batch_id": id,
            "agent": {"name": "t", "version": "1"}, "app": "shop", "environment": "production",
            "metrics": [
                {"kind": "counter", "name": "jobs", "value": 2, "tags": {"q": "default"}, "timestamp_ms": start},
                {"kind": "gauge", "name": "depth", "value": gauge, "tags": {"$host.name": "$a"}, "timestamp_ms": gauge_ts},
                {"kind": "distribution", "name": "size", "value": gauge * 10.0, "timestamp_ms": start}
            ],
            "errors": [{"class": "Boom", "message": msg, "action": "A", "timestamp_ms": err_ts,
                        "backtrace": [{"file": "app/a.rb", "line": 3, "function": "f"}]}]
        })
    };
    let cancel = CancellationToken::new();
    let mut pipeline = h.pipeline(h.processor(), &cancel);
    // The newer gauge arrives first: the older one must not overwrite it.
    h.publish_json(&body("m1", 7.0, start + 500, "newer", start + 500))
        .await;
    assert!(matches!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Processed { .. }
    ));
    h.publish_json(&body("m2", 3.0, start + 100, "older", start + 100))
        .await;
    assert!(matches!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Processed { .. }
    ));

    let metrics = h.db.collection::<mongodb::bson::Document>("metric_minutes");
    // Tags are `{k, v}` pairs: any user string is a value, never a field
    // name, and a series is found by its pairs.
    let counter = metrics
        .find_one(doc! { "name": "jobs", "tags": { "$elemMatch": { "k": "q", "v": "default" } } })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counter.get_f64("sum").unwrap(), 4.0);
    assert_eq!(
        counter.get_array("tags").unwrap(),
        &vec![mongodb::bson::Bson::Document(
            doc! { "k": "q", "v": "default" }
        )]
    );
    let gauge = metrics
        .find_one(
            doc! { "name": "depth", "tags": { "$elemMatch": { "k": "$host.name", "v": "$a" } } },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gauge.get_array("tags").unwrap().len(), 1);
    assert_eq!(
        gauge.get_f64("last").unwrap(),
        7.0,
        "latest timestamp wins, not latest arrival"
    );
    assert_eq!(gauge.get_i64("count").unwrap(), 2);
    let dist = metrics
        .find_one(doc! { "name": "size" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (dist.get_f64("min").unwrap(), dist.get_f64("max").unwrap()),
        (30.0, 70.0)
    );
    let group =
        h.db.collection::<mongodb::bson::Document>("error_groups")
            .find_one(doc! {})
            .await
            .unwrap()
            .unwrap();
    assert_eq!(group.get_i64("count").unwrap(), 2);
    assert_eq!(
        group
            .get_document("latest")
            .unwrap()
            .get_str("message")
            .unwrap(),
        "newer"
    );
    assert_eq!(
        group.get_datetime("first_seen").unwrap().timestamp_millis(),
        start + 100
    );
    let minutes = h.db.collection::<mongodb::bson::Document>("error_minutes");
    assert_eq!(minutes.count_documents(doc! {}).await.unwrap(), 1);
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn failing_writes_retry_with_growing_attempts_then_dead_letter() {
    let h = Harness::new().await;
    let start = test_minute_start();
    // The server refuses this action's documents (a validator), so every
    // write of that message fails, while others succeed.
    h.db.run_command(doc! {
        "collMod": "tx_minutes",
        "validator": { "action": { "$ne": "Refused" } },
        "validationAction": "error",
    })
    .await
    .unwrap();
    h.publish_json(&tx_batch("bad", "Refused", 3, 1.0, start))
        .await;
    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let mut pipeline = h.pipeline(processor, &cancel);
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Retried { attempt: 2 }
    );
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Retried { attempt: 3 }
    );
    assert!(matches!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::DeadLettered { .. }
    ));
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&["max_attempts"])
            .get(),
        1
    );
    let dead = h.drain_dead_letters().await;
    assert_eq!(dead.len(), 1);
    h.publish_json(&tx_batch("good", "Fine", 3, 1.0, start))
        .await;
    assert_eq!(
        pipeline.process_one(Duration::from_secs(10)).await,
        Outcome::Processed { items: 3 }
    );
    cancel.cancel();
    h.cleanup().await;
}

#[tokio::test]
async fn a_batch_holding_every_prefetched_delivery_does_not_wait_for_more() {
    // The batch could hold 512 pushes, but the broker sends at most the
    // prefetch (4) unsettled: once the batch holds 4 deliveries no more
    // can come before it is settled, so it must not wait out the linger.
    let mut h = Harness::new().await;
    h.queue.prefetch = 4;
    h.settings.batch_max_messages = 512;
    h.settings.batch_linger_ms = 60_000;
    let start = test_minute_start();
    for i in 0..8 {
        h.publish_json(&tx_batch(&format!("p{i}"), "A", 10, 1.0, start))
            .await;
    }
    let cancel = CancellationToken::new();
    let processor = h.processor();
    let metrics = processor.metrics().clone();
    let running = tokio::spawn(h.pipeline(processor, &cancel).run());
    wait_until(
        Duration::from_secs(20),
        "8 pushes in two batches of the prefetch, without the 60 s linger",
        || async { metrics.messages.with_label_values(&["processed"]).get() == 8 },
    )
    .await;
    assert_eq!(h.tx_total().await, 80);
    cancel.cancel();
    running.await.unwrap();
    h.cleanup().await;
}
