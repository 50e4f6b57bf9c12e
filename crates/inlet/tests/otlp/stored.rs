//! What the worker stored for one app, as flat facts
//! (`"tx e2e web GET /orders/{id}: count" → "6"`), summed over minutes, so
//! a test compares everything at once and a failure names each
//! difference. Numbers print as Rust prints an `f64` (`12`, `21515.5`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

/// Fact → value.
pub type Facts = BTreeMap<String, String>;

pub fn n(v: f64) -> String {
    format!("{v}")
}

fn value(v: Option<&Bson>) -> f64 {
    match v {
        Some(Bson::Double(v)) => *v,
        Some(Bson::Int32(v)) => f64::from(*v),
        Some(Bson::Int64(v)) => *v as f64,
        _ => f64::NAN,
    }
}

fn num(d: &Document, key: &str) -> f64 {
    value(d.get(key))
}

fn string(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or("<missing>").to_owned()
}

/// Histogram buckets as `bucket:count` pairs in bucket order (the
/// indexes of `inlet_domain::DurationHistogram`), empty buckets left out.
pub fn buckets(h: &BTreeMap<usize, u64>) -> String {
    let pairs: Vec<String> = h
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(b, n)| format!("{b}:{n}"))
        .collect();
    pairs.join(" ")
}

/// `name{k=v,k=v}` (tags sorted by key).
pub fn series(name: &str, tags: &BTreeMap<String, String>) -> String {
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", tags.join(","))
}

fn tags(d: &Document) -> BTreeMap<String, String> {
    match d.get("tags") {
        Some(Bson::Array(pairs)) => pairs
            .iter()
            .filter_map(Bson::as_document)
            .map(|p| (string(p, "k"), string(p, "v")))
            .collect(),
        _ => BTreeMap::new(),
    }
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

fn add(facts: &mut Facts, key: String, v: f64) {
    let sum = facts
        .get(&key)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
        + v;
    facts.insert(key, n(sum));
}

fn extreme(facts: &mut Facts, key: String, v: f64, pick: fn(f64, f64) -> f64) {
    let old = facts.get(&key).and_then(|s| s.parse::<f64>().ok());
    facts.insert(key, n(old.map_or(v, |o| pick(o, v))));
}

/// Everything stored for `app` of `account`.
pub async fn read(db: &Database, account: &str, app: &str) -> Facts {
    let filter = doc! { "account": account, "app": app };
    let mut f = Facts::new();
    for d in find(db, "tx_minutes", filter.clone()).await {
        let k = format!(
            "tx {} {} {}",
            string(&d, "environment"),
            string(&d, "namespace"),
            string(&d, "action")
        );
        add(&mut f, format!("{k}: count"), num(&d, "count"));
        add(&mut f, format!("{k}: errors"), num(&d, "errors"));
        add(
            &mut f,
            format!("{k}: duration_sum"),
            num(&d, "duration_sum"),
        );
        extreme(
            &mut f,
            format!("{k}: duration_max"),
            num(&d, "duration_max"),
            f64::max,
        );
    }
    // Gauges: the last value of the latest minute; distributions: their
    // buckets summed over the minutes.
    let mut gauges: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    let mut hists: BTreeMap<String, BTreeMap<usize, u64>> = BTreeMap::new();
    for d in find(db, "metric_minutes", filter.clone()).await {
        let kind = string(&d, "kind");
        let k = format!(
            "{kind} {} {}",
            string(&d, "environment"),
            series(&string(&d, "name"), &tags(&d))
        );
        match kind.as_str() {
            "counter" => add(&mut f, format!("{k}: total"), num(&d, "sum")),
            "gauge" => {
                let minute = d.get_i64("minute").unwrap_or(i64::MIN);
                let last = num(&d, "last");
                if gauges.get(&k).is_none_or(|(m, _)| minute >= *m) {
                    gauges.insert(k, (minute, last));
                }
            }
            _ => {
                add(&mut f, format!("{k}: count"), num(&d, "count"));
                add(&mut f, format!("{k}: sum"), num(&d, "sum"));
                extreme(&mut f, format!("{k}: min"), num(&d, "min"), f64::min);
                extreme(&mut f, format!("{k}: max"), num(&d, "max"), f64::max);
                let hist = hists.entry(format!("{k}: buckets")).or_default();
                if let Ok(h) = d.get_document("hist") {
                    for (b, count) in h {
                        let b = b.parse().unwrap_or(usize::MAX);
                        *hist.entry(b).or_default() += value(Some(count)) as u64;
                    }
                }
            }
        }
    }
    for (k, (_, last)) in gauges {
        f.insert(format!("{k}: last"), n(last));
    }
    for (k, h) in hists {
        f.insert(k, buckets(&h));
    }
    for d in find(db, "error_groups", filter.clone()).await {
        let k = format!(
            "error {} {}",
            string(&d, "environment"),
            string(&d, "class")
        );
        add(&mut f, format!("{k}: count"), num(&d, "count"));
        if let Ok(latest) = d.get_document("latest") {
            f.insert(format!("{k}: message"), string(latest, "message"));
            // Every exception of the tests was raised in a script
            // (`scripts/otlp/emit.py`): its frames name it.
            let files: Vec<String> = latest
                .get_array("backtrace")
                .map(|b| {
                    b.iter()
                        .filter_map(Bson::as_document)
                        .map(|fr| string(fr, "file"))
                        .collect()
                })
                .unwrap_or_default();
            let from_script = files.iter().any(|file| file.ends_with("emit.py"));
            f.insert(
                format!("{k}: frames from the script"),
                from_script.to_string(),
            );
        }
    }
    for d in find(db, "error_minutes", filter).await {
        let k = format!(
            "error {} {}",
            string(&d, "environment"),
            string(&d, "class")
        );
        add(&mut f, format!("{k}: count by minute"), num(&d, "count"));
    }
    f
}

/// The differences between what was wanted and what is stored.
pub fn differences(want: &Facts, got: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => out.push(format!("missing   {k} (want {w})")),
            Some(g) if g != w => out.push(format!("different {k}: want {w}, stored {g}")),
            Some(_) => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            out.push(format!("unexpected {k} = {g}"));
        }
    }
    out
}

/// Polls until exactly `want` is stored for `app` (the worker applies
/// asynchronously); the differences if it is not so within `timeout`.
/// Then checks that it stays so for a moment: a duplicate applied late
/// would show (a window by nature, not a wait for a condition).
pub async fn expect_exactly(
    db: &Database,
    account: &str,
    app: &str,
    want: &Facts,
) -> Result<(), String> {
    let timeout = Duration::from_secs(60);
    let deadline = Instant::now() + timeout;
    loop {
        let diffs = differences(want, &read(db, account, app).await);
        if diffs.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {timeout:?}, what {account} has stored for app {app:?} differs from what was sent:\n  {}",
                diffs.join("\n  ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let diffs = differences(want, &read(db, account, app).await);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stored data changed after it matched (a duplicate?):\n  {}",
            diffs.join("\n  ")
        ))
    }
}
