//! Scenario 17: a 3-node RabbitMQ cluster (private nodes joined with
//! `rabbitmqctl join_cluster`) under two API instances and two workers,
//! each given every node (`queue.url` and `queue.failover_urls`, starting
//! at different nodes so every node holds connections). Under load, the
//! node that leads the push queue is SIGKILLed and not started again: the
//! quorum queue elects a new leader among the two left, the clients that
//! were on the dead node move to the next URL, and every push an agent
//! was told was accepted is stored exactly once.

use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, RabbitCluster, free_port};

use super::{Reconcile, agent_specs, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{Proc, READY_TIMEOUT, Services, Stack, blocking};

/// The promise: a client on the lost node is connected to a live one
/// within this.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// The environment that points a process at every node, starting at
/// node `first`.
fn nodes_from(cluster: &RabbitCluster, first: usize) -> Vec<(&'static str, String)> {
    let urls = cluster.urls_from(first);
    vec![
        ("INLET__QUEUE__URL", urls[0].clone()),
        ("INLET__QUEUE__FAILOVER_URLS", urls[1..].join(",")),
    ]
}

/// A process's broker connections: (how many are up, reconnects so far).
async fn connections(stack: &Stack, p: &Proc) -> Option<(f64, f64)> {
    let m = stack.metrics(p).await?;
    Some((
        m.sum("inlet_queue_connection_up", &[]),
        m.sum("inlet_queue_reconnects_total", &[]),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s17_rabbitmq_cluster_loses_the_queue_leader() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "17",
        "3-node RabbitMQ cluster loses the node leading the push queue",
    );
    let n_agents = scale::count(20.0, 4);
    let before = scale::secs(15.0, 4.0);
    let after = scale::secs(15.0, 4.0);
    let mut cluster = blocking(|| RabbitCluster::start(3));
    let mut stack = Stack::new(
        Services {
            amqp: Some(cluster.nodes()[0].url()),
            ..Services::default()
        },
        &[],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "cluster", n_agents).await;
    stack.ok(&["sync", "--once"]).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_agents} agents × {:.0} tx/s through 2 API instances, 2 workers, {before:?} before and {after:?} after the kill",
        opts.rate()
    );

    // api0 and worker1 start at node 0, api1 at node 1, worker0 at node 2:
    // whichever node leads, some clients are on it.
    let mut apis = Vec::new();
    for (i, first) in [(0, 0), (1, 1)] {
        let mut p = stack.api(
            &format!("api{i}"),
            free_port(),
            &nodes_from(&cluster, first),
        );
        stack.wait_ready(&mut p, READY_TIMEOUT).await;
        apis.push((p, first));
    }
    let mut workers = Vec::new();
    for (i, first) in [(0, 2), (1, 0)] {
        let mut w = stack.worker(&format!("worker{i}"), &nodes_from(&cluster, first));
        stack.wait_ready(&mut w, READY_TIMEOUT).await;
        workers.push((w, first));
    }
    let lb = LoadBalancer::health_checked(&[apis[0].0.addr(), apis[1].0.addr()]).await;
    inlet_testkit::wait_until(
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
    tokio::time::sleep(before).await;

    let queue = stack.names().queue;
    let leader = blocking(|| cluster.leader_of(&queue)).expect("the push queue has a leader");
    let procs: Vec<(&Proc, usize)> = apis
        .iter()
        .chain(workers.iter())
        .map(|(p, first)| (p, *first))
        .collect();
    let mut on_leader = Vec::new();
    for (p, first) in &procs {
        if *first == leader {
            let (up, reconnects) = connections(&stack, p).await.expect("metrics");
            assert!(up >= 1.0, "{} connected before the kill", p.name);
            on_leader.push((*p, up, reconnects));
        }
    }
    let killed = Instant::now();
    blocking(|| cluster.node_mut(leader).kill());
    let kill_s = killed.elapsed();
    // Everything that asks the broker from the test goes to a survivor now.
    stack.amqp.url = cluster.nodes()[(leader + 1) % 3].url();

    // Each client of the dead node: lost, then up again on another node
    // (`None`: not within 30 s).
    let mut failovers = Vec::new();
    for (p, up, reconnects) in &on_leader {
        let deadline = killed + Duration::from_secs(30);
        let back = loop {
            match connections(&stack, p).await {
                Some((u, r)) if u >= *up && r > *reconnects => break Some(killed.elapsed()),
                _ if Instant::now() > deadline => break None,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        failovers.push((p.name.clone(), back.map(secs)));
    }
    let slowest = failovers
        .iter()
        .map(|(_, s)| s.unwrap_or(f64::INFINITY))
        .fold(0.0_f64, f64::max);
    let new_leader = blocking(|| cluster.leader_of(&queue));
    tokio::time::sleep(after).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    let mut api_items = 0;
    for (api, _) in &apis {
        let end = stack.metrics_now(api).await;
        api_items += end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    }
    let t = fleet.totals();
    fig.faults = format!(
        "node {leader} of 3 (the push queue's leader) SIGKILLed under load and not restarted"
    );
    fig.note("kill_command_s", secs(kill_s));
    fig.note("clients_on_the_killed_node", failovers.len());
    fig.note("kill_to_reconnected_s", &failovers);
    fig.note("new_leader", new_leader);
    fig.note("wire_statuses", format!("{:?}", lb.responses().by_status));
    fig.check(
        "every client of the killed node reconnected to a live node within 5 s",
        !failovers.is_empty() && slowest <= FAILOVER_BOUND.as_secs_f64(),
        format!("{failovers:?}"),
    );
    fig.check(
        "the push queue has a new leader on a live node",
        new_leader.is_some_and(|n| n != leader),
        format!("{new_leader:?} (killed: {leader})"),
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
    let mut dead = 0.0;
    for (w, _) in &workers {
        dead += stack
            .metrics_now(w)
            .await
            .sum("inlet_worker_dead_letters_total", &[]);
    }
    fig.check("nothing was dead-lettered", dead == 0.0, format!("{dead}"));
    fig.recovery(
        "leader killed → its clients connected to a live node (slowest)",
        slowest
            .is_finite()
            .then(|| Duration::from_secs_f64(slowest)),
    );
    drop((apis, workers));
    stack.cleanup().await;
    drop(cluster);
    fig.finish();
}
