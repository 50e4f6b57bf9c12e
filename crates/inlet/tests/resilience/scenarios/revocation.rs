//! Scenario 7: a key revoked under load (`inlet keys revoke`) with two API
//! instances. Both must reject it within 2 s of the command returning
//! (probed directly, each instance having the key in its 30 s decision
//! cache), nothing pushed with it after that may be stored, and the other
//! agents must not notice.

use std::time::{Duration, Instant};

use inlet_client::DropReason;

use super::{Reconcile, TwoApis, agents_and_victim, probe, probe_until, reconcile, start_two_apis};
use crate::agents::FleetOptions;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{Services, Stack};

/// The promise: a revocation takes effect on every instance within this.
const PROMISED: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_revocation_under_load() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("7", "A key revoked under load, two API instances");
    let n_agents = scale::count(50.0, 5);
    let warmup = scale::secs(10.0, 3.0);
    let after = scale::secs(10.0, 4.0);
    let stack = Stack::new(Services::default(), &[]).await;
    stack.migrate().await;
    let (specs, victim_key, victim_key_id) = agents_and_victim(&stack, n_agents).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{n_agents} agents + 1 whose key is revoked, × {:.0} tx/s each, through a load balancer over 2 instances",
        opts.rate()
    );
    fig.faults =
        "`inlet keys revoke` of one agent's key mid-run (default 30 s decision cache)".into();

    let TwoApis {
        sync,
        worker,
        apis,
        lb,
        mut fleet,
    } = start_two_apis(&stack, &specs, opts).await;
    let victim = fleet.agents.len() - 1;
    tokio::time::sleep(warmup).await;

    // Both instances accept the key now, and hold it in their cache.
    let http = reqwest::Client::new();
    let mut probe_accepted = 0u64;
    let mut n = 0;
    for api in &apis {
        n += 1;
        let (status, code) = probe(&http, &api.base(), &victim_key, n).await;
        assert_eq!(status, 202, "{} before the revocation: {code:?}", api.name);
        probe_accepted += 1;
    }

    let revoking = Instant::now();
    let out = stack.ok(&["keys", "revoke", &victim_key_id]).await;
    let revoked = Instant::now();
    // Probe each instance directly until it says revoked_key.
    let mut effective = Vec::new();
    let mut codes = Vec::new();
    for api in &apis {
        let p = probe_until(
            &http,
            &api.base(),
            &victim_key,
            &mut n,
            |s| matches!(s, 401 | 403),
            Duration::from_secs(30),
        )
        .await;
        probe_accepted += p.accepted;
        effective.push(p.at);
        codes.push(p.code);
    }
    let slowest = effective
        .iter()
        .map(|t| *t - revoked)
        .max()
        .unwrap_or_default();
    let all_effective = effective.iter().max().copied().unwrap_or(revoked);
    let victim_accepted_at_effect = fleet.agents[victim].accepted();
    tokio::time::sleep(after).await;

    // The victim holds data the server refuses: stop it first, briefly.
    fleet.agents[victim].stop_recording().await;
    let victim_report = fleet.agents[victim]
        .client
        .shutdown(Duration::from_secs(2))
        .await;
    fleet.shutdown(Duration::from_secs(60)).await;

    let ve = fleet.agents[victim].events();
    let victim_false = ve
        .rejections
        .iter()
        .filter(|(at, _, _)| *at < revoking)
        .count() as u64;
    let victim_refused = ve
        .rejections
        .iter()
        .filter(|(at, _, c)| *at >= revoking && c.as_deref() == Some("revoked_key"))
        .count();
    let late_accepts = ve
        .accepted
        .iter()
        .filter(|(at, _)| *at > all_effective + Duration::from_secs(1))
        .count();
    let victim_accepted = fleet.agents[victim].accepted();
    let others_rejections: u64 = fleet.agents[..victim]
        .iter()
        .map(|a| a.events().rejections.len() as u64)
        .sum();

    fig.note("revoke_command_s", secs(revoked - revoking));
    fig.note(
        "revoked_to_rejected_per_instance_s",
        effective
            .iter()
            .map(|t| secs(*t - revoked))
            .collect::<Vec<_>>(),
    );
    fig.note("rejection_codes", &codes);
    fig.note("probe_items_accepted", probe_accepted);
    fig.note("victim_accepted_items", victim_accepted);
    fig.note(
        "victim_accepted_after_effect",
        victim_accepted - victim_accepted_at_effect,
    );
    fig.note("victim_refused_attempts", victim_refused);
    fig.note("victim_items_kept_by_agent", victim_report.left_items);
    fig.check(
        "`inlet keys revoke` succeeded",
        out.contains("revoked key"),
        out.trim().to_owned(),
    );
    fig.check(
        "both instances reject the revoked key within 2 s of the command returning",
        effective.len() == 2 && slowest <= PROMISED,
        format!("slowest {slowest:?}; codes {codes:?}"),
    );
    fig.check(
        "with the code revoked_key",
        codes.iter().all(|c| c.as_deref() == Some("revoked_key")),
        format!("{codes:?}"),
    );
    fig.check(
        "no push with the revoked key accepted after the revocation took effect",
        late_accepts == 0,
        format!("{late_accepts} accepted batches later than 1 s after both instances refused"),
    );
    let victim_recorded = fleet.agents[victim].recorded();
    // Kept: up to its own shutdown the victim discarded nothing for any
    // reason (its counters by reason, and the drops its hook saw before
    // then), it still held what it recorded after the refusals began, and
    // its books balance: recorded = accepted + held.
    let stats = &victim_report.stats;
    let dropped_before_shutdown: Vec<(DropReason, u64)> = DropReason::ALL
        .into_iter()
        .filter(|r| *r != DropReason::Shutdown)
        .map(|r| (r, stats.dropped_items.get(r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let held = victim_report.left_items;
    fig.note(
        "victim_dropped_before_shutdown",
        format!("{dropped_before_shutdown:?}"),
    );
    fig.check(
        "the revoked agent was refused and kept its data (nothing dropped)",
        victim_refused > 0
            && dropped_before_shutdown.is_empty()
            && ve.dropped == stats.dropped_items.get(DropReason::Shutdown)
            && held > 0
            && victim_accepted + held == victim_recorded,
        format!(
            "{victim_refused} revoked_key answers; recorded {victim_recorded}, accepted {victim_accepted}, held at shutdown {held}; dropped before its shutdown {dropped_before_shutdown:?}, drops its hook saw {} (shutdown: {})",
            ve.dropped,
            stats.dropped_items.get(DropReason::Shutdown)
        ),
    );

    reconcile(
        &mut fig,
        &stack,
        &fleet,
        Reconcile {
            api_items: None,
            lb: Some(&lb),
            false_401s: others_rejections + victim_false,
            extra_stored: probe_accepted,
            revoked: vec!["victim".into()],
            ..Reconcile::default()
        },
    )
    .await;
    // After the drain (reconcile waited for it).
    let victim_stored = stack.stored(&["victim".to_owned()]).await;
    fig.check(
        "stored for the revoked key's account == what it was told was accepted",
        victim_stored.count == victim_accepted + probe_accepted,
        format!(
            "stored {}, agent accepted {victim_accepted} + probes {probe_accepted}",
            victim_stored.count
        ),
    );
    let mut api_items = 0;
    for p in &apis {
        api_items += stack
            .metrics_now(p)
            .await
            .sum("inlet_api_batch_items_total", &[("kind", "transaction")])
            as u64;
    }
    let t = fleet.totals();
    fig.api_items = Some(api_items);
    fig.check(
        "API accepted items == agents' accepted + probes",
        api_items >= t.accepted + probe_accepted
            && api_items <= t.accepted + probe_accepted + t.resent_after_no_answer,
        format!(
            "API {api_items}, agents {} + probes {probe_accepted}",
            t.accepted
        ),
    );
    fig.recovery(
        "revoke command returned → the slower instance answers 401 revoked_key",
        Some(slowest),
    );
    drop((apis, worker, sync));
    stack.cleanup().await;
    fig.finish();
}
