//! Helpers shared by the integration tests (each test file compiles its
//! own copy, so not every helper is used everywhere).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;

use inlet_domain::{AccountId, AuthMode, ContentEncoding, Envelope, KeyDigest, KeyId};
use inlet_queue::topology::{self, Names};
use inlet_queue::{QueueMetrics, QueueSettings};
use inlet_testkit::TestAmqp;
use lapin::message::BasicGetMessage;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;

/// Settings isolated under the test's prefix, with the connection name
/// equal to the prefix (unique, so rabbitmqctl can find our connections).
/// Combining is off: these tests follow each push as its own broker
/// message; combining has tests of its own (`roundtrip.rs`, and the
/// bundle tests of `consumer.rs`).
pub fn settings(t: &TestAmqp) -> QueueSettings {
    QueueSettings {
        url: t.url.clone(),
        prefix: t.prefix.clone(),
        connection_name: t.prefix.clone(),
        combine_max_parts: 1,
        ..QueueSettings::default()
    }
}

/// The same settings pointing at a local proxy instead of the broker.
pub fn via_proxy(mut s: QueueSettings, proxy: std::net::SocketAddr) -> QueueSettings {
    let mut uri: lapin::uri::AMQPUri = s.url.parse().unwrap();
    uri.authority.host = proxy.ip().to_string();
    uri.authority.port = proxy.port();
    s.url = uri.to_string();
    s
}

/// The broker's address, from the test URL.
pub fn broker_addr(t: &TestAmqp) -> std::net::SocketAddr {
    let uri: lapin::uri::AMQPUri = t.url.parse().unwrap();
    let host = if uri.authority.host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        uri.authority.host.clone()
    };
    format!("{host}:{}", uri.authority.port).parse().unwrap()
}

pub fn metrics() -> QueueMetrics {
    QueueMetrics::unregistered().unwrap()
}

/// A publisher on `s`, connected (within 10 s).
pub async fn connected_publisher(s: QueueSettings, m: QueueMetrics) -> inlet_queue::Publisher {
    let publisher = inlet_queue::Publisher::start(s, m).unwrap();
    assert!(publisher.wait_connected(Duration::from_secs(10)).await);
    publisher
}

/// A valid envelope whose body names `i`.
pub fn envelope(i: usize) -> Envelope {
    Envelope {
        message_id: Envelope::new_message_id(),
        account_id: Some(AccountId::parse("acme").unwrap()),
        key_id: KeyId::from_u64(7),
        key_digest: KeyDigest::of_secret("k"),
        auth_mode: AuthMode::Confirmed,
        received_at_ms: 1_790_000_000_000 + i as i64,
        content_encoding: ContentEncoding::Identity,
        batch_id: None,
        body: format!("{{\"n\":{i}}}").into_bytes().into(),
    }
}

/// Deletes a test's topology when dropped, even when the test panicked
/// (on a thread of its own, since Drop cannot await). Declare it before
/// any publisher or consumer so it drops after them.
pub struct Cleanup {
    url: String,
    names: Names,
}

impl Cleanup {
    pub fn new(s: &QueueSettings) -> Cleanup {
        Cleanup {
            url: s.url.clone(),
            names: Names::from_settings(s),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let names = self.names.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(conn) =
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    let _ = topology::delete(&ch, &names).await;
                }
                let _ = conn.close(200, "test cleanup".into()).await;
            });
        })
        .join();
    }
}

/// A plain lapin connection + channel for inspecting queues.
pub struct Probe {
    pub conn: lapin::Connection,
    pub ch: lapin::Channel,
}

impl Probe {
    pub async fn new(t: &TestAmqp) -> Probe {
        let conn = t.connect().await;
        let ch = conn.create_channel().await.unwrap();
        Probe { conn, ch }
    }

    /// Takes (and removes) every message currently in `queue`: one
    /// `basic.get` for small queues, a no-ack consumer for large ones.
    pub async fn drain(&self, queue: &str) -> Vec<BasicGetMessage> {
        let n = self.count(queue).await as usize;
        let mut out = Vec::with_capacity(n);
        if n > 16 {
            let ch = self.conn.create_channel().await.unwrap();
            let mut consumer = ch
                .basic_consume(
                    queue.into(),
                    "".into(),
                    lapin::options::BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .unwrap();
            while out.len() < n {
                let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                    .await
                    .expect("draining stalled")
                    .expect("consumer ended")
                    .unwrap();
                out.push(BasicGetMessage {
                    delivery: d,
                    message_count: 0,
                });
            }
            ch.close(200, "drained".into()).await.unwrap();
        }
        while let Some(m) = self
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(m);
        }
        out
    }

    /// Messages in `queue` right now (passive declare).
    pub async fn count(&self, queue: &str) -> u32 {
        self.ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Waits until `queue` holds at least `n` messages, then drains it.
    pub async fn drain_at_least(
        &self,
        queue: &str,
        n: usize,
        within: Duration,
    ) -> Vec<BasicGetMessage> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + within;
        loop {
            got.extend(self.drain(queue).await);
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{queue}: {} of {n} messages after {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "probe done".into()).await;
    }
}

pub fn message_id(m: &BasicGetMessage) -> String {
    m.delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default()
}

pub fn header<'a>(m: &'a BasicGetMessage, key: &str) -> Option<&'a AMQPValue> {
    m.delivery.properties.headers().as_ref()?.inner().get(key)
}

pub fn header_str(m: &BasicGetMessage, key: &str) -> Option<String> {
    match header(m, key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

pub fn header_int(m: &BasicGetMessage, key: &str) -> Option<i64> {
    match header(m, key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// `rabbitmqctl` with `-n $INLET_TEST_RABBITMQ_NODE` when set.
async fn rabbitmqctl(args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("rabbitmqctl");
    if let Ok(node) = std::env::var("INLET_TEST_RABBITMQ_NODE") {
        cmd.args(["-n", &node]);
    }
    let out = cmd.args(args).output().await.unwrap_or_else(|e| {
        panic!(
            "this test needs rabbitmqctl on PATH (to close a connection from the broker side): {e}"
        )
    });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Broker-side pids of the connections whose client-provided name is
/// exactly `name`. RabbitMQ 3.10's `list_connections` has no
/// `user_provided_name` column, so the name is read from the
/// `client_properties` column (`{"connection_name","NAME"}`; some
/// versions add the type: `{"connection_name",longstr,"NAME"}`).
pub async fn connection_pids(name: &str) -> Vec<String> {
    let out = rabbitmqctl(&[
        "-q",
        "--no-table-headers",
        "list_connections",
        "pid",
        "client_properties",
    ])
    .await;
    out.lines()
        .filter_map(|l| {
            let (pid, props) = l.split_once('\t')?;
            (inlet_testkit::rabbit::client_connection_name(props)? == name)
                .then(|| pid.trim().to_owned())
        })
        .collect()
}

/// Closes, from the broker, every connection named exactly `name`;
/// returns how many were closed.
pub async fn close_connections_named(name: &str) -> usize {
    let pids = connection_pids(name).await;
    for pid in &pids {
        rabbitmqctl(&["close_connection", pid, "inlet-queue test: forced close"]).await;
    }
    pids.len()
}

/// Message ids of the drained messages, with their counts.
pub fn id_counts(msgs: &[BasicGetMessage]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for msg in msgs {
        *m.entry(message_id(msg)).or_insert(0) += 1;
    }
    m
}

/// The consumer's next delivery, failing the test after `secs` seconds.
pub async fn next_within(c: &mut inlet_queue::Consumer, secs: u64) -> inlet_queue::Incoming {
    tokio::time::timeout(Duration::from_secs(secs), c.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery within {secs}s"))
        .expect("consumer ended")
}
