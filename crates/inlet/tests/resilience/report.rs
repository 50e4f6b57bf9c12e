//! Each scenario's one-line figure, and the checks behind it.
//!
//! A scenario fills a [`Figure`], records every check in it, prints it as
//! one line (`RESILIENCE {json}`), appends it to the file named by
//! `INLET_RESILIENCE_REPORT` when set (`scripts/resilience` turns those
//! lines into `docs/resilience.md`), and only then fails if a check
//! failed, so a failing run still leaves its numbers behind.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

/// One scenario's figures.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// Scenario number, e.g. `1b`.
    pub id: String,
    /// Short title.
    pub title: String,
    /// `INLET_RESILIENCE_SCALE` of the run.
    pub scale: f64,
    /// The load, in words (agents, rate, duration).
    pub load: String,
    /// The faults injected, in words.
    pub faults: String,
    /// Items the agents recorded.
    pub recorded: u64,
    /// Items the agents were told were accepted (2xx), by the client's own
    /// counters.
    pub accepted: u64,
    /// Items in MongoDB (`tx_minutes.count` of the scenario's accounts).
    pub stored: u64,
    /// The API's `inlet_api_batch_items_total{kind="transaction"}`, summed
    /// over every instance lifetime, when it could be read completely.
    pub api_items: Option<u64>,
    /// 401/403 answers to keys that were valid in MongoDB at the time.
    pub false_401s: u64,
    /// accepted − stored, when positive.
    pub lost: u64,
    /// stored − accepted, when positive.
    pub duplicated: u64,
    /// Items the agents dropped (any reason) or left undelivered at
    /// shutdown, for keys that stayed valid.
    pub dropped: u64,
    /// 5xx answers seen on the wire (recording load balancer).
    pub server_errors: u64,
    /// Of those, answers without `Retry-After`.
    pub server_errors_without_retry_after: u64,
    /// The scenario's recovery time, seconds (see `recovery`).
    pub max_recovery_s: Option<f64>,
    /// What `max_recovery_s` measures.
    pub recovery: String,
    /// Wall time of the scenario, seconds.
    pub elapsed_s: f64,
    /// Scenario-specific numbers.
    pub extra: Map<String, Value>,
    /// Every check: name, whether it held, and the numbers behind it.
    pub checks: Vec<Check>,
    /// The commit measured (`INLET_RESILIENCE_COMMIT`, set by
    /// `scripts/resilience`: the sha, `-dirty` when the tree differed).
    pub commit: Option<String>,
    /// When the run this figure belongs to started
    /// (`INLET_RESILIENCE_STARTED`, UTC).
    pub run_started: Option<String>,
    #[serde(skip)]
    started: Instant,
}

/// One check of a scenario.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The numbers.
    pub detail: String,
}

impl Figure {
    /// A figure for scenario `id`, timed from now.
    pub fn new(id: &str, title: &str) -> Figure {
        Figure {
            id: id.to_owned(),
            title: title.to_owned(),
            scale: crate::scale::factor(),
            load: String::new(),
            faults: String::new(),
            recorded: 0,
            accepted: 0,
            stored: 0,
            api_items: None,
            false_401s: 0,
            lost: 0,
            duplicated: 0,
            dropped: 0,
            server_errors: 0,
            server_errors_without_retry_after: 0,
            max_recovery_s: None,
            recovery: String::new(),
            elapsed_s: 0.0,
            extra: Map::new(),
            checks: Vec::new(),
            commit: run_env("INLET_RESILIENCE_COMMIT"),
            run_started: run_env("INLET_RESILIENCE_STARTED"),
            started: Instant::now(),
        }
    }

    /// Records a check.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        });
    }

    /// Records a scenario-specific number or value.
    pub fn note(&mut self, key: &str, value: impl Serialize) {
        self.extra.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    /// Sets the recovery time (the longest of those measured).
    pub fn recovery(&mut self, what: &str, longest: Option<Duration>) {
        self.recovery = what.to_owned();
        self.max_recovery_s = longest.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
    }

    /// Prints the figure, appends it to `INLET_RESILIENCE_REPORT`, and
    /// panics if a check failed.
    pub fn finish(mut self) {
        self.elapsed_s = (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let json = serde_json::to_string(&self).expect("figure serializes");
        println!("RESILIENCE {json}");
        if let Ok(path) = std::env::var("INLET_RESILIENCE_REPORT")
            && !path.is_empty()
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {path}: {e}"));
            writeln!(f, "{json}").expect("writing the report line");
        }
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        assert!(
            failed.is_empty(),
            "scenario {} ({}) failed:\n  {}",
            self.id,
            self.title,
            failed.join("\n  ")
        );
    }
}

/// A non-empty environment variable describing the run.
fn run_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Rounds seconds to milliseconds for reports.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
