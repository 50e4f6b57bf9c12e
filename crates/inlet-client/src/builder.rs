//! [`ClientBuilder`]: every option with its default, and validation.

use std::sync::Arc;
use std::time::Duration;

use inlet_domain::{ApiKey, AppName, BatchLimits, Environment, KeyError, WireAgent};

use crate::client::Client;
pub use crate::config::WhenAuthPaused;
use crate::config::{Config, Hook};
use crate::status::ClientEvent;
use crate::transport::{self, KeyHeader};

/// Why a client could not be built. Each variant names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The endpoint is not an `http(s)://host[:port][/prefix]` URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key cannot be an Inlet key (wrong prefix, length, alphabet or
    /// checksum): a typo or a truncated copy. The key itself is never
    /// shown.
    #[error("the API key is malformed ({0}); copy it again from `inlet keys create`")]
    InvalidKey(#[source] KeyError),
    /// An option is out of its domain.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name, as its builder method.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `build` was called outside a tokio runtime.
    #[error("no tokio runtime: build the client from within one (it spawns its flusher there)")]
    NoRuntime,
    /// The HTTP client could not be set up (e.g. TLS roots unavailable).
    #[error("the HTTP client could not be built: {0}")]
    Http(#[source] reqwest::Error),
}

/// Builds a [`Client`]. Start with [`Client::builder`].
///
/// Only `app` is required beyond the endpoint and key; every other option
/// has the default given in its documentation.
#[must_use]
pub struct ClientBuilder {
    endpoint: String,
    key: String,
    key_header: KeyHeader,
    hook: Option<Hook>,
    /// Extra trusted roots (PEM), beside the built-in ones.
    root_certificates: Vec<Vec<u8>>,
    /// Every other option, as the client will run with it once validated.
    config: Config,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("app", &self.config.app)
            .field("environment", &self.config.environment)
            .finish_non_exhaustive()
    }
}

/// Default of [`ClientBuilder::max_buffer_bytes`]: 8 MiB.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 8 << 20;
/// Default of [`ClientBuilder::max_batch_bytes`]: 512 KiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 512 << 10;
/// Default of [`ClientBuilder::max_batch_items`].
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 1000;

impl Client {
    /// Starts configuring a client for the push API at `endpoint` (a base
    /// URL such as `https://inlet.example.com`; `/v1/push` is appended) with
    /// the API key `key`.
    pub fn builder(endpoint: &str, key: &str) -> ClientBuilder {
        ClientBuilder::new(endpoint, key)
    }
}

impl ClientBuilder {
    fn new(endpoint: &str, key: &str) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.to_owned(),
            key: key.to_owned(),
            key_header: KeyHeader::Bearer,
            hook: None,
            root_certificates: Vec::new(),
            config: Config {
                agent: WireAgent {
                    name: "inlet-rust".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    hostname: detect_hostname(),
                },
                app: String::new(),
                environment: "production".to_owned(),
                max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
                max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
                max_batch_items: DEFAULT_MAX_BATCH_ITEMS,
                flush_interval: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
                gzip: true,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
                auth_grace: Duration::from_secs(300),
                probe_interval: Duration::from_secs(300),
                when_auth_paused: WhenAuthPaused::Keep,
                limits: BatchLimits::default(),
            },
        }
    }

    /// The agent's name and version, sent with every batch. Default
    /// `inlet-rust` and this crate's version.
    pub fn agent(mut self, name: &str, version: &str) -> Self {
        name.clone_into(&mut self.config.agent.name);
        version.clone_into(&mut self.config.agent.version);
        self
    }

    /// The host the agent runs on. Default: `$HOSTNAME`, else the kernel's
    /// host name, else none.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.config.agent.hostname = Some(hostname.to_owned());
        self
    }

    /// The monitored application (required): 1–64 characters as
    /// `inlet_domain::AppName` allows. A key restricted to another app gets
    /// 403.
    pub fn app(mut self, app: &str) -> Self {
        app.clone_into(&mut self.config.app);
        self
    }

    /// The deployment environment. Default `production`.
    pub fn environment(mut self, environment: &str) -> Self {
        environment.clone_into(&mut self.config.environment);
        self
    }

    /// Bound of the in-memory buffer of recorded, not yet batched items,
    /// in serialized bytes. When full, the oldest items are dropped first
    /// (counted as `buffer_full`). The batch in flight is held outside it,
    /// so memory peaks at about this plus twice `max_batch_bytes`.
    /// Default 8 MiB.
    pub fn max_buffer_bytes(mut self, bytes: usize) -> Self {
        self.config.max_buffer_bytes = bytes;
        self
    }

    /// Largest uncompressed batch body, bytes. Must stay under the server's
    /// decompressed limit (8 MiB) and, with gzip off, under its body limit
    /// (1 MiB). Default 512 KiB.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_batch_bytes = bytes;
        self
    }

    /// Most items in one batch (the server's per-kind limits — 5000
    /// transactions, 5000 metrics, 500 errors — apply as well). Default
    /// 1000.
    pub fn max_batch_items(mut self, items: usize) -> Self {
        self.config.max_batch_items = items;
        self
    }

    /// How often buffered items are sent when no full batch has formed.
    /// A full batch goes at once. Default 10 s.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// Bound on one request, connect to last byte of the answer. A timeout
    /// is retried like a 503 (with the same `batch_id`, so a request that
    /// did arrive is stored once). Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Whether bodies are gzip-compressed (`Content-Encoding: gzip`).
    /// Default on.
    pub fn gzip(mut self, on: bool) -> Self {
        self.config.gzip = on;
        self
    }

    /// Ceiling of the first retry's random wait; each further consecutive
    /// failure doubles it. Default 1 s.
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.config.initial_backoff = backoff;
        self
    }

    /// Cap of the backoff ceiling. Default 60 s.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.config.max_backoff = backoff;
        self
    }

    /// How long a continuous run of 401/403 answers is treated as a blip
    /// (data kept, retried with backoff) before the client pauses and
    /// probes. Measured from the first rejection of the run; any success
    /// ends the run. Default 5 min.
    pub fn auth_grace(mut self, grace: Duration) -> Self {
        self.config.auth_grace = grace;
        self
    }

    /// How often a paused client probes with one batch, unless the server
    /// says otherwise (`probe_after_s`). Default 5 min.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.config.probe_interval = interval;
        self
    }

    /// What happens to data while paused. Default
    /// [`WhenAuthPaused::Keep`].
    pub fn when_auth_paused(mut self, policy: WhenAuthPaused) -> Self {
        self.config.when_auth_paused = policy;
        self
    }

    /// Where the key is sent. Default [`KeyHeader::Bearer`].
    pub fn key_header(mut self, style: KeyHeader) -> Self {
        self.key_header = style;
        self
    }

    /// The server's batch limits, if it runs with non-default `[limits]`:
    /// items are checked against them as they are recorded, and batches
    /// respect the per-kind counts. Default: the server's defaults.
    pub fn batch_limits(mut self, limits: BatchLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Also trusts the certificates in this PEM bundle for an `https://`
    /// endpoint (a private CA, or a self-signed server), beside the
    /// built-in roots. May be called more than once.
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_certificates.push(pem.to_vec());
        self
    }

    /// A hook called with every [`ClientEvent`]. Default: none (tracing
    /// events on target `inlet_client` are always emitted).
    pub fn on_event(mut self, hook: impl Fn(&ClientEvent) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Validates the options and starts the client: its flusher is spawned
    /// on the current tokio runtime.
    pub fn build(self) -> Result<Client, BuildError> {
        let url =
            transport::push_url(&self.endpoint).map_err(|reason| BuildError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason,
            })?;
        let key = ApiKey::parse_format(self.key.trim()).map_err(BuildError::InvalidKey)?;
        let key_header = transport::key_header(&key, self.key_header).map_err(|reason| {
            BuildError::InvalidOption {
                option: "key_header",
                reason,
            }
        })?;
        let config = self.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let mut roots = Vec::new();
        for pem in &self.root_certificates {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                BuildError::InvalidOption {
                    option: "root_certificate_pem",
                    reason: e.to_string(),
                }
            })?;
            if certs.is_empty() {
                return Err(BuildError::InvalidOption {
                    option: "root_certificate_pem",
                    reason: "no PEM certificate in the bundle".into(),
                });
            }
            roots.extend(certs);
        }
        let http = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .user_agent(format!(
                "inlet-client/{} ({}/{})",
                env!("CARGO_PKG_VERSION"),
                config.agent.name,
                config.agent.version
            ))
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(BuildError::Http)?;
        let transport = transport::Transport {
            http,
            url,
            key: Some(key_header),
        };
        Ok(Client::start(config, transport, self.hook, &runtime))
    }

    /// Checks every option; returns the configuration the client runs
    /// with (the environment folded to lower case, as the server does).
    fn validate(&self) -> Result<Config, BuildError> {
        let c = &self.config;
        let bad =
            |option: &'static str, reason: String| BuildError::InvalidOption { option, reason };
        if c.app.is_empty() {
            return Err(bad(
                "app",
                "required: the monitored application's name".into(),
            ));
        }
        AppName::parse(&c.app).map_err(|e| bad("app", e.to_string()))?;
        let environment =
            Environment::parse(&c.environment).map_err(|e| bad("environment", e.to_string()))?;
        let max_name = c.limits.max_name_len;
        for (option, value) in [("agent", &c.agent.name), ("agent", &c.agent.version)] {
            if value.is_empty()
                || value.chars().count() > max_name
                || value.chars().any(char::is_control)
            {
                return Err(bad(
                    option,
                    format!("name and version need 1-{max_name} printable characters"),
                ));
            }
        }
        if let Some(h) = &c.agent.hostname
            && (h.is_empty() || h.chars().count() > max_name || h.chars().any(char::is_control))
        {
            return Err(bad(
                "hostname",
                format!("needs 1-{max_name} printable characters"),
            ));
        }
        if c.max_batch_items == 0 {
            return Err(bad("max_batch_items", "must be at least 1".into()));
        }
        if !(1024..=8 << 20).contains(&c.max_batch_bytes) {
            return Err(bad(
                "max_batch_bytes",
                "must be between 1 KiB and 8 MiB (the server's decompressed limit)".into(),
            ));
        }
        if !c.gzip && c.max_batch_bytes > 1 << 20 {
            return Err(bad(
                "max_batch_bytes",
                "must be at most 1 MiB without gzip (the server's body limit)".into(),
            ));
        }
        if c.max_buffer_bytes < c.max_batch_bytes {
            return Err(bad(
                "max_buffer_bytes",
                "must be at least max_batch_bytes".into(),
            ));
        }
        for (option, d) in [
            ("flush_interval", c.flush_interval),
            ("request_timeout", c.request_timeout),
            ("initial_backoff", c.initial_backoff),
            ("probe_interval", c.probe_interval),
        ] {
            if d.is_zero() {
                return Err(bad(option, "must be more than zero".into()));
            }
        }
        if c.max_backoff < c.initial_backoff {
            return Err(bad(
                "max_backoff",
                "must be at least initial_backoff".into(),
            ));
        }
        Ok(Config {
            environment: environment.as_str().to_owned(),
            ..c.clone()
        })
    }
}

/// `$HOSTNAME`, else the kernel's host name (Linux), else none.
fn detect_hostname() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env
        .or_else(from_kernel)
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 255 && !h.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

    fn err(b: ClientBuilder) -> BuildError {
        match b.validate() {
            Err(e) => e,
            Ok(_) => panic!("should fail"),
        }
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = Client::builder("http://127.0.0.1:8080", KEY)
            .app("shop")
            .validate()
            .unwrap();
        assert_eq!(c.max_buffer_bytes, 8 * 1024 * 1024);
        assert_eq!(c.max_batch_bytes, 512 * 1024);
        assert_eq!(c.max_batch_items, 1000);
        assert_eq!(c.flush_interval, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert!(c.gzip);
        assert_eq!(c.initial_backoff, Duration::from_secs(1));
        assert_eq!(c.max_backoff, Duration::from_secs(60));
        assert_eq!(c.auth_grace, Duration::from_secs(300));
        assert_eq!(c.probe_interval, Duration::from_secs(300));
        assert_eq!(c.when_auth_paused, WhenAuthPaused::Keep);
        assert_eq!(c.environment, "production");
        assert_eq!(c.agent.name, "inlet-rust");
    }

    #[test]
    fn options_are_validated() {
        let b = || Client::builder("http://127.0.0.1:8080", KEY).app("shop");
        assert!(matches!(
            err(Client::builder("http://127.0.0.1:8080", KEY)),
            BuildError::InvalidOption { option: "app", .. }
        ));
        assert!(matches!(
            err(b().app(" padded ")),
            BuildError::InvalidOption { option: "app", .. }
        ));
        assert!(matches!(
            err(b().environment("")),
            BuildError::InvalidOption {
                option: "environment",
                ..
            }
        ));
        assert!(matches!(
            err(b().max_batch_items(0)),
            BuildError::InvalidOption { .. }
        ));
        assert!(matches!(
            err(b().max_batch_bytes(16 << 20)),
            BuildError::InvalidOption { .. }
        ));
        assert!(matches!(
            err(b().gzip(false).max_batch_bytes(2 << 20)),
            BuildError::InvalidOption { .. }
        ));
        assert!(matches!(
            err(b().max_buffer_bytes(1024)),
            BuildError::InvalidOption {
                option: "max_buffer_bytes",
                ..
            }
        ));
        assert!(matches!(
            err(b().flush_interval(Duration::ZERO)),
            BuildError::InvalidOption { .. }
        ));
        assert!(matches!(
            err(b()
                .initial_backoff(Duration::from_secs(5))
                .max_backoff(Duration::from_secs(1))),
            BuildError::InvalidOption {
                option: "max_backoff",
                ..
            }
        ));
        assert!(matches!(
            err(b().hostname("")),
            BuildError::InvalidOption {
                option: "hostname",
                ..
            }
        ));
        // Environments fold to lower case, as the server does.
        assert_eq!(
            b().environment("Staging").validate().unwrap().environment,
            "staging"
        );
    }

    #[test]
    fn build_checks_endpoint_key_and_runtime() {
        let e = Client::builder("localhost:8080", KEY)
            .app("shop")
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, BuildError::InvalidEndpoint { .. }), "{e}");
        let truncated = "inlet_AQG31mIOzsOPBuLO8Te_1qIUIw15YhkCK2qmeFjj6sIY3WasjskHQE6OrJbmNp";
        let e = Client::builder("http://127.0.0.1:8080", truncated)
            .app("shop")
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, BuildError::InvalidKey(KeyError::Length)), "{e}");
        assert!(!e.to_string().contains(truncated), "the key is never shown");
        let e = Client::builder("http://127.0.0.1:8080", "")
            .app("shop")
            .build()
            .err()
            .unwrap();
        assert!(
            matches!(e, BuildError::InvalidKey(KeyError::Missing)),
            "{e}"
        );
        let e = Client::builder("http://127.0.0.1:8080", KEY)
            .app("shop")
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, BuildError::NoRuntime), "{e}");
    }
}
