//! Scenario 5: MongoDB down under load (a private SecantusDB on disk,
//! SIGKILLed and restarted). Pushes keep being accepted on the strength of
//! the Redis copy of the keys (loaded by the sync beforehand); the worker
//! pauses, then catches up; nothing is lost or dead-lettered.

use std::time::{Duration, Instant};

use inlet_testkit::{SecantusServer, SecantusStorage, wait_for};

use super::{Reconcile, SingleApi, agent_specs, reconcile, start_single_api};
use crate::agents::FleetOptions;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack, blocking};

fn processed(m: &crate::metrics::Scrape) -> f64 {
    m.sum("inlet_worker_messages_total", &[("outcome", "processed")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_mongodb_down() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("5", "MongoDB down under load");
    let n_agents = scale::count(50.0, 5);
    let warmup = scale::secs(10.0, 3.0);
    let down = scale::secs(20.0, 6.0);
    let settle = scale::secs(10.0, 3.0);
    let mut mongo = blocking(|| SecantusServer::start(SecantusStorage::Disk));
    let stack = Stack::new(
        Services {
            mongo: Some(mongo.url()),
            ..Services::default()
        },
        &[],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    let opts = FleetOptions::new("");
    fig.load = format!("{n_agents} agents × {:.0} tx/s", opts.rate());
    fig.faults = format!(
        "private SecantusDB (disk, sync on commit) SIGKILLed, down {:.0} s, restarted on the same data",
        down.as_secs_f64()
    );

    let SingleApi {
        sync,
        mut worker,
        api,
        lb,
        mut fleet,
    } = start_single_api(&stack, &specs, opts, true).await;
    let sync = sync.expect("started with a sync");
    tokio::time::sleep(warmup).await;

    let killed = Instant::now();
    blocking(|| mongo.stop());
    // Whether the worker paused is this scenario's check: watched for
    // while MongoDB is down (and only then), not waited for.
    let mut paused = None;
    let mut api_ready_during = true;
    let mut marker_during = true;
    while killed.elapsed() < down {
        if paused.is_none()
            && let Some(m) = stack.metrics(&worker).await
        {
            let gauge = m.sum("inlet_worker_paused", &[]) > 0.0;
            let not_ready = stack.ready_status(&worker).await != Some(200);
            if gauge || not_ready {
                paused = Some(Instant::now());
            }
        }
        api_ready_during &= stack.ready_status(&api).await == Some(200);
        marker_during &= stack
            .redis
            .hash("marker")
            .await
            .is_ok_and(|m| m.contains_key("generation"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let w_down = stack.metrics_now(&worker).await;
    let processed_down = processed(&w_down);
    blocking(|| mongo.restart());
    let up = Instant::now();
    let resumed = wait_for(
        Duration::from_secs(120),
        "the worker to store again",
        || async {
            let m = stack.metrics(&worker).await?;
            (processed(&m) > processed_down).then(Instant::now)
        },
    )
    .await;
    let worker_ready = stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    tokio::time::sleep(settle).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let t = fleet.totals();
    let timeline = lb.timeline();
    let wire_202_down = timeline
        .iter()
        .filter(|s| s.at >= killed && s.at < up && s.status == 202)
        .count();
    let wire_5xx_down = timeline
        .iter()
        .filter(|s| s.at >= killed && s.at < up && s.status >= 500)
        .count();
    fig.note("kill_to_worker_paused_s", paused.map(|p| secs(p - killed)));
    fig.note("mongo_back_to_first_store_s", secs(resumed - up));
    fig.note("mongo_back_to_worker_ready_s", secs(worker_ready - up));
    fig.note("wire_202_while_down", wire_202_down);
    fig.note("wire_5xx_while_down", wire_5xx_down);
    fig.note(
        "worker_paused_gauge_while_down",
        w_down.sum("inlet_worker_paused", &[]),
    );
    fig.check(
        "pushes were accepted while MongoDB was down",
        wire_202_down > 0,
        format!("{wire_202_down} 202s, {wire_5xx_down} 5xx while down"),
    );
    fig.check(
        "the API stayed ready (Redis can decide) and the Redis copy stayed populated",
        api_ready_during && marker_during,
        format!("API ready throughout: {api_ready_during}; marker throughout: {marker_during}"),
    );
    fig.check(
        "the worker paused while MongoDB was down",
        paused.is_some_and(|p| p < up),
        format!(
            "paused {:?} after the kill; MongoDB down for {:?}",
            paused.map(|p| p - killed),
            up - killed
        ),
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
    let dlq = stack.queue_depths().await.map(|(_, d)| d);
    fig.note("worker_messages", w.describe("inlet_worker_messages_total"));
    fig.check(
        "nothing was dead-lettered",
        dead == 0.0 && dlq == Some(0),
        format!("worker dead letters {dead}, dead-letter queue {dlq:?}"),
    );
    fig.recovery(
        "MongoDB back → the worker's first stored message after it",
        Some(resumed - up),
    );
    drop((api, worker, sync));
    stack.cleanup().await;
    drop(mongo);
    fig.finish();
}
