//! `inlet migrate [--status]`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use inlet_migrate::Migrator;

use crate::settings::Settings;

/// Applies pending migrations, or prints their state.
pub async fn run(settings: Settings, status: bool, wait: Duration) -> anyhow::Result<ExitCode> {
    let store = super::mongo(&settings).await?;
    let migrator = Migrator::new(store.database().clone(), inlet_migrate::shipped()?)?;
    migrator.wait_writable_primary(wait).await?;
    let mut out = std::io::stdout().lock();
    if status {
        for s in migrator.status().await? {
            let state = match (s.applied_at_ms, s.unchanged) {
                (Some(at), true) => format!("applied {}", crate::output::rfc3339(at)),
                (Some(_), false) => "applied, but the file has changed since".to_owned(),
                (None, _) => "pending".to_owned(),
            };
            writeln!(out, "{:04} {:<32} {state}", s.version, s.name)?;
        }
        drop(out);
        super::close_mongo(&store).await;
        return Ok(ExitCode::SUCCESS);
    }
    let applied = migrator.run().await?;
    // Retention is configuration, not a migration: set it on every run.
    inlet_worker::retention::apply_retention(store.database(), &settings.worker).await?;
    if applied.is_empty() {
        writeln!(out, "database {} is up to date", settings.mongo.database)?;
    } else {
        for v in applied {
            writeln!(out, "applied migration {v:04}")?;
        }
    }
    drop(out);
    super::close_mongo(&store).await;
    Ok(ExitCode::SUCCESS)
}
