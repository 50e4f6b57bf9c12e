//! The open-loop dispatcher: [`run`] sends a [`LoadPlan`] and returns its
//! [`LoadReport`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use inlet_client::Problem;
use inlet_client::transport::{self, TransportError};
use inlet_domain::WireAgent;
use reqwest::header::{self, HeaderValue};
use tokio::sync::Semaphore;

use crate::body::{BodyPool, POOL_REFRESH, request_body};
use crate::report::{Latency, LoadReport, Tallies};

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

/// One simulated agent.
#[derive(Debug)]
struct SimAgent {
    /// Its `agent` object, serialized once.
    agent_json: String,
    key: HeaderValue,
}

/// Locks the tallies, recovering from poisoning (a panicking request task
/// must not lose the run's figures).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
                    *pool.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
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
        let pool_now = pool.read().unwrap_or_else(PoisonError::into_inner).clone();
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
