//! The real binaries end to end: `inlet api` and `inlet worker` as child
//! processes against real services; what is pushed shows up in
//! `inlet stats`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "resilience/metrics.rs"]
mod metrics;
mod valid_batches;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inlet_api::ApiSettings;
use inlet_domain::BatchLimits;
use inlet_testkit::{InletEnv, TestAmqp, TestMongo, TestRedis, free_port, wait_for, wait_until};
use metrics::Scrape;
use mongodb::bson::{Document, doc};

struct Env {
    mongo: TestMongo,
    redis: TestRedis,
    amqp: TestAmqp,
    api_port: u16,
    admin_port: u16,
}

/// Kills the child on drop (a failing test must not leak processes).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Env {
    async fn new() -> Env {
        Env {
            mongo: TestMongo::new().await,
            redis: TestRedis::new().await,
            amqp: TestAmqp::new(),
            api_port: free_port(),
            admin_port: free_port(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        InletEnv::new(
            &self.mongo.url,
            &self.mongo.db_name,
            &self.redis,
            &self.amqp,
        )
        .set("INLET__API__LISTEN", format!("127.0.0.1:{}", self.api_port))
        .set("INLET__API__SHUTDOWN_DELAY_MS", "100")
        .set(
            "INLET__ADMIN__WORKER_LISTEN",
            format!("127.0.0.1:{}", self.admin_port),
        )
        .command(env!("CARGO_BIN_EXE_inlet"), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "inlet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Proc {
        Proc(self.command(args).stdout(Stdio::null()).spawn().unwrap())
    }

    /// Migrates, creates account `acme` with a key and syncs the keys to
    /// Redis; returns the key.
    fn provision(&self) -> String {
        self.ok(&["migrate"]);
        self.ok(&["accounts", "create", "acme"]);
        let key = self
            .ok(&["keys", "create", "--account", "acme"])
            .trim()
            .to_owned();
        self.ok(&["sync", "--once"]);
        key
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn worker_admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Starts `inlet api` and `inlet worker` and waits until both are ready.
    async fn start(&self, http: &reqwest::Client) -> (Proc, Proc) {
        let api = self.spawn(&["api"]);
        let worker = self.spawn(&["worker"]);
        for (what, base) in [
            ("the API ready", self.base()),
            ("the worker ready", self.worker_admin()),
        ] {
            wait_until(Duration::from_secs(30), what, || async {
                http.get(format!("{base}/health/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await;
        }
        (api, worker)
    }

    fn names(&self) -> inlet_queue::Names {
        inlet_queue::Names::from_settings(&inlet_queue::QueueSettings {
            prefix: self.amqp.prefix.clone(),
            ..Default::default()
        })
    }

    async fn cleanup(&self) {
        self.mongo.cleanup().await;
        self.redis.cleanup().await;
        let names = self.names();
        self.amqp
            .delete_named(&names.all_queues(), &names.all_exchanges())
            .await;
    }
}

fn documented_metrics() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    text.split('`')
        .filter(|w| w.starts_with("inlet_"))
        .map(str::to_owned)
        .collect()
}

fn sigterm(p: &Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status();
}

#[tokio::test]
async fn pushed_data_reaches_stats_through_api_queue_and_worker() {
    let env = Env::new().await;
    let key = env.provision();
    let http = reqwest::Client::new();
    let (_api, mut worker) = env.start(&http).await;
    let base = env.base();

    let now = inlet_domain::now_ms();
    for i in 0..10 {
        let tx: Vec<serde_json::Value> = (0..10)
            .map(|j| serde_json::json!({"action": "Home#index", "start_ms": now - 1000, "duration_ms": (i * 10 + j) as f64}))
            .collect();
        let body = serde_json::json!({
            "batch_id": format!("e2e-{i}"),
            "agent": {"name": "e2e", "version": "1"}, "app": "shop", "environment": "production",
            "transactions": tx,
        });
        let resp = http
            .post(format!("{base}/v1/push"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let rows: Vec<serde_json::Value> = wait_for(
        Duration::from_secs(30),
        "100 transactions in stats",
        || async {
            let out = env.ok(&[
                "stats",
                "--account",
                "acme",
                "--app",
                "shop",
                "--since",
                "10m",
                "--json",
            ]);
            let rows: Vec<serde_json::Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
            (total == 100).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        rows.iter()
            .map(|r| r["max_ms"].as_f64().unwrap())
            .fold(0.0, f64::max),
        99.0
    );
    let table = env.ok(&[
        "stats",
        "--account",
        "acme",
        "--app",
        "shop",
        "--since",
        "10m",
    ]);
    // The table says what the JSON says: one line per minute row, whose
    // COUNT column (the second) adds up to the 100 pushed and whose MAX ms
    // column (the seventh) peaks at 99.
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "MINUTE (UTC)",
            "COUNT",
            "ERRORS",
            "MEAN ms",
            "P50 ms",
            "P95 ms",
            "MAX ms",
            "ERR SMP"
        ],
        "{table}"
    );
    let cells: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(cells.len(), rows.len(), "one line per row: {table}");
    assert!(cells.iter().all(|c| c.len() == header.len()), "{table}");
    let count: u64 = cells.iter().map(|c| c[1].parse::<u64>().unwrap()).sum();
    assert_eq!(count, 100, "{table}");
    let max = cells
        .iter()
        .map(|c| c[6].parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(max, 99.0, "{table}");

    // Every metric the live processes expose is documented.
    let documented = documented_metrics();
    for url in [
        format!("{base}/metrics"),
        format!("http://127.0.0.1:{}/metrics", env.admin_port),
    ] {
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        for line in text.lines().filter(|l| l.starts_with("# TYPE inlet_")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(
                documented.contains(name),
                "{name} (live at {url}) is missing from docs/metrics.md"
            );
        }
    }

    // The worker drains and exits cleanly on SIGTERM.
    sigterm(&worker);
    let status = wait_for(Duration::from_secs(20), "the worker to exit", || {
        let s = worker.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
    worker.0 = Command::new("true").spawn().unwrap();

    drop(_api);
    env.cleanup().await;
}

/// The `[limits]` and `[api]` the binaries run with
/// (`config/default.toml`).
fn shipped_limits() -> (BatchLimits, ApiSettings) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/default.toml"
    ))
    .unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    (
        config.remove("limits").unwrap().try_into().unwrap(),
        config.remove("api").unwrap().try_into().unwrap(),
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Promise 2, "nothing acknowledged is lost": every batch the API accepts
/// (202) the worker stores exactly — counts, sums, extremes, latest
/// samples, every string as sent, distinct tag maps as distinct series —
/// and nothing is retried or dead-lettered. The batches come from
/// `valid_batches` (awkward names and tags, maximum lengths and counts).
#[tokio::test]
async fn every_batch_the_api_accepts_is_stored_exactly() {
    let env = Env::new().await;
    let key = env.provision();
    let http = reqwest::Client::new();
    let (api, worker) = env.start(&http).await;
    let (limits, api_settings) = shipped_limits();
    let batches = valid_batches::batches(
        &limits,
        api_settings.max_decoded_bytes,
        inlet_domain::now_ms(),
        24,
    );

    // 1. Every batch is accepted (else the generator broke a rule).
    let started = Instant::now();
    let (mut items, mut largest) = (0, 0);
    for (i, b) in batches.iter().enumerate() {
        let json = serde_json::to_vec(b).unwrap();
        let body = gzip(&json);
        assert!(
            json.len() <= api_settings.max_decoded_bytes
                && body.len() <= api_settings.max_body_bytes,
            "batch {i} is larger than [api] allows: {} bytes, {} compressed",
            json.len(),
            body.len()
        );
        let resp = http
            .post(format!("{}/v1/push", env.base()))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 202, "batch {i} (app {:?}) refused: {text}", b.app);
        items += b.transactions.len() + b.metrics.len() + b.errors.len();
        largest = largest.max(json.len());
    }

    // 2. The worker applies every one; a retry or a dead letter is a
    // failure at once (the reason is in the worker's log above).
    let applied = env.mongo.db().collection::<Document>("applied");
    let worker_metrics = format!("{}/metrics", env.worker_admin());
    let failures = wait_for(
        Duration::from_secs(60),
        "every batch applied, or one failing",
        || async {
            let text = http
                .get(&worker_metrics)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let scrape = Scrape::parse(&text);
            let failing = ["retried", "dead_lettered"]
                .iter()
                .map(|o| scrape.sum("inlet_worker_messages_total", &[("outcome", o)]))
                .sum::<f64>();
            if failing > 0.0 {
                return Some(scrape.describe("inlet_worker_messages_total"));
            }
            let n = applied.count_documents(doc! {}).await.ok()?;
            (n as usize == batches.len()).then(Default::default)
        },
    )
    .await;
    assert!(
        failures.is_empty(),
        "the worker could not store what the API accepted: {failures:?}"
    );
    let applied_after = started.elapsed();
    assert_eq!(
        env.amqp.message_count(&env.names().dead_queue).await,
        Some(0),
        "dead letters"
    );

    // 3. Each batch (an app of its own) is stored exactly.
    let db = env.mongo.db();
    let mut problems = Vec::new();
    let mut buckets = 0;
    for (i, b) in batches.iter().enumerate() {
        let want = valid_batches::model::expected(b);
        buckets += want.buckets();
        let got = valid_batches::model::stored(&db, "acme", &b.app).await;
        let diffs = want.differences(&got);
        let more = diffs.len().saturating_sub(3);
        problems.extend(
            diffs
                .into_iter()
                .take(3)
                .map(|d| format!("batch {i} (app {:?}): {d}", b.app)),
        );
        if more > 0 {
            problems.push(format!("batch {i}: {more} more difference(s)"));
        }
    }
    assert!(
        problems.is_empty(),
        "stored differently from what was accepted:\n{}",
        problems.join("\n")
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{} batches, {items} samples, {buckets} buckets, largest {largest} bytes decoded: \
             applied {applied_after:?} after the first push",
            batches.len()
        );
    }
    drop((api, worker));
    env.cleanup().await;
}
