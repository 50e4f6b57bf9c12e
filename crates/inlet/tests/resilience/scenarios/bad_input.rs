//! Scenario 8: a barrage of malformed requests interleaved with valid agent
//! traffic. The API must never crash, answer every bad request with a 4xx
//! and a JSON `code` (protocol-level garbage that never reaches the
//! application is reported separately, precisely), and the valid traffic
//! must be unaffected and complete.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use inlet_testkit::{LoadBalancer, free_port};
use rand::Rng as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Reconcile, agent_specs, reconcile};
use crate::agents::{Fleet, FleetOptions};
use crate::report::Figure;
use crate::scale;
use crate::stack::{READY_TIMEOUT, Services, Stack};

/// The kinds of bad request, and how often each is sent (weights).
const CLASSES: &[(&str, u32)] = &[
    ("garbage_gzip", 8),
    ("truncated_gzip", 8),
    ("wrong_json_types", 8),
    ("invalid_utf8", 6),
    ("not_json", 6),
    ("schema_violations", 8),
    ("too_many_items", 1),
    ("deep_nesting", 3),
    ("huge_number", 3),
    ("empty_body", 3),
    ("oversized_body", 1),
    ("oversized_chunked", 1),
    ("gzip_bomb", 2),
    ("wrong_content_type", 4),
    ("unknown_encoding", 4),
    ("random_key", 6),
    ("random_inlet_key", 6),
    ("garbage_query_key", 3),
    ("missing_key", 5),
    ("wrong_method", 3),
    ("unknown_path", 3),
    ("huge_header", 2),
    ("too_many_headers", 2),
    ("bad_request_line", 2),
    ("short_body", 2),
];

/// Classes rejected by the HTTP layer (actix) before the application sees
/// them: they are counted and reported, but a JSON `code` is not required.
const PROTOCOL_LEVEL: &[&str] = &[
    "huge_header",
    "too_many_headers",
    "bad_request_line",
    "short_body",
];

/// The status each class must get.
fn expected_status(class: &str) -> &'static [u16] {
    match class {
        "oversized_body" | "oversized_chunked" | "gzip_bomb" => &[413],
        "wrong_content_type" | "unknown_encoding" => &[415],
        "random_key" | "random_inlet_key" | "garbage_query_key" | "missing_key" => &[401],
        "wrong_method" => &[405],
        "unknown_path" => &[404],
        "huge_header" | "too_many_headers" => &[431, 400],
        _ => &[400],
    }
}

/// What one class got: answers by `status code` (`none` = no answer).
#[derive(Debug, Default, Clone, serde::Serialize)]
struct ClassResult {
    sent: u64,
    answers: BTreeMap<String, u64>,
    unexpected: u64,
    without_code: u64,
    unanswered: u64,
    errors: Vec<String>,
}

/// Pre-built bodies.
struct Bodies {
    batch: Vec<u8>,
    gzip: Vec<u8>,
    bomb: Vec<u8>,
    oversized: Vec<u8>,
    too_many: Vec<u8>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn batch_json(n: usize) -> Vec<u8> {
    let now = inlet_domain::now_ms();
    let tx: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"action": "Bad#input", "start_ms": now, "duration_ms": i as f64}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "agent": {"name": "bad", "version": "1"}, "app": "shop", "environment": "resilience",
        "transactions": tx,
    }))
    .unwrap()
}

impl Bodies {
    fn new() -> Bodies {
        let batch = batch_json(3);
        Bodies {
            gzip: gzip(&batch),
            batch,
            // 16 MiB of zeros: ~16 KiB compressed, twice the 8 MiB limit.
            bomb: gzip(&vec![0u8; 16 << 20]),
            oversized: vec![b' '; (1 << 20) + 1],
            too_many: batch_json(5001),
        }
    }
}

/// An answer: status and the `code` of a JSON body; or why there was
/// none.
type Answer = Result<(u16, Option<String>), String>;

/// Builds the request of an HTTP-client class (synchronously: the thread
/// RNG must not live across an await).
fn build(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    class: &str,
    b: &Bodies,
) -> reqwest::RequestBuilder {
    let mut rng = rand::rng();
    let url = format!("{base}/v1/push");
    let json = "application/json";
    match class {
        "garbage_gzip" => {
            let n = rng.random_range(20..2000);
            let body: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .header("content-encoding", "gzip")
                .body(body)
        }
        "truncated_gzip" => {
            let cut = rng.random_range(1..b.gzip.len() - 1);
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .header("content-encoding", "gzip")
                .body(b.gzip[..cut].to_vec())
        }
        "wrong_json_types" => {
            let bodies = [
                r#"{"agent": "x", "app": 5, "transactions": "many"}"#,
                r#"{"agent": {"name": 1}, "app": "shop", "transactions": [{"action": 1, "start_ms": "now", "duration_ms": "slow"}]}"#,
                r#"[1, 2, 3]"#,
                r#"{"agent": {"name": "a", "version": "1"}, "app": "shop", "transactions": {"action": "x"}}"#,
                r#""just a string""#,
                r#"null"#,
            ];
            let body = bodies[rng.random_range(0..bodies.len())];
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .body(body)
        }
        "invalid_utf8" => {
            let mut body = br#"{"agent": {"name": "a"#.to_vec();
            body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            body.extend_from_slice(br#"", "version": "1"}, "app": "shop", "transactions": []}"#);
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .body(body)
        }
        "not_json" => {
            let n = rng.random_range(1..500);
            let body: String = (0..n).map(|_| rng.random_range(' '..='~')).collect();
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .body(body)
        }
        "schema_violations" => {
            let now = inlet_domain::now_ms();
            let bodies = [
                serde_json::json!({"agent": {"name": "a", "version": "1"}, "app": "", "environment": "resilience", "transactions": [{"action": "", "start_ms": now, "duration_ms": -5.0}]}),
                serde_json::json!({"agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "resilience", "transactions": [{"action": "X", "start_ms": 1000, "duration_ms": 1.0, "status": 999}]}),
                serde_json::json!({"agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "resilience", "transactions": [{"action": "x".repeat(5000), "start_ms": now, "duration_ms": 1.0}]}),
                serde_json::json!({"agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "resilience", "metrics": [{"kind": "counter", "name": "", "value": 1, "timestamp_ms": now + 3_600_000}]}),
                serde_json::json!({"agent": {"name": "a", "version": "1"}, "app": "shop", "environment": "resilience", "metrics": [{"kind": "nope", "name": "m", "value": 1, "timestamp_ms": now}]}),
            ];
            let body = bodies[rng.random_range(0..bodies.len())].to_string();
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .body(body)
        }
        "too_many_items" => http
            .post(&url)
            .bearer_auth(key)
            .header("content-type", json)
            .body(b.too_many.clone()),
        "deep_nesting" => {
            let depth = rng.random_range(200..20000);
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .body(body)
        }
        "huge_number" => {
            let body = format!(
                r#"{{"agent": {{"name": "a", "version": "1"}}, "app": "shop", "transactions": [{{"action": "x", "start_ms": 1{}, "duration_ms": 1e400}}]}}"#,
                "0".repeat(rng.random_range(20..400))
            );
            http.post(&url)
                .bearer_auth(key)
                .header("content-type", json)
                .body(body)
        }
        "empty_body" => http
            .post(&url)
            .bearer_auth(key)
            .header("content-type", json),
        "oversized_body" => http
            .post(&url)
            .bearer_auth(key)
            .header("content-type", json)
            .body(b.oversized.clone()),
        "gzip_bomb" => http
            .post(&url)
            .bearer_auth(key)
            .header("content-type", json)
            .header("content-encoding", "gzip")
            .body(b.bomb.clone()),
        "wrong_content_type" => http
            .post(&url)
            .bearer_auth(key)
            .header("content-type", "text/plain")
            .body(b.batch.clone()),
        "unknown_encoding" => http
            .post(&url)
            .bearer_auth(key)
            .header("content-type", json)
            .header("content-encoding", "br")
            .body(b.batch.clone()),
        "random_key" => {
            // Always one character outside every key alphabet: a random
            // string that happened to look like a legacy key would be
            // looked up (and might meet the confirmation throttle's 503).
            let n = rng.random_range(1..200);
            let k: String = std::iter::once('~')
                .chain((0..n).map(|_| rng.random_range('!'..='~')))
                .collect();
            http.post(&url)
                .header("authorization", format!("Bearer {k}"))
                .header("content-type", json)
                .body(b.batch.clone())
        }
        "random_inlet_key" => {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let body: String = (0..64)
                .map(|_| A[rng.random_range(0..64)] as char)
                .collect();
            http.post(&url)
                .bearer_auth(format!("inlet_{body}"))
                .header("content-type", json)
                .body(b.batch.clone())
        }
        "garbage_query_key" => http
            .post(format!("{url}?api_key=%ZZ%00%ff{}", rng.random::<u32>()))
            .header("content-type", json)
            .body(b.batch.clone()),
        "missing_key" => http
            .post(&url)
            .header("content-type", json)
            .body(b.batch.clone()),
        "wrong_method" => {
            if rng.random_bool(0.5) {
                http.get(&url).bearer_auth(key)
            } else {
                http.put(&url).bearer_auth(key).body(b.batch.clone())
            }
        }
        "unknown_path" => http
            .post(format!("{base}/v2/push"))
            .bearer_auth(key)
            .body(b.batch.clone()),
        // Beyond actix's head limit (a head under it is a legal request).
        "huge_header" => http
            .post(&url)
            .bearer_auth(key)
            .header("x-padding", "a".repeat(rng.random_range(140_000..400_000)))
            .header("content-type", json)
            .body(b.batch.clone()),
        "too_many_headers" => {
            let mut r = http
                .post(&url)
                .bearer_auth(key)
                .header("content-type", json);
            for i in 0..rng.random_range(100..400) {
                r = r.header(format!("x-h-{i}"), "v");
            }
            r.body(b.batch.clone())
        }
        other => panic!("{other} is not an HTTP-client class"),
    }
}

async fn via_http(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    class: &str,
    b: &Bodies,
) -> Answer {
    let req = build(http, base, key, class, b);
    let resp = req
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned));
    Ok((status, code))
}

/// Sends `request` on a raw connection (half-closing after it when
/// `half_close`), and reads the answer's status and JSON `code`.
async fn raw(addr: std::net::SocketAddr, request: Vec<u8>, half_close: bool) -> Answer {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // The server may answer and close before reading everything: a
        // failed write is fine as long as an answer can be read.
        let _ = s.write_all(&request).await;
        if half_close {
            let _ = s.shutdown().await;
        }
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "no HTTP answer ({read:?}): {:?}",
                    text.chars().take(80).collect::<String>()
                )
            })?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let code = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned));
        Ok((status, code))
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

async fn send(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    key: &str,
    class: &str,
    b: &Bodies,
) -> Answer {
    let base = format!("http://{addr}");
    match class {
        "bad_request_line" => {
            let garbage: Vec<u8> = {
                let mut rng = rand::rng();
                let n = rng.random_range(5..300);
                (0..n).map(|_| rng.random_range(1u8..=255)).collect()
            };
            let mut req = garbage;
            req.extend_from_slice(b"\r\n\r\n");
            raw(addr, req, false).await
        }
        "short_body" => {
            let req = format!(
                "POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"agent\":"
            );
            raw(addr, req.into_bytes(), true).await
        }
        "oversized_chunked" => {
            let mut req = format!(
                "POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..20 {
                req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                req.extend_from_slice(&chunk);
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
            raw(addr, req, false).await
        }
        _ => via_http(http, &base, key, class, b).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_bad_input_barrage() {
    let _serial = scale::exclusive().await;
    let mut fig = Figure::new("8", "Bad-input barrage interleaved with valid traffic");
    let total = scale::count(10_000.0, 1000);
    let n_agents = scale::count(20.0, 4);
    // Memory-budget load shedding (503 `server_busy`, scenario 10) is not
    // what this scenario is about: a barrage of 16 maximum-size bodies at
    // once may wait for room as long as it takes to be classified.
    let stack = Stack::new(
        Services::default(),
        &[("INLET__API__IN_FLIGHT_WAIT_MS", "30000")],
    )
    .await;
    stack.migrate().await;
    let specs = agent_specs(&stack, "agent", n_agents).await;
    let barrage_key = stack
        .accounts_with_keys(&["barrage".to_owned()], Some((1_000_000, 1_000_000)))
        .await
        .remove(0);
    stack.ok(&["sync", "--once"]).await;
    let opts = FleetOptions::new("");
    fig.load = format!(
        "{total} malformed requests ({} classes, 16 at a time) interleaved with {n_agents} agents × {:.0} tx/s",
        CLASSES.len(),
        opts.rate()
    );
    fig.faults = format!(
        "classes: {}",
        CLASSES
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut worker = stack.worker("worker", &[]);
    stack.wait_ready(&mut worker, READY_TIMEOUT).await;
    let port = free_port();
    let mut api = stack.api("api", port, &[]);
    stack.wait_ready(&mut api, READY_TIMEOUT).await;
    let before = stack.metrics_now(&api).await;
    let lb = LoadBalancer::passthrough(api.addr()).await;
    let mut fleet = Fleet::start(
        &specs,
        &FleetOptions {
            endpoint: lb.url(),
            ..opts
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let weights: Vec<&str> = CLASSES
        .iter()
        .flat_map(|(c, w)| std::iter::repeat_n(*c, *w as usize))
        .collect();
    let bodies = Arc::new(Bodies::new());
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<std::sync::Mutex<BTreeMap<String, ClassResult>>> = Arc::default();
    // A fresh connection per request: a request that gets no answer is
    // then the server's doing, not a keep-alive race on a reused
    // connection the server had just closed.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (next, results, bodies, http, key, weights) = (
                next.clone(),
                results.clone(),
                bodies.clone(),
                http.clone(),
                barrage_key.clone(),
                weights.clone(),
            );
            let addr = api.addr();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let class = weights[i % weights.len()];
                    let answer = send(&http, addr, &key, class, &bodies).await;
                    let mut r = results.lock().unwrap();
                    let c = r.entry(class.to_owned()).or_default();
                    c.sent += 1;
                    match answer {
                        Err(why) => {
                            c.unanswered += 1;
                            *c.answers.entry("none".into()).or_insert(0) += 1;
                            if c.errors.len() < 3 {
                                c.errors.push(why);
                            }
                        }
                        Ok((status, code)) => {
                            *c.answers
                                .entry(format!("{status} {}", code.as_deref().unwrap_or("-")))
                                .or_insert(0) += 1;
                            if !expected_status(class).contains(&status) {
                                c.unexpected += 1;
                            }
                            if code.is_none() {
                                c.without_code += 1;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let barrage_s = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let alive = api.exited().is_none();
    let ready = stack.ready_status(&api).await;
    fleet.shutdown(Duration::from_secs(60)).await;
    let end = stack.metrics_now(&api).await;
    let api_items = end.sum("inlet_api_batch_items_total", &[("kind", "transaction")]) as u64;
    let t = fleet.totals();
    let results = results.lock().unwrap().clone();

    let app_level: Vec<(&String, &ClassResult)> = results
        .iter()
        .filter(|(c, _)| !PROTOCOL_LEVEL.contains(&c.as_str()))
        .collect();
    let protocol: BTreeMap<&String, &ClassResult> = results
        .iter()
        .filter(|(c, _)| PROTOCOL_LEVEL.contains(&c.as_str()))
        .collect();
    let sent: u64 = results.values().map(|r| r.sent).sum();
    let app_bad: Vec<String> = app_level
        .iter()
        .filter(|(_, r)| r.unexpected > 0 || r.without_code > 0 || r.unanswered > 0)
        .map(|(c, r)| format!("{c}: {:?}", r.answers))
        .collect();
    let proto_unexpected: Vec<String> = protocol
        .iter()
        .filter(|(c, r)| r.unexpected > 0 || (r.unanswered > 0 && c.as_str() != "short_body"))
        .map(|(c, r)| format!("{c}: {:?}", r.answers))
        .collect();
    let fivexx: u64 = results
        .values()
        .flat_map(|r| r.answers.iter())
        .filter(|(k, _)| k.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    let rss = |m: &crate::metrics::Scrape| m.sum("process_resident_memory_bytes", &[]) / 1048576.0;
    fig.note("requests", sent);
    fig.note("barrage_s", crate::report::secs(barrage_s));
    fig.note("per_class", &results);
    fig.note(
        "protocol_level_without_json_code",
        protocol
            .iter()
            .map(|(c, r)| (c.as_str(), r.without_code + r.unanswered))
            .collect::<BTreeMap<_, _>>(),
    );
    fig.note("api_rss_mib_before", rss(&before).round());
    fig.note("api_rss_mib_after", rss(&end).round());
    fig.note(
        "api_requests_by_code",
        end.describe("inlet_api_requests_total"),
    );
    fig.check(
        "all requests sent",
        sent == total as u64,
        format!("{sent} of {total}"),
    );
    fig.check(
        "the API never crashed and is ready at the end",
        alive && ready == Some(200),
        format!("alive {alive}, readiness {ready:?}"),
    );
    fig.check(
        "every application-level bad request: the expected 4xx with a JSON code",
        app_bad.is_empty(),
        app_bad.join("; "),
    );
    fig.check(
        "protocol-level garbage: answered 4xx by the HTTP layer (JSON code not required)",
        proto_unexpected.is_empty(),
        proto_unexpected.join("; "),
    );
    fig.check("no 5xx for bad input", fivexx == 0, format!("{fivexx} 5xx"));
    let stored_barrage = stack.stored(&["barrage".to_owned()]).await;
    fig.check(
        "nothing of the barrage was accepted or stored",
        stored_barrage.count == 0 && api_items == t.accepted,
        format!(
            "stored for the barrage account {}, API items {api_items} vs agents {}",
            stored_barrage.count, t.accepted
        ),
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
    fig.recovery("none: no outage (the API must simply keep working)", None);
    drop((api, worker));
    stack.cleanup().await;
    fig.finish();
}
