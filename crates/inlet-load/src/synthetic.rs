//! Realistic synthetic batches: what a Rails-like application's agent
//! sends (web actions and jobs with long-tailed durations, tagged metrics,
//! now and then an error with a backtrace).

use inlet_domain::{
    MetricKind, WireAgent, WireBatch, WireErrorSample, WireFrame, WireMetric, WireTransaction,
    WireTransactionError,
};
use rand::Rng;
use rand::seq::IndexedRandom as _;

const WEB_ACTIONS: &[(&str, f64)] = &[
    ("OrdersController#index", 45.0),
    ("OrdersController#show", 25.0),
    ("OrdersController#create", 120.0),
    ("CartsController#update", 35.0),
    ("SessionsController#create", 80.0),
    ("Api::V1::ProductsController#index", 15.0),
    ("Api::V1::ProductsController#show", 8.0),
    ("HealthController#show", 1.0),
];
const JOB_ACTIONS: &[(&str, f64)] = &[
    ("InvoiceMailerJob#perform", 400.0),
    ("ImportProductsJob#perform", 2_500.0),
    ("ReindexJob#perform", 900.0),
];
const ERROR_CLASSES: &[(&str, &str)] = &[
    ("NoMethodError", "undefined method `total' for nil:NilClass"),
    (
        "ActiveRecord::RecordNotFound",
        "Couldn't find Order with 'id'=4242",
    ),
    ("Timeout::Error", "execution expired"),
    (
        "Redis::CannotConnectError",
        "Error connecting to Redis on 10.0.0.5:6379 (ECONNREFUSED)",
    ),
];
const APP_FRAMES: &[(&str, &str)] = &[
    ("app/models/order.rb", "total"),
    ("app/controllers/orders_controller.rb", "show"),
    ("app/services/checkout.rb", "call"),
    ("app/jobs/import_products_job.rb", "perform"),
];
const LIB_FRAMES: &[(&str, &str)] = &[
    (
        "/usr/local/bundle/gems/activerecord-7.1.3/lib/active_record/relation.rb",
        "find",
    ),
    (
        "/usr/local/bundle/gems/actionpack-7.1.3/lib/action_controller/metal.rb",
        "dispatch",
    ),
    (
        "/usr/local/bundle/gems/rack-3.0.9/lib/rack/builder.rb",
        "call",
    ),
];

/// A plausible batch from `agent`: a handful of transactions (web requests
/// and jobs with typical durations and statuses), some tagged metrics, and
/// now and then an error with a backtrace. Timestamps are within the last
/// few seconds of `now_ms`; the `batch_id` is fresh.
pub fn synthetic_batch<R: Rng + ?Sized>(
    rng: &mut R,
    agent: &WireAgent,
    app: &str,
    environment: &str,
    now_ms: i64,
) -> WireBatch {
    let host = agent.hostname.clone().unwrap_or_else(|| "host".into());
    let transactions = (0..rng.random_range(3..=8))
        .map(|_| {
            let job = rng.random_bool(0.15);
            let &(action, typical) = if job {
                JOB_ACTIONS.choose(rng).unwrap_or(&("Job#perform", 100.0))
            } else {
                WEB_ACTIONS.choose(rng).unwrap_or(&("Home#index", 10.0))
            };
            // A long-tailed duration around the typical one.
            let u: f64 = rng.random();
            let duration_ms =
                (typical * (0.3 + 2.0 * u * u * u + rng.random::<f64>() * 0.4) * 100.0).round()
                    / 100.0;
            let failed = rng.random_bool(0.02);
            let status = (!job).then(|| {
                if failed {
                    500
                } else {
                    *[200, 200, 200, 200, 200, 201, 204, 302, 304, 404, 422]
                        .choose(rng)
                        .unwrap_or(&200)
                }
            });
            WireTransaction {
                action: action.into(),
                namespace: Some(if job { "background" } else { "web" }.into()),
                start_ms: now_ms - rng.random_range(0..5_000),
                duration_ms,
                status,
                error: failed.then(|| {
                    let &(class, message) = ERROR_CLASSES.choose(rng).unwrap_or(&("Error", ""));
                    WireTransactionError {
                        class: class.into(),
                        message: Some(message.into()),
                    }
                }),
            }
        })
        .collect();
    let mut metrics = Vec::new();
    for _ in 0..rng.random_range(2..=5) {
        let m = match rng.random_range(0..4) {
            0 => WireMetric {
                kind: MetricKind::Counter,
                name: "jobs.processed".into(),
                value: f64::from(rng.random_range(1..20)),
                tags: [(
                    "queue".to_owned(),
                    ["default", "mailers", "imports"]
                        .choose(rng)
                        .unwrap_or(&"default")
                        .to_string(),
                )]
                .into(),
                timestamp_ms: now_ms,
                start_ms: None,
                histogram: None,
            },
            1 => WireMetric {
                kind: MetricKind::Gauge,
                name: "db.pool.in_use".into(),
                value: f64::from(rng.random_range(0..32)),
                tags: [("host".to_owned(), host.clone())].into(),
                timestamp_ms: now_ms,
                start_ms: None,
                histogram: None,
            },
            2 => WireMetric {
                kind: MetricKind::Distribution,
                name: "http.response_bytes".into(),
                value: f64::from(rng.random_range(200..200_000)),
                tags: [
                    ("host".to_owned(), host.clone()),
                    (
                        "format".to_owned(),
                        ["html", "json"].choose(rng).unwrap_or(&"json").to_string(),
                    ),
                ]
                .into(),
                timestamp_ms: now_ms,
                start_ms: None,
                histogram: None,
            },
            _ => WireMetric {
                kind: MetricKind::Gauge,
                name: "process.rss_mb".into(),
                value: (300.0 + rng.random::<f64>() * 200.0).round(),
                tags: [("host".to_owned(), host.clone())].into(),
                timestamp_ms: now_ms,
                start_ms: None,
                histogram: None,
            },
        };
        metrics.push(m);
    }
    let errors = if rng.random_bool(0.1) {
        let &(class, message) = ERROR_CLASSES.choose(rng).unwrap_or(&("Error", ""));
        let mut backtrace = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let &(file, function) = APP_FRAMES.choose(rng).unwrap_or(&("app/x.rb", "x"));
            backtrace.push(WireFrame {
                file: file.into(),
                line: Some(rng.random_range(1..400)),
                function: Some(function.into()),
                in_app: None,
            });
        }
        for _ in 0..rng.random_range(2..=5) {
            let &(file, function) = LIB_FRAMES.choose(rng).unwrap_or(&("/gems/x.rb", "x"));
            backtrace.push(WireFrame {
                file: file.into(),
                line: Some(rng.random_range(1..900)),
                function: Some(function.into()),
                in_app: None,
            });
        }
        vec![WireErrorSample {
            class: class.into(),
            message: message.into(),
            backtrace,
            action: WEB_ACTIONS.choose(rng).map(|(a, _)| (*a).to_owned()),
            timestamp_ms: now_ms - rng.random_range(0..5_000),
        }]
    } else {
        Vec::new()
    };
    WireBatch {
        batch_id: Some(uuid::Uuid::now_v7().to_string()),
        agent: agent.clone(),
        app: app.into(),
        environment: environment.into(),
        transactions,
        metrics,
        errors,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use inlet_domain::{Batch, BatchLimits, now_ms};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn synthetic_batches_are_valid_and_varied() {
        let mut rng = StdRng::seed_from_u64(9);
        let agent = WireAgent {
            name: "inlet-load".into(),
            version: "1".into(),
            hostname: Some("load-0001".into()),
        };
        let now = now_ms();
        let mut with_errors = 0;
        let mut actions = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let b = synthetic_batch(&mut rng, &agent, "shop", "load", now);
            ids.insert(b.batch_id.clone().unwrap());
            actions.extend(b.transactions.iter().map(|t| t.action.clone()));
            with_errors += usize::from(!b.errors.is_empty());
            let json = serde_json::to_vec(&b).unwrap();
            Batch::decode(&json, &BatchLimits::default(), now).unwrap();
        }
        assert_eq!(ids.len(), 300, "every batch has its own id");
        assert!(actions.len() >= 8, "{actions:?}");
        assert!((10..=80).contains(&with_errors), "{with_errors}");
    }
}
