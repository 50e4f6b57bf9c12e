//! `spawn_app()`: a real API against real Redis, RabbitMQ and MongoDB-wire
//! servers, each test isolated by prefixes and database names.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use inlet_api::{ApiSettings, Application, Dependencies};
use inlet_auth::key_admin::KeyAdmin;
use inlet_auth::stack::AuthStack;
use inlet_auth::sync::{KeySync, SyncSettings};
use inlet_auth::{
    AuthMetrics, AuthSettings, MongoSettings, MongoStore, PrimaryStore, RedisSettings, RedisStore,
    SigningSettings, SyncMetrics,
};
use inlet_domain::{AccountId, ApiKey, BatchLimits, Envelope, RateLimit, now_ms};
use inlet_migrate::{Migration, Migrator};
use inlet_obs::{Health, process_registry};
use inlet_queue::{Consumer, Publisher, QueueMetrics, QueueSettings};
use inlet_testkit::{FaultProxy, TestAmqp, TestMongo, TestRedis, wait_until};
use tokio_util::sync::CancellationToken;

pub const DEV_SECRET: &str = "696e6c65742d6c6f63616c2d646576656c6f706d656e742d736563726574212121";

/// Knobs for one test's app.
#[derive(Clone)]
pub struct Options {
    pub source_of_truth: bool,
    pub backfill: bool,
    pub api: ApiSettings,
    pub redis_via_proxy: bool,
    pub mongo_via_proxy: bool,
    pub amqp_via_proxy: bool,
    /// The publisher's in-flight bound (`queue.max_in_flight`).
    pub max_in_flight: Option<usize>,
    /// A CA the test's HTTP client trusts (with `api.tls` set).
    pub tls_root_pem: Option<String>,
}

impl Options {
    /// An admin listener (`api.admin_listen`) and the broker behind a
    /// proxy the test can cut: the readiness tests' setup.
    pub fn admin_listener_and_amqp_proxy() -> Options {
        let defaults = Options::default();
        Options {
            amqp_via_proxy: true,
            api: ApiSettings {
                admin_listen: Some("127.0.0.1:0".into()),
                ..defaults.api.clone()
            },
            ..defaults
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source_of_truth: true,
            backfill: true,
            api: ApiSettings {
                listen: "127.0.0.1:0".into(),
                workers: 2,
                shutdown_delay_ms: 300,
                shutdown_timeout_s: 5,
                ..ApiSettings::default()
            },
            redis_via_proxy: false,
            mongo_via_proxy: false,
            amqp_via_proxy: false,
            max_in_flight: None,
            tls_root_pem: None,
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// The admin listener, when `api.admin_listen` is set.
    pub admin_base: Option<String>,
    pub client: reqwest::Client,
    pub key: ApiKey,
    pub account: AccountId,
    pub admin: KeyAdmin,
    pub redis_t: TestRedis,
    pub mongo_t: TestMongo,
    pub amqp: TestAmqp,
    pub queue: QueueSettings,
    pub redis: RedisStore,
    pub redis_proxy: Option<FaultProxy>,
    pub mongo_proxy: Option<FaultProxy>,
    pub amqp_proxy: Option<FaultProxy>,
    pub registry: prometheus::Registry,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    cancel: CancellationToken,
}

fn addr(url: &str, scheme: &str) -> SocketAddr {
    let rest = url.trim_start_matches(scheme);
    let host = rest.rsplit('@').next().unwrap();
    let host = host.split(['/', '?']).next().unwrap();
    host.parse().unwrap()
}

pub fn signing() -> SigningSettings {
    SigningSettings {
        current: Some(1),
        secrets: [("1".to_owned(), DEV_SECRET.to_owned())].into(),
        ..SigningSettings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let redis_t = TestRedis::new().await;
    let mongo_t = TestMongo::new().await;
    let amqp = TestAmqp::new();

    let redis_proxy = if opts.redis_via_proxy {
        Some(FaultProxy::start(addr(&redis_t.url, "redis://")).await)
    } else {
        None
    };
    let mongo_proxy = if opts.mongo_via_proxy {
        Some(FaultProxy::start(addr(&mongo_t.url, "mongodb://")).await)
    } else {
        None
    };
    let amqp_proxy = if opts.amqp_via_proxy {
        Some(FaultProxy::start(addr(&amqp.url, "amqp://")).await)
    } else {
        None
    };

    let redis_settings = RedisSettings {
        url: match &redis_proxy {
            Some(p) => format!("redis://{}", p.addr()),
            None => redis_t.url.clone(),
        },
        prefix: redis_t.prefix.clone(),
        ..RedisSettings::default()
    };
    let mongo_settings = MongoSettings {
        url: match &mongo_proxy {
            Some(p) => format!(
                "mongodb://{}/?directConnection=true&retryWrites=false",
                p.addr()
            ),
            None => mongo_t.url.clone(),
        },
        database: mongo_t.db_name.clone(),
        server_selection_timeout_ms: 1_000,
        connect_timeout_ms: 1_000,
        ..MongoSettings::default()
    };
    let queue = QueueSettings {
        url: match &amqp_proxy {
            Some(p) => format!("amqp://guest:guest@{}/%2f", p.addr()),
            None => amqp.url.clone(),
        },
        prefix: amqp.prefix.clone(),
        connection_name: amqp.prefix.clone(),
        confirm_timeout_ms: 2_000,
        connect_timeout_ms: 2_000,
        max_in_flight: opts
            .max_in_flight
            .unwrap_or(QueueSettings::default().max_in_flight),
        ..QueueSettings::default()
    };

    // The source of truth: migrated, with an account and a key.
    let mongo = MongoStore::new(mongo_t.db());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    Migrator::new(mongo_t.db(), Migration::load_dir(&dir).unwrap())
        .unwrap()
        .run()
        .await
        .unwrap();
    let redis_direct = RedisStore::new(&RedisSettings {
        url: redis_t.url.clone(),
        prefix: redis_t.prefix.clone(),
        ..RedisSettings::default()
    })
    .unwrap();
    let admin = KeyAdmin::new(mongo.clone()).with_redis(redis_direct.clone());
    let account = AccountId::parse("acme").unwrap();
    admin
        .create_account(
            &account,
            Some(RateLimit {
                per_second: 1000,
                burst: 1000,
            }),
        )
        .await
        .unwrap();
    let issuer = signing().issuer().unwrap().unwrap();
    let key = admin.create_key(&issuer, &account, None).await.unwrap().0;
    if opts.backfill {
        KeySync::new(
            mongo.clone(),
            redis_direct.clone(),
            SyncSettings::default(),
            SyncMetrics::unregistered().unwrap(),
        )
        .backfill()
        .await
        .unwrap();
    }

    let registry = process_registry("api");
    let auth_settings = AuthSettings {
        primary: PrimaryStore::Redis,
        source_of_truth: opts.source_of_truth,
        primary_timeout_ms: 300,
        truth_timeout_ms: 1_500,
        readiness_interval_ms: 100,
        ..AuthSettings::default()
    };
    let stack = AuthStack::build(
        &auth_settings,
        &signing(),
        &redis_settings,
        &mongo_settings,
        AuthMetrics::register(&registry).unwrap(),
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    stack.spawn_background(&cancel);
    let publisher =
        Publisher::start(queue.clone(), QueueMetrics::register(&registry).unwrap()).unwrap();
    let app = Application::build(
        opts.api.clone(),
        Dependencies {
            authenticator: stack.authenticator.clone(),
            publisher,
            registry: registry.clone(),
            health: Health::new(),
            limits: BatchLimits::default(),
        },
    )
    .unwrap();
    let base = format!("{}://127.0.0.1:{}", app.scheme(), app.port());
    let admin_base = app.admin_port().map(|p| format!("http://127.0.0.1:{p}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        admin_base,
        client: test_client(opts.tls_root_pem.as_deref()),
        key,
        account,
        admin,
        redis_t,
        mongo_t,
        amqp,
        queue,
        redis: redis_direct,
        redis_proxy,
        mongo_proxy,
        amqp_proxy,
        registry,
        shutdown: Some(tx),
        server: Some(server),
        cancel,
    }
}

/// An HTTP client for the test, trusting `root_pem` when given.
pub fn test_client(root_pem: Option<&str>) -> reqwest::Client {
    let roots = root_pem.map(|pem| reqwest::Certificate::from_pem_bundle(pem.as_bytes()).unwrap());
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .tls_certs_merge(roots.into_iter().flatten())
        .build()
        .unwrap()
}

/// A small valid batch as JSON.
pub fn batch_json(batch_id: Option<&str>) -> serde_json::Value {
    let now = now_ms();
    let mut v = serde_json::json!({
        "agent": {"name": "test-agent", "version": "1.0", "hostname": "h1"},
        "app": "shop",
        "environment": "production",
        "transactions": [
            {"action": "Orders#index", "start_ms": now - 500, "duration_ms": 12.5, "status": 200},
            {"action": "Orders#show", "start_ms": now - 100, "duration_ms": 40.0, "status": 500,
             "error": {"class": "Boom"}}
        ],
        "metrics": [{"kind": "counter", "name": "jobs", "value": 2, "timestamp_ms": now}]
    });
    if let Some(id) = batch_id {
        v["batch_id"] = serde_json::json!(id);
    }
    v
}

impl TestApp {
    pub fn push(&self) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/v1/push", self.base))
    }

    pub async fn push_json(
        &self,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut req = self.push().json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn wait_ready(&self) {
        wait_until(
            Duration::from_secs(20),
            "the API to report ready",
            || async { self.get("/health/ready").await.status() == 200 },
        )
        .await;
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// A consumer of this test's queue.
    pub fn consumer(&self, cancel: &CancellationToken) -> Consumer {
        let mut settings = self.queue.clone();
        settings.url = self.amqp.url.clone();
        Consumer::start(
            settings,
            QueueMetrics::unregistered().unwrap(),
            cancel.clone(),
        )
        .unwrap()
    }

    /// Takes the next envelope off the queue (acking it).
    pub async fn next_envelope(&self, consumer: &mut Consumer) -> Envelope {
        let incoming = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message within 10 s")
            .expect("consumer open");
        let env = incoming.envelope.clone().expect("a valid envelope");
        incoming.ack().await.unwrap();
        env
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), s).await;
        }
    }

    pub async fn cleanup(mut self) {
        self.stop().await;
        self.cancel.cancel();
        self.redis_t.cleanup().await;
        self.mongo_t.cleanup().await;
        let names = inlet_queue::Names::from_settings(&self.queue);
        let queues: Vec<String> = names
            .all_queues()
            .iter()
            .map(|q| {
                q.trim_start_matches(&format!("{}.", self.amqp.prefix))
                    .to_owned()
            })
            .collect();
        let exchanges: Vec<String> = names
            .all_exchanges()
            .iter()
            .map(|e| {
                e.trim_start_matches(&format!("{}.", self.amqp.prefix))
                    .to_owned()
            })
            .collect();
        let q: Vec<&str> = queues.iter().map(String::as_str).collect();
        let e: Vec<&str> = exchanges.iter().map(String::as_str).collect();
        self.amqp.cleanup(&q, &e).await;
    }
}

/// Spawns the app of `opts` with a long shutdown delay, pushes on a
/// kept-alive connection, begins shutdown, and checks that the push served
/// during the delay tells the client (HTTP/1.1, `Connection: close`) to
/// reconnect, through the balancer, to another instance.
pub async fn assert_draining_closes_kept_alive_connections(opts: Options) {
    let mut app = spawn_app_with(Options {
        api: inlet_api::ApiSettings {
            // Long enough for a busy machine to send the second push
            // before the listener closes.
            shutdown_delay_ms: 5_000,
            keep_alive_s: 30,
            ..opts.api.clone()
        },
        ..opts
    })
    .await;
    app.wait_ready().await;
    let key = app.key.expose_secret().to_owned();
    let body = batch_json(None);
    let closes = |resp: &reqwest::Response| {
        resp.headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    };
    let resp = app.push_json(Some(&key), &body).await;
    assert_eq!(resp.status(), 202);
    // A connection that can be told to close: HTTP/2 has no
    // `Connection` header, and actix-web's HTTP/2 sends no GOAWAY.
    assert_eq!(resp.version(), reqwest::Version::HTTP_11, "{resp:?}");
    assert!(!closes(&resp), "keep-alive while serving: {resp:?}");

    let _ = app.shutdown.take().unwrap().send(());
    let ready_url = format!("{}/health/ready", app.base);
    inlet_testkit::wait_until(Duration::from_secs(5), "readiness 503", || async {
        app.client
            .get(&ready_url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    // Still served during the shutdown delay, but the client is told to
    // reconnect.
    let resp = app.push_json(Some(&key), &body).await;
    assert_eq!(resp.status(), 202);
    assert!(closes(&resp), "Connection: close while draining: {resp:?}");
    app.cleanup().await;
}
