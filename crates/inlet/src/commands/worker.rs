//! `inlet worker`: consume pushes and aggregate them into MongoDB.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use inlet_domain::backoff::{Backoff, Jitter};
use inlet_obs::{AdminServer, Health, process_registry};
use inlet_queue::QueueMetrics;
use inlet_worker::{AggregateStore, Pipeline, Processor, WorkerMetrics};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Builds the worker in one place and runs it until SIGTERM/SIGINT, then
/// drains: stop consuming, finish and ack what is in hand, close.
pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let registry = process_registry("worker");
    let worker_metrics = WorkerMetrics::register(&registry)?;
    let queue_metrics = QueueMetrics::register(&registry)?;
    let health = Health::new();
    health.set("mongo", false, "not checked yet");
    health.set("queue", false, "connecting");

    // The admin listener first, so liveness and metrics are there while
    // the dependencies come up.
    let admin = AdminServer::bind(&settings.admin.worker_listen, registry, health.clone())
        .with_context(|| {
            format!(
                "binding the admin listener {}",
                settings.admin.worker_listen
            )
        })?;
    tracing::info!(port = admin.port(), "worker admin listener up");
    let admin_handle = admin.handle();
    let admin_task = tokio::spawn(admin.run());
    let cancel = CancellationToken::new();

    let mongo = super::mongo(&settings).await?;
    let store = AggregateStore::new(mongo.database().clone(), settings.worker.exactly_once);
    // Exactly-once needs transactions. An unreachable server is waited for
    // (it may be starting); a standalone one is a misconfiguration.
    // From 250 ms, doubling up to 5 s; one process, no jitter.
    let mut backoff =
        Backoff::new(Duration::from_millis(250), Duration::from_secs(5)).with_jitter(Jitter::None);
    let transactions = loop {
        match store.supports_transactions().await {
            Ok(t) => break t,
            Err(e) => {
                health.set("mongo", false, e.to_string());
                tracing::warn!(error = %e, "MongoDB not reachable yet; retrying");
                tokio::select! {
                    _ = super::shutdown_signal() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    if settings.worker.exactly_once && !transactions {
        bail!(
            "MongoDB at {} does not support transactions (not a replica set); run a (single-node) \
             replica set, or set worker.exactly_once = false to accept at-least-once counting",
            settings.mongo.url
        );
    }
    if !settings.worker.exactly_once {
        tracing::warn!(
            "worker.exactly_once = false: a crash between write and ack may double count"
        );
    }
    let processor = Processor::new(
        store,
        mongo.clone(),
        settings.limits.clone(),
        settings.worker.clone(),
        worker_metrics,
    );

    // MongoDB's state, as the processor sees it.
    let mut mongo_up = processor.watch_mongo();
    let h = health.clone();
    tokio::spawn(async move {
        loop {
            let up = *mongo_up.borrow_and_update();
            h.set(
                "mongo",
                up,
                if up {
                    "reachable"
                } else {
                    "unreachable: pipelines paused"
                },
            );
            if mongo_up.changed().await.is_err() {
                return;
            }
        }
    });

    let mut runners = Vec::new();
    let mut states = Vec::new();
    for i in 0..settings.worker.concurrency {
        let mut queue = settings.queue.clone();
        queue.connection_name = format!("{}-worker-{i}", queue.connection_name);
        let pipeline = Pipeline::start(
            queue,
            queue_metrics.clone(),
            processor.clone(),
            settings.worker.clone(),
            cancel.clone(),
        )
        .context("starting a consumer")?;
        states.push(pipeline.consumer().watch_state());
        runners.push(tokio::spawn(pipeline.run()));
    }
    // Ready when every consumer is connected (and MongoDB reachable).
    let h = health.clone();
    tokio::spawn(async move {
        loop {
            let connected = states.iter().filter(|s| s.borrow().is_connected()).count();
            let total = states.len();
            h.set(
                "queue",
                connected == total,
                format!("{connected}/{total} consumers connected"),
            );
            let changes = states.iter_mut().map(|s| Box::pin(s.changed()));
            if futures::future::select_all(changes).await.0.is_err() {
                return;
            }
        }
    });

    super::shutdown_signal().await;
    tracing::info!("shutting down: no new deliveries; finishing what is in hand");
    health.begin_shutdown();
    cancel.cancel();
    for r in runners {
        let _ = r.await;
    }
    admin_handle.stop(true).await;
    let _ = admin_task.await;
    super::close_mongo(&mongo).await;
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}
