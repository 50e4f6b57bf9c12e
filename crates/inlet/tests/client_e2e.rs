//! The agent library (`inlet-client`) against the real `inlet api` binary
//! and real Redis, RabbitMQ and MongoDB-wire servers: an agent keeps
//! pushing through an API restart and a Redis flush and loses nothing;
//! `inlet push` and `inlet load` against a real API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use inlet_client::Client;
use inlet_domain::{WireBatch, WireTransaction, now_ms};
use inlet_queue::{Consumer, QueueMetrics, QueueSettings};
use inlet_testkit::{
    InletEnv, TestAmqp, TestCa, TestMongo, TestRedis, docs, free_port, on_a_terminal, wait_until,
};
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(60);

/// One test's isolated services, and the `inlet` binary configured for
/// them.
struct Env {
    mongo: TestMongo,
    redis: TestRedis,
    amqp: TestAmqp,
    port: u16,
    logs: tempfile::TempDir,
    /// With [`Env::with_tls`]: the CA of the API's certificate.
    tls: Option<TestCa>,
}

/// An `inlet api` child process; killed on drop so a failing test leaks
/// nothing.
struct Api {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Api {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        match tokio::time::timeout(LONG, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the API did not exit within {LONG:?} of SIGTERM; log:\n{}",
                self.log()
            ),
        }
    }
}

impl Env {
    async fn new() -> Env {
        Env {
            mongo: TestMongo::new().await,
            redis: TestRedis::new().await,
            amqp: TestAmqp::new(),
            port: free_port(),
            logs: tempfile::tempdir().unwrap(),
            tls: None,
        }
    }

    /// The API serves HTTPS (`[api.tls]`) with a certificate from a
    /// private CA, written next to the logs.
    fn with_tls(mut self) -> Env {
        let ca = TestCa::new("inlet e2e CA");
        let cert = ca.server_cert();
        std::fs::write(self.logs.path().join("cert.pem"), cert.cert_pem).unwrap();
        std::fs::write(self.logs.path().join("key.pem"), cert.key_pem).unwrap();
        self.tls = Some(ca);
        self
    }

    /// An HTTP client that trusts the API's certificate.
    fn http(&self) -> reqwest::Client {
        let roots = self
            .tls
            .iter()
            .flat_map(|ca| reqwest::Certificate::from_pem_bundle(ca.pem().as_bytes()).unwrap());
        reqwest::Client::builder()
            .tls_certs_merge(roots)
            .build()
            .unwrap()
    }

    fn base(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut env = InletEnv::new(
            &self.mongo.url,
            &self.mongo.db_name,
            &self.redis,
            &self.amqp,
        );
        if self.tls.is_some() {
            let path = |name: &str| self.logs.path().join(name).display().to_string();
            env = env
                .set("INLET__API__TLS__CERT_PATH", path("cert.pem"))
                .set("INLET__API__TLS__KEY_PATH", path("key.pem"));
        }
        env.set("INLET__API__LISTEN", format!("127.0.0.1:{}", self.port))
            .set("INLET__API__SHUTDOWN_DELAY_MS", "300")
            // Decisions live 1 s in the cache, so the Redis flush below
            // reaches the stores instead of being hidden by the cache.
            .set("INLET__AUTH__POSITIVE_TTL_S", "1")
            .command(env!("CARGO_BIN_EXE_inlet"), args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "inlet {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Migrates, creates an account (with a high rate limit) and a key,
    /// loads the keys into Redis; returns the key.
    fn provision(&self) -> String {
        self.ok(&["migrate"]);
        self.ok(&[
            "accounts",
            "create",
            "acme",
            "--rate-limit",
            "100000",
            "--burst",
            "100000",
        ]);
        let key = self
            .ok(&["keys", "create", "--account", "acme"])
            .trim()
            .to_owned();
        assert!(key.starts_with("inlet_"), "{key}");
        self.ok(&["sync", "--once"]);
        key
    }

    /// Starts `inlet api` and waits until it reports ready.
    async fn start_api(&self, n: usize) -> Api {
        let log = self.logs.path().join(format!("api-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::from(self.command(&["api"]))
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let api = Api { child, log };
        let http = self.http();
        let url = format!("{}/health/ready", self.base());
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == 200
            {
                return api;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "API {n} not ready within {LONG:?}; log:\n{}",
                api.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A consumer of this test's queue, connected.
    async fn consumer(&self, cancel: &CancellationToken) -> Consumer {
        let consumer = Consumer::start(
            self.queue_settings(),
            QueueMetrics::unregistered().unwrap(),
            cancel.clone(),
        )
        .unwrap();
        assert!(consumer.wait_connected(LONG).await, "consumer connected");
        consumer
    }

    fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            url: self.amqp.url.clone(),
            prefix: self.amqp.prefix.clone(),
            connection_name: format!("{}-test", self.amqp.prefix),
            ..QueueSettings::default()
        }
    }

    async fn cleanup(self) {
        self.redis.cleanup().await;
        self.mongo.cleanup().await;
        let names = inlet_queue::Names::from_settings(&self.queue_settings());
        self.amqp
            .delete_named(&names.all_queues(), &names.all_exchanges())
            .await;
    }
}

/// Everything that reached the queue: per batch_id, the actions of its
/// first delivery, and how many deliveries carried that batch_id.
#[derive(Default)]
struct Received {
    batches: BTreeMap<String, (Vec<String>, usize)>,
}

impl Received {
    fn add(&mut self, batch: WireBatch) {
        let id = batch
            .batch_id
            .clone()
            .expect("the client always sets batch_id");
        let entry = self.batches.entry(id).or_insert_with(|| {
            (
                batch
                    .transactions
                    .iter()
                    .map(|t| t.action.clone())
                    .collect(),
                0,
            )
        });
        entry.1 += 1;
    }

    /// Actions after de-duplicating by batch_id, with their counts.
    fn actions(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (actions, _) in self.batches.values() {
            for a in actions {
                *m.entry(a.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    fn items(&self) -> usize {
        self.batches.values().map(|(a, _)| a.len()).sum()
    }

    fn redelivered_batches(&self) -> usize {
        self.batches.values().filter(|(_, n)| *n > 1).count()
    }
}

/// Takes everything off the test's queue until `expected` distinct items
/// arrived (or the deadline passes).
async fn drain_queue(consumer: &mut Consumer, expected: usize) -> Received {
    let mut received = Received::default();
    let deadline = tokio::time::Instant::now() + LONG;
    while received.items() < expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(incoming)) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let envelope = incoming.envelope.clone().expect("a valid envelope");
        let json = envelope
            .content_encoding
            .decode(&envelope.body, 64 << 20)
            .unwrap();
        let batch: WireBatch = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            envelope.batch_id.as_ref().map(|b| b.as_str().to_owned()),
            batch.batch_id,
            "the envelope carries the batch's idempotency key"
        );
        received.add(batch);
        incoming.ack().await.unwrap();
    }
    received
}

fn item(n: usize) -> WireTransaction {
    WireTransaction {
        action: format!("E2E#{n}"),
        namespace: Some("web".into()),
        start_ms: now_ms(),
        duration_ms: 3.5,
        status: Some(200),
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_loses_nothing_through_an_api_restart_and_a_redis_flush() {
    let env = Env::new().await;
    let key = env.provision();
    let cancel = CancellationToken::new();
    let mut consumer = env.consumer(&cancel).await;

    let api = env.start_api(1).await;
    let client = Client::builder(&env.base(), &key)
        .app("shop")
        .environment("e2e")
        .agent("inlet-e2e", "1.0.0")
        .flush_interval(Duration::from_millis(100))
        .initial_backoff(Duration::from_millis(50))
        .max_backoff(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // The agent: one item every 2 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(AtomicUsize::new(0));
    let agent = {
        let (client, stop, recorded) = (client.clone(), stop.clone(), recorded.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = recorded.fetch_add(1, Ordering::Relaxed);
                client.record_transaction(item(n));
            }
        })
    };
    let accepted = |c: &Client| c.stats().accepted.items;
    let flowing = |since: u64, what: &'static str| {
        let client = client.clone();
        async move {
            wait_until(LONG, what, || {
                let n = accepted(&client);
                async move { n >= since + 200 }
            })
            .await;
        }
    };
    flowing(0, "data to flow").await;

    // (a) An API restart: SIGTERM, a clean exit, a new process on the
    // same port.
    let before_restart = accepted(&client);
    let status = api.terminate().await;
    assert!(
        status.success(),
        "the API exits cleanly on SIGTERM: {status:?}"
    );
    // The agent notices the outage (connection refused): it keeps the
    // data and backs off. Only then does the new instance start.
    wait_until(LONG, "the agent to see the outage", || {
        let seen = client.stats().last_error.is_some();
        async move { seen }
    })
    .await;
    let api = env.start_api(2).await;
    flowing(before_restart, "data to flow after the restart").await;

    // (b) The key store flushed under the API.
    env.redis.cleanup().await;
    // Past the cache's TTL: every decision now asks the (empty) Redis and
    // falls back to MongoDB.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after_ttl = accepted(&client);
    flowing(after_ttl, "data to flow after the Redis flush").await;

    stop.store(true, Ordering::Relaxed);
    agent.await.unwrap();
    let total = recorded.load(Ordering::Relaxed);
    let report = client.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.left_items, 0, "{report:#?}");
    let stats = &report.stats;
    assert_eq!(stats.dropped_items.total(), 0, "{stats:#?}");
    assert_eq!(stats.accepted.items, total as u64);

    // Every recorded item reached the queue exactly once per batch_id.
    let received = drain_queue(&mut consumer, total).await;
    let want: BTreeMap<String, usize> = (0..total).map(|n| (format!("E2E#{n}"), 1)).collect();
    let got = received.actions();
    if got != want {
        let missing: BTreeSet<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let doubled: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        panic!(
            "recorded {total}, received {} distinct; missing {} (e.g. {:?}); in two batches: {:?}",
            got.len(),
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            doubled.iter().take(5).collect::<Vec<_>>()
        );
    }
    // The outage forced retries; any batch the queue holds twice is a
    // retry after a lost answer, de-duplicated above by its batch_id.
    assert!(
        stats.retried.batches > 0,
        "the restart forced retries: {stats:#?}"
    );
    assert!(received.redelivered_batches() <= stats.retried.batches as usize);

    let status = api.terminate().await;
    assert!(
        status.success(),
        "the second API exits cleanly too: {status:?}"
    );
    cancel.cancel();
    consumer.shutdown().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pushes_to_the_api_over_tls_trusting_a_private_ca() {
    let env = Env::new().await.with_tls();
    let key = env.provision();
    let cancel = CancellationToken::new();
    let mut consumer = env.consumer(&cancel).await;
    let api = env.start_api(1).await;
    assert!(env.base().starts_with("https://"));
    let ca = env.tls.as_ref().unwrap().pem();

    let client = Client::builder(&env.base(), &key)
        .app("shop")
        .root_certificate_pem(ca.as_bytes())
        .flush_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    for n in 0..50 {
        client.record_transaction(item(n));
    }
    let report = client.shutdown(Duration::from_secs(20)).await;
    assert_eq!(
        (report.delivered_items, report.left_items),
        (50, 0),
        "{report:?}"
    );
    let received = drain_queue(&mut consumer, 50).await;
    assert_eq!(received.items(), 50);

    // A client that does not trust the CA sends nothing, and says why.
    let untrusting = Client::builder(&env.base(), &key)
        .app("shop")
        .initial_backoff(Duration::from_millis(50))
        .build()
        .unwrap();
    untrusting.record_transaction(item(50));
    untrusting.flush();
    wait_until(LONG, "the untrusting client to fail a send", || {
        let failed = untrusting.stats().last_error.is_some();
        async move { failed }
    })
    .await;
    let stats = untrusting.stats();
    assert_eq!(stats.accepted.items, 0, "{stats:?}");
    let error = stats.last_error.unwrap();
    assert_eq!(error.status, None, "{error:?}");
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "the transport error names the certificate: {error:?}"
    );
    let _ = untrusting.shutdown(Duration::from_millis(100)).await;

    assert!(api.terminate().await.success());
    cancel.cancel();
    env.cleanup().await;
}

/// `inlet push`'s output is, line for line, one of the transcripts of
/// docs/client.md (ids, numbers and `…` elisions aside: see
/// `inlet_testkit::docs`), found by its status line.
fn assert_is_documented_push_output(real: &str) {
    let md = docs::doc("client.md");
    let transcripts: Vec<Vec<String>> = docs::fenced_blocks(&md, "console")
        .iter()
        .flat_map(|block| block.split("\n\n").map(str::to_owned).collect::<Vec<_>>())
        .filter(|t| t.starts_with("$ ") && t.lines().next().unwrap().contains("inlet push"))
        .map(|t| t.lines().skip(1).map(str::to_owned).collect())
        .collect();
    let real: Vec<&str> = real.lines().collect();
    let example = transcripts
        .iter()
        .find(|t| t.first().map(String::as_str) == real.first().copied())
        .unwrap_or_else(|| {
            panic!(
                "docs/client.md shows no `inlet push` answered {:?}",
                real[0]
            )
        });
    assert_eq!(
        example.len(),
        real.len(),
        "docs/client.md: {example:#?}\nprinted: {real:#?}"
    );
    for (e, r) in example.iter().zip(&real) {
        assert!(
            docs::text_matches(e, r),
            "docs/client.md says {e:?}, inlet push printed {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_load_commands_against_a_real_api() {
    let env = Env::new().await;
    let key = env.provision();
    let api = env.start_api(1).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = env.base();

    // inlet push: a valid batch.
    let now = now_ms();
    let batch = serde_json::json!({
        "batch_id": "push-cmd-1",
        "agent": {"name": "manual", "version": "1"},
        "app": "shop", "environment": "production",
        "transactions": [{"action": "Orders#index", "start_ms": now, "duration_ms": 4.0, "status": 200}]
    });
    let file = dir.path().join("batch.json");
    std::fs::write(&file, batch.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let out = env.ok(&["push", "--file", f, "--endpoint", &endpoint, "--key", &key]);
    assert!(out.starts_with("HTTP 202 Accepted"), "{out}");
    assert!(out.contains("id: "), "{out}");
    assert_is_documented_push_output(&out);

    // The key from the environment, the outcome as JSON.
    let out = env
        .command(&[
            "push",
            "--file",
            f,
            "--endpoint",
            &endpoint,
            "--json",
            "--no-gzip",
        ])
        .env("INLET_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 202);

    // A key the server does not know: the problem and the directive, and a
    // failing exit code.
    let unknown = "inlet_AQG31mIOzsOPBuLO8Te_1qIUIw15YhkCK2qmeFjj6sIY3WasjskHQE6OrJbmNpLz";
    let out = env.run(&[
        "push",
        "--file",
        f,
        "--endpoint",
        &endpoint,
        "--key",
        unknown,
    ]);
    assert!(!out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("HTTP 401"), "{text}");
    assert!(
        text.contains("code: ") && text.contains("probe_after_s: "),
        "{text}"
    );
    assert!(text.contains("agent should: keep the data"), "{text}");
    assert_is_documented_push_output(&text);

    // A broken batch: 400 with the field path.
    std::fs::write(&file, r#"{"agent": {"name": "x"}}"#).unwrap();
    let out = env.run(&["push", "--file", f, "--endpoint", &endpoint, "--key", &key]);
    assert!(!out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("HTTP 400") && text.contains("invalid_json"),
        "{text}"
    );

    // No API at all: an error, not a panic.
    let out = env.run(&[
        "push",
        "--file",
        f,
        "--endpoint",
        "http://127.0.0.1:1",
        "--key",
        &key,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"));

    // inlet load: every generated batch is valid and accepted.
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, format!("# load keys\n{key}\n")).unwrap();
    let out = env.ok(&[
        "load",
        "--rate",
        "100",
        "--duration",
        "2s",
        "--keys",
        keys.to_str().unwrap(),
        "--agents",
        "4",
        "--endpoint",
        &endpoint,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent >= 100, "{report}");
    assert_eq!(report["statuses"]["202"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["answered"].as_u64(), Some(sent));
    assert!(report["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(report["items_sent"].as_u64().unwrap() >= 5 * sent);

    // And the human-readable report.
    let out = env.ok(&[
        "load",
        "--rate",
        "20",
        "--duration",
        "500ms",
        "--keys",
        keys.to_str().unwrap(),
        "--endpoint",
        &endpoint,
    ]);
    assert!(out.contains("statuses    202: "), "{out}");
    assert!(out.contains("latency ms  p50 "), "{out}");

    // On a terminal, a bar over the duration while the load runs; off it
    // (above), only the report.
    let out = on_a_terminal(&env.command(&[
        "load",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--keys",
        keys.to_str().unwrap(),
        "--endpoint",
        &endpoint,
    ]));
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(
        seen.contains("/2 s  sending 20 req/s"),
        "no progress bar: {seen:?}"
    );
    assert!(seen.contains("statuses    202: "), "{seen}");

    // Durations need a unit: a bare number is refused, naming the flag,
    // before anything is sent.
    let out = env.run(&[
        "load",
        "--rate",
        "20",
        "--duration",
        "5",
        "--keys",
        keys.to_str().unwrap(),
        "--endpoint",
        &endpoint,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--duration") && err.contains("5s or 5m"),
        "{err}"
    );

    let status = api.terminate().await;
    assert!(status.success(), "{status:?}");
    env.cleanup().await;
}
