//! `inlet check`: loads the configuration (done before this runs: a bad
//! value stops there, naming its key) and checks each dependency, one line
//! each, like `vector validate`. Exits 1 when any check failed.
//!
//! - **redis**: reachable, and whether a key sync has populated it.
//! - **mongodb**: a writable primary, the keys it holds, and whether every
//!   shipped migration is applied (the services need them).
//! - **rabbitmq**: a connection as the API's publisher opens it, which
//!   declares the topology: so it also checks the user's permissions.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use inlet_auth::{KeyStore as _, MongoStore, Readiness, RedisStore};
use inlet_domain::redact::redact_url;
use inlet_migrate::Migrator;
use inlet_queue::{ConnectionState, Publisher, QueueMetrics};

use crate::settings::Settings;

/// One dependency's result.
struct Line {
    name: &'static str,
    target: String,
    result: Result<String, String>,
}

/// Runs every check at once, each within `timeout`, and prints a line per
/// dependency.
pub async fn run(settings: Settings, timeout: Duration) -> anyhow::Result<ExitCode> {
    let (redis, mongo, rabbit) = tokio::join!(
        bounded(timeout, check_redis(&settings)),
        bounded(timeout, check_mongo(&settings)),
        // Bounded by its own wait, so that it can say why it failed.
        check_rabbitmq(&settings, timeout),
    );
    let lines = [
        Line {
            name: "redis",
            target: format!(
                "{} (prefix {})",
                redact_url(&settings.redis.url),
                settings.redis.prefix
            ),
            result: redis,
        },
        Line {
            name: "mongodb",
            target: format!(
                "{} (database {})",
                redact_url(&settings.mongo.url),
                settings.mongo.database
            ),
            result: mongo,
        },
        Line {
            name: "rabbitmq",
            target: format!(
                "{} (prefix {})",
                settings.queue.redacted_url(),
                settings.queue.prefix
            ),
            result: rabbit,
        },
    ];
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<9} ok      loaded and validated", "config")?;
    for l in &lines {
        match &l.result {
            Ok(detail) => writeln!(out, "{:<9} ok      {}: {detail}", l.name, l.target)?,
            Err(why) => writeln!(out, "{:<9} FAILED  {}: {why}", l.name, l.target)?,
        }
    }
    Ok(if lines.iter().all(|l| l.result.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bounded(
    timeout: Duration,
    check: impl Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}

async fn check_redis(settings: &Settings) -> Result<String, String> {
    let store = RedisStore::new(&settings.redis).map_err(|e| e.to_string())?;
    match store.readiness().await {
        Readiness::Unreachable(e) => Err(e.to_string()),
        Readiness::NotPopulated => Ok("reachable; not populated yet (run `inlet sync`)".to_owned()),
        populated => Ok(format!("reachable, {}", populated.describe())),
    }
}

async fn check_mongo(settings: &Settings) -> Result<String, String> {
    let store = MongoStore::connect(&settings.mongo)
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let migrator = Migrator::new(
            store.database().clone(),
            inlet_migrate::shipped().map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        migrator
            .wait_writable_primary(Duration::ZERO)
            .await
            .map_err(|e| e.to_string())?;
        let status = migrator.status().await.map_err(|e| e.to_string())?;
        let pending = status.iter().filter(|s| s.applied_at_ms.is_none()).count();
        let changed = status.iter().filter(|s| s.applied_at_ms.is_some() && !s.unchanged).count();
        if pending > 0 {
            return Err(format!(
                "writable primary, but {pending} of {} migrations are not applied (run `inlet migrate`)",
                status.len()
            ));
        }
        if changed > 0 {
            return Err(format!(
                "{changed} applied migrations changed since (add a new migration instead)"
            ));
        }
        let keys = match store.readiness().await {
            Readiness::Populated { keys, .. } => format!(", {keys} keys"),
            _ => String::new(),
        };
        Ok(format!("writable primary, {} migrations applied{keys}", status.len()))
    }
    .await;
    store.shutdown().await;
    result
}

async fn check_rabbitmq(settings: &Settings, timeout: Duration) -> Result<String, String> {
    let metrics = QueueMetrics::unregistered().map_err(|e| e.to_string())?;
    let publisher = Publisher::start(settings.queue.clone(), metrics).map_err(|e| e.to_string())?;
    let connected = publisher.wait_connected(timeout).await;
    let state = publisher.state();
    publisher.close().await;
    if connected {
        return Ok("connected, topology declared".to_owned());
    }
    Err(match state {
        ConnectionState::Disconnected { reason, .. } => reason,
        other => other.label().to_owned(),
    })
}
