//! Retention: the TTL of each collection, from configuration.
//!
//! Migrations 0002 and 0003 create a TTL index named `retention` on `at`
//! in every worker collection; this sets each one's `expireAfterSeconds` to the
//! configured value (`collMod`), idempotently. `inlet migrate` runs it after
//! the migrations.

use mongodb::Database;
use mongodb::bson::doc;

use crate::settings::WorkerSettings;
use crate::store::{
    APPLIED, ERROR_GROUPS, ERROR_MINUTES, METRIC_CUMULATIVE, METRIC_MINUTES, TX_MINUTES,
    WriteError, classify,
};

/// `(collection, seconds)` for every worker collection.
pub fn retention_of(settings: &WorkerSettings) -> [(&'static str, i64); 6] {
    let days = |d: u32| i64::from(d) * 86_400;
    [
        (TX_MINUTES, days(settings.retention_transactions_days)),
        (METRIC_MINUTES, days(settings.retention_metrics_days)),
        (ERROR_MINUTES, days(settings.retention_errors_days)),
        (ERROR_GROUPS, days(settings.retention_errors_days)),
        (APPLIED, i64::from(settings.retention_applied_hours) * 3_600),
        (METRIC_CUMULATIVE, days(settings.retention_cumulative_days)),
    ]
}

/// Sets every TTL index to its configured retention.
pub async fn apply_retention(db: &Database, settings: &WorkerSettings) -> Result<(), WriteError> {
    for (collection, seconds) in retention_of(settings) {
        db.run_command(doc! {
            "collMod": collection,
            "index": { "name": "retention", "expireAfterSeconds": seconds },
        })
        .await
        .map_err(|e| classify(&e))?;
    }
    Ok(())
}
