//! `inlet api`: the push API.

use std::process::ExitCode;

use anyhow::Context as _;
use inlet_api::{Application, Dependencies};
use inlet_auth::AuthMetrics;
use inlet_auth::stack::AuthStack;
use inlet_obs::{Health, process_registry};
use inlet_queue::{Publisher, QueueMetrics};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Builds every dependency in one place and serves until SIGTERM/SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let registry = process_registry("api");
    let cancel = CancellationToken::new();

    // 1. The auth stack. Building it does no network I/O: a store that is
    //    down is unreachable (503s, readiness red), not a start-up failure.
    let stack = AuthStack::build(
        &settings.auth,
        &settings.signing,
        &settings.redis,
        &settings.mongo,
        AuthMetrics::register(&registry)?,
    )
    .await
    .context("configuring the authenticator")?;
    // 2. Its background work: the readiness probe first, so readiness can
    //    only turn green after a store has answered; then the invalidation
    //    listener and the key-file reloader.
    let background = stack.spawn_background(&cancel);

    // 3. The publisher connects (and keeps reconnecting) in the background.
    let publisher = Publisher::start(settings.queue.clone(), QueueMetrics::register(&registry)?)
        .context("configuring the queue publisher")?;

    // 4. The listener. `/health/ready` stays 503 until both the
    //    authenticator can decide and the publisher is connected.
    let app = Application::build(
        settings.api.clone(),
        Dependencies {
            authenticator: stack.authenticator.clone(),
            publisher,
            registry,
            health: Health::new(),
            limits: settings.limits.clone(),
        },
    )
    .with_context(|| format!("starting the API on {}", settings.api.listen))?;
    tracing::info!(
        port = app.port(),
        scheme = app.scheme(),
        admin_port = ?app.admin_port(),
        "push API listening"
    );
    app.run_until_stopped(super::shutdown_signal()).await?;

    cancel.cancel();
    for task in background {
        let _ = task.await;
    }
    if let Some(mongo) = &stack.mongo {
        super::close_mongo(mongo).await;
    }
    Ok(ExitCode::SUCCESS)
}
