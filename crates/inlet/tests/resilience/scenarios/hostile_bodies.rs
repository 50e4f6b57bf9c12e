//! Scenario 10: hostile load on memory. 200 concurrent maximum-size gzip
//! bodies with a valid key — half of them valid batches at the body limit
//! that decompress to just under the decoded limit, half gzip bombs at the
//! body limit that decompress to ~1 GB — against one `inlet api` with its
//! default limits. Every request must be answered 202, 413 or 503 with
//! `Retry-After` within a bounded time, the process's peak resident
//! memory (`VmHWM`) must stay under the documented bound, and the API must
//! still be ready afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use inlet_domain::{ContentEncoding, now_ms};
use inlet_testkit::free_port;
use rand::SeedableRng as _;
use rand::distr::{Alphanumeric, SampleString as _};

use crate::report::{Figure, secs};
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack};

/// Concurrent requests (not scaled: the bound is stated for this load).
const CONCURRENT: usize = 200;
/// The API's default limits (`api.max_body_bytes`, `api.max_decoded_bytes`).
const MAX_BODY: usize = 1 << 20;
const MAX_DECODED: usize = 8 << 20;
/// HTTP workers of the API under test (`api.workers`).
const WORKERS: usize = 2;
/// The documented bound on the API's peak RSS under this load with the
/// default budgets and two workers (`docs/deploy.md`, "Memory").
const RSS_BOUND_MIB: u64 = 384;
/// Every answer arrives within this, or the API hangs.
const ALL_ANSWERED_WITHIN: Duration = Duration::from_secs(90);

/// A valid batch of 500 errors with `frames` backtrace frames each, whose
/// 4096-character messages begin with `random` random characters (the
/// rest repeats): the frames set the decoded size, the random characters
/// the compressed size.
fn heavy_batch(frames: usize, random: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = now_ms();
    let frame = |i: usize| {
        serde_json::json!({
            "file": format!("app/models/concerns/order_calculations_{i:04}.rb"),
            "line": 1000 + i,
            "function": "calculate_total_with_taxes",
        })
    };
    let backtrace: Vec<serde_json::Value> = (0..frames).map(frame).collect();
    let errors: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let mut message = Alphanumeric.sample_string(&mut rng, random);
            message.push_str(&"x".repeat(4096 - random));
            serde_json::json!({
                "class": format!("HostileError{i}"),
                "message": message,
                "backtrace": backtrace,
                "action": "Orders#index",
                "timestamp_ms": now,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "agent": {"name": "hostile", "version": "1"},
        "app": "shop",
        "environment": "resilience",
        "errors": errors,
    }))
    .unwrap()
}

/// A gzip body just under the body limit whose JSON is just under the
/// decoded limit: as large as a push can be on both counts. Both sizes
/// grow linearly (frames → decoded, random characters → compressed), so
/// two probes of each find the sizes without a search.
fn maximum_valid_body() -> (Vec<u8>, usize) {
    let decoded_target = MAX_DECODED - 256 * 1024;
    let body_target = MAX_BODY - 16 * 1024;
    let linear = |at: &dyn Fn(usize) -> usize, probe: usize, target: usize| {
        let (y0, y1) = (at(0) as f64, at(probe) as f64);
        ((target as f64 - y0) / ((y1 - y0) / probe as f64)).floor() as usize
    };
    let frames = linear(&|f| heavy_batch(f, 0, 1).len(), 64, decoded_target).min(128);
    let gz = |r: usize| {
        ContentEncoding::Gzip
            .encode(&heavy_batch(frames, r, 1))
            .len()
    };
    let mut random = linear(&gz, 2048, body_target).min(4096);
    loop {
        let json = heavy_batch(frames, random, 1);
        let body = ContentEncoding::Gzip.encode(&json);
        if body.len() <= body_target {
            return (body, json.len());
        }
        random -= random / 100;
    }
}

/// A gzip bomb just under the body limit: 64 MiB-of-zeros members
/// concatenated (one gzip stream of several members), ~1 GB decoded.
fn maximum_bomb() -> (Vec<u8>, usize) {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 64 << 20]).unwrap();
    let member = e.finish().unwrap();
    let n = (MAX_BODY - 16 * 1024) / member.len();
    (member.repeat(n), n * (64 << 20))
}

/// `VmHWM` (peak) and `VmRSS` (now) of a process, KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_hostile_bodies_memory_bounded() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("10", "200 concurrent maximum-size gzip bodies and bombs");
    let stack = Stack::new(Services::default(), &[]).await;
    stack.migrate().await;
    let key = stack
        .accounts_with_keys(&["hostile".to_owned()], Some((1_000_000, 1_000_000)))
        .await
        .remove(0);
    stack.ok(&["sync", "--once"]).await;

    let (valid, valid_decoded) = maximum_valid_body();
    let (bomb, bomb_decoded) = maximum_bomb();
    assert!(
        valid.len() <= MAX_BODY && valid.len() > MAX_BODY * 9 / 10,
        "valid body {} bytes compressed",
        valid.len()
    );
    assert!(
        valid_decoded <= MAX_DECODED && valid_decoded > MAX_DECODED * 9 / 10,
        "valid body {valid_decoded} bytes decoded"
    );
    assert!(
        bomb.len() <= MAX_BODY && bomb.len() > MAX_BODY * 9 / 10 && bomb_decoded > MAX_DECODED,
        "bomb {} bytes, {bomb_decoded} decoded",
        bomb.len()
    );
    fig.load = format!(
        "{CONCURRENT} concurrent pushes, one connection each: half valid gzip batches ({} KiB → {} KiB), half gzip bombs ({} KiB → {} MiB)",
        valid.len() / 1024,
        valid_decoded / 1024,
        bomb.len() / 1024,
        bomb_decoded >> 20
    );
    fig.faults = "none: the load is the fault".to_owned();

    // Decoding room is per HTTP worker: two, whatever the machine, so the
    // bound holds everywhere.
    let mut api = stack.api(
        "api",
        free_port(),
        &[("INLET__API__WORKERS", WORKERS.to_string())],
    );
    stack.wait_ready(&mut api, READY_TIMEOUT).await;
    let pid = api.pid().expect("the API runs");
    let (_, idle_rss) = memory_kib(pid).expect("/proc/<pid>/status");

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(ALL_ANSWERED_WITHIN)
        .build()
        .unwrap();
    let url = format!("{}/v1/push", api.base());
    let (valid, bomb) = (bytes::Bytes::from(valid), bytes::Bytes::from(bomb));
    let started = Instant::now();
    let sends = (0..CONCURRENT).map(|i| {
        let (class, body) = if i % 2 == 0 {
            ("valid", valid.clone())
        } else {
            ("bomb", bomb.clone())
        };
        let req = http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body);
        async move {
            let answer = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r.headers().contains_key("retry-after");
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    let code = v["code"].as_str().unwrap_or("-").to_owned();
                    Ok((status, code, retry_after))
                }
                Err(e) => Err((
                    if e.is_timeout() { "timeout" } else { "error" },
                    format!("{e:?}"),
                )),
            };
            (class, answer, started.elapsed())
        }
    });
    // Each request times out on its own (the client's timeout): one that
    // is not answered in time is reported as such, with the others.
    let answers = tokio::time::timeout(
        ALL_ANSWERED_WITHIN + Duration::from_secs(10),
        futures::future::join_all(sends),
    )
    .await
    .expect("the client's own timeout ends every request");
    let elapsed = started.elapsed();
    let (peak_rss, end_rss) = memory_kib(pid).expect("the API still runs");
    let counted_busy = stack.metrics_now(&api).await.sum(
        "inlet_api_requests_total",
        &[("route", "/v1/push"), ("code", "server_busy")],
    );

    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut without_retry_after = 0;
    let mut accepted = 0;
    let mut slowest = Duration::ZERO;
    for (class, answer, took) in &answers {
        slowest = slowest.max(*took);
        let label = match answer {
            Ok((status, code, retry_after)) => {
                let allowed = match *class {
                    "valid" => [202, 503].contains(status),
                    _ => [413, 503].contains(status),
                };
                if !allowed {
                    unexpected.push(format!("{class}: {status} {code}"));
                }
                if *status == 503 && !retry_after {
                    without_retry_after += 1;
                }
                if *status == 202 {
                    accepted += 1;
                }
                format!("{class}: {status} {code}")
            }
            Err((kind, e)) => {
                unexpected.push(format!("{class}: no answer after {took:?}: {e}"));
                format!("{class}: no answer ({kind})")
            }
        };
        *by_class.entry(label).or_insert(0) += 1;
    }
    let mib = |kib: u64| kib / 1024;
    fig.note("answers", &by_class);
    fig.note("idle_rss_mib", mib(idle_rss));
    fig.note("peak_rss_mib", mib(peak_rss));
    fig.note("rss_after_mib", mib(end_rss));
    fig.note("rss_bound_mib", RSS_BOUND_MIB);
    fig.note("server_busy_counted_by_the_api", counted_busy);
    fig.note("all_answered_s", secs(elapsed));
    fig.note("slowest_answer_s", secs(slowest));
    fig.note("accepted_pushes", accepted);

    fig.check(
        "every push answered 202 (valid) / 413 (bomb) or 503",
        unexpected.is_empty(),
        format!(
            "{} others: {:?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(5)]
        ),
    );
    fig.check(
        "every 503 carried Retry-After",
        without_retry_after == 0,
        format!("{without_retry_after} without"),
    );
    let busy: u64 = by_class
        .iter()
        .filter(|(label, _)| label.ends_with("503 server_busy"))
        .map(|(_, n)| n)
        .sum();
    fig.check(
        "the API counted every server_busy it answered",
        counted_busy == busy as f64,
        format!("answered {busy}, counted {counted_busy}"),
    );
    fig.check(
        "some maximum-size valid pushes were accepted",
        accepted > 0,
        format!("{accepted} accepted"),
    );
    fig.check(
        "peak RSS under the documented bound",
        mib(peak_rss) < RSS_BOUND_MIB,
        format!(
            "VmHWM {} MiB (idle {} MiB), bound {RSS_BOUND_MIB} MiB",
            mib(peak_rss),
            mib(idle_rss)
        ),
    );
    fig.check(
        "the API is ready after the load",
        api.exited().is_none() && stack.ready_status(&api).await == Some(200),
        String::new(),
    );
    fig.recovery("none: no outage", None);
    drop(api);
    stack.cleanup().await;
    fig.finish();
}
