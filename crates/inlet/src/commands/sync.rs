//! `inlet sync [--once]`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use inlet_auth::sync::{KeySync, SyncState};
use inlet_auth::{RedisStore, SyncMetrics};
use inlet_obs::{AdminServer, Health, process_registry};
use tokio_util::sync::CancellationToken;

use crate::output::progress_bar;
use crate::settings::Settings;

/// Loads every key into Redis; without `--once`, then follows changes and
/// serves `/health/*` and `/metrics` until SIGTERM.
pub async fn run(settings: Settings, once: bool) -> anyhow::Result<ExitCode> {
    let registry = process_registry("sync");
    let metrics = SyncMetrics::register(&registry)?;
    let mongo = super::mongo(&settings).await?;
    let redis = RedisStore::new(&settings.redis).context("configuring Redis")?;
    let sync = KeySync::new(mongo.clone(), redis, settings.sync.clone(), metrics);

    if once {
        // The bar's length is MongoDB's estimate of the key documents.
        let total = mongo.counts().await.map_or(0, |c| c.keys);
        let bar = progress_bar(total, "keys");
        let mut state = sync.watch_state();
        let follower = {
            let bar = bar.clone();
            tokio::spawn(async move {
                while state.changed().await.is_ok() {
                    if let SyncState::Loading { written, .. } = *state.borrow_and_update() {
                        bar.set_position(written);
                    }
                }
            })
        };
        let marker = sync.backfill().await;
        follower.abort();
        bar.finish_and_clear();
        let marker = marker.context("loading keys into Redis")?;
        writeln!(
            std::io::stdout(),
            "loaded {} keys into generation {}",
            marker.count,
            marker.generation
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    let health = Health::new();
    health.set("sync", false, "starting");
    let admin = AdminServer::bind(&settings.admin.sync_listen, registry, health.clone())
        .with_context(|| format!("binding the admin listener {}", settings.admin.sync_listen))?;
    tracing::info!(port = admin.port(), "sync admin listener up");
    let admin_handle = admin.handle();
    let admin_task = tokio::spawn(admin.run());

    let mut state = sync.watch_state();
    let reporter = {
        let health = health.clone();
        tokio::spawn(async move {
            loop {
                let s = state.borrow_and_update().clone();
                health.set("sync", s.is_ready(), s.to_string());
                if state.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    let cancel = CancellationToken::new();
    let runner = {
        let cancel = cancel.clone();
        tokio::spawn(async move { sync.run(cancel).await })
    };
    super::shutdown_signal().await;
    tracing::info!("shutting down");
    health.begin_shutdown();
    cancel.cancel();
    let _ = runner.await;
    reporter.abort();
    admin_handle.stop(true).await;
    let _ = admin_task.await;
    super::close_mongo(&mongo).await;
    Ok(ExitCode::SUCCESS)
}
