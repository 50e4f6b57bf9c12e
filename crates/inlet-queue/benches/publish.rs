//! Confirmed publish throughput: `Publisher::publish` against a bare lapin
//! loop with pipelined confirms, on the same broker, with the same number
//! of channels, the same concurrency, persistent messages with the same
//! properties, to the same kind of queue (a throwaway Inlet topology under
//! a unique prefix, purged before every batch and deleted afterwards).
//!
//! Run: `cargo bench -p inlet-queue --bench publish` (broker at
//! `INLET_TEST_AMQP_URL`, default local). `INLET_BENCH_QUEUE_TYPE=classic`
//! benchmarks classic queues instead of quorum ones.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inlet_domain::{
    AccountId, AuthMode, ContentEncoding, ENVELOPE_CONTENT_TYPE, Envelope, KeyDigest, KeyId,
};
use inlet_queue::topology::{self, Names};
use inlet_queue::{Publisher, QueueMetrics, QueueSettings, QueueType};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

/// Messages per measured batch.
const BATCH: usize = 2000;
/// Publishes in flight at once (both contenders).
const CONCURRENCY: usize = 256;
/// Channels (both contenders).
const CHANNELS: usize = 2;

fn envelope(body_len: usize) -> Envelope {
    Envelope {
        message_id: Envelope::new_message_id(),
        account_id: Some(AccountId::parse("bench").unwrap()),
        key_id: KeyId::from_u64(1),
        key_digest: KeyDigest::of_secret("bench"),
        auth_mode: AuthMode::Confirmed,
        received_at_ms: 1_790_000_000_000,
        content_encoding: ContentEncoding::Identity,
        batch_id: None,
        body: vec![b'x'; body_len].into(),
    }
}

/// What a hand-written publisher would send: the same properties the
/// `Publisher` sets. (The bare loop publishes a pre-encoded payload, so
/// the comparison charges envelope encoding to the `Publisher` only.)
fn bare_properties(message_id: uuid::Uuid, key_id: KeyId) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-inlet-account".into(),
        AMQPValue::LongString(LongString::from("bench")),
    );
    headers.insert(
        "x-inlet-key-id".into(),
        AMQPValue::LongString(LongString::from(key_id.to_string())),
    );
    headers.insert(
        "x-inlet-auth-mode".into(),
        AMQPValue::LongString(LongString::from("confirmed")),
    );
    BasicProperties::default()
        .with_message_id(ShortString::from(message_id.to_string()))
        .with_content_type(ENVELOPE_CONTENT_TYPE.into())
        .with_timestamp(1_790_000_000)
        .with_delivery_mode(2)
        .with_headers(headers)
}

struct Bare {
    _conn: Connection,
    channels: Vec<Channel>,
    exchange: ShortString,
    routing_key: ShortString,
}

async fn bare_batch(bare: &Arc<Bare>, payload: &Arc<Vec<u8>>, template: &Arc<Envelope>) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (bare, payload, template, next) = (
                bare.clone(),
                payload.clone(),
                template.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= BATCH {
                        break;
                    }
                    let ch = &bare.channels[i % CHANNELS];
                    let confirm = ch
                        .basic_publish(
                            bare.exchange.clone(),
                            bare.routing_key.clone(),
                            BasicPublishOptions {
                                mandatory: true,
                                immediate: false,
                            },
                            &payload,
                            bare_properties(Envelope::new_message_id(), template.key_id),
                        )
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    assert_eq!(confirm, Confirmation::Ack(None));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn publisher_batch(publisher: &Publisher, template: &Arc<Envelope>) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (p, template, next) = (publisher.clone(), template.clone(), next.clone());
            tokio::spawn(async move {
                let mut e = (*template).clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= BATCH {
                        break;
                    }
                    e.message_id = Envelope::new_message_id();
                    p.publish(&e).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn purge(ch: &Channel, queue: &str) {
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .unwrap();
}

fn bench_publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = inlet_testkit::TestAmqp::new();
    let queue_type = match std::env::var("INLET_BENCH_QUEUE_TYPE").as_deref() {
        Ok("classic") => QueueType::Classic,
        _ => QueueType::Quorum,
    };
    let settings = QueueSettings {
        url: t.url.clone(),
        prefix: format!("{}.bench", t.prefix),
        connection_name: t.prefix.clone(),
        queue_type,
        publisher_channels: CHANNELS,
        max_in_flight: CONCURRENCY * 2,
        confirm_timeout_ms: 30_000,
        ..QueueSettings::default()
    };
    let names = Names::from_settings(&settings);

    let (publisher, bare, admin) = rt.block_on(async {
        let publisher =
            Publisher::start(settings.clone(), QueueMetrics::unregistered().unwrap()).unwrap();
        assert!(publisher.wait_connected(Duration::from_secs(10)).await);
        let conn = Connection::connect(&settings.url, ConnectionProperties::default())
            .await
            .unwrap();
        let admin = conn.create_channel().await.unwrap();
        topology::declare(&admin, &settings).await.unwrap();
        let mut channels = Vec::new();
        for _ in 0..CHANNELS {
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            channels.push(ch);
        }
        let bare = Arc::new(Bare {
            _conn: conn,
            channels,
            exchange: names.exchange.as_str().into(),
            routing_key: names.routing_key.as_str().into(),
        });
        (publisher, bare, admin)
    });

    let mut group = c.benchmark_group(format!("confirmed_publish_{}", queue_type.as_str()));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(12));
    group.throughput(Throughput::Elements(BATCH as u64));
    for size in [1024usize, 16 * 1024] {
        let template = Arc::new(envelope(size));
        let payload = Arc::new(template.encode());
        group.bench_with_input(BenchmarkId::new("bare_lapin", size), &size, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (bare, payload, template, admin, queue) = (
                    bare.clone(),
                    payload.clone(),
                    template.clone(),
                    admin.clone(),
                    names.queue.clone(),
                );
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        purge(&admin, &queue).await;
                        let start = Instant::now();
                        bare_batch(&bare, &payload, &template).await;
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
        group.bench_with_input(BenchmarkId::new("publisher", size), &size, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (publisher, template, admin, queue) = (
                    publisher.clone(),
                    template.clone(),
                    admin.clone(),
                    names.queue.clone(),
                );
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        purge(&admin, &queue).await;
                        let start = Instant::now();
                        publisher_batch(&publisher, &template).await;
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();

    rt.block_on(async {
        publisher.close().await;
        topology::delete(&admin, &names).await.unwrap();
        let _ = admin.close(200, "bench done".into()).await;
    });
}

criterion_group!(benches, bench_publish);
criterion_main!(benches);
