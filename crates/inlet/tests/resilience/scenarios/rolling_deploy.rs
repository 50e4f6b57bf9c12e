//! Scenario 2: a rolling deploy. Two API instances behind a
//! health-checking load balancer; each is restarted in turn under load
//! (SIGTERM, wait for exit, a new process on the same port, wait ready),
//! the way `docs/deploy.md` prescribes.

use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, free_port, wait_until};

use super::{Reconcile, agent_specs, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{Proc, READY_TIMEOUT, Services, Stack};

/// The API's shutdown delay here: long enough for the balancer (100 ms
/// checks) to stop routing new connections before the listener closes.
pub const SHUTDOWN_DELAY_MS: u64 = 1000;

/// Accepted transaction items in a scrape of the API.
pub fn items(m: &crate::metrics::Scrape) -> u64 {
    m.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64
}

/// Follows an instance that was sent SIGTERM until it exits. Returns its
/// lifetime count of accepted transaction items and its exit status. The
/// count is the one the API logs with "shutdown complete" (read after its
/// last request finished); when that line is missing (a crash), the last
/// admin `/metrics` read stands in, which can miss the final requests.
pub async fn drain_counting(
    stack: &Stack,
    p: &mut Proc,
) -> (Option<u64>, std::process::ExitStatus) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    loop {
        if let Some(status) = p.exited() {
            return (final_count(p).or(last), status);
        }
        if let Some(m) = stack.metrics(p).await {
            last = Some(items(&m));
        }
        assert!(
            Instant::now() < deadline,
            "{} did not exit within 90 s of SIGTERM; log:\n{}",
            p.name,
            p.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `accepted_transactions` of the API's "shutdown complete" log line.
fn final_count(p: &Proc) -> Option<u64> {
    const FIELD: &str = "accepted_transactions";
    let tail = strip_ansi(&p.log_tail(20));
    if !tail.contains("shutdown complete") {
        return None;
    }
    let rest = &tail[tail.rfind(FIELD)? + FIELD.len()..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let digits: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One instance's restart ([`restart_instance`]).
pub struct Restart {
    /// Its timings, for the figure.
    pub timings: serde_json::Value,
    /// The old process exited with status 0.
    pub clean_exit: bool,
    /// The balancer stopped routing to it within the shutdown delay.
    pub unroutable_in_time: bool,
    /// The old process's lifetime count of accepted transaction items
    /// ([`drain_counting`]).
    pub items: Option<u64>,
}

/// Restarts API instance `i` behind `lb` the way `docs/deploy.md`
/// prescribes: SIGTERM, the balancer stops routing to it, it drains and
/// exits, then a new process (`name`, with the stack's environment as it
/// is now) on the same port becomes ready and routable again.
pub async fn restart_instance(
    stack: &Stack,
    lb: &LoadBalancer,
    apis: &mut [Proc],
    i: usize,
    name: &str,
    shutdown_delay: Duration,
) -> Restart {
    let port = apis[i].port;
    let term = Instant::now();
    apis[i].sigterm();
    wait_until(
        Duration::from_secs(5),
        "the balancer to stop routing to the stopping instance",
        || async { !lb.is_routable(i) },
    )
    .await;
    let unroutable = Instant::now();
    let (items, status) = drain_counting(stack, &mut apis[i]).await;
    let exited = Instant::now();
    let mut p = stack.api_with_admin(name, port, &[]);
    let ready = stack.wait_ready(&mut p, READY_TIMEOUT).await;
    apis[i] = p;
    wait_until(
        Duration::from_secs(10),
        "the new instance routable",
        || async { lb.is_routable(i) },
    )
    .await;
    let routable = Instant::now();
    Restart {
        timings: serde_json::json!({
            "instance": i,
            "term_to_unroutable_s": secs(unroutable - term),
            "term_to_exit_s": secs(exited - term),
            "start_to_ready_s": secs(ready - exited),
            "term_to_routable_s": secs(routable - term),
            "exit": status.code(),
        }),
        clean_exit: status.success(),
        unroutable_in_time: unroutable - term < shutdown_delay,
        items,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_rolling_deploy() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "2",
        "Rolling deploy: two API instances restarted in turn behind a health-checking load balancer",
    );
    let n_agents = scale::count(50.0, 6);
    let rounds = scale::count(2.0, 1);
    let warmup = scale::secs(10.0, 3.0);
    let settle = scale::secs(10.0, 3.0);
    let delay = SHUTDOWN_DELAY_MS.to_string();
    let stack = Stack::new(
        Services::default(),
        &[("INLET__API__SHUTDOWN_DELAY_MS", delay.as_str())],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    stack.ok(&["sync", "--once"]).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_agents} agents × {:.0} tx/s through the load balancer; {rounds} round(s) of restarts, {:.0} s apart",
        opts.rate(),
        settle.as_secs_f64()
    );
    fig.faults = format!(
        "each of 2 instances restarted in turn, {rounds} time(s): SIGTERM (shutdown delay {SHUTDOWN_DELAY_MS} ms), exit, new process on the same port, ready"
    );

    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let ports = [free_port(), free_port()];
    let mut apis = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut p = stack.api_with_admin(&format!("api{i}-v0"), *port, &[]);
        stack.wait_ready(&mut p, READY_TIMEOUT).await;
        apis.push(p);
    }
    let lb = LoadBalancer::health_checked(&[apis[0].addr(), apis[1].addr()]).await;
    wait_until(
        Duration::from_secs(10),
        "both instances routable",
        || async { lb.is_routable(0) && lb.is_routable(1) },
    )
    .await;
    let mut fleet = Fleet::start(
        &specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    tokio::time::sleep(warmup).await;

    let mut api_items: Option<u64> = Some(0);
    let mut restarts = Vec::new();
    let mut all_exits_clean = true;
    let mut unroutable_in_time = true;
    for round in 1..=rounds {
        for i in 0..2 {
            let r = restart_instance(
                &stack,
                &lb,
                &mut apis,
                i,
                &format!("api{i}-v{round}"),
                Duration::from_millis(SHUTDOWN_DELAY_MS),
            )
            .await;
            all_exits_clean &= r.clean_exit;
            unroutable_in_time &= r.unroutable_in_time;
            api_items = api_items.zip(r.items).map(|(a, b)| a + b);
            let mut timings = r.timings;
            timings["round"] = round.into();
            restarts.push(timings);
            tokio::time::sleep(settle).await;
        }
    }

    fleet.shutdown(Duration::from_secs(60)).await;
    for p in &apis {
        let n = items(&stack.metrics_now(p).await);
        api_items = api_items.map(|a| a + n);
    }
    let t = fleet.totals();
    fig.note("restarts", &restarts);
    fig.note(
        "connections_per_instance",
        [lb.connections(0), lb.connections(1)],
    );
    let summary = serde_json::to_string(&restarts).unwrap_or_default();
    fig.check(
        "every instance exited cleanly on SIGTERM",
        all_exits_clean,
        summary.clone(),
    );
    fig.check(
        "the balancer stopped routing to a stopping instance within its shutdown delay",
        unroutable_in_time,
        summary,
    );
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            api_items,
            lb: Some(&lb),
            false_401s: t.rejections,
            ..Reconcile::default()
        },
    )
    .await;
    fig.recovery(
        "longest time an agent went from a failed attempt to its next 202",
        Some(fleet.longest_stall()),
    );
    drop((apis, worker));
    stack.cleanup().await;
    fig.finish();
}
