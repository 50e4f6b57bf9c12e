//! Typed settings for the AMQP side of Inlet (`[queue]` in the layered
//! configuration).
//!
//! Every field has a built-in default, so an empty `[queue]` section works
//! against a local broker. [`QueueSettings::validate`] runs once at start-up
//! and names the offending field; the rest of the crate relies on it (names
//! fit in an AMQP short string, timeouts are non-zero, and so on).

use std::time::Duration;

use lapin::uri::AMQPUri;
use serde::{Deserialize, Serialize};

/// The longest prefix accepted: every derived name (the longest is
/// `{prefix}.push.delay.{ms}`) must fit in an AMQP short string (255 bytes).
pub const MAX_PREFIX_LEN: usize = 200;

/// The longest accepted `connection_name` (it is suffixed with the role).
pub const MAX_CONNECTION_NAME_LEN: usize = 200;

/// Which RabbitMQ queue type holds Inlet's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// Replicated Raft queues: the durable choice, and the only type with a
    /// broker-side delivery limit and at-least-once dead-lettering.
    #[default]
    Quorum,
    /// Classic mirrored-or-not queues, for single-node development brokers
    /// or brokers without quorum support.
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Connection, topology, publishing and consuming options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Broker URL (`amqp://` or `amqps://`), with credentials and vhost.
    /// A `heartbeat` query parameter in it is overridden by `heartbeat_s`.
    /// Default: `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// More nodes of the same RabbitMQ cluster, URLs like `url`. A
    /// connection goes to `url` first; when a node refuses, times out or
    /// drops the connection, the next one in the list (`url` again after
    /// the last) is tried at once, and only a whole round of failures
    /// waits the reconnect backoff. Quorum queues live on every node, so
    /// any node serves publishers and consumers. List the nodes in a
    /// different order per instance to spread connections. In the
    /// environment: `INLET__QUEUE__FAILOVER_URLS`, comma-separated.
    /// Default: none (one broker). Entries are trimmed and empty ones
    /// dropped (an empty variable means none); a node listed twice is
    /// refused.
    #[serde(deserialize_with = "trimmed_urls")]
    pub failover_urls: Vec<String>,
    /// Prefix of every exchange and queue name, so several deployments (or
    /// tests) can share one vhost. Characters `A-Z a-z 0-9 . _ -`, at most
    /// 200 bytes, not starting with `amq.`. Default: `inlet`.
    pub prefix: String,
    /// Type of every queue this crate declares. Changing it on a broker
    /// that already has the queues fails the declaration (RabbitMQ refuses
    /// to redeclare a queue with other arguments). Default: `quorum`.
    pub queue_type: QueueType,
    /// AMQP heartbeat, seconds. A silently dead broker (or path) is noticed
    /// after about twice this. Default: 10.
    pub heartbeat_s: u16,
    /// Bound on one connection attempt (TCP, AMQP handshake, topology,
    /// channels), milliseconds. lapin's own `connection_timeout` URI
    /// parameter is ignored by its async path, hence this. Default: 5000.
    pub connect_timeout_ms: u64,
    /// Bound on one publish, from the call to the broker's confirm,
    /// milliseconds. A publish that takes longer fails with `Timeout` (its
    /// outcome is then unknown: the message may still be stored).
    /// Default: 5000.
    pub confirm_timeout_ms: u64,
    /// Most publishes awaiting a confirm at once, per publisher. One more is
    /// refused at once with `Backpressure` instead of queueing, so a slow
    /// broker sheds load rather than growing memory. Default: 4096.
    pub max_in_flight: usize,
    /// Most pushes [`Publisher::publish`](crate::Publisher::publish)
    /// combines into one broker message (a bundle). While
    /// `combine_in_flight` publishes await their confirms, pushes gather
    /// into the next message; each push is still answered only once the
    /// message holding it is confirmed, and keeps its own envelope
    /// (idempotency key, auth mode, and its own fate in the worker).
    /// 1 turns combining off. Default: 64.
    pub combine_max_parts: usize,
    /// The combining window: publishes awaiting confirms below which a
    /// push is published at once (with any pushes gathered before it).
    /// At this many, pushes gather until a confirm frees a place, the
    /// message holds `combine_max_parts` pushes or `combine_max_bytes`,
    /// or `combine_linger_us` has passed, whichever comes first. So the
    /// broker's own confirms pace the messages: a push waits about a
    /// confirm's time divided by the window, and the broker gets about
    /// the window's worth of messages per confirm time. Taken as at most
    /// `max_in_flight`. Default: 8.
    pub combine_in_flight: usize,
    /// Largest combined message, bytes (envelopes and their framing). A
    /// push whose envelope takes more than half of it is published on its
    /// own. Default: 262144.
    pub combine_max_bytes: usize,
    /// Longest a combined message waits for more pushes, microseconds
    /// (only while the window is full: see `combine_in_flight`).
    /// Default: 1000.
    pub combine_linger_us: u64,
    /// AMQP channels in confirm mode per publisher connection; publishes go
    /// round-robin over them. Default: 1: every channel shares the
    /// connection's one socket and I/O loop anyway, and on one channel the
    /// broker's multiple-acks cover more publishes at once (measured in
    /// docs/benchmarks.md: one channel did 5-10% more pushes per second
    /// than two).
    pub publisher_channels: usize,
    /// First reconnect delay after a lost or failed connection,
    /// milliseconds. Default: 100.
    pub reconnect_initial_ms: u64,
    /// Cap of the exponential reconnect delay, milliseconds. Kept low so a
    /// returning broker is used again within a few seconds. Default: 2000.
    pub reconnect_max_ms: u64,
    /// Unacknowledged deliveries a consumer may hold (`basic.qos`).
    /// Default: 64.
    pub prefetch: u16,
    /// Delay before each retry, milliseconds: the first value after the
    /// first failed attempt, the second after the second, and so on; the
    /// last value repeats. Each distinct value gets its own delay queue.
    /// Default: `[1000, 5000, 30000, 120000, 600000]`.
    pub retry_delays_ms: Vec<u64>,
    /// Attempts a message gets, counting the first delivery as attempt 1.
    /// When attempt `max_attempts` fails too, the message is dead-lettered.
    /// Default: 6.
    pub max_attempts: u32,
    /// Broker-side poison guard on quorum queues (`x-delivery-limit`): a
    /// message redelivered more often than this (requeues, consumer
    /// crashes) is dead-lettered by the broker. Ignored for classic queues.
    /// Default: 20.
    pub delivery_limit: u32,
    /// Client-provided connection name shown by the broker's management
    /// tools, suffixed with the role (`inlet-publisher`, `inlet-consumer`,
    /// `inlet-retry`). Default: `inlet`.
    pub connection_name: String,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            failover_urls: Vec::new(),
            prefix: "inlet".into(),
            queue_type: QueueType::Quorum,
            heartbeat_s: 10,
            connect_timeout_ms: 5000,
            confirm_timeout_ms: 5000,
            max_in_flight: 4096,
            combine_max_parts: 64,
            combine_max_bytes: 256 * 1024,
            combine_in_flight: 8,
            combine_linger_us: 1000,
            publisher_channels: 1,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 2000,
            prefetch: 64,
            retry_delays_ms: vec![1000, 5000, 30_000, 120_000, 600_000],
            max_attempts: 6,
            delivery_limit: 20,
            connection_name: "inlet".into(),
        }
    }
}

/// A setting is out of its domain: the one settings error of every crate,
/// keyed `queue.<field>`.
pub use inlet_domain::InvalidSetting;

fn invalid(field: &'static str, problem: impl Into<String>) -> Result<(), InvalidSetting> {
    InvalidSetting::err(format!("queue.{field}"), problem)
}

/// Most channels a publisher may open (well below RabbitMQ's channel_max).
const MAX_PUBLISHER_CHANNELS: usize = 64;
/// Bounds of `combine_max_bytes`: room for a few small pushes, and well
/// below RabbitMQ's default `max_message_size` (128 MiB).
const MIN_COMBINE_BYTES: usize = 4096;
const MAX_COMBINE_BYTES: usize = 16 * 1024 * 1024;
/// Longest `combine_linger_us`: 100 ms.
const MAX_COMBINE_LINGER_US: u64 = 100_000;
/// Largest delay accepted: `x-message-ttl` is sent as a signed 32-bit int.
const MAX_DELAY_MS: u64 = i32::MAX as u64;

impl QueueSettings {
    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Err(problem) = parse_url(&self.url) {
            return invalid("url", problem);
        }
        for (i, url) in self.failover_urls.iter().enumerate() {
            let field = format!("queue.failover_urls[{i}]");
            if let Err(problem) = parse_url(url) {
                return InvalidSetting::err(field, problem);
            }
            if self.broker_urls().take(i + 1).any(|earlier| earlier == url) {
                return InvalidSetting::err(field, "lists a broker URL a second time");
            }
        }
        validate_prefix(&self.prefix)?;
        if self.heartbeat_s == 0 {
            return invalid(
                "heartbeat_s",
                "must be at least 1 (heartbeats detect a dead broker)",
            );
        }
        if self.connect_timeout_ms == 0 {
            return invalid("connect_timeout_ms", "must be at least 1");
        }
        if self.confirm_timeout_ms == 0 {
            return invalid("confirm_timeout_ms", "must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_in_flight > u32::MAX as usize {
            return invalid("max_in_flight", "must be between 1 and 4294967295");
        }
        if self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return invalid("max_in_flight", "too large");
        }
        if self.combine_max_parts == 0 || self.combine_max_parts > inlet_domain::MAX_BUNDLE_PARTS {
            return invalid(
                "combine_max_parts",
                format!(
                    "must be between 1 (off) and {}",
                    inlet_domain::MAX_BUNDLE_PARTS
                ),
            );
        }
        if !(MIN_COMBINE_BYTES..=MAX_COMBINE_BYTES).contains(&self.combine_max_bytes) {
            return invalid(
                "combine_max_bytes",
                format!("must be between {MIN_COMBINE_BYTES} and {MAX_COMBINE_BYTES}"),
            );
        }
        if self.combine_in_flight == 0 {
            return invalid("combine_in_flight", "must be at least 1");
        }
        if self.combine_linger_us > MAX_COMBINE_LINGER_US {
            return invalid(
                "combine_linger_us",
                format!("must be at most {MAX_COMBINE_LINGER_US} (a gathering push may wait it)"),
            );
        }
        if self.publisher_channels == 0 || self.publisher_channels > MAX_PUBLISHER_CHANNELS {
            return invalid(
                "publisher_channels",
                format!("must be between 1 and {MAX_PUBLISHER_CHANNELS}"),
            );
        }
        if self.reconnect_initial_ms == 0 {
            return invalid("reconnect_initial_ms", "must be at least 1");
        }
        if self.reconnect_max_ms < self.reconnect_initial_ms {
            return invalid("reconnect_max_ms", "must be at least reconnect_initial_ms");
        }
        if self.prefetch == 0 {
            return invalid(
                "prefetch",
                "must be at least 1 (0 would mean unbounded deliveries)",
            );
        }
        if self.retry_delays_ms.is_empty() {
            return invalid("retry_delays_ms", "needs at least one delay");
        }
        if let Some(d) = self
            .retry_delays_ms
            .iter()
            .find(|d| **d == 0 || **d > MAX_DELAY_MS)
        {
            return invalid(
                "retry_delays_ms",
                format!("{d} is outside 1..={MAX_DELAY_MS}"),
            );
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.delivery_limit == 0 || self.delivery_limit > i32::MAX as u32 {
            return invalid("delivery_limit", "must be between 1 and 2147483647");
        }
        if self.connection_name.trim().is_empty() {
            return invalid("connection_name", "must not be empty");
        }
        if self.connection_name.len() > MAX_CONNECTION_NAME_LEN {
            return invalid(
                "connection_name",
                format!("longer than {MAX_CONNECTION_NAME_LEN} bytes"),
            );
        }
        Ok(())
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Whether [`Publisher::publish`](crate::Publisher::publish) combines
    /// pushes (`combine_max_parts` above 1).
    pub fn combines(&self) -> bool {
        self.combine_max_parts > 1
    }

    /// `combine_linger_us` as a duration.
    pub fn combine_linger(&self) -> Duration {
        Duration::from_micros(self.combine_linger_us)
    }

    /// `confirm_timeout_ms` as a duration.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    /// The delay before the retry that follows failed attempt `attempt`
    /// (1-based): `retry_delays_ms[attempt - 1]`, the last value repeating.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        Duration::from_millis(self.retry_delay_ms(attempt))
    }

    pub(crate) fn retry_delay_ms(&self, attempt: u32) -> u64 {
        let idx = (attempt.max(1) - 1) as usize;
        self.retry_delays_ms
            .get(idx)
            .or_else(|| self.retry_delays_ms.last())
            .copied()
            // Unreachable after validate(); a sane fallback otherwise.
            .unwrap_or(1000)
    }

    /// The broker URL with the password hidden, for logs
    /// (`inlet_domain::redact`).
    pub fn redacted_url(&self) -> String {
        redacted(&self.url)
    }

    /// Every broker URL, in the order connections try them: `url`, then
    /// `failover_urls`.
    pub fn broker_urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.failover_urls.iter().map(String::as_str))
    }

    /// The connection name for `role` (`{connection_name}-{role}`).
    pub(crate) fn connection_name_for(&self, role: &str) -> String {
        format!("{}-{role}", self.connection_name)
    }
}

/// `failover_urls` as given, each trimmed, empty entries dropped (the
/// environment's comma-separated form leaves both).
fn trimmed_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let urls = Vec::<String>::deserialize(d)?;
    Ok(urls
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect())
}

/// `url` with the password hidden, for logs and errors.
pub(crate) fn redacted(url: &str) -> String {
    match url.parse::<AMQPUri>() {
        Ok(_) => inlet_domain::redact::redact_url(url).into_owned(),
        Err(_) => "<invalid url>".into(),
    }
}

/// Parses the URL and applies nothing else; errors never echo the URL (it
/// holds a password).
pub(crate) fn parse_url(url: &str) -> Result<AMQPUri, String> {
    url.parse::<AMQPUri>().map_err(|e| {
        if e.contains(url) || url.is_empty() {
            "not a valid amqp:// or amqps:// URL".to_owned()
        } else {
            format!("not a valid amqp:// or amqps:// URL ({e})")
        }
    })
}

fn validate_prefix(prefix: &str) -> Result<(), InvalidSetting> {
    if prefix.is_empty() {
        return invalid("prefix", "must not be empty");
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return invalid("prefix", format!("longer than {MAX_PREFIX_LEN} bytes"));
    }
    if prefix.starts_with("amq.") {
        return invalid("prefix", "names starting with `amq.` are reserved by AMQP");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("prefix", "only A-Z a-z 0-9 . _ - are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = QueueSettings::default();
        s.validate().unwrap();
        assert_eq!(s.prefix, "inlet");
        assert_eq!(s.queue_type, QueueType::Quorum);
        assert_eq!(s.reconnect_max_ms, 2000);
        assert_eq!(s.max_attempts, 6);
        assert_eq!(s.retry_delays_ms.len(), 5);
    }

    fn field_of(s: &QueueSettings) -> String {
        let key = s.validate().unwrap_err().key;
        key.strip_prefix("queue.").unwrap_or(&key).to_owned()
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = QueueSettings::default();
        type Mutation = Box<dyn Fn(&mut QueueSettings)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("url", Box::new(|s| s.url = "nope".into())),
            ("url", Box::new(|s| s.url = "http://x/".into())),
            (
                "failover_urls[1]",
                Box::new(|s| s.failover_urls = vec!["amqp://b/%2f".into(), "redis://x/".into()]),
            ),
            (
                "failover_urls[0]",
                Box::new(|s| s.failover_urls = vec![s.url.clone()]),
            ),
            (
                "failover_urls[1]",
                Box::new(|s| s.failover_urls = vec!["amqp://b/%2f".into(), "amqp://b/%2f".into()]),
            ),
            ("prefix", Box::new(|s| s.prefix.clear())),
            ("prefix", Box::new(|s| s.prefix = "amq.x".into())),
            ("prefix", Box::new(|s| s.prefix = "a b".into())),
            ("prefix", Box::new(|s| s.prefix = "p".repeat(201))),
            ("heartbeat_s", Box::new(|s| s.heartbeat_s = 0)),
            ("connect_timeout_ms", Box::new(|s| s.connect_timeout_ms = 0)),
            ("confirm_timeout_ms", Box::new(|s| s.confirm_timeout_ms = 0)),
            ("max_in_flight", Box::new(|s| s.max_in_flight = 0)),
            ("combine_in_flight", Box::new(|s| s.combine_in_flight = 0)),
            ("publisher_channels", Box::new(|s| s.publisher_channels = 0)),
            (
                "publisher_channels",
                Box::new(|s| s.publisher_channels = 65),
            ),
            (
                "reconnect_initial_ms",
                Box::new(|s| s.reconnect_initial_ms = 0),
            ),
            (
                "reconnect_max_ms",
                Box::new(|s| {
                    s.reconnect_initial_ms = 500;
                    s.reconnect_max_ms = 400;
                }),
            ),
            ("prefetch", Box::new(|s| s.prefetch = 0)),
            ("retry_delays_ms", Box::new(|s| s.retry_delays_ms.clear())),
            ("retry_delays_ms", Box::new(|s| s.retry_delays_ms = vec![0])),
            (
                "retry_delays_ms",
                Box::new(|s| s.retry_delays_ms = vec![10, 1 << 40]),
            ),
            ("max_attempts", Box::new(|s| s.max_attempts = 0)),
            ("delivery_limit", Box::new(|s| s.delivery_limit = 0)),
            (
                "connection_name",
                Box::new(|s| s.connection_name = " ".into()),
            ),
            (
                "connection_name",
                Box::new(|s| s.connection_name = "n".repeat(201)),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = ok.clone();
            mutate(&mut s);
            assert_eq!(field_of(&s), field, "{s:?}");
        }
    }

    #[test]
    fn url_errors_never_echo_the_password() {
        let mut s = QueueSettings {
            url: "amqp://user:s3cret@[bad/".into(),
            ..QueueSettings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        s.url = "amqp://user:s3cret@host:5672/%2f".into();
        assert!(!s.redacted_url().contains("s3cret"));
        assert_eq!(s.redacted_url(), "amqp://user:***@host:5672/%2f");
    }

    #[test]
    fn connections_try_the_primary_then_each_failover_url() {
        let s = QueueSettings {
            url: "amqp://a:5672/%2f".into(),
            failover_urls: vec!["amqp://b:5672/%2f".into(), "amqp://c:5672/%2f".into()],
            ..QueueSettings::default()
        };
        s.validate().unwrap();
        let urls: Vec<&str> = s.broker_urls().collect();
        assert_eq!(
            urls,
            [
                "amqp://a:5672/%2f",
                "amqp://b:5672/%2f",
                "amqp://c:5672/%2f"
            ]
        );
        assert_eq!(QueueSettings::default().broker_urls().count(), 1);
        let given: QueueSettings =
            serde_json::from_str(r#"{"failover_urls":[" amqp://b:5672/%2f", ""]}"#).unwrap();
        assert_eq!(given.failover_urls, ["amqp://b:5672/%2f"]);
    }

    #[test]
    fn delay_per_attempt_grows_then_repeats_the_last() {
        let s = QueueSettings {
            retry_delays_ms: vec![100, 200, 400],
            ..QueueSettings::default()
        };
        assert_eq!(s.retry_delay(1), Duration::from_millis(100));
        assert_eq!(s.retry_delay(2), Duration::from_millis(200));
        assert_eq!(s.retry_delay(3), Duration::from_millis(400));
        assert_eq!(s.retry_delay(4), Duration::from_millis(400));
        assert_eq!(s.retry_delay(100), Duration::from_millis(400));
        // Attempt 0 does not exist; treat it as the first.
        assert_eq!(s.retry_delay(0), Duration::from_millis(100));
    }

    #[test]
    fn deserialises_partial_and_rejects_unknown_fields() {
        let s: QueueSettings =
            serde_json::from_str(r#"{"prefix":"p1","queue_type":"classic"}"#).unwrap();
        assert_eq!(s.prefix, "p1");
        assert_eq!(s.queue_type, QueueType::Classic);
        assert_eq!(s.heartbeat_s, 10);
        assert!(serde_json::from_str::<QueueSettings>(r#"{"prefx":"p1"}"#).is_err());
        // Round trip.
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<QueueSettings>(&text).unwrap(), s);
    }
}
