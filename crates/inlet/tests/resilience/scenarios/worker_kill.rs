//! Scenario 6: the worker SIGKILLed repeatedly while data flows, each
//! time with deliveries in hand (received, not yet acked), and restarted.
//! Transactions plus applied markers keyed by `batch_id` must make the
//! totals exact: no double count, no loss.

use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, free_port, wait_for};
use rand::Rng as _;

use super::{Reconcile, agent_specs, in_hand, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::metrics::Scrape;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack};

fn processed(m: &Scrape) -> f64 {
    m.sum("inlet_worker_messages_total", &[("outcome", "processed")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_worker_sigkilled_mid_batch() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("6", "Worker SIGKILLed repeatedly mid-batch");
    // Sized for what one worker (a debug build, against SecantusDB) keeps
    // up with: ~10 messages/s per agent. The point is kills mid-batch with
    // a steady stream, not throughput (fifty agents here would queue
    // faster than the worker drains, and the run would measure backlog).
    let n_agents = scale::count(10.0, 8);
    let kills = scale::count(5.0, 2);
    let warmup = scale::secs(10.0, 3.0);
    let settle = scale::secs(10.0, 3.0);
    let stack = Stack::new(Services::default(), &[]).await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    stack.ok(&["sync", "--once"]).await;
    // Batches every 100 ms: ~10 messages/s per agent keep the worker busy.
    let opts = FleetOptions {
        flush_interval: Duration::from_millis(100),
        ..FleetOptions::new("")
    };
    fig.load = format!(
        "{n_agents} agents × {:.0} tx/s, a batch every 100 ms each",
        opts.rate()
    );
    fig.faults = format!(
        "worker SIGKILLed {kills} times at random moments, each with deliveries in hand, restarted at once"
    );

    let port = free_port();
    let mut api = stack.api("api", port, &[]);
    stack.wait_ready(&mut api, READY_TIMEOUT).await;
    let mut worker = stack.worker("worker-0", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let lb = LoadBalancer::passthrough(api.addr()).await;
    let mut fleet = Fleet::start(
        &specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    tokio::time::sleep(warmup).await;

    let mut rounds = Vec::new();
    let mut longest = Duration::ZERO;
    let mut mid_batch = 0;
    let mut retried_total = 0.0;
    let mut last_restart = (Instant::now(), 0);
    for k in 1..=kills {
        // Data flows through this instance…
        wait_for(Duration::from_secs(60), "the worker to process", || async {
            let m = stack.metrics(&worker).await?;
            (processed(&m) > 0.0).then_some(())
        })
        .await;
        // …at a random moment, with deliveries in hand: kill it.
        let pause = rand::rng().random_range(200..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let (held, last) = loop {
            let m = stack.metrics_now(&worker).await;
            let held = in_hand(&m);
            if held > 0.0 || Instant::now() > deadline {
                break (held, m);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        retried_total += last.sum("inlet_worker_messages_total", &[("outcome", "retried")]);
        worker.sigkill().await;
        let killed = Instant::now();
        if held > 0.0 {
            mid_batch += 1;
        }
        let mut next = stack.worker(&format!("worker-{k}"), &[]);
        let started = Instant::now();
        last_restart = (started, fleet.accepted());
        let first = wait_for(
            Duration::from_secs(120),
            "the new worker to process",
            || async {
                let m = stack.metrics(&next).await?;
                (processed(&m) > 0.0).then(Instant::now)
            },
        )
        .await;
        stack.wait_ready(&mut next, READY_TIMEOUT).await;
        longest = longest.max(first - started);
        rounds.push(serde_json::json!({
            "kill": k,
            "in_hand_at_kill": held,
            "restart_to_first_processed_s": secs(first - started),
            "kill_to_first_processed_s": secs(first - killed),
        }));
        worker = next;
    }
    // Everything accepted before the last restart stored: the worker has
    // caught up.
    let accounts = fleet.accounts();
    let caught_up = wait_for(
        Duration::from_secs(300),
        "the worker to catch up",
        || async { (stack.stored(&accounts).await.count >= last_restart.1).then(Instant::now) },
    )
    .await;
    let catch_up = caught_up - last_restart.0;
    tokio::time::sleep(settle).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let t = fleet.totals();
    fig.note("kills", &rounds);
    fig.check(
        "every kill hit a worker with deliveries in hand",
        mid_batch == kills,
        format!("{mid_batch} of {kills}"),
    );
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            api_items: Some(api_items),
            lb: Some(&lb),
            false_401s: t.rejections,
            ..Reconcile::default()
        },
    )
    .await;
    let w = stack.metrics_now(&worker).await;
    let dead = w.sum("inlet_worker_dead_letters_total", &[]);
    retried_total += w.sum("inlet_worker_messages_total", &[("outcome", "retried")]);
    fig.note(
        "last_worker_messages",
        w.describe("inlet_worker_messages_total"),
    );
    fig.note("messages_sent_to_the_delay_queue", retried_total);
    fig.note("last_restart_to_caught_up_s", secs(catch_up));
    fig.note("longest_restart_to_first_processed_s", secs(longest));
    fig.check(
        "nothing was dead-lettered (by the last worker)",
        dead == 0.0,
        format!("{dead}"),
    );
    fig.recovery(
        "last worker restart → everything accepted before it stored (caught up)",
        Some(catch_up),
    );
    drop((api, worker));
    stack.cleanup().await;
    fig.finish();
}
