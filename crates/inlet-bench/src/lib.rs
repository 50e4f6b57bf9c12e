//! Benchmark harnesses used by `scripts/bench` (unpublished).
//!
//! Each binary in `src/bin` measures one thing and prints one JSON line:
//!
//! - `bare-actix`: the baseline HTTP server (reads the body, answers 202);
//! - `bare-publish`: the baseline confirmed publish loop (plain lapin);
//! - `auth-designs`: decisions per second of the incident's three designs
//!   (v1: MongoDB per decision, v2: Redis per decision, Inlet: cached and
//!   layered), 64 concurrent tasks;
//! - `worker-throughput`: the worker vs a bare bulk-upsert loop of the same
//!   documents;
//! - `sync-backfill`: time to load N keys from MongoDB into Redis.
//! - `otlp-body`: the bodies of the OTLP-vs-push comparison (a protobuf
//!   traces export of N spans and the push batch it maps onto).

use std::time::Duration;

/// Latency percentiles from a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Computes percentiles (sorts in place).
pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            Duration::ZERO
        } else {
            samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
        }
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// A realistic push body (JSON) of about `target_bytes`, timestamps now.
pub fn sample_batch(target_bytes: usize) -> serde_json::Value {
    let now = inlet_domain::now_ms();
    let mut tx = Vec::new();
    let mut v = serde_json::json!({
        "agent": {"name": "inlet-bench", "version": "1.0.0", "hostname": "bench-host-1"},
        "app": "shop", "environment": "production",
    });
    let mut i = 0;
    loop {
        tx.push(serde_json::json!({
            "action": format!("OrdersController#action{}", i % 7),
            "namespace": "web", "start_ms": now - 1_000, "duration_ms": 12.5 + i as f64,
            "status": if i % 13 == 0 { 500 } else { 200 },
        }));
        i += 1;
        v["transactions"] = serde_json::Value::Array(tx.clone());
        if serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0) >= target_bytes {
            return v;
        }
    }
}
