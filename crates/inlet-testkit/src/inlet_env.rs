//! The environment every `inlet` child process of an integration test
//! gets: the shipped configuration files, the `local` environment, this
//! test's corner of MongoDB, Redis and RabbitMQ, quiet logs, and nothing
//! inherited from the shell that would change what the process does
//! (`RUST_LOG`, `INLET_KEY`).
//!
//! ```no_run
//! # async fn f() {
//! use inlet_testkit::{InletEnv, TestAmqp, TestMongo, TestRedis};
//! let (mongo, redis, amqp) = (TestMongo::new().await, TestRedis::new().await, TestAmqp::new());
//! let env = InletEnv::new(&mongo.url, &mongo.db_name, &redis, &amqp)
//!     .set("INLET__API__LISTEN", "127.0.0.1:8080");
//! let _ = env.command("/path/to/inlet", &["migrate"]).output();
//! # }
//! ```

use std::process::Command;

use crate::{TestAmqp, TestRedis};

/// Variables removed from every child's environment: they would change
/// what an `inlet` process does if the test's shell happened to set them.
pub const REMOVED: &[&str] = &["RUST_LOG", "INLET_KEY"];

/// The `INLET_*` variables for one test's `inlet` processes; a later
/// [`Self::set`] of the same name replaces the earlier value.
#[derive(Debug, Clone)]
pub struct InletEnv {
    vars: Vec<(String, String)>,
}

impl InletEnv {
    /// The shared settings: `config/` of this repository with
    /// `INLET_ENV=local`, MongoDB at `mongo_url` (database `mongo_db`), the
    /// test's Redis prefix and AMQP prefix (also the connection name, so a
    /// test can find its connections in the broker), logs at `warn`.
    pub fn new(mongo_url: &str, mongo_db: &str, redis: &TestRedis, amqp: &TestAmqp) -> InletEnv {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
        InletEnv { vars: Vec::new() }
            .set("INLET_CONFIG_DIR", config)
            .set("INLET_ENV", "local")
            .set("INLET__MONGO__URL", mongo_url)
            .set("INLET__MONGO__DATABASE", mongo_db)
            .set("INLET__REDIS__URL", &redis.url)
            .set("INLET__REDIS__PREFIX", &redis.prefix)
            .set("INLET__QUEUE__URL", &amqp.url)
            .set("INLET__QUEUE__PREFIX", &amqp.prefix)
            .set("INLET__QUEUE__CONNECTION_NAME", &amqp.prefix)
            .set("INLET__LOG__FILTER", "warn")
    }

    /// Sets `key=value` (replacing an earlier value of `key`).
    #[must_use]
    pub fn set(mut self, key: &str, value: impl Into<String>) -> InletEnv {
        self.set_in_place(key, Some(value.into()));
        self
    }

    /// Sets `key=value`, or removes `key` when `value` is `None`.
    pub fn set_in_place(&mut self, key: &str, value: Option<String>) {
        self.vars.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.vars.push((key.to_owned(), v));
        }
    }

    /// The variables, in the order they were set.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Applies the variables (and [`REMOVED`]) to `cmd`.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for k in REMOVED {
            cmd.env_remove(k);
        }
        cmd.envs(self.vars())
    }

    /// `binary args…` with this environment (`binary` is the test's
    /// `env!("CARGO_BIN_EXE_inlet")`). For an async child, convert it with
    /// `tokio::process::Command::from`.
    pub fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut c = Command::new(binary);
        c.args(args);
        self.apply(&mut c);
        c
    }
}

/// Runs `cmd` on a pseudo-terminal (util-linux `script`, in Debian's
/// essential bsdutils) and returns what a user at a terminal would see —
/// stdout and stderr together, progress bars included — as `stdout`.
///
/// # Panics
/// If `script` cannot be run.
pub fn on_a_terminal(cmd: &Command) -> std::process::Output {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    script
        .output()
        .expect("util-linux `script` (Debian's essential bsdutils)")
}
