//! Scenario 17: a 3-node RabbitMQ cluster (private nodes joined with
//! `rabbitmqctl join_cluster`) under two API instances and two workers,
//! each given every node (`queue.url` and `queue.failover_urls`, starting
//! at different nodes so every node holds connections). Under load, the
//! node that leads the push queue is SIGKILLed and not started again: the
//! quorum queue elects a new leader among the two left, the clients that
//! were on the dead node move to the next URL, and every push an agent
//! was told was accepted is stored exactly once.

use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, RabbitCluster, free_port, wait_for};

use super::{Reconcile, agent_specs, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack, blocking};

/// The promise: a client on the lost node is connected to a live one
/// within this.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// The environment of process `name`: every node, starting at node
/// `first`, and its own connection name (so the broker's connection list
/// says whose each connection is).
fn nodes_from(cluster: &RabbitCluster, first: usize, name: &str) -> Vec<(&'static str, String)> {
    let urls = cluster.urls_from(first);
    vec![
        ("INLET__QUEUE__URL", urls[0].clone()),
        ("INLET__QUEUE__FAILOVER_URLS", urls[1..].join(",")),
        ("INLET__QUEUE__CONNECTION_NAME", name.to_owned()),
    ]
}

/// Connections per process name, as the cluster's running nodes list them
/// (`{connection_name}-{role}`).
fn connections_of(cluster: &RabbitCluster, names: &[String]) -> Option<Vec<usize>> {
    let listed = cluster.connection_names()?;
    Some(
        names
            .iter()
            .map(|n| {
                let prefix = format!("{n}-");
                listed.iter().filter(|c| c.starts_with(&prefix)).count()
            })
            .collect(),
    )
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
    // whichever node leads, some clients are on it. (RabbitMQ places a
    // quorum queue's first leader on the declaring client's node, so it
    // is usually node 0, where api0 declared the topology first.)
    let mut apis = Vec::new();
    for (i, first) in [(0, 0), (1, 1)] {
        let name = format!("api{i}");
        let mut p = stack.api(&name, free_port(), &nodes_from(&cluster, first, &name));
        stack.wait_ready(&mut p, READY_TIMEOUT).await;
        apis.push((p, first));
    }
    let mut workers = Vec::new();
    for (i, first) in [(0, 2), (1, 0)] {
        let name = format!("worker{i}");
        let mut w = stack.worker(&name, &nodes_from(&cluster, first, &name));
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
    let names: Vec<String> = apis
        .iter()
        .chain(workers.iter())
        .map(|(p, _)| p.name.clone())
        .collect();
    let before_kill = blocking(|| connections_of(&cluster, &names)).expect("connections listed");
    assert!(
        before_kill.iter().all(|n| *n > 0),
        "every process connected: {names:?} {before_kill:?}"
    );
    let on_leader: Vec<usize> = apis
        .iter()
        .chain(workers.iter())
        .enumerate()
        .filter(|(_, (_, first))| *first == leader)
        .map(|(i, _)| i)
        .collect();
    let killed = Instant::now();
    blocking(|| cluster.node_mut(leader).kill());
    let kill_s = killed.elapsed();
    // Everything that asks the broker from the test goes to a survivor now.
    stack.amqp.url = cluster.nodes()[(leader + 1) % 3].url();

    // Every connection of every process listed again by the live nodes:
    // the clients of the dead node (all of a worker's pipelines and its
    // retry publisher, not just the first to come back) reconnected.
    let deadline = killed + Duration::from_secs(30);
    let mut back: Vec<Option<f64>> = vec![None; names.len()];
    loop {
        let now = blocking(|| connections_of(&cluster, &names));
        let at = secs(killed.elapsed());
        if let Some(now) = now {
            for (i, n) in now.iter().enumerate() {
                if back[i].is_none() && *n >= before_kill[i] {
                    back[i] = Some(at);
                }
            }
        }
        if on_leader.iter().all(|i| back[*i].is_some()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failovers: Vec<(String, usize, Option<f64>)> = on_leader
        .iter()
        .map(|i| (names[*i].clone(), before_kill[*i], back[*i]))
        .collect();
    let slowest = failovers
        .iter()
        .map(|(_, _, s)| s.unwrap_or(f64::INFINITY))
        .fold(0.0_f64, f64::max);
    let new_leader = wait_for(Duration::from_secs(30), "a new leader", || async {
        blocking(|| cluster.leader_of(&queue)).filter(|n| *n != leader)
    })
    .await;
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
    fig.note("connections_per_process_before_the_kill", &before_kill);
    fig.note(
        "clients_of_the_killed_node_connections_and_kill_to_all_listed_again_s",
        &failovers,
    );
    fig.note("new_leader", new_leader);
    fig.note("wire_statuses", format!("{:?}", lb.responses().by_status));
    fig.check(
        "every connection of the killed node's clients is on a live node within 5 s",
        !failovers.is_empty() && slowest <= FAILOVER_BOUND.as_secs_f64(),
        format!("{failovers:?}"),
    );
    fig.check(
        "the push queue has a new leader on a live node",
        new_leader != leader,
        format!("{new_leader} (killed: {leader})"),
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
