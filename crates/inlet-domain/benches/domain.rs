//! Micro-benchmarks of the domain's hot paths: key parse + digest, batch
//! decode + validate (per KiB), envelope encode/decode.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inlet_domain::{
    AccountId, ApiKey, AuthMode, Batch, BatchLimits, ContentEncoding, Envelope, KeyDigest, KeyId,
    KeyIssuer, KeyVerifier, SigningSecret, now_ms,
};

fn batch_json(transactions: usize) -> Vec<u8> {
    let now = now_ms();
    let tx: Vec<serde_json::Value> = (0..transactions)
        .map(|i| {
            serde_json::json!({"action": format!("OrdersController#action{}", i % 7), "namespace": "web",
                "start_ms": now - 1000, "duration_ms": 12.5 + i as f64, "status": 200})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "batch_id": "b-1", "agent": {"name": "bench", "version": "1.0", "hostname": "h"},
        "app": "shop", "environment": "production", "transactions": tx,
        "metrics": [{"kind": "counter", "name": "jobs", "value": 1, "tags": {"q": "a"}, "timestamp_ms": now}]
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let secret = SigningSecret::new(1, &[1; 32]).unwrap();
    let key = KeyIssuer::new(secret.clone()).issue();
    let verifier = KeyVerifier::new(vec![secret]).unwrap();
    let raw = key.expose_secret().to_owned();
    c.bench_function("key/parse+verify+digest", |b| {
        b.iter(|| {
            let k = ApiKey::parse(std::hint::black_box(&raw), &verifier).unwrap();
            k.digest()
        })
    });
    c.bench_function("key/reject_garbage", |b| {
        b.iter(|| ApiKey::parse(std::hint::black_box("inlet_garbage"), &verifier).is_err())
    });

    let mut group = c.benchmark_group("batch/decode+validate");
    for tx in [5usize, 50, 500] {
        let body = batch_json(tx);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{} KiB", body.len() / 1024)),
            &body,
            |b, body| b.iter(|| Batch::decode(body, &BatchLimits::default(), now_ms()).unwrap()),
        );
    }
    group.finish();

    let body = ContentEncoding::Gzip.encode(&batch_json(50)).into();
    let env = Envelope {
        message_id: Envelope::new_message_id(),
        account_id: Some(AccountId::parse("acme").unwrap()),
        key_id: KeyId::from_u64(1),
        key_digest: KeyDigest::of_secret("k"),
        auth_mode: AuthMode::Confirmed,
        received_at_ms: now_ms(),
        content_encoding: ContentEncoding::Gzip,
        batch_id: None,
        body,
    };
    c.bench_function("envelope/encode", |b| {
        b.iter(|| std::hint::black_box(&env).encode())
    });
    let bytes = env.encode();
    c.bench_function("envelope/decode", |b| {
        b.iter(|| Envelope::decode(std::hint::black_box(&bytes)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
