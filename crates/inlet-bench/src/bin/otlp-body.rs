//! The request bodies of the OTLP-vs-push comparison: a protobuf traces
//! export of N SERVER spans (`inlet_otlp::example::traces`) and,
//! optionally, the `/v1/push` JSON batch that export maps onto — the same
//! N samples, so both routes carry the same data.
//!
//! Prints one JSON line: spans, protobuf bytes, and the push batch's
//! transactions and bytes when asked for.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{Context as _, ensure};
use clap::Parser;
use inlet_domain::BatchLimits;
use inlet_otlp::{Format, Signal};
use prost::Message as _;

#[derive(Parser)]
struct Args {
    /// SERVER spans in the export.
    #[arg(long, default_value_t = 8)]
    spans: usize,
    /// The service (`service.name`, the app of the mapped batch).
    #[arg(long, default_value = "shop")]
    app: String,
    /// Where the protobuf body is written.
    #[arg(long)]
    out: PathBuf,
    /// Where the mapped push batch (JSON) is written, if at all.
    #[arg(long)]
    push_json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let now = inlet_domain::now_ms();
    let body = inlet_otlp::example::traces(&args.app, args.spans, now).encode_to_vec();
    std::fs::write(&args.out, &body).with_context(|| format!("writing {}", args.out.display()))?;
    let mut line = serde_json::json!({ "spans": args.spans, "protobuf_bytes": body.len() });
    if let Some(path) = &args.push_json {
        let export = inlet_otlp::map(
            Signal::Traces,
            Format::Protobuf,
            &body,
            &BatchLimits::default(),
            now,
        )?;
        ensure!(
            export.batches.len() == 1 && export.rejected == 0,
            "the export mapped onto {} batches with {} spans left out; expected one whole batch",
            export.batches.len(),
            export.rejected
        );
        let batch = &export.batches[0];
        let json = serde_json::to_vec(batch)?;
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
        line["push_transactions"] = batch.transactions.len().into();
        line["push_json_bytes"] = json.len().into();
    }
    println!("{line}");
    Ok(())
}
