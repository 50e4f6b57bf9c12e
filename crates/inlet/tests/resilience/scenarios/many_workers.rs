//! Scenario 16: 1, 2 and 4 `inlet worker` processes consuming one queue,
//! with one of them SIGKILLed mid-batch when there are several. Every
//! phase must store exactly what the agents were told was accepted, as
//! one worker does; the write conflicts between the workers (their
//! batches fold the same agents' buckets) are counted, with each
//! phase's drain time. A worker killed inside a transaction leaves it
//! open on the server, holding its buckets, until the transaction
//! lifetime ends (60 s by default, MongoDB's and SecantusDB's): the
//! surviving workers' writes to those buckets wait it out (conflict
//! retries, then the delay queue), so a phase with a kill drains up to a
//! minute later, and still exactly.

use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, free_port, wait_for};

use super::{Reconcile, agent_specs, in_hand, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s16_n_workers_on_one_queue_store_exact_totals() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "16",
        "1, 2 and 4 worker processes on one queue, one SIGKILLed mid-batch",
    );
    let n_agents = scale::count(10.0, 4);
    let run = scale::secs(20.0, 4.0);
    let opts = FleetOptions {
        flush_interval: Duration::from_millis(100),
        ..FleetOptions::new("")
    };
    fig.load = format!(
        "per phase: {n_agents} agents × {:.0} tx/s, a batch every 100 ms each, for {run:?}; phases with 1, 2 and 4 workers",
        opts.rate()
    );
    fig.faults = "with 2 and 4 workers, one worker SIGKILLed mid-batch (deliveries in hand) and not restarted".into();
    let mut phases = Vec::new();
    let mut longest_drain = Duration::ZERO;
    let mut api_total = 0;
    for n in [1usize, 2, 4] {
        let stack = Stack::new(Services::default(), &[]).await;
        stack.migrate().await;
        let specs = agent_specs(&stack, &format!("w{n}"), n_agents).await;
        stack.ok(&["sync", "--once"]).await;
        let mut api = stack.api("api", free_port(), &[]);
        stack.wait_ready(&mut api, READY_TIMEOUT).await;
        let mut workers = Vec::new();
        for i in 0..n {
            let mut w = stack.worker(&format!("worker-{n}-{i}"), &[]);
            stack.wait_ready(&mut w, READY_TIMEOUT).await;
            workers.push(w);
        }
        let lb = LoadBalancer::passthrough(api.addr()).await;
        let mut fleet = Fleet::start(
            &specs,
            &FleetOptions {
                endpoint: lb.url(),
                ..opts.clone()
            },
        );
        tokio::time::sleep(run / 2).await;
        let mut killed = None;
        if n > 1 {
            let deadline = Instant::now() + Duration::from_secs(10);
            let held = loop {
                let held = in_hand(&stack.metrics_now(&workers[0]).await);
                if held > 0.0 || Instant::now() > deadline {
                    break held;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let mut victim = workers.remove(0);
            let retries = stack
                .metrics_now(&victim)
                .await
                .sum("inlet_worker_transaction_retries_total", &[]);
            victim.sigkill().await;
            killed = Some((held, retries));
        }
        tokio::time::sleep(run / 2).await;
        let stopped = Instant::now();
        fleet.shutdown(Duration::from_secs(60)).await;
        let accounts = fleet.accounts();
        let accepted = fleet.accepted();
        let drained = wait_for(Duration::from_secs(300), "the workers to drain", || async {
            (stack.stored(&accounts).await.count >= accepted).then(Instant::now)
        })
        .await;
        longest_drain = longest_drain.max(drained - stopped);
        let t = fleet.totals();
        let end = stack.metrics_now(&api).await;
        let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
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
        api_total += api_items;
        let mut retries = killed.map_or(0.0, |(_, r)| r);
        let mut processed = Vec::new();
        let mut dead = 0.0;
        for w in &workers {
            let m = stack.metrics_now(w).await;
            retries += m.sum("inlet_worker_transaction_retries_total", &[]);
            dead += m.sum("inlet_worker_dead_letters_total", &[]);
            processed.push(m.sum("inlet_worker_messages_total", &[("outcome", "processed")]));
        }
        if let Some((held, _)) = killed {
            fig.check(
                &format!("{n} workers: the killed worker had deliveries in hand"),
                held > 0.0,
                format!("{held} in hand"),
            );
        }
        fig.check(
            &format!("{n} workers: nothing was dead-lettered"),
            dead == 0.0,
            format!("{dead}"),
        );
        fig.check(
            &format!("{n} workers: every surviving worker processed messages"),
            processed.iter().all(|p| *p > 0.0),
            format!("{processed:?}"),
        );
        phases.push(serde_json::json!({
            "workers": n,
            "accepted": accepted,
            "killed_in_hand": killed.map(|(h, _)| h),
            "transaction_retries": retries,
            "processed_by_surviving_workers": processed,
            "stop_to_drained_s": secs(drained - stopped),
        }));
        drop((api, workers));
        stack.cleanup().await;
    }
    // Each reconcile sets the figure's API count to its phase's.
    fig.api_items = Some(api_total);
    fig.note("phases", &phases);
    fig.recovery(
        "agents stopped → everything accepted stored (slowest phase)",
        Some(longest_drain),
    );
    fig.finish();
}
