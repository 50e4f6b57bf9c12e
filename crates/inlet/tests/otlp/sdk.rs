//! The real OpenTelemetry Python SDK and its OTLP/HTTP (protobuf)
//! exporter, configured only by the standard `OTEL_*` variables, against
//! a live stack: what `scripts/otlp/emit.py` says it sent is exactly what
//! MongoDB and `inlet stats` show. Then the same with the broker cut in
//! the middle of the run: the exporter is told 503 + `Retry-After`,
//! retries by itself, and everything is stored once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use inlet_domain::DurationHistogram;
use inlet_testkit::{LoadBalancer, wait_until};
use serde_json::Value;

use crate::python::{Emitter, python_with_sdk};
use crate::stack::{ACCOUNT, Stack};
use crate::stored::{Facts, buckets, n, series};

const SERVICE: &str = "shop-otel";
const STEP: Duration = Duration::from_secs(120);

fn tags(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// The facts `emit.py`'s expectation stands for (`stored::read`'s keys).
fn expected_facts(e: &Value) -> Facts {
    let env = e["environment"].as_str().unwrap();
    let mut want = Facts::new();
    for t in e["transactions"].as_array().unwrap() {
        let k = format!(
            "tx {env} {} {}",
            t["namespace"].as_str().unwrap(),
            t["action"].as_str().unwrap()
        );
        want.insert(format!("{k}: count"), n(f(&t["count"])));
        want.insert(format!("{k}: errors"), n(f(&t["errors"])));
        want.insert(format!("{k}: duration_sum"), n(f(&t["duration_sum_ms"])));
        want.insert(format!("{k}: duration_max"), n(f(&t["duration_max_ms"])));
    }
    for c in e["counters"].as_array().unwrap() {
        let s = series(c["name"].as_str().unwrap(), &tags(&c["tags"]));
        want.insert(format!("counter {env} {s}: total"), n(f(&c["total"])));
    }
    // Every log record is counted per severity.
    for (severity, count) in e["log_records"].as_object().unwrap() {
        let s = series(
            "log.records",
            &BTreeMap::from([("severity".to_owned(), severity.clone())]),
        );
        want.insert(format!("counter {env} {s}: total"), n(f(count)));
    }
    for g in e["gauges"].as_array().unwrap() {
        let s = series(g["name"].as_str().unwrap(), &tags(&g["tags"]));
        want.insert(format!("gauge {env} {s}: last"), n(f(&g["last"])));
    }
    for d in e["distributions"].as_array().unwrap() {
        let s = series(d["name"].as_str().unwrap(), &tags(&d["tags"]));
        for field in ["count", "sum", "min", "max"] {
            want.insert(format!("distribution {env} {s}: {field}"), n(f(&d[field])));
        }
        want.insert(format!("distribution {env} {s}: buckets"), inlet_buckets(d));
    }
    for (class, count) in e["error_samples"].as_object().unwrap() {
        let k = format!("error {env} {class}");
        want.insert(format!("{k}: count"), n(f(count)));
        want.insert(format!("{k}: count by minute"), n(f(count)));
        want.insert(
            format!("{k}: message"),
            e["error_messages"][class].as_str().unwrap().to_owned(),
        );
        want.insert(format!("{k}: frames from the script"), "true".into());
    }
    want
}

/// Where the observations of an explicit-bucket histogram land in
/// Inlet's layout (`docs/otlp.md`, "Histogram buckets"): each OTLP bucket
/// at its midpoint, the open first and last buckets at the point's min
/// and max. The points are cumulative: their min and max are those of
/// every value.
fn inlet_buckets(d: &Value) -> String {
    let bounds: Vec<f64> = d["bounds"].as_array().unwrap().iter().map(f).collect();
    let (min, max) = (f(&d["min"]), f(&d["max"]));
    let mut h = BTreeMap::new();
    for v in d["values"].as_array().unwrap().iter().map(f) {
        // OTLP bucket i holds (bounds[i-1], bounds[i]].
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        let at = if i == 0 {
            min.min(bounds[0])
        } else if i == bounds.len() {
            max.max(bounds[i - 1])
        } else {
            (bounds[i - 1] + bounds[i]) / 2.0
        };
        *h.entry(DurationHistogram::bucket(at)).or_insert(0) += 1;
    }
    buckets(&h)
}

/// The `OTEL_*` variables of an application pointed at Inlet.
fn otel_env(
    endpoint: &str,
    key: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("authorization=Bearer {key}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_SERVICE_NAME", SERVICE.to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=e2e,host.name=web-1".to_owned(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

/// Cross-checks the transactions through `inlet stats` (per action: its
/// count and errors summed over the minutes).
fn stats_agree(stack: &Stack, e: &Value) {
    for t in e["transactions"].as_array().unwrap() {
        let action = t["action"].as_str().unwrap();
        let out = stack.ok(&[
            "stats",
            "--account",
            ACCOUNT,
            "--app",
            SERVICE,
            "--since",
            "1h",
            "--action",
            action,
            "--json",
        ]);
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
        assert_eq!(
            (sum("count"), sum("errors")),
            (t["count"].as_u64().unwrap(), t["errors"].as_u64().unwrap()),
            "inlet stats --action {action:?}:\n{out}"
        );
    }
}

/// Every answer the exporter got was a 200, or (`outage`) a 503 with
/// `Retry-After`.
fn answers_were_clean(recorder: &LoadBalancer, outage: bool) {
    let r = recorder.responses();
    let unexpected: Vec<_> = r
        .by_status
        .iter()
        .filter(|(s, _)| **s != 200 && !(outage && **s == 503))
        .collect();
    assert!(unexpected.is_empty(), "answers other than 200/503: {r:#?}");
    assert_eq!(r.server_errors_without_retry_after, 0, "{r:#?}");
    assert!(r.status(200) > 0, "{r:#?}");
    if outage {
        assert!(
            r.status(503) >= 4,
            "each of the 4 exporters was told 503: {r:#?}"
        );
    } else {
        assert_eq!(r.status(503), 0, "{r:#?}");
    }
}

fn exports_all_succeeded(e: &Value) {
    for (exporter, result) in e["exports"].as_object().unwrap() {
        assert_eq!(result["failed"], 0, "{exporter}: {result}");
        assert!(result["ok"].as_u64().unwrap() > 0, "{exporter}: {result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_python_sdk_exports_are_stored_exactly() {
    let Some(python) = python_with_sdk("otlp_python_sdk_exports_are_stored_exactly") else {
        return;
    };
    let stack = Stack::new(false, &[]).await;
    let key = stack.provision();
    let http = reqwest::Client::new();
    let (_api, _worker) = stack.start(&http).await;
    let recorder = stack.recorder().await;

    let env = otel_env(&recorder.url(), &key, &[]);
    let mut emitter = Emitter::start(&python, &["--phases", "2"], &env);
    let expected = emitter.until("expected", STEP, |_| {}).await;
    emitter.finish(STEP).await;
    exports_all_succeeded(&expected);
    assert_eq!(expected["service"], SERVICE);
    assert_eq!(expected["agent"]["name"], "opentelemetry-python");

    let want = expected_facts(&expected);
    stack.expect_stored(SERVICE, &want).await;
    stats_agree(&stack, &expected);
    answers_were_clean(&recorder, false);
    assert_eq!(stack.dead_letters().await, Some(0), "dead letters");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_python_sdk_retries_through_a_broker_outage_and_is_stored_once() {
    let Some(python) =
        python_with_sdk("otlp_python_sdk_retries_through_a_broker_outage_and_is_stored_once")
    else {
        return;
    };
    // Short Retry-After (1–2 s), so the exporter's retries fit its deadline.
    let stack = Stack::new(
        true,
        &[
            ("INLET__API__RETRY_AFTER_S", "1"),
            ("INLET__API__RETRY_AFTER_JITTER_S", "1"),
        ],
    )
    .await;
    let key = stack.provision();
    let http = reqwest::Client::new();
    let (api, _worker) = stack.start(&http).await;
    let recorder = stack.recorder().await;
    let broker = stack.broker.as_ref().unwrap();

    // OTEL_EXPORTER_OTLP_TIMEOUT is in seconds in the Python SDK: the
    // deadline of one export, retries included.
    let env = otel_env(
        &recorder.url(),
        &key,
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "60")],
    );
    let mut emitter = Emitter::start(&python, &["--phases", "3", "--gate"], &env);
    emitter.until("flushed", STEP, |_| {}).await;
    emitter.until("waiting", STEP, |_| {}).await;

    // Phase 2 meets a broker outage: the API's connection to RabbitMQ is
    // cut (the worker's is not), so every export is answered 503.
    broker.cut();
    wait_until(STEP, "the API to notice the broker outage", || async {
        stack.api_ready(&http).await != Some(200)
    })
    .await;
    emitter.go().await;
    // Until every exporter (spans, logs, both metric readers) has been
    // told 503 and is retrying by itself.
    let mut retrying: BTreeSet<(String, String)> = BTreeSet::new();
    let everyone = |r: &BTreeSet<(String, String)>| {
        let signals: BTreeSet<&str> = r.iter().map(|(s, _)| s.as_str()).collect();
        let metric_threads = r.iter().filter(|(s, _)| s == "metrics").count();
        signals.contains("spans") && signals.contains("logs") && metric_threads >= 2
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !everyone(&retrying) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "not every exporter retried during the outage: {retrying:?}; stderr:\n{}",
            emitter.stderr()
        );
        let e = emitter.next(left).await;
        assert_eq!(e["event"], "retrying", "during the outage: {e}");
        retrying.insert((
            e["signal"].as_str().unwrap().to_owned(),
            e["thread"].as_str().unwrap().to_owned(),
        ));
    }
    broker.restore();

    // The exporters' own retries succeed once the publisher reconnected;
    // phase 3 runs on a healthy stack.
    emitter.until("waiting", STEP, |_| {}).await;
    emitter.go().await;
    let expected = emitter.until("expected", STEP, |_| {}).await;
    emitter.finish(STEP).await;
    exports_all_succeeded(&expected);

    let want = expected_facts(&expected);
    stack.expect_stored(SERVICE, &want).await;
    stats_agree(&stack, &expected);
    answers_were_clean(&recorder, true);
    assert_eq!(stack.dead_letters().await, Some(0), "dead letters");
    drop(api);
    stack.cleanup().await;
}
