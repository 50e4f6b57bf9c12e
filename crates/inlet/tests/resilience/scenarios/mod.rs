//! The scenarios, one module each, and what they share: provisioning
//! agents, and the end-of-run reconciliation.

mod bad_input;
mod brute_force;
mod hostile_bodies;
mod incident;
mod many_workers;
mod mongo_down;
mod other_writers;
mod rabbit_cluster;
mod rabbit_restart;
mod reactivation;
mod redis_flush;
mod revocation;
mod rolling_deploy;
mod secret_rotation;
mod two_syncs;
mod unreadable_key;
mod worker_kill;

use std::time::Duration;

use inlet_testkit::{LoadBalancer, free_port};

use crate::agents::{AgentSpec, Fleet, FleetOptions, Totals};
use crate::exporters::ExporterGroup;
use crate::report::Figure;
use crate::stack::{Proc, READY_TIMEOUT, Stack};

/// Per-account rate limit of agent accounts: high enough that a fleet
/// draining a backlog after an outage is not throttled (429s are not what
/// these scenarios are about).
pub const AGENT_RATE: (u32, u32) = (10_000, 10_000);

/// Deliveries a worker holds: received and not yet settled.
pub fn in_hand(m: &crate::metrics::Scrape) -> f64 {
    m.sum("inlet_queue_consumer_deliveries_total", &[])
        - m.sum("inlet_queue_consumer_acks_total", &[])
        - m.sum("inlet_queue_consumer_requeues_total", &[])
        - m.sum("inlet_queue_consumer_retries_total", &[])
        - m.sum("inlet_queue_consumer_dead_letters_total", &[])
}

/// Creates `n` accounts named `{prefix}-NNN`, one key each.
pub async fn agent_specs(stack: &Stack, prefix: &str, n: usize) -> Vec<AgentSpec> {
    let accounts: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    let keys = stack.accounts_with_keys(&accounts, Some(AGENT_RATE)).await;
    accounts
        .into_iter()
        .zip(keys)
        .map(|(account, key)| AgentSpec { account, key })
        .collect()
}

/// One API instance with its worker (and optionally a following sync),
/// all ready, and a fleet of agents pushing through a recording load
/// balancer in front of the API.
pub struct SingleApi {
    /// `inlet sync`, when asked for.
    pub sync: Option<Proc>,
    /// `inlet worker`.
    pub worker: Proc,
    /// `inlet api`.
    pub api: Proc,
    /// The balancer the agents go through.
    pub lb: LoadBalancer,
    /// The agents.
    pub fleet: Fleet,
}

/// Starts [`SingleApi`]: sync (if `with_sync`), worker and API, each ready
/// before the next starts, then the agents of `specs`.
pub async fn start_single_api(
    stack: &Stack,
    specs: &[AgentSpec],
    opts: FleetOptions,
    with_sync: bool,
) -> SingleApi {
    let sync = if with_sync {
        let mut sync = stack.sync("sync", &[]);
        stack.wait_ready(&mut sync, READY_TIMEOUT).await;
        Some(sync)
    } else {
        None
    };
    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let mut api = stack.api("api", free_port(), &[]);
    stack.wait_ready(&mut api, READY_TIMEOUT).await;
    let lb = LoadBalancer::passthrough(api.addr()).await;
    let fleet = Fleet::start(
        specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    SingleApi {
        sync,
        worker,
        api,
        lb,
        fleet,
    }
}

/// `n_agents` agents and one more, account `victim`, whose key a
/// scenario revokes: their specs (the victim last), the victim's key and
/// its key id.
pub async fn agents_and_victim(stack: &Stack, n_agents: usize) -> (Vec<AgentSpec>, String, String) {
    let mut specs = agent_specs(stack, "agent", n_agents).await;
    let victim_key = stack
        .accounts_with_keys(&["victim".to_owned()], Some(AGENT_RATE))
        .await
        .remove(0);
    specs.push(AgentSpec {
        account: "victim".into(),
        key: victim_key.clone(),
    });
    let victim_key_id = stack.key_id("victim").await;
    (specs, victim_key, victim_key_id)
}

/// A sync, a worker and two API instances, all ready, behind a
/// health-checked load balancer, and a fleet of agents pushing through it.
pub struct TwoApis {
    /// `inlet sync`.
    pub sync: Proc,
    /// `inlet worker`.
    pub worker: Proc,
    /// The two `inlet api` instances.
    pub apis: Vec<Proc>,
    /// The balancer the agents go through.
    pub lb: LoadBalancer,
    /// The agents.
    pub fleet: Fleet,
}

/// Starts [`TwoApis`]: sync, worker and both instances, each ready before
/// the next starts; the agents of `specs` once both are routable.
pub async fn start_two_apis(stack: &Stack, specs: &[AgentSpec], opts: FleetOptions) -> TwoApis {
    let mut sync = stack.sync("sync", &[]);
    stack.wait_ready(&mut sync, READY_TIMEOUT).await;
    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let mut apis = Vec::new();
    for i in 0..2 {
        let mut p = stack.api(&format!("api{i}"), free_port(), &[]);
        stack.wait_ready(&mut p, READY_TIMEOUT).await;
        apis.push(p);
    }
    let lb = LoadBalancer::health_checked(&[apis[0].addr(), apis[1].addr()]).await;
    inlet_testkit::wait_until(
        Duration::from_secs(10),
        "both instances routable",
        || async { lb.is_routable(0) && lb.is_routable(1) },
    )
    .await;
    let fleet = Fleet::start(
        specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    TwoApis {
        sync,
        worker,
        apis,
        lb,
        fleet,
    }
}

/// One small push straight to `base`: (status, code).
pub async fn probe(http: &reqwest::Client, base: &str, key: &str, n: u64) -> (u16, Option<String>) {
    let body = serde_json::json!({
        "batch_id": format!("probe-{}-{n}", uuid::Uuid::new_v4()),
        "agent": {"name": "revocation-probe", "version": "1"},
        "app": "shop", "environment": "resilience",
        "transactions": [{"action": "Probe#revocation", "start_ms": inlet_domain::now_ms(), "duration_ms": 1.0, "status": 200}],
    });
    match http
        .post(format!("{base}/v1/push"))
        .bearer_auth(key)
        .json(&body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (status, v["code"].as_str().map(str::to_owned))
        }
        Err(_) => (0, None),
    }
}

/// What [`probe_until`] saw.
pub struct Probed {
    /// When the awaited answer came.
    pub at: std::time::Instant,
    /// Its `code`.
    pub code: Option<String>,
    /// Probes accepted (202) on the way, the last one included: items
    /// stored on purpose outside the agents' sends.
    pub accepted: u64,
}

/// Probes `base` with `key` every 20 ms until an answer's status satisfies
/// `done`; panics after `deadline`.
pub async fn probe_until(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    n: &mut u64,
    done: impl Fn(u16) -> bool,
    deadline: Duration,
) -> Probed {
    let started = std::time::Instant::now();
    let mut accepted = 0;
    loop {
        *n += 1;
        let (status, code) = probe(http, base, key, *n).await;
        accepted += u64::from(status == 202);
        if done(status) {
            return Probed {
                at: std::time::Instant::now(),
                code,
                accepted,
            };
        }
        assert!(
            started.elapsed() < deadline,
            "{base}: no awaited answer within {deadline:?} (last {status} {code:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a run is reconciled.
pub struct Reconcile<'a> {
    /// The API's accepted transaction items, when known completely.
    pub api_items: Option<u64>,
    /// The recording load balancer the agents went through.
    pub lb: Option<&'a LoadBalancer>,
    /// 401/403 answers to keys valid at the time.
    pub false_401s: u64,
    /// Items stored on purpose outside the agents' own sends (probes), in
    /// the agents' accounts.
    pub extra_stored: u64,
    /// Items stored for the accounts of another agent group of the run
    /// (the OTLP exporters, reconciled by [`reconcile_exporters`]).
    pub others_stored: u64,
    /// Agents whose key was revoked: they may end with data the server
    /// refused, and their 401s are expected.
    pub revoked: Vec<String>,
    /// How long the worker may take to store everything after the agents
    /// stopped.
    pub drain_timeout: Duration,
}

impl Default for Reconcile<'_> {
    fn default() -> Self {
        Reconcile {
            api_items: None,
            lb: None,
            false_401s: 0,
            extra_stored: 0,
            others_stored: 0,
            revoked: Vec::new(),
            drain_timeout: Duration::from_secs(180),
        }
    }
}

/// After the agents were shut down ([`Fleet::shutdown`]: everything they
/// held flushed), waits for the worker to drain, and checks: nothing dropped, accepted == stored (items
/// and duration sums), the API's count between accepted and accepted plus
/// what was re-sent after lost answers, no false 401s, and every 5xx on
/// the wire with `Retry-After`. Adds the fleet's counts to the figure's
/// common fields.
pub async fn reconcile(fig: &mut Figure, stack: &Stack, fleet: &Fleet, r: Reconcile<'_>) -> Totals {
    assert!(
        fleet.agents.iter().all(|a| a.report.is_some()),
        "shut the fleet down before reconciling"
    );
    let t = fleet.totals();
    let accounts = fleet.accounts();
    let expected = t.accepted + r.extra_stored;
    let stored = stack
        .wait_drained(&accounts, expected, r.drain_timeout)
        .await;
    let everything = stack.stored(&[]).await;

    let kept: Vec<&crate::agents::Agent> = fleet
        .agents
        .iter()
        .filter(|a| !r.revoked.contains(&a.account))
        .collect();
    let kept_recorded: u64 = kept.iter().map(|a| a.recorded()).sum();
    let kept_accepted: u64 = kept.iter().map(|a| a.accepted()).sum();
    let kept_dropped: u64 = kept
        .iter()
        .map(|a| a.client.stats().dropped_items.total())
        .sum();
    let client_recorded: u64 = fleet
        .agents
        .iter()
        .map(|a| a.client.stats().recorded_items)
        .sum();

    fig.recorded += t.recorded;
    fig.accepted += t.accepted;
    fig.stored += stored.count;
    fig.api_items = r.api_items;
    fig.false_401s += r.false_401s;
    fig.lost += expected.saturating_sub(stored.count);
    fig.duplicated += stored.count.saturating_sub(expected);
    fig.dropped += kept_dropped;
    fig.note("agent_failures", &t.failures);
    fig.note("agent_retried_batches", t.retried_batches);
    fig.note("agent_transport_errors", t.transport_errors);
    fig.note("agent_5xx", t.server_errors);
    fig.note(
        "longest_agent_stall_s",
        crate::report::secs(fleet.longest_stall()),
    );

    fig.check(
        "the clients counted every recorded item",
        client_recorded == t.recorded,
        format!(
            "recorded by the agents {} / by the clients {client_recorded}",
            t.recorded
        ),
    );
    fig.check(
        "no agent dropped anything (buffer, 4xx, shutdown)",
        kept_dropped == 0,
        format!("dropped {kept_dropped}: {:?}", t.failures),
    );
    fig.check(
        "every recorded item was accepted",
        kept_accepted == kept_recorded,
        format!("recorded {kept_recorded}, accepted {kept_accepted}"),
    );
    fig.check(
        "stored exactly once (accepted == stored)",
        stored.count == expected,
        if stored.count == expected {
            format!(
                "accepted {} (+{} probe items), stored {}",
                t.accepted, r.extra_stored, stored.count
            )
        } else {
            format!(
                "accepted {} (+{} probe items), stored {}; {}",
                t.accepted,
                r.extra_stored,
                stored.count,
                stack.describe_queue().await
            )
        },
    );
    fig.check(
        "nothing stored outside the agents' accounts",
        everything.count == stored.count + r.others_stored,
        format!(
            "all accounts {}, agents {}, other groups {}",
            everything.count, stored.count, r.others_stored
        ),
    );
    if r.revoked.is_empty() && r.extra_stored == 0 {
        fig.check(
            "stored duration sum == recorded duration sum",
            (stored.duration_sum - t.recorded_sum).abs() < 0.5,
            format!(
                "recorded {} ms, stored {} ms",
                t.recorded_sum, stored.duration_sum
            ),
        );
    }
    if let Some(api) = r.api_items {
        fig.check(
            "API accepted items within [accepted, accepted + re-sent after lost answers]",
            api >= t.accepted && api <= t.accepted + t.resent_after_no_answer,
            format!(
                "API {api}, agents accepted {}, re-sent after no answer ≤ {}",
                t.accepted, t.resent_after_no_answer
            ),
        );
    }
    fig.check(
        "no false 401/403",
        r.false_401s == 0,
        format!("{} false 401/403", r.false_401s),
    );
    if let Some(lb) = r.lb {
        let w = lb.responses();
        fig.server_errors = w.server_errors;
        fig.server_errors_without_retry_after = w.server_errors_without_retry_after;
        fig.note("wire_statuses", &w.by_status);
        fig.note(
            "wire_codes",
            w.by_code
                .iter()
                .map(|((s, c), n)| (format!("{s} {c}"), *n))
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        fig.check(
            "every 5xx carried Retry-After (on the wire)",
            w.server_errors_without_retry_after == 0,
            format!(
                "{} of {} 5xx without Retry-After: {:?}",
                w.server_errors_without_retry_after,
                w.server_errors,
                w.examples_without_retry_after
            ),
        );
        fig.check(
            "the wire saw every accepted batch's 202",
            w.status(202) >= t.accepted_batches,
            format!(
                "202s on the wire {}, batches accepted by agents {}",
                w.status(202),
                t.accepted_batches
            ),
        );
        fig.check(
            "every response on the wire was followed",
            w.unparsed_connections == 0,
            format!("{} connections not parsed", w.unparsed_connections),
        );
    }
    t
}

/// After the exporters were shut down ([`ExporterGroup::shutdown`]),
/// waits for the worker to store their spans and checks the OTLP group as
/// [`reconcile`] checks a fleet: no false 401/403 (every key stays valid),
/// no export dropped, every span accepted, stored under the group's app
/// exactly what the exporters were told was accepted (retries included,
/// so re-sent exports must not count twice) and nothing under another
/// app, duration sums, the API's span count within [accepted, accepted +
/// re-sent after no answer], and the 200s on the wire. Adds the group's
/// counts to the figure's common fields (`otlp_*` notes keep them apart);
/// returns what is stored for the group's accounts, for
/// [`Reconcile::others_stored`].
pub async fn reconcile_exporters(
    fig: &mut Figure,
    stack: &Stack,
    group: &ExporterGroup,
    api_spans: Option<u64>,
    lb: Option<&LoadBalancer>,
) -> u64 {
    let t = group.totals();
    let accounts = group.accounts();
    let app = group.options.app.as_str();
    let stored = stack
        .wait_drained_for(&accounts, Some(app), t.accepted, Duration::from_secs(180))
        .await;
    let any_app = stack.stored(&accounts).await;

    fig.recorded += t.recorded;
    fig.accepted += t.accepted;
    fig.stored += stored.count;
    fig.false_401s += t.rejections;
    fig.lost += t.accepted.saturating_sub(stored.count);
    fig.duplicated += stored.count.saturating_sub(t.accepted);
    fig.dropped += t.dropped_spans;
    fig.note(
        "otlp",
        serde_json::json!({
            "exporters": group.exporters.len(),
            "exports": t.exports,
            "spans_recorded": t.recorded,
            "spans_accepted": t.accepted,
            "spans_rejected": t.rejected,
            "spans_stored": stored.count,
            "api_spans": api_spans,
            "false_401s": t.rejections,
            "exports_retried": t.retried_exports,
            "answers_lost": t.lost_answers,
            "retries": t.retries,
            "dropped": t.dropped,
        }),
    );

    fig.check(
        "OTLP: no false 401/403",
        t.rejections == 0,
        format!("{} false 401/403: {:?}", t.rejections, t.dropped),
    );
    fig.check(
        "OTLP: no export dropped (non-retryable answer, retries given up)",
        t.dropped_spans == 0,
        format!("dropped {} spans: {:?}", t.dropped_spans, t.dropped),
    );
    fig.check(
        "OTLP: every exported span was accepted (none rejected in a partial success)",
        t.accepted == t.recorded && t.rejected == 0,
        format!(
            "recorded {}, accepted {}, rejected {}",
            t.recorded, t.accepted, t.rejected
        ),
    );
    fig.check(
        "OTLP: stored exactly once under the group's app (accepted == stored), retries included",
        stored.count == t.accepted,
        format!(
            "accepted {}, stored {} (app {app}); {} exports retried, {} after their 200 was lost",
            t.accepted, stored.count, t.retried_exports, t.lost_answers
        ),
    );
    fig.check(
        "OTLP: nothing stored for the group's accounts under another app",
        any_app.count == stored.count,
        format!("any app {}, app {app} {}", any_app.count, stored.count),
    );
    if t.rejected == 0 {
        fig.check(
            "OTLP: stored duration sum == accepted duration sum",
            (stored.duration_sum - t.accepted_sum_ms as f64).abs() < 0.5,
            format!(
                "accepted {} ms, stored {} ms",
                t.accepted_sum_ms, stored.duration_sum
            ),
        );
    }
    if group.options.lose_every.is_some() {
        fig.check(
            "OTLP: exports accepted by the server were re-sent (lost answers), so stored-once was exercised",
            t.lost_answers > 0 && t.resent_after_no_answer > 0,
            format!(
                "{} answers lost, ≤ {} spans re-sent after no answer",
                t.lost_answers, t.resent_after_no_answer
            ),
        );
    }
    if let Some(api) = api_spans {
        fig.check(
            "OTLP: API accepted spans within [accepted, accepted + re-sent after no answer]",
            api >= t.accepted && api <= t.accepted + t.resent_after_no_answer,
            format!(
                "API {api}, exporters accepted {}, re-sent after no answer ≤ {}",
                t.accepted, t.resent_after_no_answer
            ),
        );
    }
    if let Some(lb) = lb {
        let w = lb.responses();
        fig.check(
            "OTLP: the wire saw every 200 the exporters received",
            w.status(200) >= t.accepted_exports + t.lost_answers,
            format!(
                "200s on the wire {}, exports accepted {} + answers lost {}",
                w.status(200),
                t.accepted_exports,
                t.lost_answers
            ),
        );
    }
    any_app.count
}
