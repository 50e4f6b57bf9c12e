//! The push batch: the JSON an agent sends, and the validated form it is
//! converted into exactly once.
//!
//! [`WireBatch`] and friends mirror the JSON (serde, both directions: the
//! client library builds them). [`Batch::decode`] parses bytes into the wire
//! form and converts it with [`Batch::from_wire`], which applies every limit
//! in [`BatchLimits`] and reports each violation with its field path, e.g.
//! `transactions[3].duration_ms`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{AppName, Environment, Minute, StatusClass};

/// Limits applied when validating a batch. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchLimits {
    /// Most transaction samples in one batch. Default 5000.
    pub max_transactions: usize,
    /// Most metric samples in one batch. Default 5000.
    pub max_metrics: usize,
    /// Most error samples in one batch. Default 500.
    pub max_errors: usize,
    /// Longest action, namespace, metric name, error class, frame field,
    /// agent field (characters). Default 255.
    pub max_name_len: usize,
    /// Longest error message (characters). Default 4096.
    pub max_message_len: usize,
    /// Most frames in one backtrace. Default 128.
    pub max_backtrace_frames: usize,
    /// Most tags on one metric. Default 32.
    pub max_tags: usize,
    /// Longest tag key (characters). Default 64.
    pub max_tag_key_len: usize,
    /// Longest tag value (characters). Default 256.
    pub max_tag_value_len: usize,
    /// Oldest accepted timestamp, seconds before the receive time.
    /// Default 172800 (48 h: an agent may buffer through an outage).
    pub max_age_s: u64,
    /// Furthest accepted timestamp, seconds after the receive time (clock
    /// skew). Default 300.
    pub max_future_s: u64,
    /// Longest accepted transaction duration, milliseconds. Default
    /// 86400000 (one day).
    pub max_duration_ms: f64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_transactions: 5_000,
            max_metrics: 5_000,
            max_errors: 500,
            max_name_len: 255,
            max_message_len: 4_096,
            max_backtrace_frames: 128,
            max_tags: 32,
            max_tag_key_len: 64,
            max_tag_value_len: 256,
            max_age_s: 48 * 3_600,
            max_future_s: 300,
            max_duration_ms: 86_400_000.0,
        }
    }
}

impl BatchLimits {
    /// The first rule one transaction sample breaks, if any (its path as
    /// if it were `transactions[0]`). For producers that build samples one
    /// by one and leave out the broken ones (the OTLP mapping).
    pub fn check_transaction(&self, t: &WireTransaction, now_ms: i64) -> Result<(), Violation> {
        Checker::new(self, now_ms).verdict(|c| c.transaction(0, t))
    }

    /// The first rule one metric sample breaks, if any (as `metrics[0]`).
    pub fn check_metric(&self, m: &WireMetric, now_ms: i64) -> Result<(), Violation> {
        Checker::new(self, now_ms).verdict(|c| c.metric(0, m))
    }

    /// The first rule one error sample breaks, if any (as `errors[0]`).
    pub fn check_error(&self, e: &WireErrorSample, now_ms: i64) -> Result<(), Violation> {
        Checker::new(self, now_ms).verdict(|c| c.error(0, e))
    }

    /// Checks values serde cannot (keys as in the `[limits]` section).
    pub fn validate(&self) -> Result<(), crate::InvalidSetting> {
        if !(self.max_duration_ms.is_finite() && self.max_duration_ms > 0.0) {
            return crate::InvalidSetting::err(
                "limits.max_duration_ms",
                "must be a positive number",
            );
        }
        if self.max_name_len == 0 || self.max_tag_key_len == 0 {
            return crate::InvalidSetting::err("limits.max_name_len", "must be at least 1");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- wire form

/// A push batch as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireBatch {
    /// Agent-chosen idempotency key (1–64 of `[A-Za-z0-9_-]`): a batch sent
    /// twice with the same id, e.g. after a lost response, is counted once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Who sent it.
    pub agent: WireAgent,
    /// The monitored application.
    pub app: String,
    /// The deployment environment.
    pub environment: String,
    /// Transaction samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transactions: Vec<WireTransaction>,
    /// Metric samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<WireMetric>,
    /// Error samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<WireErrorSample>,
}

/// The agent that sent a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAgent {
    /// Agent name, e.g. `inlet-ruby`.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Host the agent runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// One transaction (a request, a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTransaction {
    /// What ran, e.g. `OrdersController#index`.
    pub action: String,
    /// Grouping such as `web` or `background`; defaults to `web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Start time, Unix milliseconds.
    pub start_ms: i64,
    /// Duration in milliseconds (finite, non-negative).
    pub duration_ms: f64,
    /// HTTP status, when there is one (100–599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error the transaction ended with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireTransactionError>,
}

/// The error a transaction ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTransactionError {
    /// Exception class.
    pub class: String,
    /// Exception message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The kind of a metric sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Increments, summed per minute (value ≥ 0).
    Counter,
    /// A level; the value with the latest timestamp in a minute wins.
    Gauge,
    /// One observation; aggregated as count/sum/min/max/histogram.
    Distribution,
}

impl MetricKind {
    /// Label for storage and display.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Distribution => "distribution",
        }
    }
}

/// One metric sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMetric {
    /// Counter, gauge or distribution.
    pub kind: MetricKind,
    /// Metric name, e.g. `jobs.processed`.
    pub name: String,
    /// The value (finite).
    pub value: f64,
    /// Dimensions; order does not matter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// When it was measured, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Makes the sample cumulative (counters and distributions): it holds
    /// the total since `start_ms` (Unix milliseconds), not an increment.
    /// The worker stores the increase over the series' previous point; a
    /// new `start_ms` is a reset. OpenTelemetry's cumulative temporality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    /// A distribution of many observations, already bucketed (an OTLP
    /// histogram); `value` is then their sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
}

/// Many observations of one distribution, bucketed in Inlet's layout
/// ([`crate::DurationHistogram`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations (the sum of the bucket counts).
    pub count: u64,
    /// Smallest observation, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest observation, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Bucket index → observations (sparse).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<usize, u64>,
}

/// One error occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireErrorSample {
    /// Exception class, e.g. `NoMethodError`.
    pub class: String,
    /// Exception message.
    #[serde(default)]
    pub message: String,
    /// Innermost frame first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backtrace: Vec<WireFrame>,
    /// The action during which it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// When it happened, Unix milliseconds.
    pub timestamp_ms: i64,
}

/// One backtrace frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFrame {
    /// Source file.
    pub file: String,
    /// Line number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Function or method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Whether the frame is the application's own code (rather than a
    /// library's). When absent, guessed from the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_app: Option<bool>,
}

// ----------------------------------------------------------- validated form

/// A validated push batch. Only [`Batch::from_wire`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    batch_id: Option<BatchId>,
    agent: Agent,
    app: AppName,
    environment: Environment,
    transactions: Vec<Transaction>,
    metrics: Vec<Metric>,
    errors: Vec<ErrorSample>,
}

/// An agent-chosen idempotency key for a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchId(Box<str>);

impl BatchId {
    /// Longest batch id accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a batch id: 1–64 of `[A-Za-z0-9_-]`.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| BatchId(s.into()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The validated agent description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Agent name.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Host name, if sent.
    pub hostname: Option<String>,
}

/// A validated transaction sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// What ran.
    pub action: String,
    /// Grouping (`web` when the agent sent none).
    pub namespace: String,
    /// Start, Unix milliseconds.
    pub start_ms: i64,
    /// Duration, milliseconds, finite and non-negative.
    pub duration_ms: f64,
    /// HTTP status, 100–599.
    pub status: Option<u16>,
    /// Error class, when it failed.
    pub error_class: Option<String>,
}

impl Transaction {
    /// The minute it started in.
    pub fn minute(&self) -> Minute {
        Minute::containing(self.start_ms)
    }

    /// Its HTTP status class.
    pub fn status_class(&self) -> StatusClass {
        StatusClass::of(self.status)
    }

    /// Whether it counts as an error: it carried an error, or its status was
    /// 5xx.
    pub fn is_error(&self) -> bool {
        self.error_class.is_some() || self.status_class() == StatusClass::ServerError
    }
}

/// A validated metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Counter, gauge or distribution.
    pub kind: MetricKind,
    /// Name.
    pub name: String,
    /// Finite value (≥ 0 for counters).
    pub value: f64,
    /// Tags, sorted by key.
    pub tags: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// Cumulative since this time (see [`WireMetric::start_ms`]).
    pub start_ms: Option<i64>,
    /// Bucketed observations (see [`WireMetric::histogram`]).
    pub histogram: Option<Histogram>,
}

impl Metric {
    /// The minute it was measured in.
    pub fn minute(&self) -> Minute {
        Minute::containing(self.timestamp_ms)
    }

    /// A stable id of the series (kind, name and sorted tags), 32 hex
    /// digits. Samples of one series aggregate together.
    ///
    /// Every part is hashed with its length in front, so two series share
    /// an id only if kind, name and every tag key and value are equal,
    /// whatever the strings contain: `{"a=b": "c"}` and `{"a": "b=c"}` are
    /// two series (joining `k=v` made them one).
    pub fn series_id(&self) -> String {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s);
        };
        part(self.kind.as_str());
        part(&self.name);
        for (k, v) in &self.tags {
            part(k);
            part(v);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// A validated error sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorSample {
    /// Exception class.
    pub class: String,
    /// Message (may be empty).
    pub message: String,
    /// Frames, innermost first, with `in_app` resolved.
    pub backtrace: Vec<Frame>,
    /// Action, if known.
    pub action: Option<String>,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
}

/// A validated backtrace frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Source file.
    pub file: String,
    /// Line number.
    pub line: Option<u32>,
    /// Function.
    pub function: Option<String>,
    /// Application code (sent by the agent, or guessed from the path).
    pub in_app: bool,
}

/// Path fragments that mark library (not application) code.
const LIBRARY_PATH_MARKERS: &[&str] = &[
    "/gems/",
    "/vendor/",
    "/lib/ruby/",
    "node_modules/",
    "site-packages/",
    "dist-packages/",
    "/.cargo/registry/",
    "/rustc/",
    "<internal:",
];

fn guess_in_app(file: &str) -> bool {
    !LIBRARY_PATH_MARKERS.iter().any(|m| file.contains(m))
}

impl ErrorSample {
    /// The minute it happened in.
    pub fn minute(&self) -> Minute {
        Minute::containing(self.timestamp_ms)
    }

    /// The frame that groups it: the innermost in-app frame, else the
    /// innermost frame.
    pub fn top_frame(&self) -> Option<&Frame> {
        self.backtrace
            .iter()
            .find(|f| f.in_app)
            .or_else(|| self.backtrace.first())
    }

    /// Stable grouping fingerprint (32 hex digits) over class, action and
    /// the top in-app frame's file and function. Line numbers are left out
    /// so that a deploy which shifts code does not split a group.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(&self.class);
        h.update([0]);
        h.update(self.action.as_deref().unwrap_or(""));
        h.update([0]);
        if let Some(f) = self.top_frame() {
            h.update(&f.file);
            h.update([0]);
            h.update(f.function.as_deref().unwrap_or(""));
        }
        hex::encode(&h.finalize()[..16])
    }
}

impl Batch {
    /// The idempotency key, if the agent sent one.
    pub fn batch_id(&self) -> Option<&BatchId> {
        self.batch_id.as_ref()
    }
    /// The sending agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }
    /// The app.
    pub fn app(&self) -> &AppName {
        &self.app
    }
    /// The environment.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }
    /// Transaction samples.
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }
    /// Metric samples.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }
    /// Error samples.
    pub fn errors(&self) -> &[ErrorSample] {
        &self.errors
    }
    /// Total samples of every kind.
    pub fn item_count(&self) -> usize {
        self.transactions.len() + self.metrics.len() + self.errors.len()
    }
}

// --------------------------------------------------------------- validation

/// Why a batch was rejected (HTTP 400). Never retried by agents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON, or a field has the wrong JSON type.
    #[error("invalid JSON at {path}: {message}")]
    Syntax {
        /// Field path where parsing stopped (`.` for the root).
        path: String,
        /// What the parser expected.
        message: String,
    },
    /// The JSON is well-formed but breaks the schema's rules.
    #[error("{} rule violation(s), first at {}", .violations.len() + .more, .violations.first().map_or("?", |v| v.path.as_str()))]
    Invalid {
        /// The first violations found (at most [`MAX_REPORTED_VIOLATIONS`]).
        violations: Vec<Violation>,
        /// How many further violations were not listed.
        more: usize,
    },
}

impl BatchError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::Syntax { .. } => "invalid_json",
            BatchError::Invalid { .. } => "invalid_batch",
        }
    }
}

/// Most violations listed in one error.
pub const MAX_REPORTED_VIOLATIONS: usize = 20;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Field path, e.g. `transactions[3].duration_ms`.
    pub path: String,
    /// Which rule.
    pub rule: Rule,
    /// Human explanation.
    pub message: String,
}

/// The rules a batch can break; serialised as stable snake_case codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A string or list that must not be empty is.
    Empty,
    /// A string is longer than its limit.
    TooLong,
    /// A list has more items than its limit.
    TooMany,
    /// A number is NaN or infinite.
    NotFinite,
    /// A number or timestamp is outside its range.
    OutOfRange,
    /// A string has characters its rule forbids.
    InvalidChars,
}

struct Checker<'a> {
    limits: &'a BatchLimits,
    now_ms: i64,
    violations: Vec<Violation>,
    more: usize,
}

impl<'a> Checker<'a> {
    fn new(limits: &'a BatchLimits, now_ms: i64) -> Self {
        Checker {
            limits,
            now_ms,
            violations: Vec::new(),
            more: 0,
        }
    }

    fn verdict(mut self, check: impl FnOnce(&mut Self) -> bool) -> Result<(), Violation> {
        if check(&mut self) {
            return Ok(());
        }
        match self.violations.into_iter().next() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    fn fail(&mut self, path: impl FnOnce() -> String, rule: Rule, message: impl Into<String>) {
        if self.violations.len() < MAX_REPORTED_VIOLATIONS {
            self.violations.push(Violation {
                path: path(),
                rule,
                message: message.into(),
            });
        } else {
            self.more += 1;
        }
    }

    /// A required, printable, bounded string.
    fn text(&mut self, path: impl Fn() -> String, s: &str, max: usize, allow_empty: bool) {
        if s.is_empty() {
            if !allow_empty {
                self.fail(path, Rule::Empty, "must not be empty");
            }
            return;
        }
        // Byte length bounds character count from above: skip counting
        // when it cannot exceed.
        if s.len() > max && s.chars().count() > max {
            self.fail(path, Rule::TooLong, format!("longer than {max} characters"));
        } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            self.fail(path, Rule::InvalidChars, "contains control characters");
        }
    }

    fn count(&mut self, path: &str, len: usize, max: usize) {
        if len > max {
            self.fail(
                || path.to_owned(),
                Rule::TooMany,
                format!("{len} items, at most {max} allowed"),
            );
        }
    }

    fn timestamp(&mut self, path: impl Fn() -> String, ms: i64) {
        let oldest = self
            .now_ms
            .saturating_sub((self.limits.max_age_s as i64).saturating_mul(1000));
        let newest = self
            .now_ms
            .saturating_add((self.limits.max_future_s as i64).saturating_mul(1000));
        if ms < oldest {
            self.fail(
                path,
                Rule::OutOfRange,
                format!("older than {} s", self.limits.max_age_s),
            );
        } else if ms > newest {
            self.fail(
                path,
                Rule::OutOfRange,
                format!("more than {} s in the future", self.limits.max_future_s),
            );
        }
    }

    fn finite(&mut self, path: impl Fn() -> String, v: f64) -> bool {
        if v.is_finite() {
            true
        } else {
            self.fail(path, Rule::NotFinite, "must be a finite number");
            false
        }
    }

    /// Checks one transaction; whether it passed.
    fn transaction(&mut self, i: usize, t: &WireTransaction) -> bool {
        let before = self.failures();
        let (limits, max_name) = (self.limits, self.limits.max_name_len);
        let p = |f: &str| format!("transactions[{i}].{f}");
        self.text(|| p("action"), &t.action, max_name, false);
        if let Some(ns) = &t.namespace {
            self.text(|| p("namespace"), ns, max_name, false);
        }
        self.timestamp(|| p("start_ms"), t.start_ms);
        if self.finite(|| p("duration_ms"), t.duration_ms)
            && !(0.0..=limits.max_duration_ms).contains(&t.duration_ms)
        {
            self.fail(
                || p("duration_ms"),
                Rule::OutOfRange,
                format!("must be between 0 and {} ms", limits.max_duration_ms),
            );
        }
        if let Some(s) = t.status
            && !(100..=599).contains(&s)
        {
            self.fail(
                || p("status"),
                Rule::OutOfRange,
                "must be an HTTP status (100-599)",
            );
        }
        if let Some(e) = &t.error {
            self.text(|| p("error.class"), &e.class, max_name, false);
            if let Some(m) = &e.message {
                self.text(|| p("error.message"), m, limits.max_message_len, true);
            }
        }
        self.failures() == before
    }

    /// Checks one metric sample; whether it passed.
    fn metric(&mut self, i: usize, m: &WireMetric) -> bool {
        let before = self.failures();
        let (limits, max_name) = (self.limits, self.limits.max_name_len);
        let p = |f: &str| format!("metrics[{i}].{f}");
        self.text(|| p("name"), &m.name, max_name, false);
        if self.finite(|| p("value"), m.value) && m.kind == MetricKind::Counter && m.value < 0.0 {
            self.fail(
                || p("value"),
                Rule::OutOfRange,
                "a counter increment must not be negative",
            );
        }
        self.timestamp(|| p("timestamp_ms"), m.timestamp_ms);
        self.count(&p("tags"), m.tags.len(), limits.max_tags);
        for (k, v) in &m.tags {
            self.text(|| p(&format!("tags.{k}")), k, limits.max_tag_key_len, false);
            self.text(
                || p(&format!("tags.{k}")),
                v,
                limits.max_tag_value_len,
                true,
            );
        }
        self.cumulative(i, m);
        self.failures() == before
    }

    /// The rules of `start_ms` and `histogram`.
    fn cumulative(&mut self, i: usize, m: &WireMetric) {
        let p = |f: &str| format!("metrics[{i}].{f}");
        if let Some(start) = m.start_ms {
            if m.kind == MetricKind::Gauge {
                self.fail(
                    || p("start_ms"),
                    Rule::OutOfRange,
                    "a gauge cannot be cumulative",
                );
            } else if !(0..=m.timestamp_ms).contains(&start) {
                self.fail(
                    || p("start_ms"),
                    Rule::OutOfRange,
                    "must be between 0 and timestamp_ms",
                );
            }
        }
        let Some(h) = &m.histogram else { return };
        if m.kind != MetricKind::Distribution {
            self.fail(
                || p("histogram"),
                Rule::OutOfRange,
                "only a distribution carries a histogram",
            );
            return;
        }
        if h.buckets.keys().any(|&b| b >= crate::HISTOGRAM_BUCKETS) {
            self.fail(
                || p("histogram.buckets"),
                Rule::OutOfRange,
                format!(
                    "bucket indexes run from 0 to {}",
                    crate::HISTOGRAM_BUCKETS - 1
                ),
            );
        }
        let total = h.buckets.values().try_fold(0u64, |a, &n| a.checked_add(n));
        if total != Some(h.count) {
            self.fail(
                || p("histogram.count"),
                Rule::OutOfRange,
                "must equal the sum of the bucket counts",
            );
        }
        for (f, v) in [("histogram.min", h.min), ("histogram.max", h.max)] {
            if let Some(v) = v {
                self.finite(|| p(f), v);
            }
        }
    }

    /// Checks one error sample; whether it passed.
    fn error(&mut self, i: usize, e: &WireErrorSample) -> bool {
        let before = self.failures();
        let (limits, max_name) = (self.limits, self.limits.max_name_len);
        let p = |f: &str| format!("errors[{i}].{f}");
        self.text(|| p("class"), &e.class, max_name, false);
        self.text(|| p("message"), &e.message, limits.max_message_len, true);
        if let Some(a) = &e.action {
            self.text(|| p("action"), a, max_name, false);
        }
        self.timestamp(|| p("timestamp_ms"), e.timestamp_ms);
        self.count(
            &p("backtrace"),
            e.backtrace.len(),
            limits.max_backtrace_frames,
        );
        for (j, f) in e.backtrace.iter().enumerate() {
            self.text(
                || p(&format!("backtrace[{j}].file")),
                &f.file,
                max_name,
                false,
            );
            if let Some(func) = &f.function {
                self.text(
                    || p(&format!("backtrace[{j}].function")),
                    func,
                    max_name,
                    false,
                );
            }
        }
        self.failures() == before
    }

    fn failures(&self) -> usize {
        self.violations.len() + self.more
    }
}

impl Batch {
    /// Parses and validates a JSON body. `now_ms` is the receive time the
    /// timestamp window is measured from (the worker passes the envelope's
    /// receive time, so data queued during an outage stays valid).
    pub fn decode(json: &[u8], limits: &BatchLimits, now_ms: i64) -> Result<Batch, BatchError> {
        // Fast path: plain serde_json. Only a body that fails is parsed
        // again with path tracking, which gives the same error, now with
        // the field path (tracking costs an allocation per key otherwise).
        match serde_json::from_slice::<WireBatch>(json) {
            Ok(wire) => Batch::from_wire(wire, limits, now_ms),
            Err(_) => Err(Batch::syntax_error(json)),
        }
    }

    /// The error of a body that plain serde_json refused, with its path.
    #[cold]
    fn syntax_error(json: &[u8]) -> BatchError {
        let mut de = serde_json::Deserializer::from_slice(json);
        match serde_path_to_error::deserialize::<_, WireBatch>(&mut de) {
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                BatchError::Syntax {
                    path,
                    message: inner.to_string(),
                }
            }
            Ok(_) => match de.end() {
                Err(e) => BatchError::Syntax {
                    path: ".".into(),
                    message: e.to_string(),
                },
                // Unreachable while both parsers agree; still an error,
                // never a panic.
                Ok(()) => BatchError::Syntax {
                    path: ".".into(),
                    message: "invalid JSON".into(),
                },
            },
        }
    }

    /// Converts the wire form, checking every rule.
    pub fn from_wire(
        wire: WireBatch,
        limits: &BatchLimits,
        now_ms: i64,
    ) -> Result<Batch, BatchError> {
        let mut c = Checker::new(limits, now_ms);

        let batch_id = match &wire.batch_id {
            None => None,
            Some(s) => {
                let id = BatchId::parse(s);
                if id.is_none() {
                    c.fail(
                        || "batch_id".into(),
                        Rule::InvalidChars,
                        "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                    );
                }
                id
            }
        };

        c.text(
            || "agent.name".into(),
            &wire.agent.name,
            limits.max_name_len,
            false,
        );
        c.text(
            || "agent.version".into(),
            &wire.agent.version,
            limits.max_name_len,
            false,
        );
        if let Some(h) = &wire.agent.hostname {
            c.text(|| "agent.hostname".into(), h, limits.max_name_len, false);
        }
        let app = AppName::parse(&wire.app)
            .map_err(|e| c.fail(|| "app".into(), rule_of(&e), e.to_string()))
            .ok();
        let environment = Environment::parse(&wire.environment)
            .map_err(|e| c.fail(|| "environment".into(), rule_of(&e), e.to_string()))
            .ok();

        c.count(
            "transactions",
            wire.transactions.len(),
            limits.max_transactions,
        );
        c.count("metrics", wire.metrics.len(), limits.max_metrics);
        c.count("errors", wire.errors.len(), limits.max_errors);
        for (i, t) in wire.transactions.iter().enumerate() {
            c.transaction(i, t);
        }
        for (i, m) in wire.metrics.iter().enumerate() {
            c.metric(i, m);
        }
        for (i, e) in wire.errors.iter().enumerate() {
            c.error(i, e);
        }
        if wire.transactions.is_empty() && wire.metrics.is_empty() && wire.errors.is_empty() {
            c.fail(
                || ".".into(),
                Rule::Empty,
                "a batch needs at least one transaction, metric or error",
            );
        }

        let (Some(app), Some(environment), true) = (app, environment, c.violations.is_empty())
        else {
            return Err(BatchError::Invalid {
                violations: c.violations,
                more: c.more,
            });
        };

        Ok(Batch {
            batch_id,
            agent: Agent {
                name: wire.agent.name,
                version: wire.agent.version,
                hostname: wire.agent.hostname,
            },
            app,
            environment,
            transactions: wire
                .transactions
                .into_iter()
                .map(|t| Transaction {
                    action: t.action,
                    namespace: t.namespace.unwrap_or_else(|| "web".to_owned()),
                    start_ms: t.start_ms,
                    duration_ms: t.duration_ms,
                    status: t.status,
                    error_class: t.error.map(|e| e.class),
                })
                .collect(),
            metrics: wire
                .metrics
                .into_iter()
                .map(|m| Metric {
                    kind: m.kind,
                    name: m.name,
                    value: m.value,
                    tags: m.tags,
                    timestamp_ms: m.timestamp_ms,
                    start_ms: m.start_ms,
                    histogram: m.histogram,
                })
                .collect(),
            errors: wire
                .errors
                .into_iter()
                .map(|e| ErrorSample {
                    class: e.class,
                    message: e.message,
                    backtrace: e
                        .backtrace
                        .into_iter()
                        .map(|f| Frame {
                            in_app: f.in_app.unwrap_or_else(|| guess_in_app(&f.file)),
                            file: f.file,
                            line: f.line,
                            function: f.function,
                        })
                        .collect(),
                    action: e.action,
                    timestamp_ms: e.timestamp_ms,
                })
                .collect(),
        })
    }
}

fn rule_of(e: &crate::InvalidName) -> Rule {
    match e.rule {
        "must not be empty" => Rule::Empty,
        "is too long" => Rule::TooLong,
        _ => Rule::InvalidChars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000_000;

    fn valid() -> serde_json::Value {
        json!({
            "batch_id": "b-1",
            "agent": {"name": "inlet-ruby", "version": "1.2.3", "hostname": "web-1"},
            "app": "Shop",
            "environment": "Production",
            "transactions": [
                {"action": "OrdersController#index", "start_ms": NOW - 1000, "duration_ms": 12.5, "status": 200},
                {"action": "OrdersController#create", "namespace": "web", "start_ms": NOW, "duration_ms": 40.0,
                 "status": 500, "error": {"class": "ActiveRecord::RecordInvalid", "message": "bad"}},
                {"action": "MailJob", "namespace": "background", "start_ms": NOW, "duration_ms": 0.0}
            ],
            "metrics": [
                {"kind": "counter", "name": "jobs.done", "value": 3, "tags": {"queue": "default"}, "timestamp_ms": NOW},
                {"kind": "gauge", "name": "queue.depth", "value": -1.5, "timestamp_ms": NOW},
                {"kind": "distribution", "name": "payload.size", "value": 512, "timestamp_ms": NOW}
            ],
            "errors": [
                {"class": "NoMethodError", "message": "undefined method", "action": "OrdersController#index",
                 "timestamp_ms": NOW, "backtrace": [
                    {"file": "/app/vendor/bundle/gems/rack/lib/rack.rb", "line": 10, "function": "call"},
                    {"file": "app/models/order.rb", "line": 12, "function": "total"}
                 ]}
            ]
        })
    }

    fn decode(v: &serde_json::Value) -> Result<Batch, BatchError> {
        Batch::decode(
            serde_json::to_vec(v).unwrap().as_slice(),
            &BatchLimits::default(),
            NOW,
        )
    }

    fn violations(v: &serde_json::Value) -> Vec<(String, Rule)> {
        match decode(v) {
            Err(BatchError::Invalid { violations, .. }) => {
                violations.into_iter().map(|v| (v.path, v.rule)).collect()
            }
            other => panic!("expected violations, got {other:?}"),
        }
    }

    fn one_violation(mutate: impl FnOnce(&mut serde_json::Value)) -> (String, Rule) {
        let mut v = valid();
        mutate(&mut v);
        let found = violations(&v);
        assert_eq!(found.len(), 1, "{found:?}");
        found.into_iter().next().unwrap()
    }

    #[test]
    fn valid_batch_converts() {
        let b = decode(&valid()).unwrap();
        assert_eq!(b.batch_id().unwrap().as_str(), "b-1");
        assert_eq!(b.app().as_str(), "Shop");
        assert_eq!(b.environment().as_str(), "production");
        assert_eq!(b.item_count(), 7);
        assert_eq!(b.transactions()[0].namespace, "web");
        assert!(!b.transactions()[0].is_error());
        assert!(b.transactions()[1].is_error());
        assert_eq!(b.metrics()[0].tags["queue"], "default");
        let e = &b.errors()[0];
        assert!(!e.backtrace[0].in_app, "gems path is library code");
        assert!(e.backtrace[1].in_app);
        assert_eq!(e.top_frame().unwrap().file, "app/models/order.rb");
    }

    #[test]
    fn single_samples_are_checked_by_the_same_rules() {
        let limits = BatchLimits::default();
        let wire: WireBatch = serde_json::from_value(valid()).unwrap();
        for t in &wire.transactions {
            assert_eq!(limits.check_transaction(t, NOW), Ok(()));
        }
        for m in &wire.metrics {
            assert_eq!(limits.check_metric(m, NOW), Ok(()));
        }
        let mut t = wire.transactions[0].clone();
        t.duration_ms = -1.0;
        let v = limits.check_transaction(&t, NOW).unwrap_err();
        assert_eq!(
            (v.path.as_str(), v.rule),
            ("transactions[0].duration_ms", Rule::OutOfRange)
        );
        let mut m = wire.metrics[0].clone();
        m.start_ms = Some(NOW + 1);
        assert_eq!(
            limits.check_metric(&m, NOW).unwrap_err().path,
            "metrics[0].start_ms"
        );
        let mut e = wire.errors[0].clone();
        e.class = String::new();
        assert_eq!(limits.check_error(&e, NOW).unwrap_err().rule, Rule::Empty);
    }

    #[test]
    fn cumulative_and_histogram_rules() {
        let with = |m: serde_json::Value| {
            let mut v = valid();
            v["metrics"] = json!([m]);
            decode(&v)
        };
        let ok = with(json!({"kind": "distribution", "name": "d", "value": 30.0,
            "timestamp_ms": NOW, "start_ms": NOW - 60_000,
            "histogram": {"count": 3, "min": 5.0, "max": 20.0, "buckets": {"20": 1, "28": 2}}}))
        .unwrap();
        let m = &ok.metrics()[0];
        assert_eq!(m.start_ms, Some(NOW - 60_000));
        assert_eq!(m.histogram.as_ref().map(|h| h.count), Some(3));
        assert!(
            with(json!({"kind": "counter", "name": "c", "value": 9.0,
            "timestamp_ms": NOW, "start_ms": 0}))
            .is_ok(),
            "a start long ago is fine"
        );
        for (bad, path) in [
            (
                json!({"kind": "gauge", "name": "g", "value": 1.0, "timestamp_ms": NOW, "start_ms": NOW}),
                "metrics[0].start_ms",
            ),
            (
                json!({"kind": "counter", "name": "c", "value": 1.0, "timestamp_ms": NOW, "start_ms": NOW + 1}),
                "metrics[0].start_ms",
            ),
            (
                json!({"kind": "counter", "name": "c", "value": 1.0, "timestamp_ms": NOW,
                "histogram": {"count": 0}}),
                "metrics[0].histogram",
            ),
            (
                json!({"kind": "distribution", "name": "d", "value": 1.0, "timestamp_ms": NOW,
                "histogram": {"count": 2, "buckets": {"3": 1}}}),
                "metrics[0].histogram.count",
            ),
            (
                json!({"kind": "distribution", "name": "d", "value": 1.0, "timestamp_ms": NOW,
                "histogram": {"count": 1, "buckets": {"999": 1}}}),
                "metrics[0].histogram.buckets",
            ),
        ] {
            match with(bad.clone()) {
                Err(BatchError::Invalid { violations, .. }) => {
                    assert_eq!(violations[0].path, path, "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn wire_round_trip() {
        let wire: WireBatch = serde_json::from_value(valid()).unwrap();
        let again: WireBatch =
            serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap();
        assert_eq!(wire, again);
    }

    #[test]
    fn syntax_errors_name_the_path() {
        let mut v = valid();
        v["transactions"][1]["duration_ms"] = json!("slow");
        match decode(&v) {
            Err(BatchError::Syntax { path, .. }) => assert_eq!(path, "transactions[1].duration_ms"),
            other => panic!("{other:?}"),
        }
        match Batch::decode(b"{not json", &BatchLimits::default(), NOW) {
            Err(e @ BatchError::Syntax { .. }) => assert_eq!(e.code(), "invalid_json"),
            other => panic!("{other:?}"),
        }
        match Batch::decode(b"", &BatchLimits::default(), NOW) {
            Err(BatchError::Syntax { .. }) => {}
            other => panic!("{other:?}"),
        }
        let mut v = valid();
        v.as_object_mut().unwrap().remove("app");
        assert!(matches!(decode(&v), Err(BatchError::Syntax { .. })));
        let mut v = valid();
        v["metrics"][0]["kind"] = json!("histogram");
        match decode(&v) {
            Err(BatchError::Syntax { path, .. }) => assert_eq!(path, "metrics[0].kind"),
            other => panic!("{other:?}"),
        }
        // Trailing garbage after the object.
        let mut bytes = serde_json::to_vec(&valid()).unwrap();
        bytes.extend_from_slice(b" {}");
        assert!(matches!(
            Batch::decode(&bytes, &BatchLimits::default(), NOW),
            Err(BatchError::Syntax { .. })
        ));
        // Invalid UTF-8 inside a string.
        let bytes = br#"{"agent":{"name":"a\xff","version":"1"},"app":"x","environment":"p"}"#;
        assert!(matches!(
            Batch::decode(bytes, &BatchLimits::default(), NOW),
            Err(BatchError::Syntax { .. })
        ));
    }

    #[test]
    fn each_rule_is_enforced() {
        let long = "x".repeat(256);
        type Mutation = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Mutation, &str, Rule)> = vec![
            (
                Box::new(|v| v["batch_id"] = json!("no spaces")),
                "batch_id",
                Rule::InvalidChars,
            ),
            (
                Box::new(|v| v["agent"]["name"] = json!("")),
                "agent.name",
                Rule::Empty,
            ),
            (
                Box::new(|v| v["agent"]["version"] = json!("a\u{7}b")),
                "agent.version",
                Rule::InvalidChars,
            ),
            (Box::new(|v| v["app"] = json!("")), "app", Rule::Empty),
            (
                Box::new(|v| v["app"] = json!("x".repeat(65))),
                "app",
                Rule::TooLong,
            ),
            (
                Box::new(|v| v["environment"] = json!("prod uction")),
                "environment",
                Rule::InvalidChars,
            ),
            (
                Box::new(move |v| v["transactions"][0]["action"] = json!(long)),
                "transactions[0].action",
                Rule::TooLong,
            ),
            (
                Box::new(|v| v["transactions"][0]["start_ms"] = json!(NOW - 49 * 3_600_000)),
                "transactions[0].start_ms",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["transactions"][0]["start_ms"] = json!(NOW + 301_000)),
                "transactions[0].start_ms",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["transactions"][0]["duration_ms"] = json!(-1.0)),
                "transactions[0].duration_ms",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["transactions"][0]["duration_ms"] = json!(1e12)),
                "transactions[0].duration_ms",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["transactions"][0]["status"] = json!(99)),
                "transactions[0].status",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["transactions"][1]["error"]["class"] = json!("")),
                "transactions[1].error.class",
                Rule::Empty,
            ),
            (
                Box::new(|v| v["metrics"][0]["value"] = json!(-1)),
                "metrics[0].value",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["metrics"][1]["timestamp_ms"] = json!(0)),
                "metrics[1].timestamp_ms",
                Rule::OutOfRange,
            ),
            (
                Box::new(|v| v["metrics"][0]["tags"]["k"] = json!("x".repeat(257))),
                "metrics[0].tags.k",
                Rule::TooLong,
            ),
            (
                Box::new(|v| v["metrics"][0]["name"] = json!("")),
                "metrics[0].name",
                Rule::Empty,
            ),
            (
                Box::new(|v| v["errors"][0]["class"] = json!("")),
                "errors[0].class",
                Rule::Empty,
            ),
            (
                Box::new(|v| v["errors"][0]["message"] = json!("m".repeat(4097))),
                "errors[0].message",
                Rule::TooLong,
            ),
            (
                Box::new(|v| v["errors"][0]["backtrace"][0]["file"] = json!("")),
                "errors[0].backtrace[0].file",
                Rule::Empty,
            ),
            (
                Box::new(|v| v["errors"][0]["timestamp_ms"] = json!(i64::MAX)),
                "errors[0].timestamp_ms",
                Rule::OutOfRange,
            ),
        ];
        for (mutate, path, rule) in cases {
            let (p, r) = one_violation(mutate);
            assert_eq!((p.as_str(), r), (path, rule));
        }
    }

    #[test]
    fn non_finite_numbers_are_refused_in_hand_built_batches() {
        // JSON cannot carry NaN or infinities, but a batch built in code
        // (the client library, a reusing service) can.
        let mut wire: WireBatch = serde_json::from_value(valid()).unwrap();
        wire.transactions[0].duration_ms = f64::NAN;
        wire.metrics[0].value = f64::INFINITY;
        let err = Batch::from_wire(wire, &BatchLimits::default(), NOW).unwrap_err();
        let BatchError::Invalid { violations, .. } = err else {
            panic!("{err:?}")
        };
        let got: Vec<_> = violations
            .iter()
            .map(|v| (v.path.as_str(), v.rule))
            .collect();
        assert!(
            got.contains(&("transactions[0].duration_ms", Rule::NotFinite)),
            "{got:?}"
        );
        assert!(
            got.contains(&("metrics[0].value", Rule::NotFinite)),
            "{got:?}"
        );
    }

    #[test]
    fn list_limits() {
        let limits = BatchLimits {
            max_transactions: 2,
            max_metrics: 2,
            max_errors: 0,
            max_tags: 0,
            max_backtrace_frames: 1,
            ..BatchLimits::default()
        };
        let err = Batch::decode(&serde_json::to_vec(&valid()).unwrap(), &limits, NOW).unwrap_err();
        let BatchError::Invalid { violations, .. } = err else {
            panic!()
        };
        let got: Vec<_> = violations
            .iter()
            .map(|v| (v.path.as_str(), v.rule))
            .collect();
        assert!(got.contains(&("transactions", Rule::TooMany)));
        assert!(got.contains(&("metrics", Rule::TooMany)));
        assert!(got.contains(&("errors", Rule::TooMany)));
        assert!(got.contains(&("metrics[0].tags", Rule::TooMany)));
        assert!(got.contains(&("errors[0].backtrace", Rule::TooMany)));
    }

    #[test]
    fn empty_batch_is_rejected() {
        let v = json!({"agent": {"name": "a", "version": "1"}, "app": "x", "environment": "p"});
        assert_eq!(violations(&v), vec![(".".to_owned(), Rule::Empty)]);
    }

    #[test]
    fn violations_are_capped() {
        let mut v = valid();
        let tx: Vec<_> = (0..50)
            .map(|_| json!({"action": "", "start_ms": NOW, "duration_ms": 1.0}))
            .collect();
        v["transactions"] = json!(tx);
        match decode(&v) {
            Err(BatchError::Invalid { violations, more }) => {
                assert_eq!(violations.len(), MAX_REPORTED_VIOLATIONS);
                assert_eq!(more, 30);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fingerprint_ignores_line_numbers_and_message() {
        let b = decode(&valid()).unwrap();
        let mut v = valid();
        v["errors"][0]["backtrace"][1]["line"] = json!(99);
        v["errors"][0]["message"] = json!("another message");
        let b2 = decode(&v).unwrap();
        assert_eq!(b.errors()[0].fingerprint(), b2.errors()[0].fingerprint());
        let mut v = valid();
        v["errors"][0]["backtrace"][1]["function"] = json!("subtotal");
        let b3 = decode(&v).unwrap();
        assert_ne!(b.errors()[0].fingerprint(), b3.errors()[0].fingerprint());
    }

    #[test]
    fn series_id_is_independent_of_tag_order() {
        let mut a = valid();
        a["metrics"][0]["tags"] = json!({"a": "1", "b": "2"});
        let mut b = valid();
        b["metrics"][0]["tags"] = json!({"b": "2", "a": "1"});
        let (a, b) = (decode(&a).unwrap(), decode(&b).unwrap());
        assert_eq!(a.metrics()[0].series_id(), b.metrics()[0].series_id());
        assert_ne!(a.metrics()[0].series_id(), a.metrics()[1].series_id());
    }

    fn metric(name: &str, tags: &[(&str, &str)]) -> Metric {
        Metric {
            kind: MetricKind::Counter,
            name: name.to_owned(),
            value: 1.0,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timestamp_ms: NOW,
            start_ms: None,
            histogram: None,
        }
    }

    #[test]
    fn series_ids_do_not_confuse_separators_in_tags() {
        let pairs = [
            (metric("m", &[("a=b", "c")]), metric("m", &[("a", "b=c")])),
            // `Metric` can be built in code, past validation's control
            // character rule.
            (
                metric("m", &[("a", "b"), ("c", "d")]),
                metric("m", &[("a", "b\0c=d")]),
            ),
            (metric("m\0a=", &[]), metric("m", &[("a", "")])),
        ];
        for (one, two) in pairs {
            assert_ne!(one.series_id(), two.series_id(), "{one:?} vs {two:?}");
        }
    }

    proptest! {
        /// `{k: v}` against every other cut of the text `k=v` at an `=`:
        /// all of them are different series.
        #[test]
        fn tags_cut_elsewhere_are_other_series(k in "[a=]{1,4}", v in "[a=]{0,4}") {
            let one = metric("m", &[(&k, &v)]);
            let text = format!("{k}={v}");
            for (at, _) in text.match_indices('=').filter(|(at, _)| *at != k.len() && *at > 0) {
                let two = metric("m", &[(&text[..at], &text[at + 1..])]);
                prop_assert_ne!(one.series_id(), two.series_id(), "{:?} vs {:?}", one.tags, two.tags);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Batch::decode(&bytes, &BatchLimits::default(), NOW);
        }

        #[test]
        fn valid_transactions_always_pass(
            duration in 0.0f64..86_400_000.0,
            offset in -172_800_000i64..300_000,
            status in proptest::option::of(100u16..=599),
            action in "[A-Za-z#:_]{1,255}",
        ) {
            let v = json!({
                "agent": {"name": "a", "version": "1"}, "app": "x", "environment": "p",
                "transactions": [{"action": action, "start_ms": NOW + offset, "duration_ms": duration, "status": status}]
            });
            prop_assert!(decode(&v).is_ok());
        }
    }
}
