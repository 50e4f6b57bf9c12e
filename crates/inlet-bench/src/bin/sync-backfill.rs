//! Time to load N keys from MongoDB into Redis (`inlet sync` backfill).
#![allow(clippy::print_stdout)]

use std::time::Instant;

use clap::Parser;
use inlet_auth::mongo_store::KeyDoc;
use inlet_auth::sync::{KeySync, SyncSettings};
use inlet_auth::{MongoSettings, MongoStore, RedisSettings, RedisStore, SyncMetrics};
use inlet_domain::{AccountState, KeyDigest, KeyState};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "mongodb://127.0.0.1:27017/?retryWrites=false")]
    mongo: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let id = uuid::Uuid::now_v7().simple().to_string()[..12].to_owned();
    let mongo = MongoStore::connect(&MongoSettings {
        url: args.mongo.clone(),
        database: format!("bench_sync_{id}"),
        ..MongoSettings::default()
    })
    .await?;
    let redis = RedisStore::new(&RedisSettings {
        url: args.redis.clone(),
        prefix: format!("bench-sync-{id}:"),
        ..RedisSettings::default()
    })?;
    let now = mongodb::bson::DateTime::now();
    mongo
        .accounts()
        .insert_one(inlet_auth::mongo_store::AccountDoc {
            id: "bench".into(),
            state: AccountState::Active,
            rate_limit: None,
            revision: 1,
            created_at: now,
            updated_at: now,
        })
        .await?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..args.keys {
        batch.push(KeyDoc {
            key_id: format!("{:016x}", i),
            digest: KeyDigest::of_secret(&format!("bench-key-{i}")).to_hex(),
            account_id: "bench".into(),
            state: KeyState::Active,
            app: None,
            legacy: true,
            revision: 1,
            created_at: now,
            updated_at: now,
        });
        if batch.len() == 10_000 {
            mongo.keys().insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        mongo.keys().insert_many(batch).await?;
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let sync = KeySync::new(
        mongo.clone(),
        redis.clone(),
        SyncSettings::default(),
        SyncMetrics::unregistered()?,
    );
    let started = Instant::now();
    let marker = sync.backfill().await?;
    let backfill_secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "sync-backfill", "keys": marker.count,
            "mongo_insert_seconds": insert_secs,
            "backfill_seconds": backfill_secs, "keys_per_s": marker.count as f64 / backfill_secs,
        })
    );
    let _ = mongo.database().drop().await;
    redis.clear().await?;
    Ok(())
}
