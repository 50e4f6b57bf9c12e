//! One test's stack: isolated services, a provisioned key, `inlet api`
//! and `inlet worker` as child processes.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use inlet_testkit::{FaultProxy, InletEnv, LoadBalancer, TestAmqp, TestMongo, TestRedis};
use inlet_testkit::{free_port, wait_until};

use crate::stored::{self, Facts};

/// The account every test provisions.
pub const ACCOUNT: &str = "acme";

/// Kills the child on drop (a failing test must not leak processes).
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The services of one test and the binaries configured for them.
pub struct Stack {
    pub mongo: TestMongo,
    pub redis: TestRedis,
    pub amqp: TestAmqp,
    api_port: u16,
    admin_port: u16,
    logs: tempfile::TempDir,
    /// Between the API and the broker, when the test cuts it (the worker
    /// always talks to the broker directly).
    pub broker: Option<FaultProxy>,
    /// Extra settings of the API process.
    api_env: Vec<(String, String)>,
}

fn socket_addr(amqp_url: &str) -> SocketAddr {
    let rest = amqp_url.split_once("://").map_or(amqp_url, |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    host_port
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("broker address {host_port:?} of {amqp_url}: {e}"))
        .next()
        .expect("a broker address")
}

impl Stack {
    /// Fresh services; with `cut_able_broker`, the API reaches RabbitMQ
    /// through a [`FaultProxy`] the test can cut.
    pub async fn new(cut_able_broker: bool, api_env: &[(&str, &str)]) -> Stack {
        let amqp = TestAmqp::new();
        let broker = if cut_able_broker {
            Some(FaultProxy::start(socket_addr(&amqp.url)).await)
        } else {
            None
        };
        Stack {
            mongo: TestMongo::new().await,
            redis: TestRedis::new().await,
            amqp,
            api_port: free_port(),
            admin_port: free_port(),
            logs: tempfile::tempdir().unwrap(),
            broker,
            api_env: api_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn env(&self) -> InletEnv {
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
    }

    fn command(&self, args: &[&str]) -> Command {
        self.env().command(env!("CARGO_BIN_EXE_inlet"), args)
    }

    /// `inlet args…`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "inlet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Migrates, creates the account (with a rate limit no test reaches)
    /// and a key, syncs the keys to Redis; returns the key.
    pub fn provision(&self) -> String {
        self.ok(&["migrate"]);
        self.ok(&[
            "accounts",
            "create",
            ACCOUNT,
            "--rate-limit",
            "100000",
            "--burst",
            "100000",
        ]);
        let key = self
            .ok(&["keys", "create", "--account", ACCOUNT])
            .trim()
            .to_owned();
        assert!(key.starts_with("inlet_"), "{key}");
        self.ok(&["sync", "--once"]);
        key
    }

    fn log_path(&self, role: &str) -> PathBuf {
        self.logs.path().join(format!("{role}.log"))
    }

    /// The log of `api` or `worker` (their stderr), for failure messages.
    pub fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.log_path(role)).unwrap_or_default()
    }

    fn spawn(&self, role: &str, mut env: InletEnv) -> Proc {
        if role == "api" {
            if let Some(proxy) = &self.broker {
                let url = self.amqp.url.replacen(
                    &socket_addr(&self.amqp.url).to_string(),
                    &proxy.addr().to_string(),
                    1,
                );
                assert_ne!(url, self.amqp.url, "the broker URL names its address");
                env = env.set("INLET__QUEUE__URL", url);
            }
            for (k, v) in &self.api_env {
                env = env.set(k, v.clone());
            }
        }
        let log = std::fs::File::create(self.log_path(role)).unwrap();
        let mut cmd = env.command(env!("CARGO_BIN_EXE_inlet"), &[role]);
        Proc(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap())
    }

    /// The API's base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The API's address.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }

    /// Starts `inlet api` and `inlet worker` and waits until both are
    /// ready.
    pub async fn start(&self, http: &reqwest::Client) -> (Proc, Proc) {
        let api = self.spawn("api", self.env());
        let worker = self.spawn("worker", self.env());
        for (what, base) in [
            ("the API ready", self.base()),
            (
                "the worker ready",
                format!("http://127.0.0.1:{}", self.admin_port),
            ),
        ] {
            wait_until(Duration::from_secs(60), what, || async {
                http.get(format!("{base}/health/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await;
        }
        (api, worker)
    }

    /// A recording proxy in front of the API: every answer the client got.
    pub async fn recorder(&self) -> LoadBalancer {
        LoadBalancer::passthrough(self.api_addr()).await
    }

    /// The API's readiness status.
    pub async fn api_ready(&self, http: &reqwest::Client) -> Option<u16> {
        http.get(format!("{}/health/ready", self.base()))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    fn names(&self) -> inlet_queue::Names {
        inlet_queue::Names::from_settings(&inlet_queue::QueueSettings {
            prefix: self.amqp.prefix.clone(),
            ..Default::default()
        })
    }

    /// Messages in the dead-letter queue.
    pub async fn dead_letters(&self) -> Option<u32> {
        self.amqp.message_count(&self.names().dead_queue).await
    }

    /// Waits until exactly `want` is stored for `app` (see
    /// [`stored::expect_exactly`]); panics with the differences and the
    /// worker's log otherwise.
    pub async fn expect_stored(&self, app: &str, want: &Facts) {
        if let Err(diffs) = stored::expect_exactly(&self.mongo.db(), ACCOUNT, app, want).await {
            panic!(
                "{diffs}\nworker log:\n{}\napi log:\n{}",
                self.log("worker"),
                self.log("api")
            );
        }
    }

    /// Drops this test's database, Redis keys, queues and exchanges.
    pub async fn cleanup(&self) {
        self.mongo.cleanup().await;
        self.redis.cleanup().await;
        let names = self.names();
        self.amqp
            .delete_named(&names.all_queues(), &names.all_exchanges())
            .await;
    }
}
