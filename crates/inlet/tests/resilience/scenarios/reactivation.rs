//! Scenario 12 (issue 13, point 1): a key revoked under load, then set
//! active again by another writer of MongoDB while no sync follows and no
//! invalidation is published. Redis keeps saying "revoked" and both API
//! instances hold the rejection in their caches; a cache may accept, only
//! the source of truth may reject, so both must accept the key again
//! within 2 s, and the agent must deliver everything it held.

use std::time::{Duration, Instant};

use inlet_testkit::wait_until;
use mongodb::bson::{Document, doc};

use super::{Reconcile, TwoApis, agents_and_victim, probe_until, reconcile, start_two_apis};
use crate::agents::FleetOptions;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{Services, Stack};

/// The promise: a re-activation takes effect on every instance within this.
const PROMISED: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_reactivation_by_another_writer_without_sync() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "12",
        "A revoked key set active again by another writer of MongoDB, no sync following, two API instances",
    );
    let n_agents = scale::count(50.0, 5);
    let warmup = scale::secs(10.0, 3.0);
    let revoked_for = scale::secs(10.0, 3.0);
    let after = scale::secs(10.0, 4.0);
    let stack = Stack::new(Services::default(), &[]).await;
    stack.migrate().await;
    let (specs, victim_key, victim_key_id) = agents_and_victim(&stack, n_agents).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_agents} agents + 1 whose key is revoked and re-activated, × {:.0} tx/s each, through a load balancer over 2 instances",
        opts.rate()
    );
    fig.faults = format!(
        "`inlet keys revoke` mid-run; the sync stopped; {:.0} s later the key set active by a direct MongoDB update (no Redis write, no invalidation)",
        revoked_for.as_secs_f64()
    );

    let TwoApis {
        mut sync,
        worker,
        apis,
        lb,
        mut fleet,
    } = start_two_apis(&stack, &specs, opts).await;
    let victim = fleet.agents.len() - 1;
    tokio::time::sleep(warmup).await;

    // Revoked through Inlet: every instance rejects it (and caches that).
    let http = reqwest::Client::new();
    let mut n = 0;
    let mut probe_accepted = 0;
    let revoking = Instant::now();
    let out = stack.ok(&["keys", "revoke", &victim_key_id]).await;
    for api in &apis {
        let p = probe_until(
            &http,
            &api.base(),
            &victim_key,
            &mut n,
            |s| s == 401,
            Duration::from_secs(30),
        )
        .await;
        probe_accepted += p.accepted;
    }
    let revocation_effective = Instant::now();

    // No sync from here on: nothing carries MongoDB's changes to Redis.
    sync.sigterm();
    wait_until(Duration::from_secs(30), "the sync to exit", || {
        let exited = sync.exited().is_some();
        async move { exited }
    })
    .await;
    tokio::time::sleep(revoked_for).await;

    // Another application sets the key active again, straight in MongoDB.
    let reactivating = Instant::now();
    let updated = stack
        .mongo
        .db()
        .collection::<Document>("api_keys")
        .update_one(
            doc! { "_id": &victim_key_id },
            doc! { "$set": { "state": "active", "updated_at": mongodb::bson::DateTime::now() },
            "$inc": { "revision": 1 } },
        )
        .await
        .unwrap();
    let mut effective = Vec::new();
    for api in &apis {
        let p = probe_until(
            &http,
            &api.base(),
            &victim_key,
            &mut n,
            |s| s == 202,
            Duration::from_secs(30),
        )
        .await;
        probe_accepted += p.accepted;
        effective.push(p.at - reactivating);
    }
    let slowest = effective.iter().max().copied().unwrap_or_default();
    let redis_copy = redis_state(&stack, &victim_key).await;
    tokio::time::sleep(after).await;
    fleet.shutdown(Duration::from_secs(60)).await;

    let ve = fleet.agents[victim].events();
    let victim_rejections = ve.rejections.len() as u64;
    // 401s of the victim are expected between the revocation and the
    // re-activation taking effect on both instances, nowhere else.
    let victim_false = ve
        .rejections
        .iter()
        .filter(|(at, _, _)| *at < revoking || *at > reactivating + slowest)
        .count() as u64;
    let others_rejections: u64 = fleet.agents[..victim]
        .iter()
        .map(|a| a.events().rejections.len() as u64)
        .sum();
    fig.note("revoke_command_s", secs(revocation_effective - revoking));
    fig.note(
        "reactivated_to_accepted_per_instance_s",
        effective.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
    );
    fig.note(
        "victim_rejections_expected",
        victim_rejections - victim_false,
    );
    fig.note("redis_copy_after_reactivation", &redis_copy);
    fig.check(
        "`inlet keys revoke` succeeded and the direct update matched the key",
        out.contains("revoked key") && updated.modified_count == 1,
        format!("{}; modified {}", out.trim(), updated.modified_count),
    );
    fig.check(
        "Redis still held the key as revoked (nothing followed MongoDB)",
        redis_copy.as_deref() == Some("revoked"),
        format!("{redis_copy:?}"),
    );
    fig.check(
        "both instances accept the re-activated key within 2 s",
        effective.len() == 2 && slowest <= PROMISED,
        format!("slowest {slowest:?}"),
    );
    fig.check(
        "the victim agent was refused only while its key was revoked",
        victim_false == 0,
        format!("{victim_false} rejections outside the revocation window"),
    );
    fig.check(
        "the victim agent kept its data and delivered it after the re-activation",
        fleet.agents[victim].accepted() == fleet.agents[victim].recorded(),
        format!(
            "recorded {}, accepted {}",
            fleet.agents[victim].recorded(),
            fleet.agents[victim].accepted()
        ),
    );
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            lb: Some(&lb),
            false_401s: others_rejections + victim_false,
            extra_stored: probe_accepted,
            ..Reconcile::default()
        },
    )
    .await;
    fig.recovery(
        "direct MongoDB update → the slower instance accepts the key",
        Some(slowest),
    );
    drop((apis, worker, sync));
    stack.cleanup().await;
    fig.finish();
}

/// The key state Redis holds for `key`, if any.
async fn redis_state(stack: &Stack, key: &str) -> Option<String> {
    let redis = inlet_auth::RedisStore::new(&inlet_auth::RedisSettings {
        url: stack.redis.url.clone(),
        prefix: stack.redis.prefix.clone(),
        ..inlet_auth::RedisSettings::default()
    })
    .ok()?;
    let digest = inlet_domain::ApiKey::parse_format(key).ok()?.digest();
    match inlet_auth::KeyStore::lookup(&redis, &digest).await {
        Ok(inlet_auth::Lookup::Found(r)) => Some(
            match r.key_state {
                inlet_domain::KeyState::Active => "active",
                inlet_domain::KeyState::Revoked => "revoked",
            }
            .to_owned(),
        ),
        other => Some(format!("{other:?}")),
    }
}
