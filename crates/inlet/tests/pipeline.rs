//! The real binaries end to end: `inlet api` and `inlet worker` as child
//! processes against real services; what is pushed shows up in
//! `inlet stats`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use inlet_testkit::{TestAmqp, TestMongo, TestRedis, free_port, wait_for, wait_until};

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
        let mut c = Command::new(env!("CARGO_BIN_EXE_inlet"));
        c.args(args)
            .env(
                "INLET_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
            )
            .env("INLET_ENV", "local")
            .env("INLET__MONGO__URL", &self.mongo.url)
            .env("INLET__MONGO__DATABASE", &self.mongo.db_name)
            .env("INLET__REDIS__URL", &self.redis.url)
            .env("INLET__REDIS__PREFIX", &self.redis.prefix)
            .env("INLET__QUEUE__URL", &self.amqp.url)
            .env("INLET__QUEUE__PREFIX", &self.amqp.prefix)
            .env("INLET__QUEUE__CONNECTION_NAME", &self.amqp.prefix)
            .env("INLET__API__LISTEN", format!("127.0.0.1:{}", self.api_port))
            .env("INLET__API__SHUTDOWN_DELAY_MS", "100")
            .env(
                "INLET__ADMIN__WORKER_LISTEN",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .env("INLET__LOG__FILTER", "warn")
            .env_remove("RUST_LOG");
        c
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
    env.ok(&["migrate"]);
    env.ok(&["accounts", "create", "acme"]);
    let key = env
        .ok(&["keys", "create", "--account", "acme"])
        .trim()
        .to_owned();
    env.ok(&["sync", "--once"]);
    let _api = env.spawn(&["api"]);
    let mut worker = env.spawn(&["worker"]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", env.api_port);
    wait_until(Duration::from_secs(30), "the API ready", || async {
        http.get(format!("{base}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    wait_until(Duration::from_secs(30), "the worker ready", || async {
        http.get(format!("http://127.0.0.1:{}/health/ready", env.admin_port))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

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
    assert!(table.contains("COUNT") && table.contains("100"), "{table}");

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
    env.mongo.cleanup().await;
    env.redis.cleanup().await;
    let names = inlet_queue::Names::from_settings(&inlet_queue::QueueSettings {
        prefix: env.amqp.prefix.clone(),
        ..Default::default()
    });
    let strip = |n: &str| {
        n.trim_start_matches(&format!("{}.", env.amqp.prefix))
            .to_owned()
    };
    let queues: Vec<String> = names.all_queues().iter().map(|q| strip(q)).collect();
    let exchanges: Vec<String> = names.all_exchanges().iter().map(|e| strip(e)).collect();
    let q: Vec<&str> = queues.iter().map(String::as_str).collect();
    let e: Vec<&str> = exchanges.iter().map(String::as_str).collect();
    env.amqp.cleanup(&q, &e).await;
}
