//! Scenario 10: a signing-secret rotation under load, step by step as
//! `docs/deploy.md` prescribes, with two API instances behind a
//! health-checking load balancer, each restarted in turn at every step.
//!
//! Agents whose keys secret 1 signed push throughout. Step 1 adds secret 2
//! to every instance; step 2 makes it current (`inlet keys create` now
//! signs with 2) and agents with such new keys join; step 3 retires secret
//! 1, after which keys signed by 1 are unverified on every instance and
//! decided by lookup. Every push of every agent must end in a 202, and no
//! 401/403 may reach any of them: every key stays valid throughout.
//! The processes run with `INLET_ENV=production`, so the secrets pass the
//! production checks (random ones, generated here).

use std::time::{Duration, Instant};

use inlet_domain::{ApiKey, KeyVerifier, Provenance, SigningSecret};
use inlet_testkit::{LoadBalancer, free_port, wait_until};

use super::rolling_deploy::{SHUTDOWN_DELAY_MS, items, restart_instance};
use super::{Reconcile, agent_specs, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::report::Figure;
use crate::scale;
use crate::stack::{Proc, READY_TIMEOUT, Services, Stack};

fn random_secret() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether secret `id` (hex) signed `key`.
fn signed_by(key: &str, id: u8, secret: &str) -> bool {
    let bytes: Vec<u8> = (0..secret.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret[i..i + 2], 16).unwrap())
        .collect();
    let verifier = KeyVerifier::new(vec![SigningSecret::new(id, &bytes).unwrap()]).unwrap();
    ApiKey::parse(key, &verifier).is_ok_and(|k| k.provenance() == Provenance::Verified)
}

const SECRET_1: &str = "INLET__SIGNING__SECRETS__1";
const SECRET_2: &str = "INLET__SIGNING__SECRETS__2";
const CURRENT: &str = "INLET__SIGNING__CURRENT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_signing_secret_rotation_under_load() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new(
        "11",
        "Signing-secret rotation under load: secret 2 added, made current, secret 1 retired; two API instances restarted in turn at each step",
    );
    let n_old = scale::count(30.0, 4);
    let n_new = scale::count(30.0, 4);
    let warmup = scale::secs(10.0, 3.0);
    let settle = scale::secs(10.0, 3.0);
    let (old_secret, new_secret) = (random_secret(), random_secret());
    let delay = SHUTDOWN_DELAY_MS.to_string();
    let mut stack = Stack::new(
        Services::default(),
        &[
            ("INLET_ENV", "production"),
            ("INLET__API__SHUTDOWN_DELAY_MS", delay.as_str()),
            (CURRENT, "1"),
            (SECRET_1, old_secret.as_str()),
        ],
    )
    .await;
    stack.migrate().await;
    let old_specs = agent_specs(&stack, "old", n_old).await;
    assert!(old_specs.iter().all(|a| signed_by(&a.key, 1, &old_secret)));
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_old} agents with keys signed by secret 1 throughout, {n_new} with keys signed by secret 2 from step 2 on, × {:.0} tx/s each, through a load balancer over 2 instances",
        opts.rate()
    );
    fig.faults = format!(
        "3 configuration steps (add secret 2; current = 2; retire secret 1), each a restart of both instances in turn (SIGTERM, shutdown delay {SHUTDOWN_DELAY_MS} ms, new process with the new configuration), {:.0} s apart",
        settle.as_secs_f64()
    );

    let mut sync = stack.sync("sync", &[]);
    stack.wait_ready(&mut sync, READY_TIMEOUT).await;
    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let mut apis: Vec<Proc> = Vec::new();
    for i in 0..2 {
        let mut p = stack.api_with_admin(&format!("api{i}-s0"), free_port(), &[]);
        stack.wait_ready(&mut p, READY_TIMEOUT).await;
        apis.push(p);
    }
    let lb = LoadBalancer::health_checked(&[apis[0].addr(), apis[1].addr()]).await;
    wait_until(
        Duration::from_secs(10),
        "both instances routable",
        || async { lb.is_routable(0) && lb.is_routable(1) },
    )
    .await;
    let opts = FleetOptions {
        endpoint: lb.url(),
        ..opts
    };
    let mut fleet = Fleet::start(&old_specs, &opts);
    tokio::time::sleep(warmup).await;

    let mut api_items: Option<u64> = Some(0);
    let mut restarts = Vec::new();
    let mut all_exits_clean = true;
    let mut retired_at = None;
    // Each step: what it is, and the one variable it changes everywhere.
    let steps = [
        ("add secret 2", SECRET_2, Some(new_secret.as_str())),
        ("current = 2", CURRENT, Some("2")),
        ("retire secret 1", SECRET_1, None),
    ];
    for (step, (what, key, value)) in steps.into_iter().enumerate() {
        stack.set_env(key, value);
        for i in 0..2 {
            let r = restart_instance(
                &stack,
                &lb,
                &mut apis,
                i,
                &format!("api{i}-s{}", step + 1),
                Duration::from_millis(SHUTDOWN_DELAY_MS),
            )
            .await;
            all_exits_clean &= r.clean_exit;
            api_items = api_items.zip(r.items).map(|(a, b)| a + b);
            let mut timings = r.timings;
            timings["step"] = what.into();
            restarts.push(timings);
        }
        if step == 1 {
            // Step 2 done: `inlet keys create` signs with secret 2.
            let new_specs = agent_specs(&stack, "new", n_new).await;
            assert!(new_specs.iter().all(|a| signed_by(&a.key, 2, &new_secret)));
            fleet.add(&new_specs, &opts);
        }
        if step == 2 {
            retired_at = Some(Instant::now());
        }
        tokio::time::sleep(settle).await;
    }
    // Keys signed by the retired secret still push (by lookup), on the
    // instances that no longer hold it; so do the new ones. Checked, not
    // waited for with a panic, so a failure still reports its 401s.
    let retired_at = retired_at.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_accepted_after_retirement = loop {
        let all = fleet.all_accepted_after(retired_at);
        if all || Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    fleet.shutdown(Duration::from_secs(60)).await;
    for p in &apis {
        let n = items(&stack.metrics_now(p).await);
        api_items = api_items.map(|a| a + n);
    }
    let t = fleet.totals();
    let wire = lb.responses();
    let wire_rejections = wire.status(401) + wire.status(403);
    let accepted_by = |prefix: &str| -> u64 {
        fleet
            .agents
            .iter()
            .filter(|a| a.account.starts_with(prefix))
            .map(|a| a.accepted())
            .sum()
    };
    fig.note("restarts", &restarts);
    fig.note(
        "accepted_items",
        serde_json::json!({"keys_signed_by_1": accepted_by("old-"), "keys_signed_by_2": accepted_by("new-")}),
    );
    fig.check(
        "every instance exited cleanly on SIGTERM",
        all_exits_clean,
        serde_json::to_string(&restarts).unwrap_or_default(),
    );
    fig.check(
        "every agent (keys signed by 1 and by 2) had a push accepted after secret 1 was retired",
        all_accepted_after_retirement,
        format!(
            "agents without: {:?}",
            fleet
                .agents
                .iter()
                .filter(|a| !a.events().accepted.iter().any(|(at, _)| *at >= retired_at))
                .map(|a| &a.account)
                .collect::<Vec<_>>()
        ),
    );
    fig.check(
        "no 401/403 on the wire",
        wire_rejections == 0,
        format!("{wire_rejections} 401/403 answers: {:?}", wire.by_code),
    );
    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            api_items,
            lb: Some(&lb),
            false_401s: t.rejections,
            ..Reconcile::default()
        },
    )
    .await;
    fig.recovery(
        "longest time an agent went from a failed attempt to its next 202",
        Some(fleet.longest_stall()),
    );
    drop((apis, worker, sync));
    stack.cleanup().await;
    fig.finish();
}
