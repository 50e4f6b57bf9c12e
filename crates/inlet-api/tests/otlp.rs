//! The OTLP/HTTP routes' contract, against real services: 200 with the
//! `Export*ServiceResponse` in the request's format only once the batches
//! are queued; `partial_success` for left-out items; failures as
//! `google.rpc.Status` with Inlet's code in an `ErrorInfo`, the same
//! statuses and `Retry-After` as `/v1/push`; a retried export carries the
//! same batch ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;

use common::{Options, spawn_app, spawn_app_with};
use inlet_domain::{ContentEncoding, WireBatch, now_ms};
use inlet_otlp::answer::{ErrorInfo, Status};
use inlet_otlp::proto::collector::logs::v1::ExportLogsServiceResponse;
use inlet_otlp::proto::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

fn url(app: &common::TestApp, path: &str) -> String {
    format!("{}{path}", app.base)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Status, Inlet code, and the Status body of a failed OTLP request.
async fn status(resp: reqwest::Response, json: bool) -> (u16, Option<String>, Status, ErrorInfo) {
    let code = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let inlet = resp.headers()["x-inlet-error"].to_str().unwrap().to_owned();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    let (s, info) = if json {
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let d = &v["details"][0];
        let info = ErrorInfo {
            reason: d["reason"].as_str().unwrap().into(),
            domain: d["domain"].as_str().unwrap().into(),
            metadata: serde_json::from_value(d["metadata"].clone()).unwrap(),
        };
        let s = Status {
            code: v["code"].as_i64().unwrap() as i32,
            message: v["message"].as_str().unwrap().into(),
            details: vec![],
        };
        (s, info)
    } else {
        assert_eq!(ct, "application/x-protobuf");
        let s = Status::decode(&body[..]).unwrap();
        let info = ErrorInfo::decode(&s.details[0].value[..]).unwrap();
        (s, info)
    };
    assert_eq!(info.reason, inlet, "the header and the detail agree");
    assert!(!s.message.is_empty());
    (code, retry_after, s, info)
}

#[tokio::test]
async fn an_export_is_queued_as_push_batches_and_answered_in_its_format() {
    let app = spawn_app().await;
    app.wait_ready().await;
    let cancel = CancellationToken::new();
    let mut consumer = app.consumer(&cancel);
    let key = app.key.expose_secret();

    let req = inlet_otlp::example::traces("shop", 8, now_ms());
    let bytes = req.encode_to_vec();
    let resp = app
        .client
        .post(url(&app, "/v1/traces"))
        .bearer_auth(key)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(gzip(&bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(&resp.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(answer.partial_success, None);

    let env = app.next_envelope(&mut consumer).await;
    assert_eq!(env.content_encoding, ContentEncoding::Identity);
    assert_eq!(env.account_id.as_ref(), Some(&app.account));
    let batch: WireBatch = serde_json::from_slice(&env.body).unwrap();
    assert_eq!((batch.app.as_str(), batch.transactions.len()), ("shop", 8));
    assert_eq!(batch.agent.name, "opentelemetry-python");
    let id = env.batch_id.clone().unwrap();
    assert!(id.as_str().starts_with("otlp-t"), "{}", id.as_str());
    inlet_domain::Batch::from_wire(
        batch,
        &inlet_domain::BatchLimits::default(),
        env.received_at_ms,
    )
    .expect("what the API queues, the worker accepts");

    // The exporter's retry of the same export (X-Inlet-Key this time, as
    // OTEL_EXPORTER_OTLP_HEADERS may set it) carries the same batch id.
    let resp = app
        .client
        .post(url(&app, "/v1/traces"))
        .header("X-Inlet-Key", key)
        .header("Content-Type", "application/x-protobuf")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let again = app.next_envelope(&mut consumer).await;
    assert_eq!(again.batch_id, Some(id));
    assert_ne!(again.message_id, env.message_id);

    // JSON in, JSON out; items that break a rule are left out and counted.
    let now_ns = now_ms() as u64 * 1_000_000;
    let json = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": now_ns.to_string(), "severityNumber": 9, "body": {"stringValue": "hi"}},
            {"timeUnixNano": "1000", "severityNumber": 9},
            {"timeUnixNano": now_ns, "severityText": "ERROR", "attributes": [
                {"key": "exception.type", "value": {"stringValue": "KeyError"}}]}
        ]}]
    }]});
    let resp = app
        .client
        .post(url(&app, "/v1/logs"))
        .bearer_auth(key)
        .json(&json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let answer: ExportLogsServiceResponse = resp.json().await.unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("older than"),
        "{}",
        partial.error_message
    );
    let env = app.next_envelope(&mut consumer).await;
    let batch: WireBatch = serde_json::from_slice(&env.body).unwrap();
    assert_eq!((batch.metrics.len(), batch.errors.len()), (2, 1));

    // An export with nothing to store (a child span) is answered at once.
    let mut child = inlet_otlp::example::traces("shop", 1, now_ms());
    let span = &mut child.resource_spans[0].scope_spans[0].spans[0];
    span.kind = 1;
    span.parent_span_id = vec![7; 8];
    let resp = app
        .client
        .post(url(&app, "/v1/traces"))
        .bearer_auth(key)
        .header("Content-Type", "application/x-protobuf")
        .body(child.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"inlet_api_otlp_items_total{outcome="accepted",signal="spans"} 17"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"inlet_api_otlp_items_total{outcome="rejected",signal="log_records"} 1"#)
    );
    cancel.cancel();
    app.cleanup().await;
}

#[tokio::test]
async fn failures_are_google_rpc_status_with_the_push_contract() {
    let app = spawn_app_with(Options {
        api: inlet_api::ApiSettings {
            max_body_bytes: 64 * 1024,
            ..Options::default().api
        },
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    let key = app.key.expose_secret();
    let traces = inlet_otlp::example::traces("shop", 2, now_ms()).encode_to_vec();
    let post = |path: &str| app.client.post(url(&app, path));

    // 401: only the source of truth's verdict (a key it does not hold).
    let stranger = common::signing().issuer().unwrap().unwrap().issue();
    for (json, ct) in [
        (false, "application/x-protobuf"),
        (true, "application/json"),
    ] {
        let body = if json {
            serde_json::to_vec(&inlet_otlp::example::traces("shop", 2, now_ms())).unwrap()
        } else {
            traces.clone()
        };
        let resp = post("/v1/traces")
            .bearer_auth(stranger.expose_secret())
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        let (code, retry_after, s, info) = status(resp, json).await;
        assert_eq!(
            (code, s.code, info.reason.as_str()),
            (401, 16, "unknown_key")
        );
        assert_eq!(info.domain, "inlet");
        assert_eq!(info.metadata["retryable"], "true");
        assert_eq!(info.metadata["probe_after_s"], "300");
        assert!(retry_after.is_none());
    }
    let resp = post("/v1/metrics")
        .body(traces.clone())
        .send()
        .await
        .unwrap();
    let (code, _, _, info) = status(resp, false).await;
    assert_eq!((code, info.reason.as_str()), (401, "missing_key"));

    // 403: a key for another app.
    let issuer = common::signing().issuer().unwrap().unwrap();
    let blog_only = app
        .admin
        .create_key(
            &issuer,
            &app.account,
            Some(inlet_domain::AppName::parse("blog").unwrap()),
        )
        .await
        .unwrap()
        .0;
    let resp = post("/v1/traces")
        .bearer_auth(blog_only.expose_secret())
        .header("Content-Type", "application/x-protobuf")
        .body(traces.clone())
        .send()
        .await
        .unwrap();
    let (code, _, s, info) = status(resp, false).await;
    assert_eq!(
        (code, s.code, info.reason.as_str()),
        (403, 7, "app_forbidden")
    );

    // 400: undecodable, in either format.
    for (ct, body, json) in [
        ("application/x-protobuf", &b"\x0a\xff\xff\xff"[..], false),
        ("application/json", &b"{\"resourceSpans\": 7}"[..], true),
    ] {
        let resp = post("/v1/traces")
            .bearer_auth(key)
            .header("Content-Type", ct)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let (code, _, s, info) = status(resp, json).await;
        assert_eq!(
            (code, s.code, info.reason.as_str()),
            (400, 3, "invalid_otlp")
        );
        assert_eq!(info.metadata["retryable"], "false");
    }

    // 415 (unknown type: answered in JSON), 413, 405.
    let resp = post("/v1/logs")
        .bearer_auth(key)
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    let (code, _, _, info) = status(resp, true).await;
    assert_eq!(
        (code, info.reason.as_str()),
        (415, "unsupported_media_type")
    );
    let resp = post("/v1/traces")
        .bearer_auth(key)
        .header("Content-Type", "application/x-protobuf")
        .body(vec![0u8; 100 * 1024])
        .send()
        .await
        .unwrap();
    let (code, _, _, info) = status(resp, false).await;
    assert_eq!((code, info.reason.as_str()), (413, "payload_too_large"));
    let resp = app
        .client
        .get(url(&app, "/v1/traces"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    let (code, _, _, info) = status(resp, false).await;
    assert_eq!((code, info.reason.as_str()), (405, "method_not_allowed"));
    app.cleanup().await;
}

#[tokio::test]
async fn undecidable_auth_is_503_with_retry_after_never_401() {
    let app = spawn_app_with(Options {
        redis_via_proxy: true,
        mongo_via_proxy: true,
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    app.redis_proxy.as_ref().unwrap().cut();
    app.mongo_proxy.as_ref().unwrap().cut();
    let legacy = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
    let resp = app
        .client
        .post(url(&app, "/v1/traces"))
        .bearer_auth(legacy)
        .header("Content-Type", "application/x-protobuf")
        .body(inlet_otlp::example::traces("shop", 1, now_ms()).encode_to_vec())
        .send()
        .await
        .unwrap();
    let (code, retry_after, s, info) = status(resp, false).await;
    assert_eq!(
        (code, s.code, info.reason.as_str()),
        (503, 14, "auth_unavailable")
    );
    let after = retry_after.expect("Retry-After on 503");
    assert_eq!(info.metadata["retry_after_s"], after);
    app.cleanup().await;
}

#[tokio::test]
async fn rate_limited_exports_are_429_with_retry_after() {
    let app = spawn_app().await;
    app.wait_ready().await;
    // The account's own limit: 1/s, burst 1.
    let tight = inlet_domain::AccountId::parse("tight").unwrap();
    let limit = inlet_domain::RateLimit {
        per_second: 1,
        burst: 1,
    };
    app.admin.create_account(&tight, Some(limit)).await.unwrap();
    let issuer = common::signing().issuer().unwrap().unwrap();
    let key = app.admin.create_key(&issuer, &tight, None).await.unwrap().0;
    let body = inlet_otlp::example::traces("shop", 1, now_ms()).encode_to_vec();
    let mut limited = None;
    for _ in 0..5 {
        let resp = app
            .client
            .post(url(&app, "/v1/traces"))
            .bearer_auth(key.expose_secret())
            .header("Content-Type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            limited = Some(status(resp, false).await);
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    let (code, retry_after, s, info) = limited.expect("a 429 within 5 exports");
    assert_eq!(
        (code, s.code, info.reason.as_str()),
        (429, 8, "rate_limited")
    );
    assert_eq!(
        info.metadata["retry_after_s"],
        retry_after.expect("Retry-After on 429")
    );
    app.cleanup().await;
}
