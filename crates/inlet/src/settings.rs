//! Layered configuration.
//!
//! Sources, later ones overriding earlier ones:
//! 1. built-in defaults (each settings struct's `Default`);
//! 2. `config/default.toml`;
//! 3. `config/{INLET_ENV}.toml` (`INLET_ENV` defaults to `local`; the file
//!    is required when `INLET_ENV` is set explicitly, so a typo in the
//!    environment name fails instead of silently running on defaults);
//! 4. environment variables `INLET__SECTION__KEY` (e.g.
//!    `INLET__LOG__FORMAT=json`).
//!
//! Each infrastructure crate owns the struct of its section and validates
//! it (`validate()`, each returning the one `inlet_domain::InvalidSetting`);
//! this module composes them, calls each `validate()`, and checks what
//! spans sections and its own `[admin]`. Unknown keys are errors (they are
//! usually typos), and every error names the key it is about.

use std::collections::HashMap;
use std::path::PathBuf;

use inlet_api::ApiSettings;
use inlet_auth::sync::SyncSettings;
use inlet_auth::{AuthSettings, InvalidSetting, MongoSettings, RedisSettings, SigningSettings};
use inlet_domain::BatchLimits;
use inlet_obs::LogSettings;
use inlet_queue::QueueSettings;
use inlet_worker::WorkerSettings;
use serde::{Deserialize, Serialize};

/// All of Inlet's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[log]`: logging format and filter.
    pub log: LogSettings,
    /// `[limits]`: what a push batch may contain.
    pub limits: BatchLimits,
    /// `[api]`: the push API.
    pub api: ApiSettings,
    /// `[queue]`: RabbitMQ.
    pub queue: QueueSettings,
    /// `[auth]`: how keys are decided.
    pub auth: AuthSettings,
    /// `[signing]`: key signing secrets.
    pub signing: SigningSettings,
    /// `[redis]`: the fast key store.
    pub redis: RedisSettings,
    /// `[mongo]`: the source of truth and the aggregates.
    pub mongo: MongoSettings,
    /// `[sync]`: the key sync.
    pub sync: SyncSettings,
    /// `[worker]`: the worker.
    pub worker: WorkerSettings,
    /// `[admin]`: admin listeners of processes without an HTTP API.
    pub admin: AdminSettings,
}

/// `[admin]`: where `/health/*` and `/metrics` are served for the worker
/// and the sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Admin listener of `inlet sync`. Default `0.0.0.0:9092`.
    pub sync_listen: String,
    /// Admin listener of `inlet worker`. Default `0.0.0.0:9091`.
    pub worker_listen: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            sync_listen: "0.0.0.0:9092".to_owned(),
            worker_listen: "0.0.0.0:9091".to_owned(),
        }
    }
}

/// Where configuration comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Directory holding `default.toml` and `{env}.toml`.
    pub dir: PathBuf,
    /// The environment name (`local`, `production`, …).
    pub env: String,
    /// Whether `env` was chosen explicitly (then its file must exist).
    pub env_explicit: bool,
    /// Environment variables to read `INLET__*` overrides from; `None`
    /// reads the process environment.
    pub vars: Option<HashMap<String, String>>,
}

impl Sources {
    /// Sources from the process environment: `INLET_CONFIG_DIR` (default
    /// `config`) and `INLET_ENV` (default `local`).
    pub fn from_env() -> Self {
        let env = std::env::var("INLET_ENV").ok().filter(|s| !s.is_empty());
        Sources {
            dir: std::env::var_os("INLET_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            env_explicit: env.is_some(),
            env: env.unwrap_or_else(|| "local".to_owned()),
            vars: None,
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file could not be read or parsed.
    #[error("configuration: {0}")]
    Source(#[from] config::ConfigError),
    /// A key has a value of the wrong type or an unknown name.
    #[error("configuration key `{key}`: {message}")]
    Key {
        /// Dotted key path, e.g. `limits.max_transactions`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A required file is missing.
    #[error("configuration file {0} does not exist (INLET_ENV names it)")]
    MissingFile(PathBuf),
}

impl From<InvalidSetting> for SettingsError {
    fn from(e: InvalidSetting) -> Self {
        SettingsError::Key {
            key: e.key,
            message: e.message,
        }
    }
}

impl Settings {
    /// Loads and validates settings from `sources`.
    pub fn load(sources: &Sources) -> Result<Settings, SettingsError> {
        let env_file = sources.dir.join(format!("{}.toml", sources.env));
        if sources.env_explicit && !env_file.exists() {
            return Err(SettingsError::MissingFile(env_file));
        }
        let mut env_source = config::Environment::with_prefix("INLET")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("queue.failover_urls");
        if let Some(vars) = &sources.vars {
            env_source = env_source.source(Some(vars.clone().into_iter().collect()));
        }
        let merged = config::Config::builder()
            .add_source(config::File::from(sources.dir.join("default.toml")).required(false))
            .add_source(config::File::from(env_file).required(false))
            .add_source(env_source)
            .build()?;
        // Go through JSON so that serde_path_to_error can name the key.
        let tree: serde_json::Value = merged.try_deserialize()?;
        let settings: Settings =
            serde_path_to_error::deserialize(tree).map_err(|e| SettingsError::Key {
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        settings.validate(sources.env == "production")?;
        Ok(settings)
    }

    /// Loads from a directory and environment name only, ignoring the
    /// process environment (for tests).
    #[cfg(test)]
    pub fn load_from(dir: &std::path::Path, env: &str) -> Result<Settings, SettingsError> {
        Settings::load(&Sources {
            dir: dir.to_owned(),
            env: env.to_owned(),
            env_explicit: true,
            vars: Some(HashMap::new()),
        })
    }

    /// Checks rules serde cannot express.
    fn validate(&self, production: bool) -> Result<(), SettingsError> {
        let bad = |key: &str, message: &str| {
            Err(SettingsError::Key {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        self.limits.validate()?;
        self.log.validate()?;
        self.api.validate()?;
        self.queue.validate()?;
        self.worker.validate()?;
        // Across sections: a body the API accepts that the worker cannot
        // decode ends in the dead-letter queue after its 202.
        if self.worker.max_decoded_bytes < self.api.max_decoded_bytes {
            return bad(
                "worker.max_decoded_bytes",
                &format!(
                    "is {} but must be at least api.max_decoded_bytes ({}), or the worker \
                     dead-letters bodies the API accepted",
                    self.worker.max_decoded_bytes, self.api.max_decoded_bytes
                ),
            );
        }
        self.auth.validate()?;
        self.signing.validate(production)?;
        self.redis.validate()?;
        self.mongo.validate()?;
        self.sync.validate()?;
        for (key, addr) in [
            ("admin.sync_listen", &self.admin.sync_listen),
            ("admin.worker_listen", &self.admin.worker_listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(key, "must be an address like 0.0.0.0:9092");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
    }

    #[test]
    fn every_shipped_config_file_parses() {
        let mut seen = 0;
        for entry in std::fs::read_dir(shipped_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if name.ends_with(".toml") && !name.starts_with("keys") {
                let env = path.file_stem().unwrap().to_str().unwrap().to_owned();
                Settings::load_from(&shipped_dir(), &env)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "default, local and production at least");
    }

    #[test]
    fn production_logs_json_and_has_no_dev_secret() {
        let s = Settings::load_from(&shipped_dir(), "production").unwrap();
        assert_eq!(s.log.format, inlet_obs::LogFormat::Json);
        assert!(s.signing.secrets.is_empty());
    }

    #[test]
    fn production_serves_metrics_and_readiness_details_on_the_admin_listener() {
        let s = Settings::load_from(&shipped_dir(), "production").unwrap();
        let port = |a: &str| a.parse::<std::net::SocketAddr>().unwrap().port();
        let admin = s
            .api
            .admin_listen
            .as_deref()
            .expect("production sets api.admin_listen");
        assert_ne!(port(admin), port(&s.api.listen));
        // docker-compose's Prometheus scrapes the API there.
        let prometheus =
            std::fs::read_to_string(shipped_dir().join("../deploy/prometheus/prometheus.yml"))
                .unwrap();
        let target = format!("\"api:{}\"", port(admin));
        assert!(prometheus.contains(&target), "{target} in prometheus.yml");
    }

    #[test]
    fn local_config_can_issue_keys() {
        let s = Settings::load_from(&shipped_dir(), "local").unwrap();
        assert!(s.signing.issuer().unwrap().is_some());
    }

    fn load_with(
        files: &[(&str, &str)],
        env: &str,
        vars: &[(&str, &str)],
    ) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Settings::load(&Sources {
            dir: dir.path().to_owned(),
            env: env.to_owned(),
            env_explicit: true,
            vars: Some(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        })
    }

    #[test]
    fn layers_override_in_order() {
        let files = [
            (
                "default.toml",
                "[limits]\nmax_errors = 10\nmax_metrics = 20\n[log]\nfilter = \"warn\"\n",
            ),
            ("staging.toml", "[limits]\nmax_errors = 11\n"),
        ];
        let s = load_with(
            &files,
            "staging",
            &[
                ("INLET__LIMITS__MAX_METRICS", "21"),
                ("INLET__REDIS__PREFIX", "x:"),
            ],
        )
        .unwrap();
        assert_eq!(s.limits.max_errors, 11, "env file beats default file");
        assert_eq!(s.limits.max_metrics, 21, "variables beat files");
        assert_eq!(s.redis.prefix, "x:");
        assert_eq!(s.log.filter, "warn");
        assert_eq!(
            s.limits.max_tags,
            BatchLimits::default().max_tags,
            "built-in default"
        );
    }

    #[test]
    fn broker_failover_urls_come_from_a_comma_separated_variable() {
        let files = [("default.toml", ""), ("x.toml", "")];
        let s = load_with(
            &files,
            "x",
            &[(
                "INLET__QUEUE__FAILOVER_URLS",
                "amqp://u:p@b:5673/%2f, amqp://u:p@c:5674/%2f",
            )],
        )
        .unwrap();
        assert_eq!(
            s.queue.failover_urls,
            ["amqp://u:p@b:5673/%2f", "amqp://u:p@c:5674/%2f"]
        );
        let none = load_with(&files, "x", &[("INLET__QUEUE__FAILOVER_URLS", "")]).unwrap();
        assert!(none.queue.failover_urls.is_empty());
        let err = load_with(&files, "x", &[("INLET__QUEUE__FAILOVER_URLS", "nope")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.failover_urls[0]"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let files = [
            ("default.toml", ""),
            ("production.toml", "[signing]\ncurrent = 3\n"),
        ];
        // Random: any secret written down here would be published.
        let secret: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let s = load_with(
            &files,
            "production",
            &[("INLET__SIGNING__SECRETS__3", &secret)],
        )
        .unwrap();
        assert!(s.signing.issuer().unwrap().is_some());
        let dev = "696e6c65742d6c6f63616c2d646576656c6f706d656e742d736563726574212121";
        let err = load_with(&files, "production", &[("INLET__SIGNING__SECRETS__3", dev)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("signing.secrets") && err.contains("published"),
            "{err}"
        );
    }

    #[test]
    fn the_worker_decodes_every_body_the_api_accepts() {
        let files = [("default.toml", ""), ("x.toml", "")];
        let err = load_with(
            &files,
            "x",
            &[
                ("INLET__API__MAX_DECODED_BYTES", "16777216"),
                ("INLET__WORKER__MAX_DECODED_BYTES", "16777215"),
            ],
        )
        .unwrap_err();
        match &err {
            SettingsError::Key { key, message } => {
                assert_eq!(key, "worker.max_decoded_bytes");
                assert!(message.contains("api.max_decoded_bytes"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = load_with(
            &[
                ("default.toml", "[worker]\nmax_decoded_bytes = 1048576\n"),
                ("x.toml", ""),
            ],
            "x",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("worker.max_decoded_bytes"), "{err}");
        for worker in ["16777216", "33554432"] {
            let s = load_with(
                &files,
                "x",
                &[
                    ("INLET__API__MAX_DECODED_BYTES", "16777216"),
                    ("INLET__WORKER__MAX_DECODED_BYTES", worker),
                ],
            )
            .unwrap();
            assert!(s.worker.max_decoded_bytes >= s.api.max_decoded_bytes);
        }
    }

    #[test]
    fn secret_files_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signing-1");
        let secret: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(&file, &secret).unwrap();
        let files = [("default.toml", ""), ("production.toml", "")];
        let s = load_with(
            &files,
            "production",
            &[
                ("INLET__SIGNING__CURRENT", "1"),
                ("INLET__SIGNING__SECRET_FILES__1", file.to_str().unwrap()),
            ],
        )
        .unwrap();
        assert!(s.signing.issuer().unwrap().is_some());
        std::fs::remove_file(&file).unwrap();
        let err = load_with(
            &files,
            "production",
            &[("INLET__SIGNING__SECRET_FILES__1", file.to_str().unwrap())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("signing.secret_files"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let err = load_with(
            &[("default.toml", "[limits]\nmax_errors = \"lots\"\n")],
            "x",
            &[],
        );
        // `x.toml` is missing and INLET_ENV was explicit.
        assert!(matches!(err, Err(SettingsError::MissingFile(_))));

        let files = [
            ("default.toml", "[limits]\nmax_errors = \"lots\"\n"),
            ("x.toml", ""),
        ];
        let err = load_with(&files, "x", &[]).unwrap_err().to_string();
        assert!(err.contains("limits.max_errors"), "{err}");

        let files = [
            ("default.toml", "[limits]\nmax_erors = 1\n"),
            ("x.toml", ""),
        ];
        let err = load_with(&files, "x", &[]).unwrap_err().to_string();
        assert!(err.contains("limits") && err.contains("max_erors"), "{err}");

        let files = [("default.toml", ""), ("x.toml", "")];
        let cases = [
            ("INLET__LOG__FORMAT", "xml", "log.format"),
            (
                "INLET__LIMITS__MAX_DURATION_MS",
                "-1",
                "limits.max_duration_ms",
            ),
            ("INLET__AUTH__POSITIVE_TTL_S", "0", "auth.positive_ttl_s"),
            ("INLET__REDIS__URL", "http://x", "redis.url"),
            ("INLET__MONGO__DATABASE", "a.b", "mongo.database"),
            ("INLET__AUTH__PRIMARY", "etcd", "auth.primary"),
            ("INLET__ADMIN__SYNC_LISTEN", "nowhere", "admin.sync_listen"),
            ("INLET__API__LISTEN", "nowhere", "api.listen"),
            (
                "INLET__API__MAX_IN_FLIGHT_BYTES",
                "1024",
                "api.max_in_flight_bytes",
            ),
            ("INLET__QUEUE__PREFETCH", "0", "queue.prefetch"),
            ("INLET__WORKER__CONCURRENCY", "0", "worker.concurrency"),
        ];
        for (var, value, key) in cases {
            let err = load_with(&files, "x", &[(var, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }
}
