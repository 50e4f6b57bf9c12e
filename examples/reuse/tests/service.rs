//! Against the real services (`INLET_TEST_REDIS_URL`, `INLET_TEST_AMQP_URL`;
//! defaults: local ports): a key written to Redis authenticates, an unknown
//! key is not accepted, and a published message is confirmed and on the
//! queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use inlet_auth::RedisSettings;
use inlet_domain::{
    AccountId, AccountState, AuthMode, KeyDigest, KeyId, KeyRecord, KeyState, UndecidableReason,
    Verdict,
};
use inlet_queue::{Consumer, Names, QueueMetrics, QueueSettings};
use inlet_reuse::{Intake, Outcome};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn unique() -> String {
    format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn record(key_id: KeyId, account: &str) -> KeyRecord {
    KeyRecord {
        key_id,
        account_id: AccountId::parse(account).unwrap(),
        key_state: KeyState::Active,
        account_state: AccountState::Active,
        rate_limit: None,
        app: None,
        revision: 1,
        updated_at_ms: inlet_domain::now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_authenticate_and_accepted_payloads_are_queued() {
    let id = unique();
    let redis = RedisSettings {
        url: env("INLET_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        prefix: format!("inlet-reuse-test:{id}:"),
        ..RedisSettings::default()
    };
    let queue = QueueSettings {
        url: env(
            "INLET_TEST_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        ),
        prefix: format!("inlet-reuse-test.{id}"),
        ..QueueSettings::default()
    };
    let registry = prometheus::Registry::new();
    let intake = Intake::start(&redis, queue.clone(), &registry).unwrap();

    // Legacy (opaque) keys: decided by lookup alone, no signing secret.
    let known = format!("reuse-known-{id}");
    let unknown = format!("reuse-unknown-{id}");
    let key_id = KeyId::random();

    // Before any load committed, Redis holds no complete key set: nothing
    // can decide, and no key is called unknown.
    let before = intake.accept(Some(&unknown), b"{}".to_vec()).await.unwrap();
    assert!(
        matches!(
            before,
            Outcome::RetryLater(Verdict::Undecidable(UndecidableReason::NotPopulated))
        ),
        "{before:?}"
    );

    // Write the key set into Redis the way `inlet sync` does: a new
    // generation, then the populated marker.
    let store = intake.redis();
    let load = store.begin_load().await.unwrap();
    let records = [(KeyDigest::of_secret(&known), record(key_id, "reuse"))];
    assert!(store.write_load(&load, &records).await.unwrap());
    assert!(matches!(
        store.commit_load(&load, 1).await.unwrap(),
        inlet_auth::Commit::Committed(_)
    ));

    // The known key authenticates and its payload is confirmed.
    assert!(
        intake
            .publisher()
            .wait_connected(Duration::from_secs(10))
            .await
    );
    let body = format!("{{\"reuse\":\"{id}\"}}");
    let outcome = intake
        .accept(Some(&known), body.clone().into_bytes())
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Queued(_)), "{outcome:?}");

    // With Redis as the only store, Redis is the source of truth: a key a
    // populated Redis does not hold is unknown (401), never accepted.
    let outcome = intake.accept(Some(&unknown), b"{}".to_vec()).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Refused(Verdict::UnknownKey)),
        "{outcome:?}"
    );
    intake.close().await;

    // The confirmed message is on the queue: exactly one, the one sent.
    let names = Names::from_settings(&queue);
    let amqp = lapin::Connection::connect(&queue.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            names.queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(declared.message_count(), 1);
    let stop = CancellationToken::new();
    let metrics = QueueMetrics::register(&prometheus::Registry::new()).unwrap();
    let mut consumer = Consumer::start(queue.clone(), metrics, stop.clone()).unwrap();
    let incoming = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the consumer is running");
    let envelope = incoming.envelope.as_ref().unwrap().clone();
    assert_eq!(envelope.body.as_ref(), body.as_bytes());
    assert_eq!(envelope.key_id, key_id);
    assert_eq!(envelope.key_digest, KeyDigest::of_secret(&known));
    assert_eq!(envelope.auth_mode, AuthMode::Confirmed);
    incoming.ack().await.unwrap();
    stop.cancel();
    consumer.shutdown().await;

    // Clean up the shared services.
    store.clear().await.unwrap();
    let cleanup = amqp.create_channel().await.unwrap();
    inlet_queue::topology::delete(&cleanup, &names)
        .await
        .unwrap();
    let _ = amqp.close(200, "test done".into()).await;
}
