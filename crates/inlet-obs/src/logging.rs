//! Logging set-up on `tracing-subscriber`.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable, coloured when writing to a terminal (local runs).
    #[default]
    Pretty,
    /// One JSON object per line (production: for log shippers).
    Json,
}

/// Logging options (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`. Default `pretty`; `config/production.toml` sets
    /// `json`.
    pub format: LogFormat,
    /// Filter directives in `RUST_LOG` syntax, used when `RUST_LOG` is not
    /// set. Default `info`.
    pub filter: String,
}

impl LogSettings {
    /// Checks that `filter` parses as `RUST_LOG`-style directives.
    pub fn validate(&self) -> Result<(), inlet_domain::InvalidSetting> {
        validate_filter(&self.filter)
            .or_else(|e| inlet_domain::InvalidSetting::err("log.filter", e))
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    /// The filter directives do not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directives.
        filter: String,
        /// Parser error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Checks that `filter` parses as `RUST_LOG`-style directives.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG`, when set,
/// overrides `settings.filter`.
pub fn init(settings: &LogSettings) -> Result<(), LogInitError> {
    let env_filter = filter(settings, std::env::var("RUST_LOG").ok())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let result = match settings.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|_| LogInitError::AlreadySet)
}

/// The filter in force: `RUST_LOG` when set and not blank, else
/// `log.filter`.
fn filter(settings: &LogSettings, rust_log: Option<String>) -> Result<EnvFilter, LogInitError> {
    let filter = match rust_log {
        Some(v) if !v.trim().is_empty() => v,
        _ => settings.filter.clone(),
    };
    EnvFilter::try_new(&filter).map_err(|source| LogInitError::Filter {
        filter: filter.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_reported() {
        let s = LogSettings {
            format: LogFormat::Pretty,
            filter: "info,[[[".into(),
        };
        assert!(matches!(filter(&s, None), Err(LogInitError::Filter { .. })));
        // A blank RUST_LOG does not hide the configured filter.
        assert!(matches!(
            filter(&s, Some("  ".into())),
            Err(LogInitError::Filter { .. })
        ));
        // A bad RUST_LOG is reported too, naming what was given.
        let good = LogSettings {
            format: LogFormat::Pretty,
            filter: "info".into(),
        };
        match filter(&good, Some("warn,[[[".into())) {
            Err(LogInitError::Filter { filter, .. }) => assert_eq!(filter, "warn,[[["),
            other => panic!("{other:?}"),
        }
        // RUST_LOG wins over the configured filter when set.
        assert!(filter(&s, Some("debug".into())).is_ok());
    }
}
