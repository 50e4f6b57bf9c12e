//! Scenario 1: the incident, replayed. MongoDB holds every account and
//! key; Redis is empty (no populated marker); a freshly started `inlet api`
//! takes traffic from agents pushing continuously; `inlet sync` only starts
//! later. 1b: MongoDB is unreachable too for the first seconds.
//!
//! Both replays run two agent groups from the moment the API process
//! starts: `inlet-client` agents pushing to `/v1/push`, and OTLP agents
//! exporting traces to `/v1/traces` as an OpenTelemetry SDK does, which
//! drops an export on any 401 (see `exporters`): for them a false 401 is
//! data lost at once, with no grace period to save it.

use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, SecantusServer, SecantusStorage, free_port};

use super::{Reconcile, agent_specs, reconcile, reconcile_exporters};
use crate::agents::{AgentSpec, Fleet, FleetOptions};
use crate::exporters::{ExporterGroup, ExporterOptions};
use crate::metrics::Scrape;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, ReadinessWatch, Services, Stack, blocking};

/// Accepted decisions by `source`.
fn accepted_by(m: &Scrape, source: &str) -> f64 {
    m.sum(
        "inlet_auth_decisions_total",
        &[("verdict", "accepted"), ("source", source)],
    )
}

/// The service name of the OTLP agents.
const OTLP_APP: &str = "otlp-shop";

/// The OTLP agent group: accounts `otlp-NNN`, one key each.
async fn otlp_specs(stack: &Stack) -> Vec<AgentSpec> {
    agent_specs(stack, "otlp", scale::count(10.0, 2)).await
}

/// The OTLP group in the load description.
fn otlp_load(n: usize, o: &ExporterOptions) -> String {
    format!(
        "; {n} OTLP/HTTP exporters (service {}) × {:.0} spans/s, {} spans per protobuf export, every {}th 200 lost and the export re-sent",
        o.app,
        o.rate(),
        o.spans_per_export,
        o.lose_every.unwrap_or(0)
    )
}

/// The API's counts at the end: transaction items of `/v1/push` (all
/// transactions minus those of OTLP exports: every span the exporters
/// send is a SERVER span, one transaction each), and OTLP spans accepted.
fn api_counts(end: &Scrape) -> (u64, u64) {
    let all = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let spans = end.sum(
        "inlet_api_otlp_items_total",
        &[("signal", "spans"), ("outcome", "accepted")],
    ) as u64;
    (all.saturating_sub(spans), spans)
}

/// Checks the readiness history: never 200 unless `auth` and `queue` were
/// both ready, and, when the scenario knows one, never 200 before
/// `no_store_until`: the instant before which no store could decide (a
/// lower bound the API cannot influence, such as MongoDB starting again).
fn check_readiness(
    fig: &mut Figure,
    watch: &ReadinessWatch,
    started: Instant,
    no_store_until: Option<Instant>,
) -> Option<Instant> {
    let probes = watch.probes();
    let bad: Vec<_> = probes
        .iter()
        .filter(|p| p.status == Some(200) && !(p.auth == Some(true) && p.queue == Some(true)))
        .collect();
    fig.check(
        "readiness was never 200 unless auth could decide and the queue was connected",
        bad.is_empty(),
        format!(
            "{} of {} probes: {:?}",
            bad.len(),
            probes.len(),
            bad.first()
        ),
    );
    if let Some(not_before) = no_store_until {
        let early: Vec<_> = probes
            .iter()
            .filter(|p| p.at < not_before && p.status == Some(200))
            .collect();
        let answered_before = probes
            .iter()
            .filter(|p| p.at < not_before && p.status.is_some())
            .count();
        fig.check(
            "readiness was never 200 before a store could decide",
            early.is_empty(),
            format!(
                "{} early 200s of {answered_before} answers before a store could decide (the first {:?} after the API started)",
                early.len(),
                early.first().map(|p| p.at - started)
            ),
        );
    }
    let first = probes.iter().find(|p| p.status == Some(200)).map(|p| p.at);
    fig.note("readiness_probes", watch.summary());
    fig.note("ready_after_start_s", first.map(|t| secs(t - started)));
    fig.check(
        "the API turned ready",
        first.is_some(),
        format!("{:?}", watch.summary()),
    );
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_incident_replay_empty_key_store() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "1",
        "Incident replay: deploy in front of an empty Redis key store",
    );
    let n_accounts = scale::count(1000.0, 50);
    let n_agents = scale::count(50.0, 5);
    let sync_delay = scale::secs(10.0, 4.0);
    let after_sync = scale::secs(20.0, 8.0);
    // A short positive cache TTL so the switch from MongoDB to Redis shows
    // in the decisions within seconds.
    let stack = Stack::new(Services::default(), &[("INLET__AUTH__POSITIVE_TTL_S", "2")]).await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    let otlp_specs = otlp_specs(&stack).await;
    let others: Vec<String> = (n_agents..n_accounts)
        .map(|i| format!("acct-{i:04}"))
        .collect();
    stack.accounts_with_keys(&others, None).await;
    let opts = FleetOptions::new("");
    let otlp_opts = ExporterOptions::new("", OTLP_APP);
    fig.load = format!(
        "{} accounts with a key each in MongoDB; {n_agents} agents × {:.0} tx/s{}; sync after {:.0} s, then {:.0} s more",
        n_accounts + otlp_specs.len(),
        opts.rate(),
        otlp_load(otlp_specs.len(), &otlp_opts),
        sync_delay.as_secs_f64(),
        after_sync.as_secs_f64()
    );
    fig.faults = "Redis empty (no marker) when the API starts taking traffic".into();

    let redis_keys = stack.redis.count_keys().await;
    fig.check(
        "Redis holds nothing (no key, no marker) before the deploy",
        redis_keys == 0,
        format!("{redis_keys} keys under the prefix"),
    );

    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;

    // The deploy: readiness is polled from the moment the process starts;
    // agents push from that moment too (through a recording proxy).
    let port = free_port();
    let watch = ReadinessWatch::start(&format!("http://127.0.0.1:{port}"));
    let lb = LoadBalancer::passthrough(([127, 0, 0, 1], port).into()).await;
    let started = Instant::now();
    let api = stack.api("api", port, &[]);
    let mut fleet = Fleet::start(
        &specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    let mut otlp = ExporterGroup::start(
        &otlp_specs,
        &ExporterOptions {
            endpoint: lb.url(),
            ..otlp_opts
        },
    );

    tokio::time::sleep(sync_delay).await;
    let before_sync = stack.metrics_now(&api).await;
    let sync_started = Instant::now();
    let mut sync = stack.sync("sync", &[]);
    stack.wait_ready(&mut sync, READY_TIMEOUT).await;
    let marker = stack.redis.hash("marker").await.unwrap_or_default();
    let synced = Instant::now();
    fig.note("sync_load_s", secs(synced - sync_started));
    fig.note("marker", &marker);
    fig.check(
        "the sync wrote the populated marker",
        marker.contains_key("generation"),
        format!("{marker:?}"),
    );
    // Let cached MongoDB answers (2 s) expire, then watch the fast path.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m1 = stack.metrics_now(&api).await;
    let window = after_sync
        .saturating_sub(Duration::from_secs(3))
        .max(Duration::from_secs(4));
    tokio::time::sleep(window).await;
    let m2 = stack.metrics_now(&api).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    otlp.shutdown().await;
    let end = stack.metrics_now(&api).await;
    let (api_items, api_spans) = api_counts(&end);

    let t = fleet.totals();
    let false_401s = t.rejections;
    // MongoDB is up all along here, so a store could decide as soon as
    // the API asked it: no instant bounds readiness from below that the
    // API does not report itself. Scenario 1b, whose MongoDB is down at
    // first, checks "never ready before a store could decide".
    let first_ready = check_readiness(&mut fig, &watch, started, None);
    let mongo_before = accepted_by(&before_sync, "mongo");
    let redis_before = accepted_by(&before_sync, "redis");
    let mongo_window = accepted_by(&m2, "mongo") - accepted_by(&m1, "mongo");
    let redis_window = accepted_by(&m2, "redis") - accepted_by(&m1, "redis");
    let cache_window = accepted_by(&m2, "cache") - accepted_by(&m1, "cache");
    fig.note(
        "decisions_before_sync",
        before_sync.describe("inlet_auth_decisions_total"),
    );
    fig.note(
        "decisions_at_end",
        end.describe("inlet_auth_decisions_total"),
    );
    fig.note(
        "fast_path_window",
        serde_json::json!({"seconds": window.as_secs_f64(), "mongo": mongo_window, "redis": redis_window, "cache": cache_window}),
    );
    fig.check(
        "before the sync, MongoDB (the fallback) decided, Redis did not",
        mongo_before > 0.0 && redis_before == 0.0,
        format!("accepted by mongo {mongo_before}, by redis {redis_before}"),
    );
    fig.check(
        "after the sync, Redis and the cache decided, MongoDB no more",
        mongo_window == 0.0 && redis_window > 0.0,
        format!("in {window:?}: mongo {mongo_window}, redis {redis_window}, cache {cache_window}"),
    );
    let served_before_ready =
        first_ready.map_or(0, |r| lb.timeline().iter().filter(|s| s.at < r).count());
    fig.note("answers_before_ready", served_before_ready);

    let otlp_stored =
        reconcile_exporters(&mut fig, &stack, &otlp, Some(api_spans), Some(&lb)).await;
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            api_items: Some(api_items),
            lb: Some(&lb),
            false_401s,
            others_stored: otlp_stored,
            ..Reconcile::default()
        },
    )
    .await;
    fig.api_items = Some(api_items + api_spans);
    fig.recovery(
        "API process start → every agent's first 202 and every OTLP exporter's first 200 (the deploy is the fault)",
        slowest(&fleet, &otlp, started),
    );
    drop((api, worker, sync));
    stack.cleanup().await;
    fig.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1b_incident_replay_mongo_unreachable_too() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "1b",
        "Incident replay, harsher: empty Redis and MongoDB unreachable at first",
    );
    let n_accounts = scale::count(1000.0, 50);
    let n_agents = scale::count(50.0, 5);
    let outage = scale::secs(10.0, 5.0);
    let after = scale::secs(20.0, 8.0);
    let mut mongo = blocking(|| SecantusServer::start(SecantusStorage::Disk));
    let stack = Stack::new(
        Services {
            mongo: Some(mongo.url()),
            ..Services::default()
        },
        &[("INLET__AUTH__POSITIVE_TTL_S", "2")],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    let otlp_specs = otlp_specs(&stack).await;
    let others: Vec<String> = (n_agents..n_accounts)
        .map(|i| format!("acct-{i:04}"))
        .collect();
    stack.accounts_with_keys(&others, None).await;
    let opts = FleetOptions::new("");
    let otlp_opts = ExporterOptions::new("", OTLP_APP);
    fig.load = format!(
        "{} accounts with a key each; {n_agents} agents × {:.0} tx/s{}; {:.0} s outage, then {:.0} s more",
        n_accounts + otlp_specs.len(),
        opts.rate(),
        otlp_load(otlp_specs.len(), &otlp_opts),
        outage.as_secs_f64(),
        after.as_secs_f64()
    );
    fig.faults = format!(
        "Redis empty and MongoDB (private SecantusDB) down for the first {:.0} s of the deploy; sync, worker and API all start during the outage",
        outage.as_secs_f64()
    );
    let redis_keys = stack.redis.count_keys().await;
    fig.check(
        "Redis holds nothing before the deploy",
        redis_keys == 0,
        format!("{redis_keys} keys"),
    );

    // MongoDB goes away; everything starts without it.
    blocking(|| mongo.stop());
    let port = free_port();
    let watch = ReadinessWatch::start(&format!("http://127.0.0.1:{port}"));
    let lb = LoadBalancer::passthrough(([127, 0, 0, 1], port).into()).await;
    let started = Instant::now();
    let mut api = stack.api("api", port, &[]);
    let mut worker = stack.worker("worker", &[]);
    let mut sync = stack.sync("sync", &[]);
    let mut fleet = Fleet::start(
        &specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    let mut otlp = ExporterGroup::start(
        &otlp_specs,
        &ExporterOptions {
            endpoint: lb.url(),
            ..otlp_opts
        },
    );
    tokio::time::sleep(outage).await;
    let during = stack.metrics_now(&api).await;
    let accepted_during = fleet.accepted();
    // No store can decide before MongoDB starts again (Redis is empty):
    // the lower bound for readiness is when the restart begins, before
    // the server can answer anything.
    let restarting = Instant::now();
    let back = {
        blocking(|| mongo.restart());
        Instant::now()
    };
    let ready = stack.wait_ready(&mut api, READY_TIMEOUT).await;
    stack.wait_ready(&mut sync, READY_TIMEOUT).await;
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let worker_ready = Instant::now();
    fig.note("mongo_back_to_api_ready_s", secs(ready - back));
    fig.note("mongo_back_to_worker_ready_s", secs(worker_ready - back));
    tokio::time::sleep(after).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    otlp.shutdown().await;
    let end = stack.metrics_now(&api).await;
    let (api_items, api_spans) = api_counts(&end);
    let t = fleet.totals();
    check_readiness(&mut fig, &watch, started, Some(restarting));

    let provisional = during.sum(
        "inlet_auth_decisions_total",
        &[("verdict", "accepted_provisional")],
    );
    let wire_202_during = lb
        .timeline()
        .iter()
        .filter(|s| s.at < back && s.status == 202)
        .count();
    fig.note(
        "decisions_during_outage",
        during.describe("inlet_auth_decisions_total"),
    );
    let (sum, count) = (
        during.sum(
            "inlet_api_request_duration_seconds_sum",
            &[("route", "/v1/push")],
        ),
        during.sum(
            "inlet_api_request_duration_seconds_count",
            &[("route", "/v1/push")],
        ),
    );
    fig.note(
        "mean_push_latency_during_outage_ms",
        (count > 0.0).then(|| (sum / count * 1000.0).round()),
    );
    fig.note("accepted_items_during_outage", accepted_during);
    fig.note("wire_202_during_outage", wire_202_during);
    fig.check(
        "signed keys were accepted provisionally while no store could decide",
        provisional > 0.0 && wire_202_during > 0,
        format!("provisional decisions {provisional}, 202s on the wire {wire_202_during}"),
    );

    let otlp_stored =
        reconcile_exporters(&mut fig, &stack, &otlp, Some(api_spans), Some(&lb)).await;
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            api_items: Some(api_items),
            lb: Some(&lb),
            false_401s: t.rejections,
            others_stored: otlp_stored,
            ..Reconcile::default()
        },
    )
    .await;
    fig.api_items = Some(api_items + api_spans);
    let w = stack.metrics_now(&worker).await;
    let dropped_provisional = w.sum(
        "inlet_worker_messages_total",
        &[("outcome", "dropped_provisional")],
    );
    let dead = w.sum("inlet_worker_dead_letters_total", &[]);
    fig.note("worker_messages", w.describe("inlet_worker_messages_total"));
    fig.check(
        "the worker re-checked provisional pushes and dropped none, dead-lettered none",
        dropped_provisional == 0.0 && dead == 0.0,
        format!("dropped_provisional {dropped_provisional}, dead letters {dead}"),
    );
    fig.recovery("MongoDB back → API readiness 200", Some(ready - back));
    drop((api, worker, sync));
    stack.cleanup().await;
    drop(mongo);
    fig.finish();
}

/// The longest time from `t` to the first acceptance of any agent or
/// exporter (`None` if one had none).
fn slowest(fleet: &Fleet, otlp: &ExporterGroup, t: Instant) -> Option<Duration> {
    Some(
        fleet
            .slowest_first_accept_after(t)?
            .max(otlp.slowest_first_accept_after(t)?),
    )
}
