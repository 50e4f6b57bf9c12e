//! Reading aggregates back (`inlet stats`).

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use inlet_domain::{DurationHistogram, HISTOGRAM_BUCKETS, Minute};
use mongodb::Database;
use mongodb::bson::{Document, doc};
use serde::Serialize;

use crate::store::{ERROR_MINUTES, TX_MINUTES, WriteError, classify};

/// What to read.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// Account.
    pub account: String,
    /// App.
    pub app: String,
    /// First minute (inclusive).
    pub since: Minute,
    /// Only this action (all actions otherwise, summed per minute).
    pub action: Option<String>,
}

/// One minute of one app (or action).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteStats {
    /// The minute, Unix ms of its start.
    pub minute_ms: i64,
    /// Transactions.
    pub count: u64,
    /// Failed transactions.
    pub errors: u64,
    /// Mean duration, ms.
    pub mean_ms: f64,
    /// Median estimate, ms (histogram bucket upper bound).
    pub p50_ms: Option<f64>,
    /// 95th percentile estimate, ms.
    pub p95_ms: Option<f64>,
    /// Longest, ms.
    pub max_ms: f64,
    /// Error occurrences reported as error samples.
    pub error_samples: u64,
}

fn int(d: &Document, key: &str) -> u64 {
    d.get(key)
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_i32().map(i64::from))
                .or_else(|| v.as_f64().map(|f| f as i64))
        })
        .unwrap_or(0)
        .max(0) as u64
}

fn float(d: &Document, key: &str) -> f64 {
    d.get(key)
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_i64().map(|i| i as f64))
                .or_else(|| v.as_i32().map(f64::from))
        })
        .unwrap_or(0.0)
}

#[derive(Default)]
struct Acc {
    count: u64,
    errors: u64,
    sum: f64,
    max: f64,
    hist: Vec<u64>,
    error_samples: u64,
}

/// The minutely series, oldest first.
pub async fn minutely(db: &Database, q: &StatsQuery) -> Result<Vec<MinuteStats>, WriteError> {
    let mut filter = doc! {
        "account": &q.account,
        "app": &q.app,
        "minute": { "$gte": q.since.index() },
    };
    if let Some(a) = &q.action {
        filter.insert("action", a);
    }
    let docs: Vec<Document> = db
        .collection::<Document>(TX_MINUTES)
        .find(filter.clone())
        .await
        .map_err(|e| classify(&e))?
        .try_collect()
        .await
        .map_err(|e| classify(&e))?;
    let mut by_minute: BTreeMap<i64, Acc> = BTreeMap::new();
    for d in &docs {
        let minute = d.get_i64("minute").unwrap_or_default();
        let acc = by_minute.entry(minute).or_default();
        if acc.hist.is_empty() {
            acc.hist = vec![0; HISTOGRAM_BUCKETS];
        }
        acc.count += int(d, "count");
        acc.errors += int(d, "errors");
        acc.sum += float(d, "duration_sum");
        acc.max = acc.max.max(float(d, "duration_max"));
        if let Ok(h) = d.get_document("hist") {
            for (bucket, n) in h {
                if let Ok(b) = bucket.parse::<usize>()
                    && b < HISTOGRAM_BUCKETS
                {
                    acc.hist[b] += n
                        .as_i64()
                        .or_else(|| n.as_i32().map(i64::from))
                        .unwrap_or(0)
                        .max(0) as u64;
                }
            }
        }
    }
    if q.action.is_none() {
        filter.remove("action");
        let errors: Vec<Document> = db
            .collection::<Document>(ERROR_MINUTES)
            .find(filter)
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))?;
        for d in &errors {
            let minute = d.get_i64("minute").unwrap_or_default();
            by_minute.entry(minute).or_default().error_samples += int(d, "count");
        }
    }
    Ok(by_minute
        .into_iter()
        .map(|(minute, a)| MinuteStats {
            minute_ms: Minute::from_index(minute).start_ms(),
            count: a.count,
            errors: a.errors,
            mean_ms: if a.count > 0 {
                a.sum / a.count as f64
            } else {
                0.0
            },
            p50_ms: DurationHistogram::quantile(&a.hist, 0.5, Some(a.max)),
            p95_ms: DurationHistogram::quantile(&a.hist, 0.95, Some(a.max)),
            max_ms: a.max,
            error_samples: a.error_samples,
        })
        .collect())
}
