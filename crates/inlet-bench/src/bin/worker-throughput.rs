//! The worker (decode, validate, fold, transaction with dedup markers,
//! ack) against a bare bulk-upsert loop writing the same bucket documents
//! into the same MongoDB, without queue, transaction or dedup. Both run at
//! the same concurrency: `--concurrency` worker pipelines against as many
//! bare loops. The worker runs with the shipped `[queue]` and `[worker]`
//! defaults (prefetch, batch size, linger) but for the flags below.
//!
//! The pushes are published `--publish-concurrency` at a time, as an API
//! under load publishes them; `--combine` lets the publisher combine them
//! into bundles (the API's default), without it every push is its own
//! broker message.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use inlet_auth::MongoStore;
use inlet_domain::{
    AccountId, AuthMode, Batch, BatchLimits, ContentEncoding, Envelope, KeyDigest, KeyId, now_ms,
};
use inlet_migrate::{Migration, Migrator};
use inlet_queue::{Publisher, QueueMetrics, QueueSettings};
use inlet_worker::aggregate::Aggregates;
use inlet_worker::{AggregateStore, Pipeline, Processor, WorkerMetrics, WorkerSettings};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "mongodb://127.0.0.1:27017/?retryWrites=false")]
    mongo: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    #[arg(long, default_value_t = 50)]
    transactions_per_message: usize,
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    #[arg(long, default_value = "migrations")]
    migrations: PathBuf,
    /// Combine concurrent pushes into bundles (`[queue] combine_max_parts`
    /// at its default) instead of one broker message per push.
    #[arg(long)]
    combine: bool,
    /// Publishes in flight at once while filling the queue.
    #[arg(long, default_value_t = 256)]
    publish_concurrency: usize,
    /// `[worker] batch_max_messages` (the worker's default if not given).
    #[arg(long)]
    batch_max_messages: Option<usize>,
}

fn batch(i: usize, n: usize, start: i64) -> serde_json::Value {
    let tx: Vec<serde_json::Value> = (0..n)
        .map(|j| {
            serde_json::json!({
                "action": format!("Controller#action{}", (i + j) % 20),
                "start_ms": start + (j as i64 % 5) * 60_000,
                "duration_ms": 1.0 + ((i * 7 + j) % 500) as f64,
                "status": if j % 17 == 0 { 500 } else { 200 },
            })
        })
        .collect();
    serde_json::json!({
        "batch_id": format!("w{i}"),
        "agent": {"name": "bench", "version": "1"}, "app": "shop", "environment": "production",
        "transactions": tx,
    })
}

/// Where the worker's time went, in microseconds of pipeline time per
/// message, from its own metrics: the steps of a delivery batch, and the
/// rest of the pipelines' time (waiting for and collecting deliveries,
/// the linger).
fn breakdown(m: &WorkerMetrics, messages: usize, pipelines: usize, secs: f64) -> serde_json::Value {
    let per_message = |seconds: f64| seconds * 1e6 / messages as f64;
    let stage = |name: &str| m.stage_duration.with_label_values(&[name]).get_sample_sum();
    let batches = m.batch_duration.get_sample_sum();
    let (check, dedup, settle) = (stage("check"), stage("dedup"), stage("settle"));
    let write = m.write_duration.get_sample_sum();
    serde_json::json!({
        "check": per_message(check),
        "dedup": per_message(dedup),
        "write": per_message(write),
        "settle": per_message(settle),
        "batch_other": per_message(batches - check - dedup - write - settle),
        "between_batches": per_message(secs * pipelines as f64 - batches),
        "batches": m.batch_duration.get_sample_count(),
        "messages_per_batch": messages as f64 / m.batch_duration.get_sample_count().max(1) as f64,
        "transaction_retries": m.transaction_retries.get(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let id = uuid::Uuid::now_v7().simple().to_string()[..12].to_owned();
    let client = mongodb::Client::with_uri_str(&args.mongo).await?;
    let worker_db = client.database(&format!("bench_worker_{id}"));
    let bare_db = client.database(&format!("bench_bare_{id}"));
    let migrations = Migration::load_dir(&args.migrations)?;
    Migrator::new(worker_db.clone(), migrations.clone())?
        .run()
        .await?;
    Migrator::new(bare_db.clone(), migrations)?.run().await?;
    let start = inlet_domain::Minute::containing(now_ms() - 30 * 60_000).start_ms();
    let bodies: Vec<serde_json::Value> = (0..args.messages)
        .map(|i| batch(i, args.transactions_per_message, start))
        .collect();
    let total_tx = (args.messages * args.transactions_per_message) as f64;
    let account = AccountId::parse("bench")?;

    // --- the worker -------------------------------------------------
    let defaults = QueueSettings::default();
    let queue = QueueSettings {
        url: args.amqp.clone(),
        prefix: format!("bench-worker-{id}"),
        combine_max_parts: if args.combine {
            defaults.combine_max_parts
        } else {
            1
        },
        ..defaults
    };
    let publisher = Publisher::start(queue.clone(), QueueMetrics::unregistered()?)?;
    anyhow::ensure!(
        publisher.wait_connected(Duration::from_secs(10)).await,
        "broker unreachable"
    );
    let envelopes = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let raw = serde_json::to_vec(b)?;
            anyhow::Ok(Envelope {
                message_id: Envelope::new_message_id(),
                account_id: Some(account.clone()),
                key_id: KeyId::from_u64(i as u64),
                key_digest: KeyDigest::of_secret("bench"),
                auth_mode: AuthMode::Confirmed,
                received_at_ms: now_ms(),
                content_encoding: ContentEncoding::Gzip,
                batch_id: inlet_domain::BatchId::parse(&format!("w{i}")),
                body: ContentEncoding::Gzip.encode(&raw).into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    futures::stream::iter(&envelopes)
        .map(|e| publisher.publish(e))
        .buffer_unordered(args.publish_concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    let defaults = WorkerSettings::default();
    let settings = WorkerSettings {
        concurrency: args.concurrency,
        batch_max_messages: args
            .batch_max_messages
            .unwrap_or(defaults.batch_max_messages),
        ..defaults
    };
    let metrics = WorkerMetrics::unregistered()?;
    let consumed = QueueMetrics::unregistered()?;
    let processor = Processor::new(
        AggregateStore::new(worker_db.clone(), true),
        MongoStore::new(worker_db.clone()),
        BatchLimits::default(),
        settings.clone(),
        metrics.clone(),
    );
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let mut runners = Vec::new();
    for _ in 0..args.concurrency {
        let p = Pipeline::start(
            queue.clone(),
            consumed.clone(),
            processor.clone(),
            settings.clone(),
            cancel.clone(),
        )?;
        runners.push(tokio::spawn(p.run()));
    }
    while metrics.messages.with_label_values(&["processed"]).get() < args.messages as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let worker_secs = started.elapsed().as_secs_f64();
    let breakdown = breakdown(&metrics, args.messages, args.concurrency, worker_secs);
    cancel.cancel();
    for r in runners {
        let _ = r.await;
    }

    // --- the bare loop: same documents, batch by batch, as many loops --
    // as the worker ran pipelines, each taking the next batch of messages
    // as a pipeline takes the next deliveries, in batches of the size the
    // worker's batches had on average (the prefetch, the linger and
    // combining decide that, not only `batch_max_messages`).
    let batch_size = (args.messages as f64
        / metrics.batch_duration.get_sample_count().max(1) as f64)
        .round()
        .max(1.0) as usize;
    let bare = AggregateStore::new(bare_db.clone(), false);
    let decoded: Vec<Batch> = bodies
        .iter()
        .map(|b| {
            Batch::decode(
                &serde_json::to_vec(b).unwrap_or_default(),
                &BatchLimits::default(),
                now_ms(),
            )
        })
        .collect::<Result<_, _>>()?;
    let chunks: Arc<Vec<Vec<Batch>>> =
        Arc::new(decoded.chunks(batch_size).map(<[Batch]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..args.concurrency {
        let (chunks, next, bare, client, account) = (
            chunks.clone(),
            next.clone(),
            bare.clone(),
            client.clone(),
            account.clone(),
        );
        loops.push(tokio::spawn(async move {
            while let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                let mut agg = Aggregates::default();
                for b in chunk {
                    agg.add(&account, b);
                }
                let models = bare.models(&agg);
                client.bulk_write(models).ordered(false).await?;
            }
            anyhow::Ok(())
        }));
    }
    for l in loops {
        l.await??;
    }
    let bare_secs = started.elapsed().as_secs_f64();

    println!(
        "{}",
        serde_json::json!({
            "bench": "worker-throughput", "messages": args.messages, "transactions": total_tx,
            "concurrency": args.concurrency, "combine": args.combine,
            "publish_concurrency": args.publish_concurrency,
            "batch_max_messages": settings.batch_max_messages, "bare_batch_messages": batch_size,
            "broker_messages": consumed.consumer_deliveries_total.get(),
            "worker_seconds": worker_secs, "worker_tx_per_s": total_tx / worker_secs,
            "bare_seconds": bare_secs, "bare_tx_per_s": total_tx / bare_secs,
            "ratio": (total_tx / worker_secs) / (total_tx / bare_secs),
            "transactions_per_message": args.transactions_per_message,
            "worker_messages_per_s": args.messages as f64 / worker_secs,
            "bare_messages_per_s": args.messages as f64 / bare_secs,
            "breakdown_us_per_message": breakdown,
        })
    );
    publisher.close().await;
    let _ = worker_db.drop().await;
    let _ = bare_db.drop().await;
    let conn =
        lapin::Connection::connect(&args.amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let names = inlet_queue::Names::from_settings(&queue);
    for q in names.all_queues() {
        let _ = ch.queue_delete(q.into(), Default::default()).await;
    }
    for e in names.all_exchanges() {
        let _ = ch.exchange_delete(e.into(), Default::default()).await;
    }
    Ok(())
}
