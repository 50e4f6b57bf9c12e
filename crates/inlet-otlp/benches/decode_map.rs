//! Decoding + mapping an OTLP traces export (protobuf and JSON), per
//! request of 8 and 64 spans: the cost `/v1/traces` adds over `/v1/push`.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inlet_domain::{BatchLimits, now_ms};
use inlet_otlp::{Format, Signal};
use prost::Message as _;

fn bench(c: &mut Criterion) {
    let limits = BatchLimits::default();
    let now = now_ms();
    let mut g = c.benchmark_group("otlp/traces");
    for spans in [8, 64] {
        let req = inlet_otlp::example::traces("shop", spans, now);
        for (format, body) in [
            (Format::Protobuf, req.encode_to_vec()),
            (Format::Json, serde_json::to_vec(&req).unwrap()),
        ] {
            g.throughput(Throughput::Elements(spans as u64));
            let id = BenchmarkId::new(format!("{format:?}/decode+map"), spans);
            g.bench_with_input(id, &body, |b, body| {
                b.iter(|| {
                    inlet_otlp::map(
                        Signal::Traces,
                        format,
                        std::hint::black_box(body),
                        &limits,
                        now,
                    )
                    .unwrap()
                })
            });
        }
        // What the API does after mapping: the batch as JSON for the queue.
        let export = inlet_otlp::map(
            Signal::Traces,
            Format::Protobuf,
            &req.encode_to_vec(),
            &limits,
            now,
        )
        .unwrap();
        g.bench_with_input(
            BenchmarkId::new("serialize_batches", spans),
            &export,
            |b, e| {
                b.iter(|| {
                    e.batches
                        .iter()
                        .map(|b| serde_json::to_vec(b).unwrap().len())
                        .sum::<usize>()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
