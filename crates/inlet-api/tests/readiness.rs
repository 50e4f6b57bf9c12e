//! Readiness that means "can decide", outages, flushes and graceful drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Options, batch_json, spawn_app_with};
use deadpool_redis::redis;
use inlet_testkit::wait_until;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn ready_body(app: &common::TestApp) -> (u16, Value) {
    let r = app.get("/health/ready").await;
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn redis_flushed_with_fallback_keeps_accepting_and_ready() {
    let app = spawn_app_with(Options::default()).await;
    app.wait_ready().await;
    let mut conn = app.redis_t.pool.get().await.unwrap();
    app.redis_t.cleanup().await; // the marker and every key are gone
    let _: i64 = redis::cmd("EXISTS")
        .arg(format!("{}marker", app.redis_t.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let resp = app
        .push_json(Some(app.key.expose_secret()), &batch_json(None))
        .await;
    assert_eq!(resp.status(), 202);
    // A fresh key, never cached here, is decided by MongoDB.
    let issuer = common::signing().issuer().unwrap().unwrap();
    let fresh = app
        .admin
        .create_key(&issuer, &app.account, None)
        .await
        .unwrap()
        .0;
    app.redis_t.cleanup().await;
    let resp = app
        .push_json(Some(fresh.expose_secret()), &batch_json(None))
        .await;
    assert_eq!(resp.status(), 202);
    // The readiness check notices the flush (its detail says so), and
    // readiness stays 200 on every probe until it does and after.
    let probes = std::sync::Mutex::new(Vec::new());
    wait_until(
        Duration::from_secs(10),
        "readiness to see the flush",
        || async {
            let (status, body) = ready_body(&app).await;
            let seen = body["components"]["auth"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not populated"));
            probes.lock().unwrap().push((status, body));
            seen
        },
    )
    .await;
    let (status, body) = ready_body(&app).await;
    assert_eq!(status, 200, "{body}");
    let probes = probes.into_inner().unwrap();
    assert!(
        probes.iter().all(|(s, _)| *s == 200),
        "not ready at some point after the flush: {probes:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn without_fallback_flushed_redis_means_503_or_provisional_and_not_ready() {
    let app = spawn_app_with(Options {
        source_of_truth: false,
        backfill: false,
        ..Options::default()
    })
    .await;
    wait_until(Duration::from_secs(10), "auth checked", || async {
        let (_, body) = ready_body(&app).await;
        body["components"]["auth"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not populated"))
            && body["components"]["queue"]["ready"] == true
    })
    .await;
    let (status, _) = ready_body(&app).await;
    assert_eq!(status, 503, "cannot decide: not ready");
    // Signed key: provisional 202. Legacy key: 503. Never 401.
    let resp = app
        .push_json(Some(app.key.expose_secret()), &batch_json(None))
        .await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let resp = app
        .push_json(
            Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
            &batch_json(None),
        )
        .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "auth_unavailable");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("inlet_api_dependency_ready{dependency=\"auth\"} 0"),
        "{metrics}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn broker_outage_is_503_and_nothing_is_half_acknowledged() {
    let app = spawn_app_with(Options {
        amqp_via_proxy: true,
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    let cancel = CancellationToken::new();
    let mut consumer = app.consumer(&cancel);
    let proxy = app.amqp_proxy.as_ref().unwrap();
    proxy.cut();
    let mut refused = 0;
    for i in 0..10 {
        let body = batch_json(Some(&format!("outage-{i}")));
        let resp = app.push_json(Some(app.key.expose_secret()), &body).await;
        assert_ne!(
            resp.status(),
            202,
            "nothing may be acknowledged while the broker is away"
        );
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["code"].as_str().unwrap().starts_with("queue_"),
            "{body}"
        );
        refused += 1;
    }
    assert_eq!(refused, 10);
    wait_until(
        Duration::from_secs(5),
        "readiness 503 while the broker is away",
        || async { ready_body(&app).await.0 == 503 },
    )
    .await;
    proxy.restore();
    app.wait_ready().await;
    let resp = app
        .push_json(Some(app.key.expose_secret()), &batch_json(Some("after")))
        .await;
    assert_eq!(resp.status(), 202);
    // Exactly one message reached the queue: the one acknowledged.
    let env = app.next_envelope(&mut consumer).await;
    assert_eq!(env.batch_id.unwrap().as_str(), "after");
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(extra.is_err(), "no half-acknowledged message in the queue");
    cancel.cancel();
    app.cleanup().await;
}

#[tokio::test]
async fn shutdown_flips_readiness_first_and_drains() {
    let mut app = spawn_app_with(Options {
        api: inlet_api::ApiSettings {
            shutdown_delay_ms: 1_500,
            ..Options::default().api
        },
        ..Options::default()
    })
    .await;
    app.wait_ready().await;
    let _ = app.shutdown.take().unwrap().send(());
    wait_until(
        Duration::from_secs(2),
        "readiness 503 after SIGTERM",
        || async { ready_body(&app).await.0 == 503 },
    )
    .await;
    let (_, body) = ready_body(&app).await;
    assert_eq!(body["shutting_down"], true);
    // Still serving pushes during the delay.
    let resp = app
        .push_json(Some(app.key.expose_secret()), &batch_json(None))
        .await;
    assert_eq!(resp.status(), 202);
    // Then the listener closes.
    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        app.client
            .get(format!("{}/health/live", app.base))
            .send()
            .await
            .is_err()
    );
    app.cleanup().await;
}

/// `GET {base}/health/ready`: status and body.
async fn ready_at(app: &common::TestApp, base: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn with_an_admin_listener_the_public_readiness_body_names_no_internals() {
    let app = spawn_app_with(Options::admin_listener_and_amqp_proxy()).await;
    app.wait_ready().await;
    let admin = app.admin_base.clone().unwrap();
    let public = |ready: bool, auth: bool, queue: bool| {
        serde_json::json!({
            "ready": ready,
            "shutting_down": false,
            "components": {"auth": {"ready": auth}, "queue": {"ready": queue}},
        })
    };
    assert_eq!(ready_body(&app).await, (200, public(true, true, true)));
    let (status, body) = ready_at(&app, &admin).await;
    assert_eq!(status, 200);
    assert!(
        body["components"]["auth"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("populated")),
        "the admin listener keeps the details: {body}"
    );

    // Not ready, with an internal error behind it: the public body still
    // says only which component is not ready.
    app.amqp_proxy.as_ref().unwrap().cut();
    wait_until(Duration::from_secs(10), "readiness 503", || async {
        ready_body(&app).await.0 == 503
    })
    .await;
    assert_eq!(ready_body(&app).await, (503, public(false, true, false)));
    let (status, body) = ready_at(&app, &admin).await;
    assert_eq!(status, 503);
    assert!(
        body["components"]["queue"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );

    // `/metrics` is only on the admin listener.
    assert_eq!(app.get("/metrics").await.status(), 404);
    let metrics = app
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    app.amqp_proxy.as_ref().unwrap().restore();
    app.cleanup().await;
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let app = spawn_app_with(Options::default()).await;
    app.wait_ready().await;
    let _ = app
        .push_json(Some(app.key.expose_secret()), &batch_json(None))
        .await;
    let _ = app.push_json(None, &batch_json(None)).await;
    let text = app.metrics().await;
    for name in [
        "inlet_api_requests_total",
        "inlet_api_request_duration_seconds",
        "inlet_auth_decisions_total",
        "inlet_queue_publish_total",
        "inlet_api_dependency_ready",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(text.contains("code=\"accepted\""), "{text}");
    assert!(text.contains("code=\"missing_key\""));
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if std::env::var_os("INLET_REQUIRE_PROMTOOL").is_some() => {
            panic!("promtool is required (INLET_REQUIRE_PROMTOOL) but cannot run: {e}")
        }
        Err(e) => eprintln!("promtool not available ({e}); skipping the promtool check"),
    }
    app.cleanup().await;
}
