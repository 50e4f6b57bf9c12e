//! Scenario 4: RabbitMQ restarted under load (a private node, stopped and
//! started again on the same ports and directories). While it is down the
//! API answers 503 (never 202: nothing is acknowledged that the broker did
//! not confirm); the publisher reconnects by itself; nothing is lost.

use std::time::{Duration, Instant};

use inlet_testkit::{RabbitNode, wait_for};

use super::{Reconcile, SingleApi, agent_specs, reconcile, start_single_api};
use crate::agents::FleetOptions;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack, blocking};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_rabbitmq_restarted() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("4", "RabbitMQ restarted under load");
    let n_agents = scale::count(50.0, 5);
    let warmup = scale::secs(10.0, 3.0);
    let down = scale::secs(10.0, 4.0);
    let settle = scale::secs(10.0, 3.0);
    let mut node = blocking(RabbitNode::start);
    let stack = Stack::new(
        Services {
            amqp: Some(node.url()),
            ..Services::default()
        },
        &[],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    stack.ok(&["sync", "--once"]).await;
    let opts = FleetOptions::new("");
    fig.load = format!("{n_agents} agents × {:.0} tx/s", opts.rate());
    fig.faults = format!(
        "private RabbitMQ node stopped (rabbitmqctl stop), down {:.0} s, started again on the same ports and data directory",
        down.as_secs_f64()
    );

    let SingleApi {
        worker,
        mut api,
        lb,
        mut fleet,
        ..
    } = start_single_api(&stack, &specs, opts, false).await;
    tokio::time::sleep(warmup).await;

    let stopping = Instant::now();
    blocking(|| node.stop());
    let stopped = Instant::now();
    let not_ready = wait_for(
        Duration::from_secs(30),
        "the API to report not ready",
        || async { (stack.ready_status(&api).await != Some(200)).then(Instant::now) },
    )
    .await;
    tokio::time::sleep(down.saturating_sub(stopped - stopping)).await;
    let m_down = stack.metrics_now(&api).await;
    // The node accepts connections part-way through `start_again` (which
    // returns once the broker has fully booted): the outage ends when the
    // start begins, as far as "no 202 while down" is concerned.
    let starting = Instant::now();
    blocking(|| node.start_again());
    let up = Instant::now();
    fig.note("start_command_s", secs(up - starting));
    // Whether the publisher came back is this scenario's check, not a
    // precondition: wait for it with a deadline, and record what happened.
    let ready_again = stack.ready_within(&mut api, READY_TIMEOUT).await;
    let every_agent_again = fleet.all_accepted_within(up, Duration::from_secs(60)).await;
    let ready = ready_again.unwrap_or_else(Instant::now);
    let first_202 = lb.first_after(up, |s| s == 202).map(|s| s.at);
    let all_back = fleet.slowest_first_accept_after(up);
    tokio::time::sleep(settle).await;
    let worker_ready = stack.ready_status(&worker).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let t = fleet.totals();
    let wire = lb.responses();
    let outage_503 = lb
        .timeline()
        .iter()
        .filter(|s| s.at >= stopping && s.at < ready && s.status == 503)
        .count();
    // `stopped` is when `rabbitmqctl stop` returned: the node is gone, so
    // every confirm was sent before it. A 202 for such a confirm can still
    // pass the balancer a little later (it timestamps a response when its
    // head goes through, and the machine is saturated by the load): those
    // within LATE_SLACK are counted but are not a violation. A 202 later
    // than that, while the broker is down, would be one.
    const LATE_SLACK: Duration = Duration::from_millis(500);
    let late_202: Vec<Duration> = lb
        .timeline()
        .iter()
        .filter(|s| s.at >= stopped && s.at < starting && s.status == 202)
        .map(|s| s.at - stopped)
        .collect();
    let outage_202 = late_202.iter().filter(|d| **d >= LATE_SLACK).count();
    fig.note("202s_passing_the_balancer_after_the_stop", late_202.len());
    fig.note(
        "latest_of_those_after_the_stop_s",
        late_202.iter().max().map(|d| secs(*d)),
    );
    fig.note("stop_s", secs(stopped - stopping));
    fig.note(
        "stop_to_not_ready_s",
        secs(not_ready.saturating_duration_since(stopping)),
    );
    fig.note("broker_up_to_api_ready_s", secs(ready - up));
    fig.note("broker_up_to_first_202_s", first_202.map(|f| secs(f - up)));
    fig.note("broker_up_to_every_agent_202_s", all_back.map(secs));
    fig.note("wire_503_during_outage", outage_503);
    fig.note(
        "publish_outcomes_while_down",
        m_down.describe("inlet_queue_publish_total"),
    );
    fig.note(
        "publish_outcomes_at_end",
        end.describe("inlet_queue_publish_total"),
    );
    fig.note(
        "publisher_reconnects",
        end.sum("inlet_queue_reconnects_total", &[]),
    );
    fig.check(
        "the API answered 503 while the broker was down",
        outage_503 > 0 && wire.statuses(500..=599) == wire.status(503),
        format!(
            "{outage_503} 503s during the outage; 5xx by status {:?}",
            wire.by_status
        ),
    );
    fig.check(
        "no 202 while the broker was down (202 means confirmed)",
        outage_202 == 0,
        format!(
            "{outage_202} 202s later than {LATE_SLACK:?} after the stop and before the start ({} in all in that window)",
            late_202.len()
        ),
    );
    fig.check(
        "the publisher reconnected: readiness back, every agent accepted again",
        ready_again.is_some() && every_agent_again && all_back.is_some(),
        format!(
            "ready after {:?} (None: not within {READY_TIMEOUT:?}); every agent accepted within 60 s of the start: {every_agent_again}; slowest agent's first 202 after {all_back:?}",
            ready_again.map(|r| r - up)
        ),
    );
    fig.check(
        "the worker reconnected",
        worker_ready == Some(200),
        format!("{worker_ready:?}"),
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
    fig.note("worker_messages", w.describe("inlet_worker_messages_total"));
    fig.recovery(
        "broker started again → every agent's first 202 after it",
        all_back,
    );
    drop((api, worker));
    stack.cleanup().await;
    drop(node);
    fig.finish();
}
