//! The load generator behind `inlet load`, and realistic synthetic batches.
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened
//! to the earlier ones, so a slow server shows up as latency and errors
//! rather than as a politely reduced rate. Each request is sent once (no
//! retries: this measures the server, it is not an agent). At most
//! `max_in_flight` requests run at once; when that many are waiting the
//! dispatcher falls behind, which the report shows as `late` dispatches.
//!
//! The generator stays cheap so that it is not what is measured: one
//! connection-pooling HTTP client shared by all simulated agents, key
//! headers built once, and bodies pre-generated — a pool of 64 synthetic
//! batches, compressed once and regenerated every 5 s on the blocking pool
//! so timestamps stay within seconds of now. Each request only prepends a
//! fresh head with its own `batch_id` and agent (as a second gzip member,
//! see `request_body`), so no two requests are the same batch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_domain::{
    MetricKind, WireAgent, WireBatch, WireErrorSample, WireFrame, WireMetric, WireTransaction,
    WireTransactionError,
};
use rand::Rng;
use rand::seq::IndexedRandom as _;
use reqwest::header::{self, HeaderValue};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::health::lock;
use crate::response::Problem;
use crate::transport::{self, TransportError};

/// A dispatch more than this late counts as `late`.
const LATE: Duration = Duration::from_millis(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Base URL of the API.
    pub endpoint: String,
    /// Keys; simulated agent `n` uses key `n % keys.len()`.
    pub keys: Vec<String>,
    /// Simulated agents; requests go round-robin over them.
    pub agents: usize,
    /// Aggregate target, requests per second.
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// Compress bodies with gzip.
    pub gzip: bool,
    /// Bound on each request.
    pub timeout: Duration,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// The `app` of every batch.
    pub app: String,
    /// The `environment` of every batch.
    pub environment: String,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A plan value is out of its domain.
    #[error("invalid load plan: {0}")]
    Plan(String),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Http(#[source] reqwest::Error),
}

/// Latency percentiles of answered requests, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `micros` (sorted in place).
    pub fn of(micros: &mut [u32]) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let rank = |p: f64| {
            let i = ((p / 100.0) * micros.len() as f64).ceil() as usize;
            f64::from(micros[i.clamp(1, micros.len()) - 1]) / 1e3
        };
        let sum: u64 = micros.iter().map(|m| u64::from(*m)).sum();
        Latency {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: f64::from(micros[micros.len() - 1]) / 1e3,
            mean: sum as f64 / micros.len() as f64 / 1e3,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The target rate, requests per second.
    pub target_rps: f64,
    /// Simulated agents.
    pub agents: usize,
    /// Distinct keys used.
    pub keys: usize,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Answers per status.
    pub statuses: BTreeMap<u16, u64>,
    /// Problem codes of non-2xx answers.
    pub codes: BTreeMap<String, u64>,
    /// Requests that got no answer, by kind (`timeout`, `connect`, …).
    pub transport_errors: BTreeMap<String, u64>,
    /// Dispatches more than 10 ms behind schedule (the generator or the
    /// in-flight limit could not keep up).
    pub late: u64,
    /// Items (transactions + metrics + errors) sent.
    pub items_sent: u64,
    /// Body bytes sent (as compressed).
    pub bytes_sent: u64,
    /// Seconds spent dispatching.
    pub dispatch_s: f64,
    /// Seconds from the first dispatch to the last answer.
    pub elapsed_s: f64,
    /// Requests finished (answered or failed) per second over `elapsed_s`.
    pub achieved_rps: f64,
    /// Latency of answered requests.
    pub latency_ms: Latency,
}

impl LoadReport {
    /// Answers with a 2xx status.
    pub fn accepted(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One simulated agent.
#[derive(Debug)]
struct SimAgent {
    /// Its `agent` object, serialized once.
    agent_json: String,
    key: HeaderValue,
}

#[derive(Debug, Default)]
struct Tallies {
    statuses: BTreeMap<u16, u64>,
    codes: BTreeMap<String, u64>,
    transport_errors: BTreeMap<String, u64>,
    micros: Vec<u32>,
    items: u64,
    bytes: u64,
}

/// How many distinct bodies the pool holds.
const POOL_SIZE: usize = 64;
/// How often the pool is regenerated, so timestamps stay close to now.
const POOL_REFRESH: Duration = Duration::from_secs(5);

/// Pre-generated batch bodies without their first fields: each is the JSON
/// of a synthetic batch from `"app":` to the closing brace, compressed on
/// its own when gzip is on.
#[derive(Debug)]
struct BodyPool {
    tails: Vec<(Vec<u8>, u64)>,
}

impl BodyPool {
    fn generate(app: &str, environment: &str, gzip: bool) -> BodyPool {
        let mut rng = rand::rng();
        let agent = WireAgent {
            name: "inlet-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: Some("load".into()),
        };
        let now = inlet_domain::now_ms();
        let tails = (0..POOL_SIZE)
            .map(|_| {
                let batch = synthetic_batch(&mut rng, &agent, app, environment, now);
                let items =
                    (batch.transactions.len() + batch.metrics.len() + batch.errors.len()) as u64;
                let mut v = serde_json::to_value(&batch).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.remove("batch_id");
                    m.remove("agent");
                }
                let json = v.to_string();
                let tail = json.strip_prefix('{').unwrap_or(&json).as_bytes().to_vec();
                let tail = if gzip {
                    inlet_domain::ContentEncoding::Gzip.encode(&tail)
                } else {
                    tail
                };
                (tail, items)
            })
            .collect();
        BodyPool { tails }
    }
}

/// A body for one request: a fresh head (`{"batch_id":…,"agent":…,`)
/// followed by a pooled tail.
///
/// With gzip, the head is its own gzip member in a stored (uncompressed)
/// deflate block, and the pooled tail a second, compressed member: RFC 1952
/// defines a multi-member file as the concatenation of its members, and the
/// server decodes every member. A fresh `batch_id` per request then costs
/// a few hundred bytes of copying instead of a whole compression.
fn request_body(head: &[u8], tail: &[u8], gzip: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(head.len() + tail.len() + 32);
    if gzip {
        stored_gzip_member(head, &mut body);
    } else {
        body.extend_from_slice(head);
    }
    body.extend_from_slice(tail);
    body
}

/// Appends `data` (at most 64 KiB) as one gzip member holding a single
/// stored deflate block. Written by hand because a stored block is ten
/// bytes of framing: `flate2`'s encoder would set up a compressor (a few
/// hundred KiB of state) for every request of the load.
fn stored_gzip_member(data: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let data = &data[..usize::from(len)];
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    // BFINAL=1, BTYPE=00 (stored), then LEN and its complement.
    out.push(1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

/// Runs the plan and reports.
pub async fn run(plan: LoadPlan) -> Result<LoadReport, LoadError> {
    if plan.keys.is_empty() {
        return Err(LoadError::Plan("no keys".into()));
    }
    if plan.agents == 0 || plan.max_in_flight == 0 {
        return Err(LoadError::Plan(
            "agents and max_in_flight must be at least 1".into(),
        ));
    }
    if !(plan.rate.is_finite() && plan.rate > 0.0) {
        return Err(LoadError::Plan("the rate must be a positive number".into()));
    }
    let url = transport::push_url(&plan.endpoint).map_err(LoadError::Plan)?;
    let mut agents = Vec::with_capacity(plan.agents);
    for n in 0..plan.agents {
        let key = &plan.keys[n % plan.keys.len()];
        let mut key = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
            LoadError::Plan(format!(
                "key {} cannot go in a header",
                n % plan.keys.len() + 1
            ))
        })?;
        key.set_sensitive(true);
        let agent = WireAgent {
            name: "inlet-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: Some(format!("load-{n:04}")),
        };
        agents.push(Arc::new(SimAgent {
            agent_json: serde_json::to_string(&agent).unwrap_or_default(),
            key,
        }));
    }
    let http = reqwest::Client::builder()
        .user_agent(concat!("inlet-load/", env!("CARGO_PKG_VERSION")))
        .timeout(plan.timeout)
        .pool_max_idle_per_host(plan.max_in_flight)
        .tcp_nodelay(true)
        .build()
        .map_err(LoadError::Http)?;

    let (app, environment, gzip) = (plan.app.clone(), plan.environment.clone(), plan.gzip);
    let generate = move || BodyPool::generate(&app, &environment, gzip);
    let first = tokio::task::spawn_blocking(generate.clone())
        .await
        .map_err(|e| LoadError::Plan(format!("generating bodies failed: {e}")))?;
    let pool = Arc::new(std::sync::RwLock::new(Arc::new(first)));
    let refresher = {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POOL_REFRESH).await;
                if let Ok(fresh) = tokio::task::spawn_blocking(generate.clone()).await {
                    *pool
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
                }
            }
        })
    };

    let tallies = Arc::new(Mutex::new(Tallies::default()));
    let limit = Arc::new(Semaphore::new(plan.max_in_flight));
    let interval = 1.0 / plan.rate;
    let start = tokio::time::Instant::now();
    let end = start + plan.duration;
    let mut sent = 0u64;
    let mut late = 0u64;

    loop {
        let due = start + Duration::from_secs_f64(sent as f64 * interval);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let now = tokio::time::Instant::now();
        if now >= end {
            // Behind schedule at the end: the run is over, not extended.
            break;
        }
        if now.saturating_duration_since(due) > LATE {
            late += 1;
        }
        let agent = agents[(sent % agents.len() as u64) as usize].clone();
        let pool_now = pool
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (tail, items) = &pool_now.tails[(sent as usize) % pool_now.tails.len()];
        let head = format!(
            "{{\"batch_id\":\"{}\",\"agent\":{},",
            uuid::Uuid::now_v7(),
            agent.agent_json
        );
        let body = request_body(head.as_bytes(), tail, gzip);
        let items = *items;
        let (http, url, tallies) = (http.clone(), url.clone(), tallies.clone());
        tokio::spawn(async move {
            let bytes = body.len() as u64;
            let mut req = http
                .post(url)
                .header(header::AUTHORIZATION, agent.key.clone())
                .header(header::CONTENT_TYPE, "application/json");
            if gzip {
                req = req.header(header::CONTENT_ENCODING, "gzip");
            }
            let started = Instant::now();
            let outcome = match req.body(body).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // Read the body to the end so the connection is reused.
                    let body = resp.bytes().await.unwrap_or_default();
                    let code = (!(200..300).contains(&status))
                        .then(|| Problem::parse(&body).and_then(|p| p.code))
                        .flatten();
                    Ok((status, code))
                }
                Err(e) => Err(TransportError::from_reqwest(&e).kind),
            };
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            let mut t = lock(&tallies);
            t.items += items;
            t.bytes += bytes;
            match outcome {
                Ok((status, code)) => {
                    *t.statuses.entry(status).or_default() += 1;
                    if let Some(code) = code {
                        *t.codes.entry(code).or_default() += 1;
                    }
                    t.micros.push(micros);
                }
                Err(kind) => *t.transport_errors.entry(kind.to_owned()).or_default() += 1,
            }
            drop(t);
            drop(permit);
        });
        sent += 1;
    }
    let dispatch_s = start.elapsed().as_secs_f64();
    refresher.abort();
    // Every task holds a permit until it is done.
    let all = u32::try_from(plan.max_in_flight).unwrap_or(u32::MAX);
    let _ = limit.acquire_many(all).await;
    let elapsed_s = start.elapsed().as_secs_f64();
    let mut t = std::mem::take(&mut *lock(&tallies));
    let answered = t.micros.len() as u64;
    let failed: u64 = t.transport_errors.values().sum();
    Ok(LoadReport {
        target_rps: plan.rate,
        agents: plan.agents,
        keys: plan.keys.len(),
        sent,
        answered,
        statuses: t.statuses,
        codes: t.codes,
        transport_errors: t.transport_errors,
        late,
        items_sent: t.items,
        bytes_sent: t.bytes,
        dispatch_s,
        elapsed_s,
        achieved_rps: if elapsed_s > 0.0 {
            (answered + failed) as f64 / elapsed_s
        } else {
            0.0
        },
        latency_ms: Latency::of(&mut t.micros),
    })
}

const WEB_ACTIONS: &[(&str, f64)] = &[
    ("OrdersController#index", 45.0),
    ("OrdersController#show", 25.0),
    ("OrdersController#create", 120.0),
    ("CartsController#update", 35.0),
    ("SessionsController#create", 80.0),
    ("Api::V1::ProductsController#index", 15.0),
    ("Api::V1::ProductsController#show", 8.0),
    ("HealthController#show", 1.0),
];
const JOB_ACTIONS: &[(&str, f64)] = &[
    ("InvoiceMailerJob#perform", 400.0),
    ("ImportProductsJob#perform", 2_500.0),
    ("ReindexJob#perform", 900.0),
];
const ERROR_CLASSES: &[(&str, &str)] = &[
    ("NoMethodError", "undefined method `total' for nil:NilClass"),
    (
        "ActiveRecord::RecordNotFound",
        "Couldn't find Order with 'id'=4242",
    ),
    ("Timeout::Error", "execution expired"),
    (
        "Redis::CannotConnectError",
        "Error connecting to Redis on 10.0.0.5:6379 (ECONNREFUSED)",
    ),
];
const APP_FRAMES: &[(&str, &str)] = &[
    ("app/models/order.rb", "total"),
    ("app/controllers/orders_controller.rb", "show"),
    ("app/services/checkout.rb", "call"),
    ("app/jobs/import_products_job.rb", "perform"),
];
const LIB_FRAMES: &[(&str, &str)] = &[
    (
        "/usr/local/bundle/gems/activerecord-7.1.3/lib/active_record/relation.rb",
        "find",
    ),
    (
        "/usr/local/bundle/gems/actionpack-7.1.3/lib/action_controller/metal.rb",
        "dispatch",
    ),
    (
        "/usr/local/bundle/gems/rack-3.0.9/lib/rack/builder.rb",
        "call",
    ),
];

/// A plausible batch from `agent`: a handful of transactions (web requests
/// and jobs with typical durations and statuses), some tagged metrics, and
/// now and then an error with a backtrace. Timestamps are within the last
/// few seconds of `now_ms`; the `batch_id` is fresh.
pub fn synthetic_batch<R: Rng + ?Sized>(
    rng: &mut R,
    agent: &WireAgent,
    app: &str,
    environment: &str,
    now_ms: i64,
) -> WireBatch {
    let host = agent.hostname.clone().unwrap_or_else(|| "host".into());
    let transactions = (0..rng.random_range(3..=8))
        .map(|_| {
            let job = rng.random_bool(0.15);
            let &(action, typical) = if job {
                JOB_ACTIONS.choose(rng).unwrap_or(&("Job#perform", 100.0))
            } else {
                WEB_ACTIONS.choose(rng).unwrap_or(&("Home#index", 10.0))
            };
            // A long-tailed duration around the typical one.
            let u: f64 = rng.random();
            let duration_ms =
                (typical * (0.3 + 2.0 * u * u * u + rng.random::<f64>() * 0.4) * 100.0).round()
                    / 100.0;
            let failed = rng.random_bool(0.02);
            let status = (!job).then(|| {
                if failed {
                    500
                } else {
                    *[200, 200, 200, 200, 200, 201, 204, 302, 304, 404, 422]
                        .choose(rng)
                        .unwrap_or(&200)
                }
            });
            WireTransaction {
                action: action.into(),
                namespace: Some(if job { "background" } else { "web" }.into()),
                start_ms: now_ms - rng.random_range(0..5_000),
                duration_ms,
                status,
                error: failed.then(|| {
                    let &(class, message) = ERROR_CLASSES.choose(rng).unwrap_or(&("Error", ""));
                    WireTransactionError {
                        class: class.into(),
                        message: Some(message.into()),
                    }
                }),
            }
        })
        .collect();
    let mut metrics = Vec::new();
    for _ in 0..rng.random_range(2..=5) {
        let m = match rng.random_range(0..4) {
            0 => WireMetric {
                kind: MetricKind::Counter,
                name: "jobs.processed".into(),
                value: f64::from(rng.random_range(1..20)),
                tags: [(
                    "queue".to_owned(),
                    ["default", "mailers", "imports"]
                        .choose(rng)
                        .unwrap_or(&"default")
                        .to_string(),
                )]
                .into(),
                timestamp_ms: now_ms,
            },
            1 => WireMetric {
                kind: MetricKind::Gauge,
                name: "db.pool.in_use".into(),
                value: f64::from(rng.random_range(0..32)),
                tags: [("host".to_owned(), host.clone())].into(),
                timestamp_ms: now_ms,
            },
            2 => WireMetric {
                kind: MetricKind::Distribution,
                name: "http.response_bytes".into(),
                value: f64::from(rng.random_range(200..200_000)),
                tags: [
                    ("host".to_owned(), host.clone()),
                    (
                        "format".to_owned(),
                        ["html", "json"].choose(rng).unwrap_or(&"json").to_string(),
                    ),
                ]
                .into(),
                timestamp_ms: now_ms,
            },
            _ => WireMetric {
                kind: MetricKind::Gauge,
                name: "process.rss_mb".into(),
                value: (300.0 + rng.random::<f64>() * 200.0).round(),
                tags: [("host".to_owned(), host.clone())].into(),
                timestamp_ms: now_ms,
            },
        };
        metrics.push(m);
    }
    let errors = if rng.random_bool(0.1) {
        let &(class, message) = ERROR_CLASSES.choose(rng).unwrap_or(&("Error", ""));
        let mut backtrace = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let &(file, function) = APP_FRAMES.choose(rng).unwrap_or(&("app/x.rb", "x"));
            backtrace.push(WireFrame {
                file: file.into(),
                line: Some(rng.random_range(1..400)),
                function: Some(function.into()),
                in_app: None,
            });
        }
        for _ in 0..rng.random_range(2..=5) {
            let &(file, function) = LIB_FRAMES.choose(rng).unwrap_or(&("/gems/x.rb", "x"));
            backtrace.push(WireFrame {
                file: file.into(),
                line: Some(rng.random_range(1..900)),
                function: Some(function.into()),
                in_app: None,
            });
        }
        vec![WireErrorSample {
            class: class.into(),
            message: message.into(),
            backtrace,
            action: WEB_ACTIONS.choose(rng).map(|(a, _)| (*a).to_owned()),
            timestamp_ms: now_ms - rng.random_range(0..5_000),
        }]
    } else {
        Vec::new()
    };
    WireBatch {
        batch_id: Some(uuid::Uuid::now_v7().to_string()),
        agent: agent.clone(),
        app: app.into(),
        environment: environment.into(),
        transactions,
        metrics,
        errors,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use inlet_domain::{Batch, BatchLimits, now_ms};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn synthetic_batches_are_valid_and_varied() {
        let mut rng = StdRng::seed_from_u64(9);
        let agent = WireAgent {
            name: "inlet-load".into(),
            version: "1".into(),
            hostname: Some("load-0001".into()),
        };
        let now = now_ms();
        let mut with_errors = 0;
        let mut actions = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let b = synthetic_batch(&mut rng, &agent, "shop", "load", now);
            ids.insert(b.batch_id.clone().unwrap());
            actions.extend(b.transactions.iter().map(|t| t.action.clone()));
            with_errors += usize::from(!b.errors.is_empty());
            let json = serde_json::to_vec(&b).unwrap();
            Batch::decode(&json, &BatchLimits::default(), now).unwrap();
        }
        assert_eq!(ids.len(), 300, "every batch has its own id");
        assert!(actions.len() >= 8, "{actions:?}");
        assert!((10..=80).contains(&with_errors), "{with_errors}");
    }

    #[test]
    fn request_bodies_are_valid_batches_with_fresh_heads() {
        for gzip in [true, false] {
            let pool = BodyPool::generate("shop", "load", gzip);
            assert_eq!(pool.tails.len(), POOL_SIZE);
            let (tail, items) = &pool.tails[0];
            let head = format!(
                "{{\"batch_id\":\"b-1\",\"agent\":{},",
                r#"{"name":"inlet-load","version":"1","hostname":"load-0007"}"#
            );
            let body = request_body(head.as_bytes(), tail, gzip);
            let encoding = if gzip {
                inlet_domain::ContentEncoding::Gzip
            } else {
                inlet_domain::ContentEncoding::Identity
            };
            let json = encoding.decode(&body, 1 << 20).unwrap();
            let b = Batch::decode(&json, &BatchLimits::default(), now_ms()).unwrap();
            assert_eq!(b.batch_id().unwrap().as_str(), "b-1");
            assert_eq!(b.agent().hostname.as_deref(), Some("load-0007"));
            assert_eq!(b.item_count() as u64, *items);
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(&mut []), Latency::default());
        let mut one = vec![7_000];
        assert_eq!(Latency::of(&mut one).p99, 7.0);
    }
}
