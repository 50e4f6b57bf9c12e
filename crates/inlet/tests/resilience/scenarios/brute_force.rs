//! Scenario 9: brute force. Random well-formed keys, all distinct: Inlet
//! keys with a broken checksum, forged signatures (valid checksum, wrong
//! HMAC under the server's secret id), keys naming a secret id the server
//! does not hold (unverifiable, so decided by lookup), and random UUIDs
//! (legacy keys, decided by lookup). Never a 2xx; the malformed ones cost
//! no store call; MongoDB confirmations stay under the configured ceiling;
//! valid agents are unaffected.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use inlet_domain::{KeyIssuer, SigningSecret};
use inlet_testkit::{LoadBalancer, free_port};
use rand::Rng as _;

use super::{Reconcile, agent_specs, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::metrics::Scrape;
use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack};

/// Sustained MongoDB confirmations per second per instance, and burst.
const CONFIRM_RATE: f64 = 20.0;
const CONFIRM_BURST: f64 = 40.0;

/// The key classes, with their share of the requests (percent).
const CLASSES: &[(&str, usize)] = &[
    ("bad_checksum", 35),
    ("forged_signature", 25),
    ("unknown_secret_id", 15),
    ("legacy_uuid", 25),
];

fn issuer(id: u8) -> KeyIssuer {
    let secret: [u8; 32] = rand::random();
    KeyIssuer::new(SigningSecret::new(id, &secret).unwrap())
}

/// `n` distinct keys of `class`.
fn keys(class: &str, n: usize) -> Vec<String> {
    let mut rng = rand::rng();
    // Secret id 1 is the server's (config/local.toml), with another
    // secret: valid checksums, wrong signatures. Id 200 is unknown to the
    // server: unverifiable, decided by lookup.
    let forger = issuer(1);
    let stranger = issuer(200);
    (0..n)
        .map(|_| match class {
            "bad_checksum" => {
                let k = forger.issue().expose_secret().to_owned();
                // Change one character of the payload: the CRC catches it.
                let mut chars: Vec<char> = k.chars().collect();
                let i = rng.random_range(6..chars.len());
                chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
                chars.into_iter().collect()
            }
            "forged_signature" => forger.issue().expose_secret().to_owned(),
            "unknown_secret_id" => stranger.issue().expose_secret().to_owned(),
            "legacy_uuid" => uuid::Uuid::new_v4().to_string(),
            other => panic!("unknown class {other}"),
        })
        .collect()
}

fn lookups(m: &Scrape, store: &str) -> f64 {
    m.sum("inlet_auth_store_lookups_total", &[("store", store)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_brute_force() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("9", "Brute force with random well-formed keys");
    let total = scale::count(100_000.0, 10_000);
    let n_agents = scale::count(10.0, 3);
    let rate = CONFIRM_RATE.to_string();
    let burst = CONFIRM_BURST.to_string();
    let stack = Stack::new(
        Services::default(),
        &[
            ("INLET__AUTH__CONFIRM_RATE_PER_S", rate.as_str()),
            ("INLET__AUTH__CONFIRM_BURST", burst.as_str()),
        ],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    stack.ok(&["sync", "--once"]).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{total} requests with distinct random keys (32 at a time), alongside {n_agents} agents × {:.0} tx/s",
        opts.rate()
    );
    fig.faults = format!(
        "key classes: {}; confirmations limited to {CONFIRM_RATE}/s, burst {CONFIRM_BURST}",
        CLASSES
            .iter()
            .map(|(c, p)| format!("{c} {p}%"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let port = free_port();
    let mut api = stack.api("api", port, &[]);
    stack.wait_ready(&mut api, READY_TIMEOUT).await;
    let lb = LoadBalancer::passthrough(api.addr()).await;
    let mut fleet = Fleet::start(
        &specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every request: (class, key), shuffled so classes interleave.
    let mut work: Vec<(&'static str, String)> = Vec::with_capacity(total);
    let mut per_class = BTreeMap::new();
    for (class, pct) in CLASSES {
        let n = total * pct / 100;
        per_class.insert(*class, n as u64);
        work.extend(keys(class, n).into_iter().map(|k| (*class, k)));
    }
    {
        use rand::seq::SliceRandom as _;
        work.shuffle(&mut rand::rng());
    }
    let sent_total = work.len();
    let work = Arc::new(work);
    let body = serde_json::to_vec(&serde_json::json!({
        "agent": {"name": "brute", "version": "1"}, "app": "shop", "environment": "resilience",
        "transactions": [{"action": "Brute#force", "start_ms": inlet_domain::now_ms(), "duration_ms": 1.0}],
    }))
    .unwrap();

    let before = stack.metrics_now(&api).await;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<std::sync::Mutex<BTreeMap<(String, String), u64>>> = Arc::default();
    let no_retry_after = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (work, next, answers, no_ra, http, body) = (
                work.clone(),
                next.clone(),
                answers.clone(),
                no_retry_after.clone(),
                http.clone(),
                body.clone(),
            );
            let url = format!("{}/v1/push", api.base());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((class, key)) = work.get(i) else {
                        return;
                    };
                    let answer = match http
                        .post(&url)
                        .bearer_auth(key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            if status >= 500 && r.headers().get("retry-after").is_none() {
                                no_ra.fetch_add(1, Ordering::Relaxed);
                            }
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            format!("{status} {}", v["code"].as_str().unwrap_or("-"))
                        }
                        Err(e) => format!("none {e}"),
                    };
                    *answers
                        .lock()
                        .unwrap()
                        .entry(((*class).to_owned(), answer))
                        .or_insert(0) += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = stack.metrics_now(&api).await;
    let elapsed = started.elapsed();

    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let t = fleet.totals();
    let answers = answers.lock().unwrap().clone();

    let count = |pred: &dyn Fn(&str, &str) -> bool| -> u64 {
        answers
            .iter()
            .filter(|((c, a), _)| pred(c, a))
            .map(|(_, n)| n)
            .sum()
    };
    let non_401_503 = count(&|_, a| !(a.starts_with("401 ") || a.starts_with("503 ")));
    let malformed = per_class["bad_checksum"] + per_class["forged_signature"];
    let looked_up = per_class["unknown_secret_id"] + per_class["legacy_uuid"];
    let malformed_ok =
        count(&|c, a| (c == "bad_checksum" || c == "forged_signature") && a == "401 malformed_key");
    let unknown_401 =
        count(&|c, a| (c == "unknown_secret_id" || c == "legacy_uuid") && a == "401 unknown_key");
    let throttled_503 = count(&|c, a| {
        (c == "unknown_secret_id" || c == "legacy_uuid") && a == "503 auth_unavailable"
    });
    let local = after.sum("inlet_auth_decisions_total", &[("source", "local")])
        - before.sum("inlet_auth_decisions_total", &[("source", "local")]);
    // Lookups the brute force caused: agents' keys are found, these never.
    let redis_misses = (lookups(&after, "redis")
        - after.sum(
            "inlet_auth_store_lookups_total",
            &[("store", "redis"), ("outcome", "found")],
        ))
        - (lookups(&before, "redis")
            - before.sum(
                "inlet_auth_store_lookups_total",
                &[("store", "redis"), ("outcome", "found")],
            ));
    let mongo = lookups(&after, "mongo") - lookups(&before, "mongo");
    // Confirmations are what the budget bounds (MongoDB lookups also
    // include the fallback when a Redis lookup times out under the load).
    let confirmations = after.sum("inlet_auth_confirmations_total", &[])
        - before.sum("inlet_auth_confirmations_total", &[]);
    let ceiling = CONFIRM_RATE * elapsed.as_secs_f64() + CONFIRM_BURST;
    let by_class: BTreeMap<String, u64> = answers
        .iter()
        .map(|((c, a), n)| (format!("{c}: {a}"), *n))
        .collect();
    fig.note("answers", &by_class);
    fig.note("brute_force_s", secs(elapsed));
    fig.note(
        "requests_per_s",
        (sent_total as f64 / elapsed.as_secs_f64()).round(),
    );
    fig.note("looked_up_keys_401_unknown", unknown_401);
    fig.note("looked_up_keys_503_throttled", throttled_503);
    fig.note("local_decisions", local);
    fig.note("redis_lookups_not_found", redis_misses);
    fig.note("mongo_lookups", mongo);
    fig.note("mongo_confirmations", confirmations);
    fig.note("mongo_ceiling", ceiling.floor());
    fig.note(
        "confirmations_throttled",
        after.sum("inlet_auth_confirmations_throttled_total", &[])
            - before.sum("inlet_auth_confirmations_throttled_total", &[]),
    );
    fig.check(
        "every answer was 401 or 503 (never 2xx)",
        non_401_503 == 0,
        format!("{non_401_503} other answers: {by_class:?}"),
    );
    fig.check(
        "every malformed key (checksum, signature): 401 malformed_key",
        malformed_ok == malformed,
        format!("{malformed_ok} of {malformed}"),
    );
    fig.check(
        "malformed keys caused no store call (decided locally)",
        local >= malformed as f64 && redis_misses <= looked_up as f64,
        format!("local decisions {local} for {malformed} malformed keys; Redis misses {redis_misses} for {looked_up} lookup-eligible keys"),
    );
    fig.check(
        "Redis lookups ≤ distinct well-formed keys needing a lookup",
        redis_misses <= looked_up as f64,
        format!("{redis_misses} ≤ {looked_up}"),
    );
    fig.check(
        "MongoDB confirmations ≤ rate × elapsed + burst",
        confirmations <= ceiling && confirmations > 0.0,
        format!(
            "{confirmations} ≤ {CONFIRM_RATE} × {:.1} s + {CONFIRM_BURST} = {ceiling:.0}",
            elapsed.as_secs_f64()
        ),
    );
    fig.check(
        "lookup-eligible keys: 401 unknown_key (confirmed by MongoDB) or 503 auth_unavailable (throttled), nothing else",
        unknown_401 + throttled_503 == looked_up,
        format!("{unknown_401} + {throttled_503} of {looked_up}"),
    );
    fig.check(
        "every 503 carried Retry-After",
        no_retry_after.load(Ordering::Relaxed) == 0,
        format!("{} without", no_retry_after.load(Ordering::Relaxed)),
    );
    fig.check(
        "the API is ready after the brute force",
        api.exited().is_none() && stack.ready_status(&api).await == Some(200),
        String::new(),
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
        "none: no outage (valid agents must simply keep working)",
        None,
    );
    drop((api, worker));
    stack.cleanup().await;
    fig.finish();
}
