//! `[api]`: the push API's own settings.

use std::path::PathBuf;

use inlet_domain::InvalidSetting;
use serde::{Deserialize, Serialize};

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address of the push listener. Default `0.0.0.0:8080`.
    pub listen: String,
    /// When set, `/metrics` and the detailed readiness body are served on
    /// this separate admin listener instead of the push listener, whose
    /// `/health/ready` then says only whether the process and each
    /// component are ready (a detail can carry an internal error message).
    /// Health endpoints stay on both. Default: none (everything on the push
    /// listener); `config/production.toml` sets `0.0.0.0:9090`.
    pub admin_listen: Option<String>,
    /// `[api.tls]`: when set, the push listener speaks HTTPS (HTTP/1.1,
    /// offered by ALPN) with this certificate. Default: none (plain HTTP,
    /// for local use or behind a TLS-terminating proxy). The admin
    /// listener stays plain HTTP: keep it off the public network.
    pub tls: Option<TlsSettings>,
    /// HTTP worker threads; 0 means one per CPU. Default 0.
    pub workers: usize,
    /// Largest request body as sent (compressed), bytes. Default 1048576.
    pub max_body_bytes: usize,
    /// Largest body after decompression, bytes; decompression stops there
    /// (gzip bombs). Default 8388608.
    pub max_decoded_bytes: usize,
    /// Push bodies this process holds in memory at once, bytes: from
    /// before a body is read until its answer. With decompression's own
    /// room (one `max_decoded_bytes` per HTTP worker) it bounds the memory
    /// pushes take however many arrive at once; a push that finds no room
    /// within `in_flight_wait_ms` is answered 503 `server_busy`.
    /// Default 67108864 (64 MiB).
    pub max_in_flight_bytes: usize,
    /// How long a push waits for room in those budgets, milliseconds.
    /// Default 1000 (decompressing a maximum-size body takes a while; a
    /// short wait would shed load that was about to fit).
    pub in_flight_wait_ms: u64,
    /// Requests per second per key when the account has no limit of its
    /// own. Default 100.
    pub default_rate_per_s: u32,
    /// Burst per key when the account has no limit of its own. Default 200.
    pub default_burst: u32,
    /// Most keys tracked by the rate limiter. Default 100000.
    pub rate_limiter_max_keys: u64,
    /// Base `Retry-After` for 503 answers, seconds. Default 2.
    pub retry_after_s: u32,
    /// Random extra added to every `Retry-After`, up to this many seconds,
    /// so that agents do not come back in lockstep. Default 3.
    pub retry_after_jitter_s: u32,
    /// How long an agent should pause before trying a rejected (401/403)
    /// key again, seconds (`probe_after_s`). Default 300.
    pub probe_after_s: u32,
    /// On SIGTERM, how long the API keeps serving after readiness turns
    /// 503, so load balancers stop sending traffic first, milliseconds.
    /// Default 5000.
    pub shutdown_delay_ms: u64,
    /// Then, how long in-flight requests (and their broker confirms) may
    /// take to finish, seconds. Default 30.
    pub shutdown_timeout_s: u64,
    /// Time allowed to receive a request's headers, milliseconds.
    /// Default 5000.
    pub client_request_timeout_ms: u64,
    /// Time allowed to receive a push's whole body, milliseconds; a body
    /// still trickling in after it is answered 408 `body_timeout`
    /// (retryable) and its room in the body budget given back, so slow
    /// uploads cannot hold the budget. Default 10000.
    pub body_read_timeout_ms: u64,
    /// Idle keep-alive, seconds. Default 75.
    pub keep_alive_s: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: "0.0.0.0:8080".to_owned(),
            admin_listen: None,
            tls: None,
            workers: 0,
            max_body_bytes: 1 << 20,
            max_decoded_bytes: 8 << 20,
            max_in_flight_bytes: 64 << 20,
            in_flight_wait_ms: 1_000,
            default_rate_per_s: 100,
            default_burst: 200,
            rate_limiter_max_keys: 100_000,
            retry_after_s: 2,
            retry_after_jitter_s: 3,
            probe_after_s: 300,
            shutdown_delay_ms: 5_000,
            shutdown_timeout_s: 30,
            client_request_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            keep_alive_s: 75,
        }
    }
}

/// `[api.tls]`: the push listener's certificate. Both files are PEM and
/// are read again every `reload_interval_ms`; when either changed, the new
/// pair is served to new connections (rotation without a restart). A pair
/// that does not load is given one more check (a rotation may have written
/// one file and not yet the other); if it still does not load (unreadable,
/// no certificate, no key, or a key that does not match the certificate)
/// it is logged and counted once, and the previous pair stays in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, leaf first (PEM).
    pub cert_path: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// How often the files are checked for a change, milliseconds.
    /// Default 10000.
    #[serde(default = "TlsSettings::default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

impl TlsSettings {
    fn default_reload_interval_ms() -> u64 {
        10_000
    }

    /// The check interval.
    pub fn reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.reload_interval_ms)
    }
}

impl ApiSettings {
    /// The in-flight wait.
    pub fn in_flight_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.in_flight_wait_ms)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |key: &str, message: &str| InvalidSetting::err(key, message);
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("api.listen", "must be an address like 0.0.0.0:8080");
        }
        if let Some(a) = &self.admin_listen
            && a.parse::<std::net::SocketAddr>().is_err()
        {
            return bad("api.admin_listen", "must be an address like 0.0.0.0:9090");
        }
        if let Some(tls) = &self.tls {
            if tls.cert_path.as_os_str().is_empty() || tls.key_path.as_os_str().is_empty() {
                return bad("api.tls", "cert_path and key_path are both required");
            }
            if tls.reload_interval_ms < 100 {
                return bad("api.tls.reload_interval_ms", "must be at least 100");
            }
        }
        if self.max_body_bytes == 0 || self.max_decoded_bytes < self.max_body_bytes {
            return bad(
                "api.max_decoded_bytes",
                "must be at least api.max_body_bytes (> 0)",
            );
        }
        if self.max_in_flight_bytes < self.max_body_bytes {
            return bad(
                "api.max_in_flight_bytes",
                "must be at least api.max_body_bytes (one maximum-size push must fit)",
            );
        }
        if self.default_rate_per_s == 0 || self.default_burst == 0 {
            return bad(
                "api.default_rate_per_s",
                "rate and burst must be at least 1",
            );
        }
        if self.retry_after_s == 0 {
            return bad("api.retry_after_s", "must be at least 1");
        }
        Ok(())
    }
}
