//! Scenario 14 (issue 13, point 5): two `inlet sync` processes at once (a
//! rolling deploy of the sync service) while Redis is flushed three times,
//! twice in the middle of a load. Neither may leave the populated marker on
//! a generation the other deleted, or on one the flush left incomplete:
//! every answer to a valid key is 202.

use std::time::{Duration, Instant};

use inlet_testkit::{RedisServer, wait_until};
use mongodb::bson::{Document, doc};

use super::{Reconcile, SingleApi, agent_specs, reconcile, start_single_api};
use crate::agents::FleetOptions;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack, blocking};

/// Bulk keys so that a load takes long enough to be flushed midway.
async fn bulk_keys(stack: &Stack, n: usize) {
    let now = mongodb::bson::DateTime::now();
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            let digest = inlet_domain::KeyDigest::of_secret(&format!("bulk-key-{i:09}"));
            doc! {
                "_id": format!("{:016x}", 0x4000_0000_0000_0000_u64 + i as u64),
                "digest": digest.to_hex(), "account_id": "agent-000", "state": "active",
                "legacy": true, "revision": 1_i64, "created_at": now, "updated_at": now,
            }
        })
        .collect();
    for chunk in docs.chunks(5_000) {
        stack
            .mongo
            .db()
            .collection::<Document>("api_keys")
            .insert_many(chunk.to_vec())
            .await
            .unwrap();
    }
}

async fn marker(stack: &Stack) -> Option<String> {
    stack
        .redis
        .hash("marker")
        .await
        .ok()
        .and_then(|m| m.get("generation").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_two_syncs_and_three_flushes() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "14",
        "Two `inlet sync` processes at once, Redis flushed three times under load",
    );
    let n_agents = scale::count(50.0, 5);
    let n_bulk = scale::count(10_000.0, 2_000);
    let warmup = scale::secs(10.0, 3.0);
    let between = scale::secs(5.0, 2.0);
    let window = scale::secs(10.0, 4.0);
    let redis = blocking(RedisServer::start);
    // A 1 s decision cache so the cache cannot hide the stores: a marker
    // on a deleted or incomplete generation would show as 503s (or 401s).
    let stack = Stack::new(
        Services {
            redis: Some(redis.url()),
            ..Services::default()
        },
        &[
            ("INLET__AUTH__POSITIVE_TTL_S", "1"),
            ("INLET__SYNC__MARKER_CHECK_MS", "500"),
            ("INLET__SYNC__BATCH_SIZE", "500"),
            // Two syncs each re-opening a change stream on every reload
            // wedged SecantusDB (the tests' MongoDB) at full scale; the
            // property under test does not depend on the follow mode.
            ("INLET__SYNC__FOLLOW", "poll"),
            // SecantusDB counts a collection by scanning it (a real mongod
            // answers from metadata): two syncs counting 10k keys every
            // second take a third of its one core from the worker.
            ("INLET__SYNC__POLL_INTERVAL_MS", "5000"),
        ],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    bulk_keys(&stack, n_bulk).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_agents} agents × {:.0} tx/s; {} keys in all",
        opts.rate(),
        n_agents + n_bulk
    );
    fig.faults =
        "a second `inlet sync` alongside the first; private Redis FLUSHALLed three times, the last two while a load runs"
            .into();

    let SingleApi {
        sync,
        worker,
        api,
        lb,
        mut fleet,
    } = start_single_api(&stack, &specs, opts, true).await;
    let mut second = stack.sync("sync2", &[]);
    stack.wait_ready(&mut second, READY_TIMEOUT).await;
    let syncs = [sync.expect("a sync"), second];
    tokio::time::sleep(warmup).await;

    let loading = || async {
        for s in &syncs {
            if let Some(m) = stack.metrics(s).await
                && m.sum("inlet_sync_following", &[]) == 0.0
            {
                return true;
            }
        }
        false
    };
    let mut flushes = Vec::new();
    let started = Instant::now();
    for i in 0..3 {
        if i > 0 {
            // Wait for a load (started by the previous flush) to be running.
            wait_until(Duration::from_secs(30), "a load in progress", &loading).await;
        }
        stack.redis.flush_all_private().await;
        flushes.push(Instant::now());
    }
    wait_until(
        Duration::from_secs(60),
        "a generation in force again",
        || async { marker(&stack).await.is_some() },
    )
    .await;
    let back = Instant::now();
    tokio::time::sleep(between).await;
    wait_until(Duration::from_secs(60), "both syncs following", || async {
        let mut ready = 0;
        for s in &syncs {
            ready += usize::from(stack.ready_status(s).await == Some(200));
        }
        ready == 2
    })
    .await;
    tokio::time::sleep(window).await;
    fleet.shutdown(Duration::from_secs(60)).await;

    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let mut loads = serde_json::Map::new();
    for s in &syncs {
        let m = stack.metrics_now(s).await;
        loads.insert(
            s.name.clone(),
            serde_json::json!(m.describe("inlet_sync_backfills_total")),
        );
    }
    let w = lb.responses();
    let not_202: u64 = w
        .by_status
        .iter()
        .filter(|(s, _)| **s != 202)
        .map(|(_, n)| *n)
        .sum();
    let t = fleet.totals();
    fig.note("loads_by_sync", &loads);
    fig.note("first_flush_to_marker_back_s", secs(back - flushes[0]));
    fig.note(
        "flushes_at_s",
        flushes
            .iter()
            .map(|f| secs(*f - started))
            .collect::<Vec<_>>(),
    );
    fig.check(
        "every answer on the wire to a valid key was 202",
        not_202 == 0,
        format!("{not_202} other answers: {:?}", w.by_code),
    );
    fig.check(
        "the agents saw no 5xx",
        t.server_errors == 0,
        format!("{} 5xx", t.server_errors),
    );
    let final_marker = marker(&stack).await;
    fig.check(
        "a generation is in force at the end",
        final_marker.is_some(),
        format!("{final_marker:?}"),
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
    fig.recovery(
        "first flush → a generation in force again",
        Some(back - flushes[0]),
    );
    drop((api, worker, syncs));
    stack.cleanup().await;
    drop(redis);
    fig.finish();
}
