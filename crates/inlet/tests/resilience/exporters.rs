//! OTLP agents: exporters that behave as an OpenTelemetry SDK's OTLP/HTTP
//! protobuf exporter does, every event counted.
//!
//! Each exporter builds a traces export of `spans_per_export` SERVER spans
//! (`inlet_otlp::example::traces`, service `app`, its own `host.name`)
//! every `interval`, and sends it to `POST /v1/traces` with
//! `Authorization: Bearer <key>`, one export at a time (the SDK's batch
//! processor). What the specification and the SDKs do with the answer:
//!
//! - 200: exported. Its spans count as accepted, minus the
//!   `partial_success.rejected_spans` of the response (rejected items are
//!   not retried).
//! - 429, 502, 503, 504, and no answer (timeout, refused, reset): retried,
//!   the **same bytes**, after an exponential backoff with jitter, or after
//!   `Retry-After` when the server asks for longer (Go's and Java's
//!   exporters honour it), until `max_elapsed` has passed since the first
//!   attempt (Go's default: one minute); then dropped.
//! - anything else (400, 401, 403, 413, …): dropped at once. No SDK keeps
//!   data the server refused, so a 401 to a valid key is data lost: the
//!   incident.
//!
//! `lose_every`: the exporter throws away every n-th 200 it receives as if
//! the connection had dropped before the answer arrived (a timeout after
//! the server had done its work), and retries. That is the one way an
//! exporter re-sends an export the server already accepted, which the
//! batch ids derived from the request must turn into one stored copy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_otlp::proto::collector::trace::v1::ExportTraceServiceResponse;
use inlet_otlp::proto::common::v1::any_value::Value;
use prost::Message as _;
use rand::Rng as _;

/// How the exporters behave.
#[derive(Debug, Clone)]
pub struct ExporterOptions {
    /// Base URL (the API or a load balancer in front of it).
    pub endpoint: String,
    /// The `service.name` of every exporter (the app its data is stored
    /// under).
    pub app: String,
    /// Spans per export.
    pub spans_per_export: usize,
    /// Time between two exports (the batch processor's schedule delay).
    pub interval: Duration,
    /// Timeout of one attempt (the SDKs' default: 10 s).
    pub timeout: Duration,
    /// First retry delay; doubled per retry up to `max_backoff`, ±50 %
    /// jitter.
    pub initial_backoff: Duration,
    /// Longest retry delay of the exporter's own schedule.
    pub max_backoff: Duration,
    /// How long an export is retried before it is dropped.
    pub max_elapsed: Duration,
    /// Every n-th 200 is treated as lost (see the module docs); `None`:
    /// none.
    pub lose_every: Option<u64>,
}

impl ExporterOptions {
    /// Defaults: 8 spans every 200 ms (40 spans/s per exporter), 10 s
    /// attempt timeout, retries from 250 ms up to 2 s apart for a minute,
    /// every 10th answer lost.
    pub fn new(endpoint: &str, app: &str) -> ExporterOptions {
        ExporterOptions {
            endpoint: endpoint.to_owned(),
            app: app.to_owned(),
            spans_per_export: 8,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(60),
            lose_every: Some(10),
        }
    }

    /// Spans per second per exporter.
    pub fn rate(&self) -> f64 {
        self.spans_per_export as f64 / self.interval.as_secs_f64()
    }
}

/// What one exporter saw.
#[derive(Debug, Clone, Default)]
pub struct ExporterStats {
    /// Exports built.
    pub exports: u64,
    /// Spans built.
    pub recorded: u64,
    /// Exports answered 200.
    pub accepted_exports: u64,
    /// Spans of those, minus what `partial_success` rejected.
    pub accepted: u64,
    /// Sum of the durations of spans of exports answered 200 with nothing
    /// rejected, milliseconds (integers: sums reconcile exactly).
    pub accepted_sum_ms: u64,
    /// `partial_success.rejected_spans`, summed.
    pub rejected: u64,
    /// 200s thrown away as lost (`lose_every`).
    pub lost_answers: u64,
    /// Spans of accepted exports, times the attempts of that export that
    /// got no answer (lost answers included): an upper bound of what the
    /// API may have accepted more than once.
    pub resent_after_no_answer: u64,
    /// Attempts retried, by `status code` (`- transport` without an answer).
    pub retries: BTreeMap<String, u64>,
    /// Exports that were retried at least once.
    pub retried_exports: u64,
    /// 401/403 answers: when, status, `X-Inlet-Error`.
    pub rejections: Vec<(Instant, u16, Option<String>)>,
    /// Exports dropped, by `status code` (`- gave up` after `max_elapsed`).
    pub dropped: BTreeMap<String, u64>,
    /// Spans of dropped exports.
    pub dropped_spans: u64,
    /// Accepted exports: when, and their spans.
    pub accepted_at: Vec<(Instant, u64)>,
}

/// One exporter.
pub struct Exporter {
    /// Its account.
    pub account: String,
    stats: Arc<Mutex<ExporterStats>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Exporter {
    /// A copy of what it saw.
    pub fn stats(&self) -> ExporterStats {
        self.stats.lock().unwrap().clone()
    }
}

/// A group of exporters.
pub struct ExporterGroup {
    /// The exporters.
    pub exporters: Vec<Exporter>,
    /// Their options.
    pub options: ExporterOptions,
}

/// Group-wide sums.
#[derive(Debug, Clone, Default)]
pub struct ExporterTotals {
    pub exports: u64,
    pub recorded: u64,
    pub accepted_exports: u64,
    pub accepted: u64,
    pub accepted_sum_ms: u64,
    pub rejected: u64,
    pub lost_answers: u64,
    pub resent_after_no_answer: u64,
    pub retried_exports: u64,
    pub retries: BTreeMap<String, u64>,
    pub rejections: u64,
    pub dropped: BTreeMap<String, u64>,
    pub dropped_spans: u64,
}

impl ExporterGroup {
    /// Starts one exporter per spec (each exports at once, then every
    /// `interval`).
    pub fn start(specs: &[crate::agents::AgentSpec], options: &ExporterOptions) -> ExporterGroup {
        let exporters = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| start_exporter(i, &spec.account, &spec.key, options))
            .collect();
        ExporterGroup {
            exporters,
            options: options.clone(),
        }
    }

    /// Stops building exports; waits for each exporter's export in hand to
    /// be answered, retried to the end, or dropped.
    pub async fn shutdown(&mut self) {
        for e in &self.exporters {
            e.stop.store(true, Ordering::Relaxed);
        }
        for e in &mut self.exporters {
            if let Some(t) = e.task.take() {
                t.await.unwrap();
            }
        }
    }

    /// The accounts, in exporter order.
    pub fn accounts(&self) -> Vec<String> {
        self.exporters.iter().map(|e| e.account.clone()).collect()
    }

    /// Sums over every exporter.
    pub fn totals(&self) -> ExporterTotals {
        let mut t = ExporterTotals::default();
        for e in &self.exporters {
            let s = e.stats();
            t.exports += s.exports;
            t.recorded += s.recorded;
            t.accepted_exports += s.accepted_exports;
            t.accepted += s.accepted;
            t.accepted_sum_ms += s.accepted_sum_ms;
            t.rejected += s.rejected;
            t.lost_answers += s.lost_answers;
            t.resent_after_no_answer += s.resent_after_no_answer;
            t.retried_exports += s.retried_exports;
            t.rejections += s.rejections.len() as u64;
            t.dropped_spans += s.dropped_spans;
            for (k, v) in s.retries {
                *t.retries.entry(k).or_insert(0) += v;
            }
            for (k, v) in s.dropped {
                *t.dropped.entry(k).or_insert(0) += v;
            }
        }
        t
    }

    /// For each exporter, the time from `t` to its first accepted export
    /// at or after `t`; the longest of them (`None` if one had none).
    pub fn slowest_first_accept_after(&self, t: Instant) -> Option<Duration> {
        let mut worst = Duration::ZERO;
        for e in &self.exporters {
            let first = e
                .stats()
                .accepted_at
                .iter()
                .find(|(at, _)| *at >= t)
                .map(|(at, _)| *at - t)?;
            worst = worst.max(first);
        }
        Some(worst)
    }
}

/// An export ready to send: its bytes, spans and duration sum.
struct Built {
    body: Vec<u8>,
    spans: u64,
    sum_ms: u64,
}

fn build(o: &ExporterOptions, host: &str) -> Built {
    let mut req = inlet_otlp::example::traces(&o.app, o.spans_per_export, inlet_domain::now_ms());
    let mut sum_ms = 0;
    for rs in &mut req.resource_spans {
        if let Some(r) = &mut rs.resource {
            for kv in &mut r.attributes {
                if kv.key == "host.name"
                    && let Some(v) = &mut kv.value
                {
                    v.value = Some(Value::StringValue(host.to_owned()));
                }
            }
        }
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                // Whole milliseconds by construction of the example.
                sum_ms += (s.end_time_unix_nano - s.start_time_unix_nano) / 1_000_000;
            }
        }
    }
    Built {
        body: req.encode_to_vec(),
        spans: o.spans_per_export as u64,
        sum_ms,
    }
}

/// What one attempt got.
enum Answer {
    /// 200 with the decoded `partial_success.rejected_spans`.
    Exported { rejected: u64 },
    /// Another status: the status, `X-Inlet-Error`, `Retry-After` (s).
    Status(u16, Option<String>, Option<u64>),
    /// No answer.
    Transport,
}

async fn attempt(http: &reqwest::Client, url: &str, key: &str, body: &[u8]) -> Answer {
    let sent = http
        .post(url)
        .bearer_auth(key)
        .header("Content-Type", "application/x-protobuf")
        .body(body.to_vec())
        .send()
        .await;
    let Ok(r) = sent else {
        return Answer::Transport;
    };
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let code = header("x-inlet-error");
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let Ok(bytes) = r.bytes().await else {
        return Answer::Transport;
    };
    if status != 200 {
        return Answer::Status(status, code, retry_after);
    }
    match ExportTraceServiceResponse::decode(bytes.as_ref()) {
        Ok(resp) => Answer::Exported {
            rejected: resp
                .partial_success
                .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)),
        },
        // A 200 whose body is not the response: the export did arrive.
        Err(_) => Answer::Exported { rejected: 0 },
    }
}

/// Sends one export until it is exported or dropped, counting every event.
async fn export(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    o: &ExporterOptions,
    built: &Built,
    answers: &mut u64,
    stats: &Mutex<ExporterStats>,
) {
    let first = Instant::now();
    let mut backoff = o.initial_backoff;
    let mut unanswered = 0u64;
    let mut retried = false;
    loop {
        let mut answer = attempt(http, url, key, &built.body).await;
        if let Answer::Exported { .. } = answer {
            *answers += 1;
            if o.lose_every.is_some_and(|n| answers.is_multiple_of(n)) {
                stats.lock().unwrap().lost_answers += 1;
                answer = Answer::Transport;
            }
        }
        let delay = {
            let mut s = stats.lock().unwrap();
            let (label, hint) = match answer {
                Answer::Exported { rejected } => {
                    let rejected = rejected.min(built.spans);
                    s.accepted_exports += 1;
                    s.accepted += built.spans - rejected;
                    s.rejected += rejected;
                    if rejected == 0 {
                        s.accepted_sum_ms += built.sum_ms;
                    }
                    s.resent_after_no_answer += unanswered * built.spans;
                    s.retried_exports += u64::from(retried);
                    s.accepted_at.push((Instant::now(), built.spans - rejected));
                    return;
                }
                Answer::Status(status @ (429 | 502 | 503 | 504), code, retry_after) => (
                    format!("{status} {}", code.as_deref().unwrap_or("-")),
                    retry_after.map(Duration::from_secs),
                ),
                Answer::Status(status, code, _) => {
                    if matches!(status, 401 | 403) {
                        s.rejections.push((Instant::now(), status, code.clone()));
                    }
                    let label = format!("{status} {}", code.as_deref().unwrap_or("-"));
                    *s.dropped.entry(label).or_insert(0) += 1;
                    s.dropped_spans += built.spans;
                    return;
                }
                Answer::Transport => {
                    unanswered += 1;
                    ("- transport".to_owned(), None)
                }
            };
            // Retryable: wait, then the same bytes again, unless the budget is
            // spent.
            let jitter = rand::rng().random_range(0.5..1.5);
            let delay = backoff.mul_f64(jitter).max(hint.unwrap_or_default());
            if first.elapsed() + delay > o.max_elapsed {
                *s.dropped.entry("- gave up".into()).or_insert(0) += 1;
                s.dropped_spans += built.spans;
                s.retried_exports += u64::from(retried);
                return;
            }
            *s.retries.entry(label).or_insert(0) += 1;
            retried = true;
            delay
        };
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(o.max_backoff);
    }
}

fn start_exporter(i: usize, account: &str, key: &str, o: &ExporterOptions) -> Exporter {
    let stats = Arc::new(Mutex::new(ExporterStats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let (stats, stop, o, key) = (stats.clone(), stop.clone(), o.clone(), key.to_owned());
        let host = format!("otlp-{i:03}");
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(o.timeout)
                .build()
                .unwrap();
            let url = format!("{}/v1/traces", o.endpoint);
            let mut tick = tokio::time::interval(o.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut answers = 0;
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let built = build(&o, &host);
                {
                    let mut s = stats.lock().unwrap();
                    s.exports += 1;
                    s.recorded += built.spans;
                }
                export(&http, &url, &key, &o, &built, &mut answers, &stats).await;
            }
        })
    };
    Exporter {
        account: account.to_owned(),
        stats,
        stop,
        task: Some(task),
    }
}
