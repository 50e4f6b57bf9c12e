//! Every row of the status contract, against real services: status,
//! `code`, directive fields, and `Retry-After` where it applies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{Options, batch_json, spawn_app, spawn_app_with};
use inlet_domain::{AuthMode, ContentEncoding};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn problem(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    (status, retry_after, body)
}

/// Status, `code`, and the agent directive every row of the contract
/// promises: drop classes are not retryable and carry no wait; 401/403
/// keep the data (retryable) and say when to probe; 429/503 carry
/// `Retry-After`, equal to `retry_after_s`.
fn assert_rejection(p: &(u16, Option<String>, Value), status: u16, code: &str) {
    let (got, retry_after, body) = p;
    assert_eq!(*got, status, "{body:?}");
    assert_eq!(body["code"], code, "{body:?}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["request_id"].as_str().is_some());
    match status {
        429 | 503 => {
            assert_eq!(body["retryable"], true, "{body:?}");
            let after: u64 = retry_after
                .as_deref()
                .expect("Retry-After on 429/503")
                .parse()
                .unwrap();
            assert!(after >= 1);
            assert_eq!(body["retry_after_s"], after, "{body:?}");
        }
        401 | 403 => {
            assert_eq!(body["retryable"], true, "{body:?}");
            assert!(body["probe_after_s"].as_u64().is_some(), "{body:?}");
            assert!(retry_after.is_none(), "no Retry-After on {status}");
        }
        _ => {
            assert_eq!(body["retryable"], false, "{body:?}");
            assert!(body.get("retry_after_s").is_none_or(Value::is_null));
            assert!(retry_after.is_none(), "no Retry-After on {status}");
        }
    }
}

#[tokio::test]
async fn accepted_push_is_in_the_queue_with_its_envelope() {
    let app = spawn_app().await;
    app.wait_ready().await;
    let cancel = CancellationToken::new();
    let mut consumer = app.consumer(&cancel);

    let body = batch_json(Some("batch-1"));
    let resp = app
        .push()
        .bearer_auth(app.key.expose_secret())
        .header("X-Request-Id", "test-request-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], "test-request-1");
    let accepted: Value = resp.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();

    let env = app.next_envelope(&mut consumer).await;
    assert_eq!(env.message_id.to_string(), id);
    assert_eq!(env.account_id.as_ref(), Some(&app.account));
    assert_eq!(Some(env.key_id), app.key.key_id());
    assert_eq!(env.key_digest, app.key.digest());
    assert_eq!(env.auth_mode, AuthMode::Confirmed);
    assert_eq!(env.content_encoding, ContentEncoding::Identity);
    assert_eq!(env.batch_id.as_ref().unwrap().as_str(), "batch-1");
    let sent: Value = serde_json::from_slice(&env.body).unwrap();
    assert_eq!(sent, body);

    // The key may also come as X-Inlet-Key or ?api_key= (older agents);
    // compressed bodies are forwarded as sent.
    for enc in [
        ContentEncoding::Gzip,
        ContentEncoding::Deflate,
        ContentEncoding::Zstd,
    ] {
        let raw = serde_json::to_vec(&batch_json(None)).unwrap();
        let resp = app
            .push()
            .header("X-Inlet-Key", app.key.expose_secret())
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Content-Encoding", enc.as_str())
            .body(enc.encode(&raw))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{enc:?}");
        let env = app.next_envelope(&mut consumer).await;
        assert_eq!(env.content_encoding, enc);
        assert_eq!(enc.decode(&env.body, 1 << 20).unwrap().as_ref(), &raw[..]);
    }
    let resp = app
        .client
        .post(format!(
            "{}/v1/push?api_key={}",
            app.base,
            app.key.expose_secret()
        ))
        .json(&batch_json(None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    app.next_envelope(&mut consumer).await;
    cancel.cancel();
    app.cleanup().await;
}

#[tokio::test]
async fn bad_bodies_are_400_with_field_paths() {
    let app = spawn_app().await;
    app.wait_ready().await;
    let key = app.key.expose_secret();

    let resp = app
        .push()
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let p = problem(resp).await;
    assert_rejection(&p, 400, "invalid_json");
    assert_eq!(p.2["retryable"], false);
    assert!(p.1.is_none());

    let mut body = batch_json(None);
    body["transactions"][1]["duration_ms"] = serde_json::json!(-3);
    body["app"] = serde_json::json!("");
    let p = problem(app.push_json(Some(key), &body).await).await;
    assert_rejection(&p, 400, "invalid_batch");
    let paths: Vec<&str> = p.2["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"app") && paths.contains(&"transactions[1].duration_ms"),
        "{paths:?}"
    );

    let mut body = batch_json(None);
    body["metrics"][0]["value"] = serde_json::json!("three");
    let p = problem(app.push_json(Some(key), &body).await).await;
    assert_rejection(&p, 400, "invalid_json");
    assert_eq!(p.2["errors"][0]["path"], "metrics[0].value");

    let resp = app
        .push()
        .bearer_auth(key)
        .header("Content-Encoding", "gzip")
        .body("not gzip")
        .send()
        .await
        .unwrap();
    assert_rejection(&problem(resp).await, 400, "corrupt_body");
    app.cleanup().await;
}

#[tokio::test]
async fn rejected_keys_are_401_or_403_with_probe_after() {
    let app = spawn_app().await;
    app.wait_ready().await;
    let body = batch_json(None);

    let missing = problem(app.push_json(None, &body).await).await;
    assert_rejection(&missing, 401, "missing_key");
    let malformed = problem(app.push_json(Some("inlet_bogus"), &body).await).await;
    assert_rejection(&malformed, 401, "malformed_key");
    let stranger = common::signing().issuer().unwrap().unwrap().issue();
    let unknown = problem(app.push_json(Some(stranger.expose_secret()), &body).await).await;
    assert_rejection(&unknown, 401, "unknown_key");
    for p in [&missing, &malformed, &unknown] {
        assert_eq!(
            p.2["retryable"], true,
            "keep the data: only the key is in question"
        );
        assert_eq!(p.2["probe_after_s"], 300);
        assert!(p.1.is_none(), "no Retry-After on 401");
    }

    let issuer = common::signing().issuer().unwrap().unwrap();
    let revoked = app
        .admin
        .create_key(&issuer, &app.account, None)
        .await
        .unwrap()
        .0;
    app.admin
        .revoke_key(revoked.key_id().unwrap())
        .await
        .unwrap();
    let p = problem(app.push_json(Some(revoked.expose_secret()), &body).await).await;
    assert_rejection(&p, 401, "revoked_key");

    let lazy = inlet_domain::AccountId::parse("lazy").unwrap();
    app.admin.create_account(&lazy, None).await.unwrap();
    let suspended = app.admin.create_key(&issuer, &lazy, None).await.unwrap().0;
    app.admin
        .set_account_state(&lazy, inlet_domain::AccountState::Suspended)
        .await
        .unwrap();
    let p = problem(app.push_json(Some(suspended.expose_secret()), &body).await).await;
    assert_rejection(&p, 403, "account_suspended");
    assert_eq!(p.2["probe_after_s"], 300);

    let shop_only = app
        .admin
        .create_key(
            &issuer,
            &app.account,
            Some(inlet_domain::AppName::parse("blog").unwrap()),
        )
        .await
        .unwrap()
        .0;
    let p = problem(app.push_json(Some(shop_only.expose_secret()), &body).await).await;
    assert_rejection(&p, 403, "app_forbidden");
    app.cleanup().await;
}

#[tokio::test]
async fn size_type_encoding_and_rate_limits() {
    let app = spawn_app_with(Options {
        api: inlet_api::ApiSettings {
            max_body_bytes: 64 * 1024,
            max_decoded_bytes: 1 << 20,
            ..Options::default().api
        },
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    let key = app.key.expose_secret();

    // 413: declared too large, and streamed too large without a length.
    let big = vec![b' '; 100 * 1024];
    let resp = app
        .push()
        .bearer_auth(key)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_rejection(&problem(resp).await, 413, "payload_too_large");
    let stream =
        futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 16 * 1024])));
    let resp = app
        .push()
        .bearer_auth(key)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_rejection(&problem(resp).await, 413, "payload_too_large");

    // A 10 MiB gzip bomb: small on the wire, stopped at the decoded limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'0'; 10 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let resp = app
        .push()
        .bearer_auth(key)
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let p = problem(resp).await;
    assert_rejection(&p, 413, "payload_too_large");
    assert!(
        p.2["message"]
            .as_str()
            .unwrap()
            .contains("decompressed body exceeds 1048576"),
        "{:?}",
        p.2
    );

    // 415: content type and encoding.
    let resp = app
        .push()
        .bearer_auth(key)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_rejection(&problem(resp).await, 415, "unsupported_media_type");
    let resp = app
        .push()
        .bearer_auth(key)
        .header("Content-Encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_rejection(&problem(resp).await, 415, "unsupported_encoding");

    // 429: the account's own limit (1/s, burst 2).
    let tight = inlet_domain::AccountId::parse("tight").unwrap();
    app.admin
        .create_account(
            &tight,
            Some(inlet_domain::RateLimit {
                per_second: 1,
                burst: 2,
            }),
        )
        .await
        .unwrap();
    let issuer = common::signing().issuer().unwrap().unwrap();
    let limited = app.admin.create_key(&issuer, &tight, None).await.unwrap().0;
    let body = batch_json(None);
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let resp = app.push_json(Some(limited.expose_secret()), &body).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            last = Some(problem(resp).await);
        }
    }
    assert_eq!(&statuses[..2], &[202, 202], "{statuses:?}");
    let p = last.expect("a 429");
    assert_rejection(&p, 429, "rate_limited");
    assert_eq!(p.2["retryable"], true);
    let after: u32 = p.1.unwrap().parse().unwrap();
    assert!(after >= 1);
    assert_eq!(p.2["retry_after_s"], after);

    // Unknown routes and methods answer JSON too.
    let p = problem(app.get("/nope").await).await;
    assert_rejection(&p, 404, "not_found");
    let p = problem(app.get("/v1/push").await).await;
    assert_rejection(&p, 405, "method_not_allowed");
    app.cleanup().await;
}

#[tokio::test]
async fn auth_undecidable_is_503_never_401() {
    let app = spawn_app_with(Options {
        redis_via_proxy: true,
        mongo_via_proxy: true,
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    app.redis_proxy.as_ref().unwrap().cut();
    app.mongo_proxy.as_ref().unwrap().cut();

    // A legacy key cannot be vouched for: 503 with a jittered Retry-After.
    let legacy = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
    let mut afters = std::collections::HashSet::new();
    for _ in 0..20 {
        let p = problem(app.push_json(Some(legacy), &batch_json(None)).await).await;
        assert_rejection(&p, 503, "auth_unavailable");
        assert_eq!(p.2["retryable"], true);
        let after: u32 = p.1.clone().unwrap().parse().unwrap();
        assert_eq!(p.2["retry_after_s"], after);
        afters.insert(after);
    }
    assert!(afters.len() > 1, "Retry-After is jittered: {afters:?}");

    // A signed key is accepted provisionally.
    let issuer = common::signing().issuer().unwrap().unwrap();
    let unseen = issuer.issue();
    let resp = app
        .push_json(Some(unseen.expose_secret()), &batch_json(None))
        .await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    inlet_testkit::wait_until(Duration::from_secs(5), "readiness 503", || async {
        app.get("/health/ready").await.status() == 503
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn publisher_backpressure_is_503_with_retry_after() {
    // One confirm in flight at a time: concurrent pushes beyond it are
    // answered at once instead of queueing.
    let app = spawn_app_with(Options {
        max_in_flight: Some(1),
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    let key = app.key.expose_secret().to_owned();
    let body = batch_json(None);
    let sends = (0..200).map(|_| async { app.push_json(Some(&key), &body).await });
    let answers = futures::future::join_all(sends).await;
    let mut accepted = 0;
    let mut backpressure = 0;
    for resp in answers {
        if resp.status() == 202 {
            accepted += 1;
            continue;
        }
        let p = problem(resp).await;
        assert_rejection(&p, 503, "queue_backpressure");
        assert_eq!(p.2["retryable"], true);
        let after: u32 = p.1.clone().expect("Retry-After").parse().unwrap();
        assert_eq!(p.2["retry_after_s"], after);
        backpressure += 1;
    }
    assert!(accepted > 0, "some pushes get through");
    assert!(
        backpressure > 0,
        "200 concurrent pushes, 1 in flight: none refused"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn once_shutdown_begins_answers_close_the_kept_alive_connection() {
    common::assert_draining_closes_kept_alive_connections(Options::default()).await;
}

#[tokio::test]
async fn a_key_whose_record_cannot_be_read_is_503_key_record_unreadable_never_401_or_202() {
    // Redis cold: every key is decided by MongoDB.
    let app = spawn_app_with(Options {
        backfill: false,
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    // Another writer leaves the key's document unreadable (an app name no
    // Inlet rule accepts; MongoDB's validator lets it through).
    app.mongo_t
        .db()
        .collection::<mongodb::bson::Document>("api_keys")
        .update_one(
            mongodb::bson::doc! { "_id": app.key.key_id().unwrap().to_string() },
            mongodb::bson::doc! { "$set": { "app": " not an app name " } },
        )
        .await
        .unwrap();
    let p = problem(
        app.push_json(Some(app.key.expose_secret()), &batch_json(None))
            .await,
    )
    .await;
    assert_rejection(&p, 503, "key_record_unreadable");
    // A signed key is not accepted provisionally on an unreadable record:
    // the worker could only dead-letter what the API would accept.
    app.cleanup().await;
}

#[tokio::test]
async fn every_legacy_token_the_source_of_truth_holds_can_be_presented() {
    let app = spawn_app().await;
    app.wait_ready().await;
    // Tokens an older system issued: short, base64 with `+/=`, with an
    // inner space, non-ASCII, JWT-sized. Imported by digest, as
    // `inlet keys import` does with `account,sha256:<digest>`.
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.{}",
        "eyJzdWIiOiJ".repeat(60),
        "c2lnbmF0dXJl".repeat(20)
    );
    let tokens = [
        "short1234",
        "Zm9vYmFyYmF6cXV4+/==",
        "two words",
        "ключ",
        jwt.as_str(),
    ];
    let lines: Vec<inlet_auth::key_admin::LegacyKey> = tokens
        .iter()
        .map(|t| {
            let digest = inlet_domain::KeyDigest::of_secret(t);
            inlet_auth::key_admin::LegacyKey::parse_line(&format!("acme,sha256:{digest}")).unwrap()
        })
        .collect();
    let report = app.admin.import_legacy(&lines).await.unwrap();
    assert_eq!(report.created, tokens.len());
    for token in tokens {
        for header in ["authorization", "x-inlet-key"] {
            let value = if header == "authorization" {
                format!("Bearer {token}")
            } else {
                token.to_owned()
            };
            let resp = app
                .push()
                .header(header, value.as_bytes())
                .json(&batch_json(None))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert_eq!(
                status,
                202,
                "{token:?} in {header}: {:?}",
                resp.text().await
            );
        }
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_full_memory_budget_is_503_server_busy_with_retry_after() {
    // Room for exactly one body of the largest size.
    let app = spawn_app_with(Options {
        api: inlet_api::ApiSettings {
            max_body_bytes: 64 * 1024,
            max_decoded_bytes: 1 << 20,
            max_in_flight_bytes: 64 * 1024,
            in_flight_wait_ms: 50,
            ..Options::default().api
        },
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    let key = app.key.expose_secret().to_owned();
    let in_use = || async {
        let text = app.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("inlet_api_in_flight_bytes{budget=\"body\"} "))
            .map(|v| v.trim().to_owned())
    };

    // A push streaming its body without a length holds room for the
    // largest body until it is answered.
    let json = serde_json::to_vec(&batch_json(None)).unwrap();
    let (half, rest) = json.split_at(json.len() / 2);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    tx.unbounded_send(Ok(half.to_vec())).unwrap();
    let slow = tokio::spawn(
        app.push()
            .bearer_auth(&key)
            .body(reqwest::Body::wrap_stream(rx))
            .send(),
    );
    inlet_testkit::wait_until(
        Duration::from_secs(10),
        "the slow push to hold the budget",
        || async { in_use().await.as_deref() == Some("65536") },
    )
    .await;

    // Any other push finds no room within the wait.
    let p = problem(app.push_json(Some(&key), &batch_json(None)).await).await;
    assert_rejection(&p, 503, "server_busy");

    // Once the slow push is answered, its room is back.
    tx.unbounded_send(Ok(rest.to_vec())).unwrap();
    drop(tx);
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    assert_eq!(in_use().await.as_deref(), Some("0"));
    let resp = app.push_json(Some(&key), &batch_json(None)).await;
    assert_eq!(resp.status(), 202);
    app.cleanup().await;
}
