//! `inlet migrate [--status]`. `--status` says by its exit code what a
//! script or an init container should do: 0 every migration is applied as
//! shipped; [`PENDING`] one is not applied yet (wait for `inlet migrate`);
//! [`CHANGED`] an applied migration's file changed since (a person must
//! look: `inlet migrate` refuses to run); 1 the state could not be read.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use inlet_migrate::Migrator;

use crate::settings::Settings;

/// `--status`'s exit code while a migration is pending.
pub const PENDING: u8 = 2;
/// `--status`'s exit code when an applied migration's file has changed.
pub const CHANGED: u8 = 3;

/// Applies pending migrations, or prints their state.
pub async fn run(settings: Settings, status: bool, wait: Duration) -> anyhow::Result<ExitCode> {
    let store = super::mongo(&settings).await?;
    let migrator = Migrator::new(store.database().clone(), inlet_migrate::shipped()?)?;
    migrator.wait_writable_primary(wait).await?;
    let mut out = std::io::stdout().lock();
    if status {
        let (mut pending, mut changed) = (0_usize, 0_usize);
        for s in migrator.status().await? {
            let state = match (s.applied_at_ms, s.unchanged) {
                (Some(at), true) => format!("applied {}", crate::output::rfc3339(at)),
                (Some(_), false) => {
                    changed += 1;
                    "applied, but the file has changed since".to_owned()
                }
                (None, _) => {
                    pending += 1;
                    "pending".to_owned()
                }
            };
            writeln!(out, "{:04} {:<32} {state}", s.version, s.name)?;
        }
        drop(out);
        super::close_mongo(&store).await;
        if changed > 0 {
            tracing::error!(
                changed,
                "an applied migration's file has changed since: `inlet migrate` will refuse to run"
            );
            return Ok(ExitCode::from(CHANGED));
        }
        if pending > 0 {
            tracing::warn!(pending, "migrations pending: run `inlet migrate`");
            return Ok(ExitCode::from(PENDING));
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
