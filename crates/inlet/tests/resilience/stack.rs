//! The processes under test and the services they use.
//!
//! A [`Stack`] is one scenario's corner of Redis, RabbitMQ and MongoDB
//! (shared servers isolated by prefix and database name, or private
//! servers a scenario may stop), the environment every `inlet` process of
//! the scenario gets (`inlet_testkit::InletEnv`, shared with the other
//! integration tests, plus the resilience settings), the CLI for
//! provisioning, child processes killed on drop, readiness
//! polling, and the queries that reconcile what was stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use inlet_testkit::{
    InletEnv, SecantusServer, SecantusStorage, TestAmqp, TestMongo, TestRedis, free_port,
};
use mongodb::bson::{Bson, Document, doc};

use crate::metrics::{Scrape, scrape};

/// Generous bound for a process to become ready on a loaded machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a stack's services are (`None`: the shared test service).
#[derive(Debug, Default, Clone)]
pub struct Services {
    /// MongoDB URL the processes use (may point at a proxy).
    pub mongo_for_procs: Option<String>,
    /// MongoDB URL the harness reconciles through (a direct connection).
    pub mongo: Option<String>,
    /// Redis URL.
    pub redis: Option<String>,
    /// RabbitMQ URL.
    pub amqp: Option<String>,
}

/// One scenario's services and the `inlet` environment for them.
pub struct Stack {
    pub mongo: TestMongo,
    /// The private server `mongo` talks to, when the scenario brought none
    /// (killed with the stack).
    _own_mongo: Option<SecantusServer>,
    pub redis: TestRedis,
    pub amqp: TestAmqp,
    /// The environment of every `inlet` process of the scenario.
    env: InletEnv,
    logs: tempfile::TempDir,
    seq: AtomicUsize,
    pub http: reqwest::Client,
}

/// What the worker stored for some accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stored {
    /// Sum of `count` over `tx_minutes`.
    pub count: u64,
    /// Sum of `duration_sum`, milliseconds.
    pub duration_sum: f64,
}

fn number(b: Option<&Bson>) -> f64 {
    match b {
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        Some(Bson::Double(n)) => *n,
        _ => 0.0,
    }
}

impl Stack {
    /// A stack on the given services (shared ones where `None`), with
    /// `env` applied to every `inlet` process.
    ///
    /// MongoDB is a private SecantusDB unless the scenario brings its own:
    /// a scenario's load (and any transaction its faults cut mid-flight)
    /// can leave SecantusDB slow for minutes, which must not reach the next
    /// scenario or the rest of the suite.
    pub async fn new(services: Services, env: &[(&str, &str)]) -> Stack {
        let own_mongo = (services.mongo.is_none() && services.mongo_for_procs.is_none())
            .then(|| blocking(|| SecantusServer::start(SecantusStorage::Memory)));
        let mongo = match (&services.mongo, &own_mongo) {
            (Some(url), _) => TestMongo::at(url).await,
            (None, Some(server)) => TestMongo::at(&server.url()).await,
            (None, None) => TestMongo::new().await,
        };
        let redis = match &services.redis {
            Some(url) => TestRedis::at(url).await,
            None => TestRedis::new().await,
        };
        let amqp = match &services.amqp {
            Some(url) => TestAmqp::at(url),
            None => TestAmqp::new(),
        };
        let mongo_for_procs = services
            .mongo_for_procs
            .clone()
            .unwrap_or_else(|| mongo.url.clone());
        // The environment of every `inlet` process of the scenario: the
        // one all integration tests share, plus the resilience settings,
        // plus the scenario's own.
        let mut inlet_env = InletEnv::new(&mongo_for_procs, &mongo.db_name, &redis, &amqp)
            .set("INLET__API__SHUTDOWN_DELAY_MS", "300")
            // Short server hints so recovery is measured in seconds, not
            // in the default 2–5 s per retry.
            .set("INLET__API__RETRY_AFTER_S", "1")
            .set("INLET__API__RETRY_AFTER_JITTER_S", "1")
            .set("INLET__LOG__FILTER", "info")
            .set("INLET__LOG__FORMAT", "pretty")
            .set("NO_COLOR", "1");
        for (k, v) in env {
            inlet_env = inlet_env.set(k, *v);
        }
        let env = inlet_env;
        let logs = tempfile::Builder::new()
            .prefix("inlet-resilience.")
            .tempdir()
            .unwrap();
        Stack {
            mongo,
            _own_mongo: own_mongo,
            redis,
            amqp,
            env,
            logs,
            seq: AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// A configuration change of the deployment: every `inlet` process
    /// started from now on gets `key=value` (`None`: no longer set).
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.set_in_place(key, value.map(str::to_owned));
    }

    /// The queue names of this stack.
    pub fn names(&self) -> inlet_queue::Names {
        inlet_queue::Names::from_settings(&inlet_queue::QueueSettings {
            prefix: self.amqp.prefix.clone(),
            ..Default::default()
        })
    }

    /// An `inlet` command with this stack's environment.
    pub fn command(&self, args: &[&str], extra: &[(&str, String)]) -> tokio::process::Command {
        let mut c =
            tokio::process::Command::from(self.env.command(env!("CARGO_BIN_EXE_inlet"), args));
        c.stdin(Stdio::null()).kill_on_drop(true);
        for (k, v) in extra {
            c.env(k, v);
        }
        c
    }

    /// Runs `inlet args…` to completion; panics unless it succeeds.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self
            .command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "inlet {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `inlet migrate`.
    pub async fn migrate(&self) {
        self.ok(&["migrate"]).await;
    }

    /// Creates each account (with `rate`, or the server default) and one
    /// key for it through the CLI (four at a time); returns the keys in the
    /// order of `accounts`.
    pub async fn accounts_with_keys(
        &self,
        accounts: &[String],
        rate: Option<(u32, u32)>,
    ) -> Vec<String> {
        let results: Vec<(usize, String)> = futures::stream::iter(accounts.iter().enumerate())
            .map(|(i, a)| async move {
                let mut args = vec!["accounts", "create", a.as_str()];
                let (r, b) = rate.map_or((String::new(), String::new()), |(r, b)| {
                    (r.to_string(), b.to_string())
                });
                if rate.is_some() {
                    args.extend(["--rate-limit", r.as_str(), "--burst", b.as_str()]);
                }
                self.ok(&args).await;
                let key = self
                    .ok(&["keys", "create", "--account", a])
                    .await
                    .trim()
                    .to_owned();
                assert!(key.starts_with("inlet_"), "{key}");
                (i, key)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let mut keys = vec![String::new(); accounts.len()];
        for (i, k) in results {
            keys[i] = k;
        }
        keys
    }

    /// The key id of the (only) key of `account` (`inlet keys list`).
    pub async fn key_id(&self, account: &str) -> String {
        let out = self
            .ok(&["keys", "list", "--account", account, "--json"])
            .await;
        let line = out.lines().next().expect("a key");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["key_id"].as_str().unwrap().to_owned()
    }

    /// Starts `inlet args…` in the background; its log goes to a file.
    /// `port` is the port its health and metrics are served on.
    pub fn spawn(&self, name: &str, args: &[&str], port: u16, extra: &[(&str, String)]) -> Proc {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let log = self.logs.path().join(format!("{n:02}-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(args, extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_owned(),
            port,
            metrics_port: port,
            child,
            log,
            exit: None,
        }
    }

    /// Starts `inlet api` on `port` (not waiting for readiness).
    pub fn api(&self, name: &str, port: u16, extra: &[(&str, String)]) -> Proc {
        let mut env = vec![("INLET__API__LISTEN", format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        self.spawn(name, &["api"], port, &env)
    }

    /// Starts `inlet api` on `port` with `/metrics` on a separate admin
    /// listener, which stays up until in-flight requests have drained (so
    /// the final counts can be read while the instance shuts down).
    pub fn api_with_admin(&self, name: &str, port: u16, extra: &[(&str, String)]) -> Proc {
        let admin = free_port();
        let mut env = vec![
            ("INLET__API__LISTEN", format!("127.0.0.1:{port}")),
            ("INLET__API__ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
        ];
        env.extend(extra.iter().cloned());
        let mut p = self.spawn(name, &["api"], port, &env);
        p.metrics_port = admin;
        p
    }

    /// Starts `inlet worker` with its admin listener on a free port.
    pub fn worker(&self, name: &str, extra: &[(&str, String)]) -> Proc {
        let port = free_port();
        let mut env = vec![("INLET__ADMIN__WORKER_LISTEN", format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        self.spawn(name, &["worker"], port, &env)
    }

    /// Starts `inlet sync` (long-running) with its admin listener on a free
    /// port.
    pub fn sync(&self, name: &str, extra: &[(&str, String)]) -> Proc {
        let port = free_port();
        let mut env = vec![("INLET__ADMIN__SYNC_LISTEN", format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        self.spawn(name, &["sync"], port, &env)
    }

    /// `GET /health/ready` of a process: the status, or `None`.
    pub async fn ready_status(&self, p: &Proc) -> Option<u16> {
        self.http
            .get(format!("{}/health/ready", p.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits (at most `timeout`) until `p` answers `/health/ready` with
    /// 200: when it did, or `None` (for a scenario whose check is that it
    /// does; [`Self::wait_ready`] for a precondition).
    pub async fn ready_within(&self, p: &mut Proc, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready_status(p).await == Some(200) {
                return Some(Instant::now());
            }
            if p.exited().is_some() || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `p` answers `/health/ready` with 200; panics (with its
    /// log) if it exits or takes longer than `timeout`.
    pub async fn wait_ready(&self, p: &mut Proc, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready_status(p).await == Some(200) {
                return Instant::now();
            }
            if let Some(status) = p.exited() {
                panic!(
                    "{} exited ({status}) before it was ready; log:\n{}",
                    p.name,
                    p.log_tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {timeout:?}; log:\n{}",
                p.name,
                p.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Scrapes a process's `/metrics`.
    pub async fn metrics(&self, p: &Proc) -> Option<Scrape> {
        scrape(&self.http, &format!("{}/metrics", p.metrics_base())).await
    }

    /// Scrapes a process's `/metrics`, retrying for a while.
    pub async fn metrics_now(&self, p: &Proc) -> Scrape {
        for _ in 0..50 {
            if let Some(s) = self.metrics(p).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} /metrics did not answer; log:\n{}",
            p.name,
            p.log_tail(40)
        );
    }

    /// What the worker stored for `accounts` (every account when empty).
    pub async fn stored(&self, accounts: &[String]) -> Stored {
        self.stored_for(accounts, None).await
    }

    /// What the worker stored for `accounts` (every account when empty),
    /// under `app` only when given.
    pub async fn stored_for(&self, accounts: &[String], app: Option<&str>) -> Stored {
        let mut filter = if accounts.is_empty() {
            doc! {}
        } else {
            doc! { "account": { "$in": accounts.to_vec() } }
        };
        if let Some(app) = app {
            filter.insert("app", app);
        }
        let coll = self.mongo.db().collection::<Document>("tx_minutes");
        let mut cursor = coll
            .find(filter)
            .projection(doc! { "count": 1, "duration_sum": 1 })
            .await
            .expect("reading tx_minutes");
        let mut s = Stored::default();
        while let Some(d) = cursor.next().await {
            let d = d.expect("a tx_minutes document");
            s.count += number(d.get("count")) as u64;
            s.duration_sum += number(d.get("duration_sum"));
        }
        s
    }

    /// Messages ready in the main queue and the delay queues, and in the
    /// dead-letter queue (`None` when the broker does not answer).
    pub async fn queue_depths(&self) -> Option<(u32, u32)> {
        let names = self.names();
        let mut pending = self.amqp.message_count(&names.queue).await?;
        for (_, q) in &names.delay_queues {
            pending += self.amqp.message_count(q).await.unwrap_or(0);
        }
        let dead = self
            .amqp
            .message_count(&names.dead_queue)
            .await
            .unwrap_or(0);
        Some((pending, dead))
    }

    /// The main queue as the broker reports it (for failure details).
    pub async fn describe_queue(&self) -> String {
        let names = self.names();
        match self.amqp.queue_counts(&names.queue).await {
            Some((ready, consumers)) => format!(
                "main queue: {ready} ready, {consumers} consumers; dead-letter queue: {:?}",
                self.amqp.message_count(&names.dead_queue).await
            ),
            None => "main queue: the broker did not answer".into(),
        }
    }

    /// Waits until the worker has stored at least `expected` items for
    /// `accounts` and nothing more is pending (queues empty, count stable),
    /// or `timeout` passes. Returns the final count.
    pub async fn wait_drained(
        &self,
        accounts: &[String],
        expected: u64,
        timeout: Duration,
    ) -> Stored {
        self.wait_drained_for(accounts, None, expected, timeout)
            .await
    }

    /// [`Self::wait_drained`], counting what is stored under `app` only
    /// when given.
    pub async fn wait_drained_for(
        &self,
        accounts: &[String],
        app: Option<&str>,
        expected: u64,
        timeout: Duration,
    ) -> Stored {
        let deadline = Instant::now() + timeout;
        let mut last: Option<Stored> = None;
        loop {
            let now = self.stored_for(accounts, app).await;
            let idle = matches!(self.queue_depths().await, Some((0, _)));
            if now.count >= expected && idle && last.is_some_and(|l| l.count == now.count) {
                return now;
            }
            if Instant::now() >= deadline {
                return now;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Deletes the scenario's database, Redis keys, queues and exchanges.
    pub async fn cleanup(&self) {
        self.mongo.cleanup().await;
        self.redis.cleanup().await;
        let names = self.names();
        self.amqp
            .delete_named(&names.all_queues(), &names.all_exchanges())
            .await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("INLET_RESILIENCE_KEEP_LOGS").is_some() {
            // Keep the logs of a failed scenario, and say where they are.
            self.logs.disable_cleanup(true);
            println!(
                "resilience: process logs kept in {}",
                self.logs.path().display()
            );
        }
    }
}

/// An `inlet` child process; killed (SIGKILL) on drop.
pub struct Proc {
    pub name: String,
    /// The port its `/health/*` endpoints answer on.
    pub port: u16,
    /// The port its `/metrics` answers on.
    pub metrics_port: u16,
    child: tokio::process::Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// `http://127.0.0.1:PORT` (health, and the push API for `inlet api`).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where `/metrics` is.
    pub fn metrics_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The socket address of its port.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status();
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn sigkill(&mut self) {
        let _ = self.child.start_kill();
        self.exit = self.child.wait().await.ok();
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// One `/health/ready` answer.
#[derive(Debug, Clone)]
pub struct ReadyProbe {
    /// When it was answered (or failed).
    pub at: Instant,
    /// The status; `None` when nothing answered (not listening yet).
    pub status: Option<u16>,
    /// `components.auth.ready` of the body.
    pub auth: Option<bool>,
    /// `components.queue.ready` of the body.
    pub queue: Option<bool>,
}

/// Polls a `/health/ready` endpoint every 25 ms from the moment it is
/// created, keeping every answer.
pub struct ReadinessWatch {
    probes: Arc<Mutex<Vec<ReadyProbe>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadinessWatch {
    /// Starts polling `base/health/ready`.
    pub fn start(base: &str) -> ReadinessWatch {
        let url = format!("{base}/health/ready");
        let probes = Arc::new(Mutex::new(Vec::new()));
        let sink = probes.clone();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let probe = match http.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let ready = |c: &str| body["components"][c]["ready"].as_bool();
                        ReadyProbe {
                            at: Instant::now(),
                            status: Some(status),
                            auth: ready("auth"),
                            queue: ready("queue"),
                        }
                    }
                    Err(_) => ReadyProbe {
                        at: Instant::now(),
                        status: None,
                        auth: None,
                        queue: None,
                    },
                };
                sink.lock().unwrap().push(probe);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        ReadinessWatch { probes, task }
    }

    /// Every answer so far.
    pub fn probes(&self) -> Vec<ReadyProbe> {
        self.probes.lock().unwrap().clone()
    }

    /// Counts of answers by status (`none` when nothing answered).
    pub fn summary(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for p in self.probes() {
            let k = p
                .status
                .map_or_else(|| "none".to_owned(), |s| s.to_string());
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for ReadinessWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs blocking service control (private server start/stop) without
/// stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
