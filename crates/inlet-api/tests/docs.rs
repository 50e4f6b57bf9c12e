//! The examples of `docs/http-api.md` against what a real API sends (see
//! `inlet_testkit::docs` for how an example is compared): the request is
//! accepted, the 202 and problem bodies and both readiness bodies have
//! the examples' shapes. An example that drifts from the code fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Options, TestApp, spawn_app_with};
use inlet_api::{ApiError, ApiSettings};
use inlet_domain::{UndecidableReason, Verdict, now_ms};
use inlet_testkit::docs::{doc, fenced_blocks, shape_differences};
use inlet_testkit::wait_until;
use serde_json::Value;

fn parse(example: &str) -> Value {
    serde_json::from_str(example)
        .unwrap_or_else(|e| panic!("an example of docs/http-api.md is not JSON ({e}):\n{example}"))
}

fn assert_shape(what: &str, example: &Value, real: &Value) {
    let diff = shape_differences(example, real);
    assert!(
        diff.is_empty(),
        "docs/http-api.md's {what} differs from what the API sends:\n{}\nexample: {example}\nsent: {real}",
        diff.join("\n")
    );
}

/// The JSON fenced blocks, by what they show.
fn json_example(md: &str, has_key: &str) -> Value {
    fenced_blocks(md, "json")
        .iter()
        .map(|b| parse(b))
        .find(|v| v.get(has_key).is_some())
        .unwrap_or_else(|| panic!("no JSON example with {has_key:?} in docs/http-api.md"))
}

/// The inline example of the push listener's readiness body (in
/// backquotes, after "body has no `detail`").
fn inline_readiness_example(md: &str) -> Value {
    let start = md
        .find("`{\"ready\": ")
        .expect("the inline readiness example");
    let rest = &md[start + 1..];
    parse(&rest[..rest.find('`').unwrap()])
}

async fn readiness(app: &TestApp, base: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_example_is_accepted_and_answers_have_the_documented_shapes() {
    let md = doc("http-api.md");
    let app = spawn_app_with(Options::default()).await;
    app.wait_ready().await;

    // The request: the body of the ```http block, as written except that
    // `…` elisions are dropped and its timestamps are moved to now (the
    // API refuses samples older than limits.max_age_s).
    let http = &fenced_blocks(&md, "http")[0];
    let body = &http[http.find("\n\n").expect("headers, a blank line, the body") + 2..];
    let body = body
        .replace('…', "")
        .replace("1790000000000", &now_ms().to_string());
    let request: Value = parse(&body);
    let resp = app
        .push()
        .bearer_auth(app.key.expose_secret())
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "the documented request is accepted");
    let accepted: Value = resp.json().await.unwrap();
    // The table's `{"id", "request_id"}`.
    assert!(md.contains("(`{\"id\", \"request_id\"}`)"));
    assert_shape(
        "202 body",
        &serde_json::json!({"id": "…", "request_id": "…"}),
        &accepted,
    );

    // "Every non-2xx body": the example's problem, rendered by the API.
    let example = json_example(&md, "code");
    assert_eq!(example["code"], "auth_unavailable");
    let settings = ApiSettings::default();
    let (status, problem) =
        ApiError::Auth(Verdict::Undecidable(UndecidableReason::StoresUnavailable))
            .problem(&settings, "01a20c42b7f1");
    assert_eq!(status, 503);
    let sent = serde_json::to_value(&problem).unwrap();
    assert_shape("problem document", &example, &sent);
    let retry = sent["retry_after_s"].as_u64().unwrap();
    let base = u64::from(settings.retry_after_s);
    assert!((base..=base + u64::from(settings.retry_after_jitter_s)).contains(&retry));
    // And the same document over HTTP, for a real rejection.
    let resp = app.push().json(&request).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let missing: Value = resp.json().await.unwrap();
    let mut expected = example.clone();
    let object = expected.as_object_mut().unwrap();
    object.remove("retry_after_s");
    object.insert("probe_after_s".into(), 300.into());
    object.insert("code".into(), "missing_key".into());
    object.insert("message".into(), missing["message"].clone());
    assert_shape("401 problem document", &expected, &missing);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_readiness_examples_have_the_bodies_the_api_serves() {
    let md = doc("http-api.md");
    let app = spawn_app_with(Options::admin_listener_and_amqp_proxy()).await;
    app.wait_ready().await;
    let admin = app.admin_base.clone().unwrap();

    // The detailed body (admin listener), ready.
    let example = json_example(&md, "ready");
    let (status, body) = readiness(&app, &admin).await;
    assert_eq!(status, 200);
    assert_shape("detailed readiness body", &example, &body);

    // The push listener's body: the example is not ready on the queue.
    app.amqp_proxy.as_ref().unwrap().cut();
    wait_until(Duration::from_secs(10), "readiness 503", || async {
        readiness(&app, &app.base).await.0 == 503
    })
    .await;
    let (_, body) = readiness(&app, &app.base).await;
    assert_shape(
        "push listener's readiness body",
        &inline_readiness_example(&md),
        &body,
    );
    app.amqp_proxy.as_ref().unwrap().restore();
    app.cleanup().await;
}
