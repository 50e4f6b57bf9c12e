//! `inlet config`: the effective configuration, with nothing secret in it.
//!
//! Signing secrets already serialize as `<redacted>`
//! (`inlet_auth::SigningSettings`). Credentials inside URLs (Redis, MongoDB,
//! RabbitMQ, and any URL a later setting adds) are redacted here, on the
//! rendered tree, so a new URL setting cannot forget to: every string that
//! looks like a URL gets its userinfo password and its secret-named query
//! parameters replaced (`inlet_domain::redact`).

use std::borrow::Cow;
use std::process::ExitCode;

use anyhow::Context as _;
use inlet_domain::redact::redact_url;

use crate::settings::Settings;

/// Prints the settings as TOML, redacted.
pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let text = render(settings)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The settings as TOML, redacted.
pub fn render(settings: &Settings) -> anyhow::Result<String> {
    let mut tree = toml::Value::try_from(settings).context("rendering configuration")?;
    redact_tree(&mut tree);
    toml::to_string_pretty(&tree).context("rendering configuration")
}

fn redact_tree(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) => {
            if let Cow::Owned(r) = redact_url(s) {
                *s = r;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_tree),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_tree(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_configuration_has_no_default_credentials() {
        let text = render(&Settings::default()).unwrap();
        assert!(!text.contains("guest:guest"), "{text}");
        assert!(
            text.contains("amqp://guest:***@127.0.0.1:5672/%2f"),
            "{text}"
        );
    }
}
