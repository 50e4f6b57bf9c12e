//! The incident's history side by side, under the same load (64
//! concurrent tasks over the same keys):
//! - v1: every decision queries MongoDB (the original design);
//! - v2: every decision queries Redis (the design that caused the incident);
//! - inlet: the cached, layered, coalescing authenticator.
//!
//! Prints one JSON line per design. Only a lookup that found the key (or
//! a decision that accepted it) counts as a decision; every other answer
//! is counted in `failures`, and a run with any failure exits non-zero
//! after printing its lines, so a failing store cannot score.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use inlet_auth::key_admin::KeyAdmin;
use inlet_auth::sync::{KeySync, SyncSettings};
use inlet_auth::{
    AuthSettings, Authenticator, KeyStore, Lookup, MongoSettings, MongoStore, RedisSettings,
    RedisStore, SyncMetrics,
};
use inlet_domain::{AccountId, KeyIssuer, KeyVerifier, SigningSecret, Verdict};
use inlet_migrate::{Migration, Migrator};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "mongodb://127.0.0.1:27017/?retryWrites=false")]
    mongo: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "migrations")]
    migrations: PathBuf,
}

#[derive(Clone, Copy)]
enum Design {
    V1,
    V2,
    Inlet,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let mongo = MongoStore::connect(&MongoSettings {
        url: args.mongo.clone(),
        database: format!("bench_auth_{}", &id[..12]),
        max_pool_size: 128,
        ..MongoSettings::default()
    })
    .await?;
    let redis = RedisStore::new(&RedisSettings {
        url: args.redis.clone(),
        prefix: format!("bench-auth-{}:", &id[..12]),
        pool_size: 64,
        ..RedisSettings::default()
    })?;
    Migrator::new(
        mongo.database().clone(),
        Migration::load_dir(&args.migrations)?,
    )?
    .run()
    .await?;
    let secret = SigningSecret::new(1, &[9; 32])?;
    let issuer = KeyIssuer::new(secret.clone());
    let admin = KeyAdmin::new(mongo.clone());
    let account = AccountId::parse("bench")?;
    admin.create_account(&account, None).await?;
    let mut keys = Vec::with_capacity(args.keys);
    for _ in 0..args.keys {
        keys.push(admin.create_key(&issuer, &account, None).await?.0);
    }
    KeySync::new(
        mongo.clone(),
        redis.clone(),
        SyncSettings::default(),
        SyncMetrics::unregistered()?,
    )
    .backfill()
    .await?;
    let keys = Arc::new(keys);
    let auth = Authenticator::builder(AuthSettings::default())
        .primary(Arc::new(redis.clone()))
        .source_of_truth(Arc::new(mongo.clone()))
        .verifier(KeyVerifier::new(vec![secret])?)
        .build()?;

    let mut total_failures = 0;
    for (name, design) in [
        ("v1_mongo_per_decision", Design::V1),
        ("v2_redis_per_decision", Design::V2),
        ("inlet_cached_layered", Design::Inlet),
    ] {
        // Warm-up (connections, cache) for one second; its failures count
        // as much as the measured run's.
        let warmup = run(
            design,
            &keys,
            &mongo,
            &redis,
            &auth,
            args.tasks,
            Duration::from_secs(1),
        )
        .await;
        let Tally {
            decisions,
            failures,
            mut samples,
            secs,
        } = run(
            design,
            &keys,
            &mongo,
            &redis,
            &auth,
            args.tasks,
            Duration::from_secs(args.seconds),
        )
        .await;
        let p = inlet_bench::percentiles(&mut samples);
        println!(
            "{}",
            serde_json::json!({
                "bench": "auth-designs", "design": name, "tasks": args.tasks, "keys": args.keys,
                "decisions": decisions, "failures": failures, "warmup_failures": warmup.failures,
                "seconds": secs, "decisions_per_s": decisions as f64 / secs,
                "p50_us": p.p50.as_secs_f64() * 1e6, "p99_us": p.p99.as_secs_f64() * 1e6,
            })
        );
        total_failures += failures + warmup.failures;
    }
    let _ = mongo.database().drop().await;
    anyhow::ensure!(
        total_failures == 0,
        "{total_failures} lookups or decisions did not find or accept a key that exists"
    );
    Ok(())
}

/// What one run of a design measured.
struct Tally {
    /// Lookups that found the key (decisions that accepted it).
    decisions: u64,
    /// Every other answer: an error, a miss, a rejection.
    failures: u64,
    /// Latency samples of the decisions.
    samples: Vec<Duration>,
    /// The run's wall time.
    secs: f64,
}

async fn run(
    design: Design,
    keys: &Arc<Vec<inlet_domain::ApiKey>>,
    mongo: &MongoStore,
    redis: &RedisStore,
    auth: &Authenticator,
    tasks: usize,
    duration: Duration,
) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (keys, mongo, redis, auth, stop) = (
            keys.clone(),
            mongo.clone(),
            redis.clone(),
            auth.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(100_000);
            let mut n = 0u64;
            let mut failed = 0u64;
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[i % keys.len()];
                i += 7;
                let began = Instant::now();
                let ok = match design {
                    Design::V1 => matches!(mongo.lookup(&key.digest()).await, Ok(Lookup::Found(_))),
                    Design::V2 => matches!(redis.lookup(&key.digest()).await, Ok(Lookup::Found(_))),
                    Design::Inlet => matches!(
                        auth.decide(Some(key.expose_secret())).await.verdict,
                        Verdict::Accepted(_)
                    ),
                };
                let took = began.elapsed();
                if !ok {
                    failed += 1;
                    continue;
                }
                n += 1;
                // Keep memory bounded: every sample up to 100k, then 1 in 16.
                if samples.len() < 100_000 || n.is_multiple_of(16) {
                    samples.push(took);
                }
            }
            (n, failed, samples)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally {
        decisions: 0,
        failures: 0,
        samples: Vec::new(),
        secs: 0.0,
    };
    for h in handles {
        match h.await {
            Ok((n, failed, s)) => {
                tally.decisions += n;
                tally.failures += failed;
                tally.samples.extend(s);
            }
            // A task that panicked decided nothing more: a failure.
            Err(_) => tally.failures += 1,
        }
    }
    tally.secs = started.elapsed().as_secs_f64();
    tally
}
