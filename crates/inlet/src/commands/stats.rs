//! `inlet stats`: the minutely series of an app, from the aggregates.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use inlet_domain::{Minute, now_ms};
use inlet_worker::stats::{StatsQuery, minutely};

use crate::settings::Settings;

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// Prints the series as a table or JSON lines.
pub async fn run(
    settings: Settings,
    account: String,
    app: String,
    since: Duration,
    action: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mongo = super::mongo(&settings).await?;
    let query = StatsQuery {
        account,
        app,
        since: Minute::containing(now_ms() - since.as_millis() as i64),
        action,
    };
    let rows = minutely(mongo.database(), &query).await;
    super::close_mongo(&mongo).await;
    let rows = rows.context("reading aggregates")?;
    let mut out = std::io::stdout().lock();
    if json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<20}  {:>8}  {:>6}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}",
        "MINUTE (UTC)", "COUNT", "ERRORS", "MEAN ms", "P50 ms", "P95 ms", "MAX ms", "ERR SMP"
    )?;
    for r in &rows {
        let minute = crate::output::rfc3339(r.minute_ms);
        writeln!(
            out,
            "{:<20}  {:>8}  {:>6}  {:>9.1}  {:>9}  {:>9}  {:>9.1}  {:>7}",
            minute.trim_end_matches(":00Z").trim_end_matches("Z"),
            r.count,
            r.errors,
            r.mean_ms,
            fmt_ms(r.p50_ms),
            fmt_ms(r.p95_ms),
            r.max_ms,
            r.error_samples
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(no data for this app in the period)")?;
    }
    Ok(ExitCode::SUCCESS)
}
