//! `inlet migrate [--status]`: `--status` exits 1 while a migration is
//! pending or its file changed since it was applied.

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
        let mut not_applied = 0;
        for s in migrator.status().await? {
            let state = match (s.applied_at_ms, s.unchanged) {
                (Some(at), true) => format!("applied {}", crate::output::rfc3339(at)),
                (Some(_), false) => "applied, but the file has changed since".to_owned(),
                (None, _) => "pending".to_owned(),
            };
            not_applied += usize::from(!(s.applied_at_ms.is_some() && s.unchanged));
            writeln!(out, "{:04} {:<32} {state}", s.version, s.name)?;
        }
        drop(out);
        super::close_mongo(&store).await;
        // Exit 1 unless every shipped migration is applied as shipped, so
        // a script or an init container can wait for `inlet migrate`.
        if not_applied > 0 {
            tracing::error!(
                not_applied,
                "not every migration is applied: run `inlet migrate`"
            );
            return Ok(ExitCode::FAILURE);
        }
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
