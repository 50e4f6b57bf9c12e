//! Command-line parsing and dispatch.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::commands;
use crate::output::Format;
use crate::settings::{Settings, Sources};

/// Inlet: receives agent telemetry, authenticates it without false 401s,
/// queues it durably, and aggregates it into minutely metrics.
#[derive(Debug, Parser)]
#[command(name = "inlet", version, about)]
pub struct Cli {
    /// Directory with default.toml and {env}.toml [env: INLET_CONFIG_DIR; default: config]
    #[arg(long, global = true)]
    config_dir: Option<PathBuf>,
    /// Configuration environment [env: INLET_ENV; default: local]
    #[arg(long, global = true)]
    env: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load, validate and print the effective configuration (TOML; secrets and passwords redacted).
    Config,
    /// Print a shell completion script: `inlet completions bash > /etc/bash_completion.d/inlet`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Load the configuration and check Redis, MongoDB and RabbitMQ: one line each; exit 1 if any failed.
    Check {
        /// Bound on each check, with a unit.
        #[arg(long, default_value = "10s", value_parser = crate::duration::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Serve the push API.
    Api,
    /// Consume pushes and aggregate them into MongoDB.
    Worker,
    /// Print an app's minutely transaction series.
    Stats {
        /// The account.
        #[arg(long)]
        account: String,
        /// The app.
        #[arg(long)]
        app: String,
        /// How far back: 30m, 1h, 2d… (default 1h; a unit is required).
        #[arg(long, default_value = "1h", value_parser = crate::duration::parse_duration)]
        since: Duration,
        /// Only this action (default: all actions, summed per minute).
        #[arg(long)]
        action: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Apply MongoDB migrations (idempotent), or show their state.
    Migrate {
        /// Only show which migrations are applied. Exit 0 when all are,
        /// 2 when one is pending, 3 when an applied one's file changed
        /// since, 1 when the state could not be read.
        #[arg(long)]
        status: bool,
        /// How long to wait for MongoDB to answer as a writable primary
        /// (it may still be starting, or electing one), with a unit.
        #[arg(long, default_value = "60s", value_parser = crate::duration::parse_duration)]
        wait: std::time::Duration,
    },
    /// Load all keys from MongoDB into Redis, then follow changes.
    Sync {
        /// Load once and exit (no following, no admin listener).
        #[arg(long)]
        once: bool,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(commands::keys::AccountsCommand),
    /// Send one batch (JSON) to the push API once and print the answer.
    Push(commands::push::PushArgs),
    /// Generate realistic push traffic; report statuses, throughput and latency.
    Load(commands::load::LoadArgs),
}

/// Parses arguments, runs the command, maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "inlet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The agent-side tools need no server configuration.
    let command = match cli.command {
        Command::Push(args) => {
            let _ = inlet_obs::logging::init(&inlet_obs::LogSettings::default());
            return commands::block_on(commands::push::run(args));
        }
        Command::Load(args) => {
            let _ = inlet_obs::logging::init(&inlet_obs::LogSettings::default());
            return commands::block_on(commands::load::run(args));
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "inlet", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    let cli = Cli { command, ..cli };
    let mut settings = load_settings(&cli)?;
    if matches!(cli.command, Command::Check { .. }) && std::env::var_os("RUST_LOG").is_none() {
        // Its lines say what failed; the clients' retry warnings would
        // only repeat it.
        settings.log.filter = "error".to_owned();
    }
    // Logs go to stderr, so command output on stdout stays clean.
    let _ = inlet_obs::logging::init(&settings.log);
    match cli.command {
        Command::Config => commands::config::run(&settings),
        Command::Check { timeout } => commands::block_on(commands::check::run(settings, timeout)),
        Command::Api => commands::block_on(commands::api::run(settings)),
        Command::Worker => commands::block_on(commands::worker::run(settings)),
        Command::Stats {
            account,
            app,
            since,
            action,
            format,
        } => commands::block_on(commands::stats::run(
            settings,
            account,
            app,
            since,
            action,
            format.json,
        )),
        Command::Migrate { status, wait } => {
            commands::block_on(commands::migrate::run(settings, status, wait))
        }
        Command::Sync { once } => commands::block_on(commands::sync::run(settings, once)),
        Command::Keys(cmd) => commands::block_on(commands::keys::keys(settings, cmd)),
        Command::Accounts(cmd) => commands::block_on(commands::keys::accounts(settings, cmd)),
        // Dispatched above, without settings.
        Command::Push(_) | Command::Load(_) | Command::Completions { .. } => Ok(ExitCode::FAILURE),
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut sources = Sources::from_env();
    if let Some(dir) = &cli.config_dir {
        sources.dir = dir.clone();
    }
    if let Some(env) = &cli.env {
        sources.env = env.clone();
        sources.env_explicit = true;
    }
    Settings::load(&sources).with_context(|| {
        format!(
            "loading configuration from {} (environment {:?})",
            sources.dir.display(),
            sources.env
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    #[test]
    fn a_bare_number_is_refused_naming_the_flag_and_a_unit() {
        let stats_since = |since: &str| {
            Cli::try_parse_from([
                "inlet",
                "stats",
                "--account",
                "a",
                "--app",
                "b",
                "--since",
                since,
            ])
        };
        let err = stats_since("5").unwrap_err().to_string();
        assert!(err.contains("--since") && err.contains("5m"), "{err}");
        let err = Cli::try_parse_from(["inlet", "push", "--timeout", "10"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--timeout") && err.contains("10s"), "{err}");
        assert!(
            Cli::try_parse_from(["inlet", "push", "--timeout", "0s"]).is_err(),
            "a zero bound"
        );
        for since in ["90s", "15m", "1h", "2d"] {
            stats_since(since).unwrap_or_else(|e| panic!("{since}: {e}"));
        }
    }
}
