//! Baseline: plain lapin, persistent messages, pipelined confirms (up to
//! `--in-flight` unconfirmed), to a throwaway quorum queue. Prints msgs/s.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Stop issuing publishes after this many seconds (or at `--messages`,
    /// whichever comes first), so a run can last as long as a wrk run.
    #[arg(long)]
    seconds: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conn = Connection::connect(&args.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = format!("bench.bare.{}", uuid::Uuid::now_v7().simple());
    let mut q_args = FieldTable::default();
    q_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        q_args,
    )
    .await?;
    let body = vec![b'x'; args.body_bytes];
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut acked = 0usize;
    let mut sent = 0usize;
    let until = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    for _ in 0..args.messages {
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        sent += 1;
        if pending.len() >= args.in_flight
            && let Some(r) = pending.next().await
        {
            let r: lapin::Result<Confirmation> = r;
            if matches!(r?, Confirmation::Ack(None)) {
                acked += 1;
            }
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(r) = pending.next().await {
        if matches!(r?, Confirmation::Ack(None)) {
            acked += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
    )
    .await;
    let _ = conn.close(200, "done".into()).await;
    println!(
        "{}",
        serde_json::json!({
            "bench": "bare-publish", "body_bytes": args.body_bytes, "messages": sent,
            "in_flight": args.in_flight,
            "acked": acked, "seconds": secs, "msgs_per_s": acked as f64 / secs,
        })
    );
    Ok(())
}
