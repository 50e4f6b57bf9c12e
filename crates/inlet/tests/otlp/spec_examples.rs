//! OTLP/JSON as the specification writes it: the examples of
//! opentelemetry-proto (`tests/fixtures/otlp/`), their timestamps moved
//! into the accepted window, posted as `application/json`. Each is
//! answered 200 with an `Export*ServiceResponse`, a re-sent export is
//! stored once, an unsupported point is a partial success, and what is
//! stored is exactly what the examples hold.

use std::collections::BTreeMap;

use inlet_domain::DurationHistogram;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::stack::Stack;
use crate::stored::{Facts, buckets, n, series};

/// The newest timestamp in the examples (trace.json's span end).
const NEWEST_EXAMPLE_NS: i128 = 1_544_712_661_000_000_000;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/otlp/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Adds `offset` to every `…UnixNano` field (a decimal string, as OTLP/JSON
/// writes 64-bit integers, or a number), keeping the string form.
fn shift_timestamps(v: &mut Value, offset: i128) {
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                if k.ends_with("UnixNano") {
                    let old: i128 = match field {
                        Value::String(s) => s.parse().unwrap(),
                        Value::Number(x) => x.as_i64().unwrap().into(),
                        _ => panic!("{k}: {field}"),
                    };
                    *field = Value::String((old + offset).to_string());
                } else {
                    shift_timestamps(field, offset);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shift_timestamps(i, offset)),
        _ => {}
    }
}

/// Moves the examples' 2018 timestamps to end 5 s ago.
fn offset_to_now() -> i128 {
    let now_ns = i128::from(inlet_domain::now_ms()) * 1_000_000;
    now_ns - 5_000_000_000 - NEWEST_EXAMPLE_NS
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    text: String,
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req = http
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An int64 of OTLP/JSON: a decimal string or a number.
fn int64(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// A 200 with an `Export*ServiceResponse` in JSON; its `partialSuccess`
/// (rejected count, message), zero and empty when absent.
fn export_response(a: &Answer, what: &str, rejected_field: &str) -> (i64, String) {
    assert_eq!(a.status, 200, "{what}: {}", a.text);
    assert!(
        header(a, "content-type").starts_with("application/json"),
        "{what}: the answer is in the request's content type: {:?}",
        a.headers
    );
    let body = a
        .body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {}", a.text));
    assert!(
        body.keys().all(|k| k == "partialSuccess"),
        "{what}: only partialSuccess in an Export*ServiceResponse: {}",
        a.text
    );
    let partial = &a.body["partialSuccess"];
    if let Some(p) = partial.as_object() {
        assert!(
            p.keys().all(|k| k == rejected_field || k == "errorMessage"),
            "{what}: {}",
            a.text
        );
    }
    (
        int64(&partial[rejected_field]),
        partial["errorMessage"].as_str().unwrap_or("").to_owned(),
    )
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the three examples (and the partial one) must leave in MongoDB:
/// app `my.service` (its `service.name`), environment `default` (none
/// given).
fn expected() -> Facts {
    let mut f = Facts::new();
    let mut text = Vec::new();
    let mut put = |k: String, v: f64| {
        f.insert(k, n(v));
    };
    // trace.json: one SERVER span of 1 s, no http.route: its name is the
    // action.
    let tx = "tx default web I'm a server span";
    put(format!("{tx}: count"), 1.0);
    put(format!("{tx}: errors"), 0.0);
    put(format!("{tx}: duration_sum"), 1000.0);
    put(format!("{tx}: duration_max"), 1000.0);
    // metrics.json: a delta counter, a gauge, a histogram and an
    // exponential histogram (aggregationTemporality 1 is DELTA).
    let s = series("my.counter", &tags(&[("my.counter.attr", "some value")]));
    put(format!("counter default {s}: total"), 5.0);
    let s = series("my.gauge", &tags(&[("my.gauge.attr", "some value")]));
    put(format!("gauge default {s}: last"), 10.0);
    let s = series(
        "my.histogram",
        &tags(&[("my.histogram.attr", "some value")]),
    );
    for (field, v) in [("count", 2.0), ("sum", 2.0), ("min", 0.0), ("max", 2.0)] {
        put(format!("distribution default {s}: {field}"), v);
    }
    // Bounds [1]: (−∞, 1] at its min (0: underflow), (1, +∞) at its max.
    let h = BTreeMap::from([(0, 1), (DurationHistogram::bucket(2.0), 1)]);
    text.push((format!("distribution default {s}: buckets"), buckets(&h)));
    let s = series(
        "my.exponential.histogram",
        &tags(&[("my.exponential.histogram.attr", "some value")]),
    );
    for (field, v) in [("count", 3.0), ("sum", 10.0), ("min", 0.0), ("max", 5.0)] {
        put(format!("distribution default {s}: {field}"), v);
    }
    // Scale 0 (base 2): the zero bucket underflows; positive bucket 2,
    // (4, 8], at its geometric midpoint 2^2.5.
    let h = BTreeMap::from([(0, 1), (DurationHistogram::bucket(2f64.powf(2.5)), 2)]);
    text.push((format!("distribution default {s}: buckets"), buckets(&h)));
    // The partial export's supported point.
    let s = series("my.second.gauge", &BTreeMap::new());
    put(format!("gauge default {s}: last"), 7.0);
    // logs.json: one record, severityText "Information".
    let s = series("log.records", &tags(&[("severity", "information")]));
    put(format!("counter default {s}: total"), 1.0);
    f.extend(text);
    f
}

/// metrics.json's resource and scope with a Summary (not supported: a
/// rejected data point) and a gauge (stored).
fn partial_metrics(example: &Value) -> Value {
    let mut v = example.clone();
    let time = v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]["gauge"]["dataPoints"][0]
        ["timeUnixNano"]
        .clone();
    v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"] = json!([
        {"name": "my.summary", "unit": "ms", "summary": {"dataPoints": [{
            "startTimeUnixNano": time, "timeUnixNano": time, "count": "4", "sum": 10.5,
            "quantileValues": [{"quantile": 0.5, "value": 2.0}, {"quantile": 1.0, "value": 6.0}]}]}},
        {"name": "my.second.gauge", "gauge": {"dataPoints": [{"asInt": "7", "timeUnixNano": time}]}}
    ]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_spec_examples_are_answered_and_stored_once() {
    let stack = Stack::new(false, &[]).await;
    let key = stack.provision();
    let http = reqwest::Client::new();
    let (_api, _worker) = stack.start(&http).await;
    let offset = offset_to_now();

    for (path, file, rejected) in [
        ("/v1/traces", "trace.json", "rejectedSpans"),
        ("/v1/metrics", "metrics.json", "rejectedDataPoints"),
        ("/v1/logs", "logs.json", "rejectedLogRecords"),
    ] {
        let mut body = fixture(file);
        shift_timestamps(&mut body, offset);
        let bytes = serde_json::to_vec(&body).unwrap();
        // Twice, as an exporter whose answer was lost would: both 200,
        // stored once (checked below).
        for attempt in ["first", "re-sent"] {
            let url = format!("{}{path}", stack.base());
            let a = post(&http, &url, Some(&key), "application/json", bytes.clone()).await;
            let what = format!("{file} ({attempt})");
            let (n, message) = export_response(&a, &what, rejected);
            assert_eq!((n, message.as_str()), (0, ""), "{what}: {}", a.text);
        }
    }

    // A summary is not supported: a partial success naming it; the other
    // point of the export is stored.
    let mut body = partial_metrics(&fixture("metrics.json"));
    shift_timestamps(&mut body, offset);
    let url = format!("{}/v1/metrics", stack.base());
    let a = post(
        &http,
        &url,
        Some(&key),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let (n, message) = export_response(&a, "summary + gauge", "rejectedDataPoints");
    assert_eq!(n, 1, "{}", a.text);
    assert!(message.to_lowercase().contains("summary"), "{}", a.text);

    stack.expect_stored("my.service", &expected()).await;
    assert_eq!(stack.dead_letters().await, Some(0), "dead letters");
    stack.cleanup().await;
}

/// One refused request: what is wrong, and the answer it must get.
struct Case {
    what: &'static str,
    key: bool,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

impl Case {
    fn new(what: &'static str, body: Vec<u8>, status: u16, code: &'static str) -> Case {
        Case {
            what,
            key: true,
            content_type: "application/json",
            body,
            status,
            code,
        }
    }
}

/// The error answers a JSON exporter can get: a `google.rpc.Status` in
/// JSON, Inlet's code in `X-Inlet-Error` and in the Status' ErrorInfo,
/// with the directive in the ErrorInfo's metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_errors_carry_a_status_and_inlets_code() {
    let stack = Stack::new(false, &[]).await;
    let key = stack.provision();
    let http = reqwest::Client::new();
    let (_api, _worker) = stack.start(&http).await;
    let url = format!("{}/v1/traces", stack.base());
    let mut trace = fixture("trace.json");
    shift_timestamps(&mut trace, offset_to_now());
    let trace = serde_json::to_vec(&trace).unwrap();

    let cases = [
        Case::new(
            "undecodable JSON",
            b"{\"resourceSpans\": [".to_vec(),
            400,
            "invalid_otlp",
        ),
        Case::new(
            "the wrong JSON shape",
            br#"{"resourceSpans": {"spans": 1}}"#.to_vec(),
            400,
            "invalid_otlp",
        ),
        Case {
            key: false,
            ..Case::new("no key", trace.clone(), 401, "missing_key")
        },
        Case {
            content_type: "text/plain",
            ..Case::new(
                "an unsupported media type",
                trace,
                415,
                "unsupported_media_type",
            )
        },
    ];
    for Case {
        what,
        key: with_key,
        content_type,
        body,
        status,
        code,
    } in cases
    {
        let a = post(
            &http,
            &url,
            with_key.then_some(key.as_str()),
            content_type,
            body,
        )
        .await;
        assert_eq!(a.status, status, "{what}: {}", a.text);
        assert_eq!(header(&a, "x-inlet-error"), code, "{what}: {:?}", a.headers);
        let info = &a.body["details"][0];
        assert_eq!(info["reason"], code, "{what}: {}", a.text);
        assert_eq!(
            info["metadata"]["retryable"],
            if status == 401 { "true" } else { "false" },
            "{what}: the directive: {}",
            a.text
        );
        assert!(
            header(&a, "content-type").starts_with("application/json"),
            "{what}: {:?}",
            a.headers
        );
        assert!(
            a.body["code"].is_i64() && a.body["message"].is_string(),
            "{what}: a google.rpc.Status: {}",
            a.text
        );
    }
    stack.cleanup().await;
}
