//! Scenario 13 (issue 13, point 4): the source of truth has other writers.
//! Under load, another application (the MongoDB driver, plain documents)
//! creates accounts and keys whose agents start pushing at once, then
//! deletes one key and one account. The sync follows by polling (the mode
//! that cannot see deletions by itself): new keys are never refused, and
//! the deleted key and the deleted account's key are refused within two
//! poll intervals, as unknown.

use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};

use super::{Reconcile, SingleApi, agent_specs, probe_until, reconcile, start_single_api};
use crate::agents::{AgentSpec, FleetOptions};
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{Services, Stack};

const POLL: Duration = Duration::from_millis(1_000);

/// Another application's writes.
struct OtherWriter {
    db: mongodb::Database,
}

impl OtherWriter {
    async fn account(&self, id: &str) {
        let now = mongodb::bson::DateTime::now();
        self.db
            .collection::<Document>("accounts")
            .insert_one(doc! { "_id": id, "state": "active",
                "rate_limit": { "per_second": super::AGENT_RATE.0 as i64, "burst": super::AGENT_RATE.1 as i64 },
                "revision": 1_i64, "created_at": now, "updated_at": now })
            .await
            .unwrap();
    }

    /// A legacy key for `account`; returns it.
    async fn key(&self, account: &str) -> String {
        let key = format!("main-app-key-{}", uuid::Uuid::new_v4().simple());
        let digest = inlet_domain::ApiKey::parse_format(&key).unwrap().digest();
        let now = mongodb::bson::DateTime::now();
        self.db
            .collection::<Document>("api_keys")
            .insert_one(doc! {
                "_id": inlet_domain::KeyId::random().to_string(), "digest": digest.to_hex(),
                "account_id": account, "state": "active", "legacy": true,
                "revision": 1_i64, "created_at": now, "updated_at": now,
            })
            .await
            .unwrap();
        key
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_other_writers_followed_by_polling() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "13",
        "Another application writes accounts and keys in MongoDB directly; the sync follows by polling",
    );
    let n_agents = scale::count(40.0, 4);
    let n_new = scale::count(10.0, 2);
    let warmup = scale::secs(10.0, 3.0);
    let window = scale::secs(10.0, 4.0);
    let stack = Stack::new(
        Services::default(),
        &[
            ("INLET__SYNC__FOLLOW", "poll"),
            ("INLET__SYNC__POLL_INTERVAL_MS", "1000"),
        ],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_agents} agents, then {n_new} agents on accounts and keys another writer created, × {:.0} tx/s each",
        opts.rate()
    );
    fig.faults = format!(
        "sync in poll mode ({} ms); another writer inserts {n_new} accounts with a key each, then deletes one key and one account",
        POLL.as_millis()
    );
    let SingleApi {
        sync,
        worker,
        api,
        lb,
        mut fleet,
    } = start_single_api(&stack, &specs, opts.clone(), true).await;
    tokio::time::sleep(warmup).await;

    // Created elsewhere; their agents start at once.
    let other = OtherWriter {
        db: stack.mongo.db(),
    };
    let mut new_specs = Vec::new();
    for i in 0..n_new {
        let account = format!("mainapp-{i:03}");
        other.account(&account).await;
        let key = other.key(&account).await;
        new_specs.push(AgentSpec { account, key });
    }
    let first_new = fleet.agents.len();
    fleet.add(
        &new_specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    tokio::time::sleep(window).await;

    // Deleted elsewhere: one key, and (another) account with its key.
    let http = reqwest::Client::new();
    let mut n = 0;
    let (gone_key, gone_account) = (&new_specs[0], &new_specs[n_new - 1]);
    let deleting = Instant::now();
    let digest = inlet_domain::ApiKey::parse_format(&gone_key.key)
        .unwrap()
        .digest();
    let deleted_key = stack
        .mongo
        .db()
        .collection::<Document>("api_keys")
        .delete_one(doc! { "digest": digest.to_hex() })
        .await
        .unwrap()
        .deleted_count;
    let p_key = probe_until(
        &http,
        &api.base(),
        &gone_key.key,
        &mut n,
        |s| s == 401,
        Duration::from_secs(30),
    )
    .await;
    let deleting_account = Instant::now();
    let deleted_account = stack
        .mongo
        .db()
        .collection::<Document>("accounts")
        .delete_one(doc! { "_id": &gone_account.account })
        .await
        .unwrap()
        .deleted_count;
    let p_account = probe_until(
        &http,
        &api.base(),
        &gone_account.key,
        &mut n,
        |s| s == 401,
        Duration::from_secs(30),
    )
    .await;
    let key_took = p_key.at - deleting;
    let account_took = p_account.at - deleting_account;
    tokio::time::sleep(window).await;

    // Agents whose key is gone hold data the server now refuses.
    let gone = [gone_key.account.clone(), gone_account.account.clone()];
    for a in fleet
        .agents
        .iter_mut()
        .filter(|a| gone.contains(&a.account))
    {
        a.stop_recording().await;
        let _ = a.client.shutdown(Duration::from_secs(2)).await;
    }
    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(sync.as_ref().expect("a sync")).await;
    let refused_elsewhere: u64 = fleet
        .agents
        .iter()
        .filter(|a| !gone.contains(&a.account))
        .map(|a| a.events().rejections.len() as u64)
        .sum();
    let late_accepts: u64 = fleet
        .agents
        .iter()
        .filter(|a| gone.contains(&a.account))
        .map(|a| {
            let last = if a.account == gone_key.account {
                p_key.at
            } else {
                p_account.at
            };
            a.events()
                .accepted
                .iter()
                .filter(|(at, _)| *at > last + Duration::from_secs(1))
                .count() as u64
        })
        .sum();
    let new_accepted: u64 = fleet.agents[first_new..].iter().map(|a| a.accepted()).sum();
    fig.note("deleted_key_to_401_s", secs(key_took));
    fig.note("deleted_account_to_401_s", secs(account_took));
    fig.note("codes", [&p_key.code, &p_account.code]);
    fig.note("new_agents_accepted_items", new_accepted);
    fig.note("sync_changes", end.describe("inlet_sync_changes_total"));
    fig.check(
        "the other writer's documents were written and deleted",
        deleted_key == 1 && deleted_account == 1,
        format!("deleted {deleted_key} key, {deleted_account} account"),
    );
    fig.check(
        "agents on keys created elsewhere were never refused, and delivered",
        new_accepted > 0,
        format!("{new_accepted} items accepted for them"),
    );
    fig.check(
        "a deleted key is refused within 2 poll intervals, as unknown",
        key_took <= 2 * POLL && p_key.code.as_deref() == Some("unknown_key"),
        format!("{key_took:?}, {:?}", p_key.code),
    );
    fig.check(
        "a deleted account's key is refused within 2 poll intervals, as unknown",
        account_took <= 2 * POLL && p_account.code.as_deref() == Some("unknown_key"),
        format!("{account_took:?}, {:?}", p_account.code),
    );
    fig.check(
        "nothing pushed with a deleted key accepted after it was refused",
        late_accepts == 0,
        format!("{late_accepts} late acceptances"),
    );
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            lb: Some(&lb),
            false_401s: refused_elsewhere,
            extra_stored: p_key.accepted + p_account.accepted,
            revoked: gone.to_vec(),
            ..Reconcile::default()
        },
    )
    .await;
    fig.recovery(
        "deletion in MongoDB → the API refuses the key (the slower of key and account)",
        Some(key_took.max(account_took)),
    );
    drop((api, worker, sync));
    stack.cleanup().await;
    fig.finish();
}
