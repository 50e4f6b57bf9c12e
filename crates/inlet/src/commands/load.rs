//! `inlet load`: generate realistic push traffic and report throughput and
//! latency.
//!
//! The engine is the `inlet-load` crate (open-loop dispatch at the target
//! rate, one pooled HTTP client, bodies generated per request with `now`
//! timestamps and fresh batch ids, each request sent once). This module
//! reads the keys, runs it and prints the report.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use inlet_load::{LoadPlan, LoadReport};

use crate::duration::parse_duration;
use crate::output::time_bar;

/// `inlet load` options.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Aggregate target rate, requests per second.
    #[arg(long)]
    rate: f64,
    /// How long to send, with a unit: 30s, 500ms, 2m (a bare number is
    /// refused).
    #[arg(long, value_parser = parse_duration)]
    duration: Duration,
    /// File with one API key per line (blank lines and `#` comments are
    /// skipped). Simulated agents use them round-robin.
    #[arg(long)]
    keys: PathBuf,
    /// Simulated agents (each with its own host name); requests go
    /// round-robin over them.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// The push API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Send bodies uncompressed (default: gzip).
    #[arg(long)]
    no_gzip: bool,
    /// Bound on each request, with a unit (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// The `app` of every batch (a key restricted to another app gets 403).
    #[arg(long, default_value = "shop")]
    app: String,
    /// The `environment` of every batch.
    #[arg(long, default_value = "load")]
    environment: String,
    /// The rate limit of each key, requests per second: `--rate` is capped
    /// so that no key is sent more (the default is the API's
    /// `api.default_rate_per_s`). 0 sends `--rate` whatever the limits,
    /// to test the limiter.
    #[arg(long, default_value_t = 100.0)]
    per_key_rate: f64,
}

/// The highest aggregate rate at which no key is sent more than
/// `per_key_rate`, or `None` for no cap (`per_key_rate` 0). Agent `n` uses
/// key `n % keys` and requests go round-robin over the agents, so the
/// busiest key carries `ceil(agents / keys)` of every `agents` requests.
fn rate_cap(agents: usize, keys: usize, per_key_rate: f64) -> Option<f64> {
    if per_key_rate <= 0.0 || agents == 0 || keys == 0 {
        return None;
    }
    let busiest = agents.div_ceil(keys);
    Some(per_key_rate * agents as f64 / busiest as f64)
}

/// Reads keys: one per line, blank lines and `#` comments skipped.
fn read_keys(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading keys from {}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("{} holds no keys (one per line)", path.display());
    }
    Ok(keys)
}

/// Runs the load and prints the report.
pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let keys = read_keys(&args.keys)?;
    let mut rate = args.rate;
    if let Some(cap) = rate_cap(args.agents, keys.len(), args.per_key_rate)
        && rate > cap
    {
        // Said on stderr, so that the report on stdout stays clean.
        let _ = writeln!(
            std::io::stderr(),
            "inlet load: sending {cap:.1} req/s, not {rate}: {} key(s) over {} agents at {} req/s \
             per key (--per-key-rate, the API's default limit) would otherwise get 429 \
             rate_limited. Add keys to {} for more, or pass --per-key-rate 0 to test the limiter.",
            keys.len(),
            args.agents,
            args.per_key_rate,
            args.keys.display(),
        );
        rate = cap;
    }
    tracing::info!(
        rate,
        duration_s = args.duration.as_secs_f64(),
        agents = args.agents,
        keys = keys.len(),
        endpoint = %args.endpoint,
        "generating load"
    );
    let bar = time_bar(args.duration.as_secs().max(1));
    bar.set_message(format!("sending {rate:.0} req/s"));
    let ticker = {
        let bar = bar.clone();
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_position(started.elapsed().as_secs());
                if bar.position() >= bar.length().unwrap_or(0) {
                    bar.set_message("waiting for the last answers");
                }
            }
        })
    };
    let report = inlet_load::run(LoadPlan {
        endpoint: args.endpoint,
        keys,
        agents: args.agents,
        rate,
        duration: args.duration,
        gzip: !args.no_gzip,
        timeout: args.timeout,
        max_in_flight: args.max_in_flight,
        app: args.app,
        environment: args.environment,
    })
    .await;
    ticker.abort();
    bar.finish_and_clear();
    let report = report?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write_text(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn counts<K: std::fmt::Display>(m: &std::collections::BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_text(out: &mut impl std::io::Write, r: &LoadReport) -> std::io::Result<()> {
    let l = &r.latency_ms;
    writeln!(
        out,
        "target      {:.1} req/s for {:.1} s ({} agents, {} keys)",
        r.target_rps, r.dispatch_s, r.agents, r.keys
    )?;
    writeln!(out, "sent        {} ({} dispatched late)", r.sent, r.late)?;
    writeln!(
        out,
        "answered    {} ({} accepted); no answer: {}",
        r.answered,
        r.accepted(),
        counts(&r.transport_errors)
    )?;
    writeln!(out, "statuses    {}", counts(&r.statuses))?;
    writeln!(out, "codes       {}", counts(&r.codes))?;
    writeln!(
        out,
        "achieved    {:.1} req/s over {:.2} s",
        r.achieved_rps, r.elapsed_s
    )?;
    writeln!(
        out,
        "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (mean {:.2})",
        l.p50, l.p90, l.p99, l.max, l.mean
    )?;
    writeln!(
        out,
        "volume      {} items, {:.1} KiB of bodies",
        r.items_sent,
        r.bytes_sent as f64 / 1024.0
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_rate_is_capped_so_that_the_busiest_key_stays_within_its_limit() {
        // One key carries every request.
        assert_eq!(rate_cap(10, 1, 100.0), Some(100.0));
        // 3 keys over 10 agents: key 0 serves agents 0, 3, 6, 9 (4 of 10).
        assert_eq!(rate_cap(10, 3, 100.0), Some(250.0));
        assert_eq!(rate_cap(10, 10, 100.0), Some(1000.0));
        // More keys than agents: only `agents` keys are used.
        assert_eq!(rate_cap(2, 5, 100.0), Some(200.0));
        assert_eq!(rate_cap(10, 1, 0.0), None);
    }

    #[test]
    fn keys_file_skips_blanks_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        std::fs::write(&f, "# load keys\n\n  inlet_aaa  \ninlet_bbb\n").unwrap();
        assert_eq!(read_keys(&f).unwrap(), ["inlet_aaa", "inlet_bbb"]);
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(read_keys(&f).is_err());
    }
}
