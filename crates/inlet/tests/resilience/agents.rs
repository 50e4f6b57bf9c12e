//! Agents: `inlet_client::Client`s recording transactions continuously,
//! each with every event it reports counted.
//!
//! Each agent records `items_per_tick` transactions every `tick`, with
//! known integer durations (so the stored `duration_sum` can be reconciled
//! exactly, not only the counts). The `on_event` hook counts every 401/403
//! (with its time, to judge whether the key was valid then), every 5xx and
//! transport error, every accepted batch (with its time, for recovery
//! times), and which batches were re-sent after an attempt that got no
//! answer (the only way the API can legitimately publish a batch twice).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_client::{Client, ClientEvent, ShutdownReport};
use inlet_domain::{WireTransaction, now_ms};

/// How agents behave.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Base URL (the API or a load balancer in front of it).
    pub endpoint: String,
    /// Transactions recorded per tick.
    pub items_per_tick: usize,
    /// Recording period.
    pub tick: Duration,
    /// The client's `flush_interval`.
    pub flush_interval: Duration,
    /// The client's `request_timeout`.
    pub request_timeout: Duration,
}

impl FleetOptions {
    /// Defaults: 5 transactions every 100 ms (50/s per agent), flushed
    /// every 250 ms, 5 s request timeout.
    pub fn new(endpoint: &str) -> FleetOptions {
        FleetOptions {
            endpoint: endpoint.to_owned(),
            items_per_tick: 5,
            tick: Duration::from_millis(100),
            flush_interval: Duration::from_millis(250),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Transactions per second per agent.
    pub fn rate(&self) -> f64 {
        self.items_per_tick as f64 / self.tick.as_secs_f64()
    }
}

/// Who an agent is.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Its account (one per agent, so stored items can be told apart).
    pub account: String,
    /// Its key.
    pub key: String,
}

/// What one agent's hook saw.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// Accepted batches: when, and how many items.
    pub accepted: Vec<(Instant, u64)>,
    /// 401/403 answers: when, status, code.
    pub rejections: Vec<(Instant, u16, Option<String>)>,
    /// Failed attempts by `status code` (`- timeout` etc. for transport
    /// errors).
    pub failures: BTreeMap<String, u64>,
    /// When failed attempts happened, with their status (`None`: no answer).
    pub failure_times: Vec<(Instant, Option<u16>)>,
    /// 5xx answers.
    pub server_errors: u64,
    /// Attempts without an answer (timeout, refused, reset).
    pub transport_errors: u64,
    /// Items of accepted batches, times the attempts of that batch that got
    /// no answer: an upper bound of what the API may have accepted twice.
    pub resent_after_no_answer: u64,
    /// Items dropped (any reason), by the hook.
    pub dropped: u64,
    /// Stalls: from a batch's first failed attempt to the next accepted
    /// batch.
    pub stalls: Vec<(Instant, Duration)>,
    unanswered: BTreeMap<String, u64>,
    failing_since: Option<Instant>,
}

impl Events {
    fn on(&mut self, e: &ClientEvent) {
        let now = Instant::now();
        match e {
            ClientEvent::Accepted {
                batch_id, items, ..
            } => {
                self.accepted.push((now, *items as u64));
                if let Some(n) = self.unanswered.remove(batch_id) {
                    self.resent_after_no_answer += n * *items as u64;
                }
                if let Some(since) = self.failing_since.take() {
                    self.stalls.push((since, now - since));
                }
            }
            ClientEvent::Retrying {
                batch_id, error, ..
            } => {
                self.failing_since.get_or_insert(now);
                self.failure_times.push((now, error.status));
                let label = match error.status {
                    Some(s) => format!("{s} {}", error.code.as_deref().unwrap_or("-")),
                    None => format!("- {}", error.code.as_deref().unwrap_or("transport")),
                };
                *self.failures.entry(label).or_insert(0) += 1;
                match error.status {
                    Some(s @ (401 | 403)) => self.rejections.push((now, s, error.code.clone())),
                    Some(s) if s >= 500 => self.server_errors += 1,
                    Some(_) => {}
                    None => {
                        self.transport_errors += 1;
                        *self.unanswered.entry(batch_id.clone()).or_insert(0) += 1;
                    }
                }
            }
            ClientEvent::AuthPaused { error, .. } => {
                if let Some(s @ (401 | 403)) = error.status {
                    self.rejections.push((now, s, error.code.clone()));
                }
                *self.failures.entry("auth_paused".into()).or_insert(0) += 1;
            }
            ClientEvent::Dropped { items, .. } => self.dropped += items,
            _ => {}
        }
    }
}

/// One agent.
pub struct Agent {
    /// Its account.
    pub account: String,
    /// Its client.
    pub client: Client,
    events: Arc<Mutex<Events>>,
    recorded: Arc<AtomicU64>,
    duration_sum_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The shutdown report, once shut down.
    pub report: Option<ShutdownReport>,
}

impl Agent {
    /// A copy of what its hook saw.
    pub fn events(&self) -> Events {
        self.events.lock().unwrap().clone()
    }

    /// Items recorded.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Sum of recorded durations, ms.
    pub fn recorded_sum(&self) -> f64 {
        self.duration_sum_ms.load(Ordering::Relaxed) as f64
    }

    /// Items accepted (the client's counter).
    pub fn accepted(&self) -> u64 {
        self.client.stats().accepted.items
    }

    /// Stops recording (the client keeps sending what it holds).
    pub async fn stop_recording(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// A set of agents.
pub struct Fleet {
    /// The agents.
    pub agents: Vec<Agent>,
}

/// Fleet-wide sums.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub recorded: u64,
    pub recorded_sum: f64,
    pub accepted: u64,
    pub accepted_batches: u64,
    pub dropped: u64,
    pub left_at_shutdown: u64,
    pub rejections: u64,
    pub server_errors: u64,
    pub transport_errors: u64,
    pub resent_after_no_answer: u64,
    pub retried_batches: u64,
    pub failures: BTreeMap<String, u64>,
}

impl Fleet {
    /// Builds one client per spec and starts recording.
    pub fn start(specs: &[AgentSpec], options: &FleetOptions) -> Fleet {
        let agents = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| start_agent(i, spec, options))
            .collect();
        Fleet { agents }
    }

    /// Starts more agents, one per spec, into this fleet.
    pub fn add(&mut self, specs: &[AgentSpec], options: &FleetOptions) {
        let first = self.agents.len();
        self.agents.extend(
            specs
                .iter()
                .enumerate()
                .map(|(i, spec)| start_agent(first + i, spec, options)),
        );
    }

    /// Stops every agent's recording.
    pub async fn stop_recording(&mut self) {
        for a in &mut self.agents {
            a.stop_recording().await;
        }
    }

    /// Shuts every client down (concurrently), flushing for at most
    /// `deadline`.
    pub async fn shutdown(&mut self, deadline: Duration) {
        self.stop_recording().await;
        let reports =
            futures::future::join_all(self.agents.iter().map(|a| a.client.shutdown(deadline)))
                .await;
        for (a, r) in self.agents.iter_mut().zip(reports) {
            a.report = Some(r);
        }
    }

    /// The accounts, in agent order.
    pub fn accounts(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.account.clone()).collect()
    }

    /// Sums over every agent.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for a in &self.agents {
            let s = a.client.stats();
            let e = a.events();
            t.recorded += a.recorded();
            t.recorded_sum += a.recorded_sum();
            t.accepted += s.accepted.items;
            t.accepted_batches += s.accepted.batches;
            t.dropped += s.dropped_items.total();
            t.left_at_shutdown += a.report.as_ref().map_or(0, |r| r.left_items);
            t.rejections += e.rejections.len() as u64;
            t.server_errors += e.server_errors;
            t.transport_errors += e.transport_errors;
            t.resent_after_no_answer += e.resent_after_no_answer;
            t.retried_batches += s.retried.batches;
            for (k, v) in e.failures {
                *t.failures.entry(k).or_insert(0) += v;
            }
        }
        t
    }

    /// Items accepted so far (the clients' counters).
    pub fn accepted(&self) -> u64 {
        self.agents.iter().map(Agent::accepted).sum()
    }

    /// For each agent, the time from `t` to its first accepted batch at or
    /// after `t`; the longest of them (`None` if some agent had none).
    pub fn slowest_first_accept_after(&self, t: Instant) -> Option<Duration> {
        let mut worst = Duration::ZERO;
        for a in &self.agents {
            let first = a
                .events()
                .accepted
                .iter()
                .find(|(at, _)| *at >= t)
                .map(|(at, _)| *at - t)?;
            worst = worst.max(first);
        }
        Some(worst)
    }

    /// The longest stall of any agent (first failure to next success).
    pub fn longest_stall(&self) -> Duration {
        self.agents
            .iter()
            .flat_map(|a| a.events().stalls.into_iter().map(|(_, d)| d))
            .max()
            .unwrap_or_default()
    }

    /// Whether every agent has had a batch accepted after `t`.
    pub fn all_accepted_after(&self, t: Instant) -> bool {
        self.agents
            .iter()
            .all(|a| a.events().accepted.iter().any(|(at, _)| *at >= t))
    }

    /// Waits (at most `timeout`) until every agent has had a batch
    /// accepted after `t`; whether they all had.
    pub async fn all_accepted_within(&self, t: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.all_accepted_after(t) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        true
    }
}

fn start_agent(i: usize, spec: &AgentSpec, o: &FleetOptions) -> Agent {
    let events = Arc::new(Mutex::new(Events::default()));
    let sink = events.clone();
    let client = Client::builder(&o.endpoint, &spec.key)
        .app("shop")
        .environment("resilience")
        .agent("inlet-resilience", "1.0.0")
        .hostname(&format!("agent-{i:03}"))
        .flush_interval(o.flush_interval)
        .request_timeout(o.request_timeout)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_secs(2))
        .on_event(move |e| sink.lock().unwrap_or_else(|p| p.into_inner()).on(e))
        .build()
        .expect("agent client");
    let recorded = Arc::new(AtomicU64::new(0));
    let duration_sum_ms = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let (client, recorded, sum, stop) = (
            client.clone(),
            recorded.clone(),
            duration_sum_ms.clone(),
            stop.clone(),
        );
        let (per_tick, period) = (o.items_per_tick, o.tick);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = now_ms();
                let mut batch_sum = 0;
                let items: Vec<WireTransaction> = (0..per_tick)
                    .map(|_| {
                        n += 1;
                        // Known integer durations: sums reconcile exactly.
                        let d = n % 97 + 1;
                        batch_sum += d;
                        WireTransaction {
                            action: format!("Resilience#a{}", n % 4),
                            namespace: Some("web".into()),
                            start_ms: now,
                            duration_ms: d as f64,
                            status: Some(200),
                            error: None,
                        }
                    })
                    .collect();
                client.send_batch(items);
                recorded.fetch_add(per_tick as u64, Ordering::Relaxed);
                sum.fetch_add(batch_sum, Ordering::Relaxed);
            }
        })
    };
    Agent {
        account: spec.account.clone(),
        client,
        events,
        recorded,
        duration_sum_ms,
        stop,
        task: Some(task),
        report: None,
    }
}
