//! Scenario 3: the Redis key store flushed, then killed and restarted
//! empty, under load (a private Redis). MongoDB takes over; the running
//! `inlet sync` notices the missing marker and reloads; traffic returns to
//! the fast path.

use std::time::{Duration, Instant};

use inlet_testkit::{RedisServer, wait_for};

use super::{Reconcile, SingleApi, agent_specs, reconcile, start_single_api};
use crate::agents::FleetOptions;
use crate::metrics::Scrape;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{Services, Stack, blocking};

fn mongo_lookups(m: &Scrape) -> f64 {
    m.sum("inlet_auth_store_lookups_total", &[("store", "mongo")])
}

fn redis_found(m: &Scrape) -> f64 {
    m.sum(
        "inlet_auth_store_lookups_total",
        &[("store", "redis"), ("outcome", "found")],
    )
}

/// Waits until the Redis marker exists again; returns when.
async fn marker_back(stack: &Stack) -> Instant {
    wait_for(
        Duration::from_secs(60),
        "the sync to restore the marker",
        || async {
            stack
                .redis
                .hash("marker")
                .await
                .ok()
                .filter(|m| m.contains_key("generation"))
                .map(|_| Instant::now())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_redis_flushed_and_restarted() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "3",
        "Redis flushed, then killed and restarted empty, under load",
    );
    let n_agents = scale::count(50.0, 5);
    let warmup = scale::secs(10.0, 3.0);
    let down = scale::secs(10.0, 3.0);
    let window = scale::secs(10.0, 4.0);
    let mut redis = blocking(RedisServer::start);
    // A 1 s positive cache TTL so the cache cannot hide the stores; the
    // sync checks its marker every 3 s, so a flushed Redis stays empty for
    // longer than cached decisions live (a faster check can reload Redis
    // before any decision needs a store, and MongoDB is never asked).
    let stack = Stack::new(
        Services {
            redis: Some(redis.url()),
            ..Services::default()
        },
        &[
            ("INLET__AUTH__POSITIVE_TTL_S", "1"),
            ("INLET__SYNC__MARKER_CHECK_MS", "3000"),
        ],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    let opts = FleetOptions::new("");
    fig.load = format!("{n_agents} agents × {:.0} tx/s", opts.rate());
    fig.faults = format!(
        "private Redis: FLUSHALL; then SIGKILL, down {:.0} s, restarted empty",
        down.as_secs_f64()
    );

    let SingleApi {
        sync,
        worker,
        api,
        lb,
        mut fleet,
    } = start_single_api(&stack, &specs, opts, true).await;
    let sync = sync.expect("started with a sync");
    tokio::time::sleep(warmup).await;

    // 1. FLUSHALL: the marker and every key vanish at once.
    let m0 = stack.metrics_now(&api).await;
    let flushed = Instant::now();
    stack.redis.flush_all_private().await;
    let reloaded1 = marker_back(&stack).await;
    let m1 = stack.metrics_now(&api).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. The server dies and comes back empty.
    let m2 = stack.metrics_now(&api).await;
    let killed = Instant::now();
    blocking(|| redis.stop());
    tokio::time::sleep(down).await;
    let m_down = stack.metrics_now(&api).await;
    blocking(|| redis.restart());
    let up = Instant::now();
    let reloaded2 = marker_back(&stack).await;
    let m3 = stack.metrics_now(&api).await;

    // 3. Back on the fast path: cached entries (1 s) turn over, then
    // MongoDB is no longer asked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m4 = stack.metrics_now(&api).await;
    tokio::time::sleep(window).await;
    let m5 = stack.metrics_now(&api).await;
    let sync_ready = stack.ready_status(&sync).await;

    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let t = fleet.totals();

    let during_flush = mongo_lookups(&m1) - mongo_lookups(&m0);
    let during_outage = mongo_lookups(&m_down) - mongo_lookups(&m2);
    let after_restart = mongo_lookups(&m3) - mongo_lookups(&m2);
    let mongo_window = mongo_lookups(&m5) - mongo_lookups(&m4);
    let redis_window = redis_found(&m5) - redis_found(&m4);
    fig.note(
        "mongo_lookups",
        serde_json::json!({
            "flush_to_reload": during_flush,
            "while_redis_down": during_outage,
            "kill_to_reload": after_restart,
            "fast_path_window": mongo_window,
        }),
    );
    fig.note("redis_found_in_fast_path_window", redis_window);
    fig.note(
        "lookups_at_end",
        end.describe("inlet_auth_store_lookups_total"),
    );
    fig.note("flush_to_marker_back_s", secs(reloaded1 - flushed));
    fig.note("kill_to_restart_s", secs(up - killed));
    fig.note("restart_to_marker_back_s", secs(reloaded2 - up));
    fig.check(
        "MongoDB answered while Redis was flushed",
        during_flush > 0.0,
        format!("{during_flush} MongoDB lookups"),
    );
    fig.check(
        "MongoDB answered while Redis was down",
        during_outage > 0.0,
        format!("{during_outage} MongoDB lookups"),
    );
    fig.check(
        "back on the fast path: Redis answers, MongoDB is not asked",
        mongo_window == 0.0 && redis_window > 0.0,
        format!("in {window:?}: mongo {mongo_window}, redis found {redis_window}"),
    );
    fig.check(
        "the sync is ready again",
        sync_ready == Some(200),
        format!("{sync_ready:?}"),
    );
    let listener = end.sum("inlet_auth_invalidation_listener_up", &[]);
    fig.check(
        "the API's invalidation listener resubscribed",
        listener == 1.0,
        format!("inlet_auth_invalidation_listener_up {listener}"),
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
        "fault (FLUSHALL, or restart of the killed server) → marker restored by the running sync; the longer of the two",
        Some((reloaded1 - flushed).max(reloaded2 - up)),
    );
    drop((api, worker, sync));
    stack.cleanup().await;
    drop(redis);
    fig.finish();
}
