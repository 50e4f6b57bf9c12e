//! `inlet push`: send one batch to the push API once and print the answer.
//!
//! For operators checking a key, an endpoint or a batch by hand. The body
//! and the key go as given (nothing is validated locally, so the answer is
//! the server's own); there is no retry. The exit code is 0 for a 2xx and 1
//! otherwise.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use inlet_client::KeyHeader;
use inlet_client::send_once::{PushOutcome, PushRequest, push_once};

/// `inlet push` options.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The batch (JSON) to send; absent or "-" reads standard input.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The push API's base URL (`/v1/push` is appended).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// The API key. Without one the request carries no key.
    #[arg(long, env = "INLET_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Send the key as `X-Inlet-Key` instead of `Authorization: Bearer`.
    #[arg(long)]
    x_inlet_key: bool,
    /// Send the body uncompressed (default: gzip).
    #[arg(long)]
    no_gzip: bool,
    /// Bound on the request, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_duration)]
    timeout: Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Sends the batch and prints the outcome.
pub async fn run(args: PushArgs) -> anyhow::Result<ExitCode> {
    let body = match &args.file {
        Some(f) if f.as_os_str() != "-" => {
            std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the batch from standard input")?;
            buf
        }
    };
    let outcome = push_once(PushRequest {
        endpoint: args.endpoint.clone(),
        key: args.key.clone(),
        key_header: if args.x_inlet_key {
            KeyHeader::XInletKey
        } else {
            KeyHeader::Bearer
        },
        body,
        gzip: !args.no_gzip,
        timeout: args.timeout,
    })
    .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&outcome)?)?;
    } else {
        write_text(&mut out, &outcome)?;
    }
    Ok(if outcome.accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_text(out: &mut impl std::io::Write, o: &PushOutcome) -> std::io::Result<()> {
    writeln!(out, "HTTP {} {}", o.status, o.reason())?;
    if let Some(id) = &o.id {
        writeln!(out, "id: {id}")?;
    }
    if let Some(p) = &o.problem {
        if let Some(code) = &p.code {
            writeln!(out, "code: {code}")?;
        }
        if let Some(message) = &p.message {
            writeln!(out, "message: {message}")?;
        }
        if let Some(r) = p.retryable {
            writeln!(out, "retryable: {r}")?;
        }
        if let Some(s) = p.retry_after_s {
            writeln!(out, "retry_after_s: {s}")?;
        }
        if let Some(s) = p.probe_after_s {
            writeln!(out, "probe_after_s: {s}")?;
        }
        for e in &p.errors {
            writeln!(out, "error: {} ({}): {}", e.path, e.rule, e.message)?;
        }
    }
    writeln!(out, "agent should: {}", o.directive())?;
    if let Some(r) = &o.request_id {
        writeln!(out, "request_id: {r}")?;
    }
    writeln!(out, "latency_ms: {:.1}", o.latency_ms)
}
