//! What a batch must leave in MongoDB, computed from the wire form alone
//! (the documented aggregation rules, not the worker's code), and the same
//! shape read back from the stored documents.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::TryStreamExt as _;
use inlet_domain::{MetricKind, WireBatch, WireFrame};
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

/// Environment, namespace, action, minute.
type TxKey = (String, String, String, i64);
/// Environment, kind, name, tags, minute.
type MetricKey = (String, String, String, BTreeMap<String, String>, i64);
/// Environment, class, action, top frame (file, function).
type GroupKey = (
    String,
    String,
    Option<String>,
    Option<(String, Option<String>)>,
);

#[derive(Debug, Clone, PartialEq, Default)]
struct TxCell {
    count: u64,
    errors: u64,
    duration_sum: f64,
    duration_min: f64,
    duration_max: f64,
    status: BTreeMap<String, u64>,
    hist_total: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct MetricCell {
    count: u64,
    /// Counters and distributions.
    sum: Option<f64>,
    /// Distributions.
    min: Option<f64>,
    max: Option<f64>,
    /// Gauges: (timestamp, value) of the latest sample.
    last: Option<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
struct GroupCell {
    count: u64,
    per_minute: BTreeMap<i64, u64>,
    first_seen_ms: i64,
    last_seen_ms: i64,
    latest: (i64, String, Vec<WireFrame>),
}

/// Everything stored for one app.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stored {
    tx: BTreeMap<TxKey, TxCell>,
    metrics: BTreeMap<MetricKey, MetricCell>,
    errors: BTreeMap<GroupKey, GroupCell>,
}

fn minute(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

fn kind(k: MetricKind) -> String {
    match k {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Distribution => "distribution",
    }
    .to_owned()
}

/// The grouping frame: the innermost in-app frame, else the innermost.
fn top_frame(backtrace: &[WireFrame]) -> Option<(String, Option<String>)> {
    backtrace
        .iter()
        .find(|f| f.in_app == Some(true))
        .or(backtrace.first())
        .map(|f| (f.file.clone(), f.function.clone()))
}

/// What `b` must leave behind (every batch has an app of its own).
pub fn expected(b: &WireBatch) -> Stored {
    let env = b.environment.to_ascii_lowercase();
    let mut s = Stored::default();
    for t in &b.transactions {
        let key = (
            env.clone(),
            t.namespace.clone().unwrap_or_else(|| "web".into()),
            t.action.clone(),
            minute(t.start_ms),
        );
        let c = s.tx.entry(key).or_insert_with(|| TxCell {
            duration_min: t.duration_ms,
            duration_max: t.duration_ms,
            ..TxCell::default()
        });
        c.count += 1;
        c.hist_total += 1;
        c.errors += u64::from(t.error.is_some() || t.status.is_some_and(|s| s >= 500));
        c.duration_sum += t.duration_ms;
        c.duration_min = c.duration_min.min(t.duration_ms);
        c.duration_max = c.duration_max.max(t.duration_ms);
        let class = t
            .status
            .map_or_else(|| "none".to_owned(), |s| format!("{}xx", s / 100));
        *c.status.entry(class).or_default() += 1;
    }
    for m in &b.metrics {
        let key = (
            env.clone(),
            kind(m.kind),
            m.name.clone(),
            m.tags.clone(),
            minute(m.timestamp_ms),
        );
        let c = s.metrics.entry(key).or_default();
        c.count += 1;
        match m.kind {
            MetricKind::Counter => *c.sum.get_or_insert(0.0) += m.value,
            MetricKind::Distribution => {
                *c.sum.get_or_insert(0.0) += m.value;
                c.min = Some(c.min.map_or(m.value, |v| v.min(m.value)));
                c.max = Some(c.max.map_or(m.value, |v| v.max(m.value)));
            }
            // The latest timestamp wins; on a tie, the later sample.
            MetricKind::Gauge => {
                if c.last.is_none_or(|(ts, _)| m.timestamp_ms >= ts) {
                    c.last = Some((m.timestamp_ms, m.value));
                }
            }
        }
    }
    for e in &b.errors {
        let key = (
            env.clone(),
            e.class.clone(),
            e.action.clone(),
            top_frame(&e.backtrace),
        );
        let latest = (e.timestamp_ms, e.message.clone(), e.backtrace.clone());
        let c = s.errors.entry(key).or_insert_with(|| GroupCell {
            count: 0,
            per_minute: BTreeMap::new(),
            first_seen_ms: e.timestamp_ms,
            last_seen_ms: e.timestamp_ms,
            latest: latest.clone(),
        });
        c.count += 1;
        *c.per_minute.entry(minute(e.timestamp_ms)).or_default() += 1;
        c.first_seen_ms = c.first_seen_ms.min(e.timestamp_ms);
        c.last_seen_ms = c.last_seen_ms.max(e.timestamp_ms);
        if e.timestamp_ms >= c.latest.0 {
            c.latest = latest;
        }
    }
    s
}

fn num(d: &Document, key: &str) -> Option<f64> {
    match d.get(key)? {
        Bson::Double(v) => Some(*v),
        Bson::Int32(v) => Some(f64::from(*v)),
        Bson::Int64(v) => Some(*v as f64),
        _ => None,
    }
}

fn count(d: &Document, key: &str) -> u64 {
    num(d, key).unwrap_or(-1.0) as u64
}

fn string(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or("<missing>").to_owned()
}

fn counts(d: &Document, key: &str) -> BTreeMap<String, u64> {
    d.get_document(key)
        .map(|h| h.keys().map(|k| (k.clone(), count(h, k))).collect())
        .unwrap_or_default()
}

/// Tags as stored: an array of `{k, v}` pairs, or (the layout before
/// 0003) a document.
fn tags(d: &Document) -> BTreeMap<String, String> {
    match d.get("tags") {
        Some(Bson::Array(pairs)) => pairs
            .iter()
            .filter_map(Bson::as_document)
            .map(|p| (string(p, "k"), string(p, "v")))
            .collect(),
        Some(Bson::Document(t)) => t
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("<not a string>").to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn frames(latest: &Document) -> Vec<WireFrame> {
    latest
        .get_array("backtrace")
        .map(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .map(|f| WireFrame {
                    file: string(f, "file"),
                    line: num(f, "line").map(|l| l as u32),
                    function: f.get_str("function").ok().map(str::to_owned),
                    in_app: f.get_bool("in_app").ok(),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn find(db: &Database, collection: &str, filter: Document) -> Vec<Document> {
    db.collection::<Document>(collection)
        .find(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// What is stored for `app` of `account`.
pub async fn stored(db: &Database, account: &str, app: &str) -> Stored {
    let filter = doc! { "account": account, "app": app };
    let mut s = Stored::default();
    for d in find(db, "tx_minutes", filter.clone()).await {
        let key = (
            string(&d, "environment"),
            string(&d, "namespace"),
            string(&d, "action"),
            d.get_i64("minute").unwrap_or(i64::MIN),
        );
        let cell = TxCell {
            count: count(&d, "count"),
            errors: count(&d, "errors"),
            duration_sum: num(&d, "duration_sum").unwrap_or(f64::NAN),
            duration_min: num(&d, "duration_min").unwrap_or(f64::NAN),
            duration_max: num(&d, "duration_max").unwrap_or(f64::NAN),
            status: counts(&d, "status"),
            hist_total: counts(&d, "hist").values().sum(),
        };
        if let Some(twice) = s.tx.insert(key.clone(), cell) {
            panic!("two documents for transaction bucket {key:?} (one: {twice:?})");
        }
    }
    for d in find(db, "metric_minutes", filter.clone()).await {
        let key = (
            string(&d, "environment"),
            string(&d, "kind"),
            string(&d, "name"),
            tags(&d),
            d.get_i64("minute").unwrap_or(i64::MIN),
        );
        let cell = MetricCell {
            count: count(&d, "count"),
            sum: num(&d, "sum"),
            min: num(&d, "min"),
            max: num(&d, "max"),
            last: num(&d, "last").map(|v| (d.get_i64("last_ts").unwrap_or(i64::MIN), v)),
        };
        if let Some(twice) = s.metrics.insert(key.clone(), cell) {
            panic!("two documents for metric bucket {key:?} (one: {twice:?})");
        }
    }
    let mut by_fingerprint = BTreeMap::new();
    for d in find(db, "error_groups", filter.clone()).await {
        let latest = d.get_document("latest").cloned().unwrap_or_default();
        let backtrace = frames(&latest);
        let key = (
            string(&d, "environment"),
            string(&d, "class"),
            d.get_str("action").ok().map(str::to_owned),
            top_frame(&backtrace),
        );
        let cell = GroupCell {
            count: count(&d, "count"),
            per_minute: BTreeMap::new(),
            first_seen_ms: d
                .get_datetime("first_seen")
                .map_or(0, |t| t.timestamp_millis()),
            last_seen_ms: d
                .get_datetime("last_seen")
                .map_or(0, |t| t.timestamp_millis()),
            latest: (
                latest.get_i64("timestamp_ms").unwrap_or(i64::MIN),
                string(&latest, "message"),
                backtrace,
            ),
        };
        by_fingerprint.insert(string(&d, "fingerprint"), key.clone());
        if let Some(twice) = s.errors.insert(key.clone(), cell) {
            panic!("two error groups for {key:?} (one: {twice:?})");
        }
    }
    for d in find(db, "error_minutes", filter).await {
        let fingerprint = string(&d, "fingerprint");
        let group = by_fingerprint
            .get(&fingerprint)
            .and_then(|k| s.errors.get_mut(k))
            .unwrap_or_else(|| {
                panic!("error minutes of fingerprint {fingerprint} without a group")
            });
        *group
            .per_minute
            .entry(d.get_i64("minute").unwrap_or(i64::MIN))
            .or_default() += count(&d, "count");
    }
    s
}

fn diff_map<K: Debug + Ord, V: Debug + PartialEq>(
    what: &str,
    expected: &BTreeMap<K, V>,
    stored: &BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    for (k, v) in expected {
        match stored.get(k) {
            None => out.push(format!("{what} missing: {k:?} = {v:?}")),
            Some(got) if got != v => out.push(format!(
                "{what} differs: {k:?}\n  expected {v:?}\n  stored   {got:?}"
            )),
            Some(_) => {}
        }
    }
    for (k, v) in stored {
        if !expected.contains_key(k) {
            out.push(format!("{what} unexpected: {k:?} = {v:?}"));
        }
    }
}

impl Stored {
    /// Every difference from `stored`, one line each (empty when equal).
    pub fn differences(&self, stored: &Stored) -> Vec<String> {
        let mut out = Vec::new();
        diff_map("transaction bucket", &self.tx, &stored.tx, &mut out);
        diff_map("metric bucket", &self.metrics, &stored.metrics, &mut out);
        diff_map("error group", &self.errors, &stored.errors, &mut out);
        out
    }

    /// Buckets (documents) this stands for.
    pub fn buckets(&self) -> usize {
        self.tx.len()
            + self.metrics.len()
            + self
                .errors
                .values()
                .map(|g| 1 + g.per_minute.len())
                .sum::<usize>()
    }
}
