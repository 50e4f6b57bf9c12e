//! Batches the API's rules accept, with the awkward cases: names and tags
//! with a `$` prefix, `.`, `=`, `,`, quotes, tabs and newlines, unicode,
//! every string at its maximum length, metrics with the most tags, the
//! tag maps `{"a=b": "c"}` and `{"a": "b=c"}` in one batch, timestamps at
//! the edges of the accepted window, one batch at the maximum item counts
//! and one just under `[api] max_decoded_bytes`. Generated from a fixed
//! seed, so every run pushes the same batches (timestamps relative to the
//! time of the run); [`model`] says what each one must leave in MongoDB.

pub mod model;

use std::collections::BTreeMap;

use inlet_domain::{
    BatchLimits, MetricKind, WireAgent, WireBatch, WireErrorSample, WireFrame, WireMetric,
    WireTransaction, WireTransactionError,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Characters that mean something to JSON, MongoDB (field paths, operators),
/// series joins or terminals, and multi-byte ones.
const AWKWARD: &[char] = &[
    '$', '.', '=', ',', ':', '{', '}', '[', ']', '"', '\'', '\\', '/', ' ', '\t', '\n', '#', '%',
    '&', '?', 'é', 'ß', 'Ω', '日', '本', '🦀', '\u{200b}', '\u{feff}', '\u{202e}',
];

fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select(AWKWARD),
        3 => proptest::char::range('a', 'e'),
        1 => any::<char>().prop_filter("no control characters", |c| !c.is_control()),
    ]
}

/// A name of 1..=`max` characters: short, or exactly `max`; sometimes
/// `$`-prefixed.
fn name(max: usize) -> impl Strategy<Value = String> {
    let short = max.min(8);
    (
        prop_oneof![4 => vec(awkward_char(), 1..=short), 1 => vec(awkward_char(), max..=max)],
        any::<bool>(),
    )
        .prop_map(|(mut chars, dollar)| {
            if dollar {
                chars[0] = '$';
            }
            chars.into_iter().collect()
        })
}

/// Like [`name`], but may be empty (tag values, messages).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(String::new()), 6 => name(max)]
}

/// A timestamp in the accepted window around `now`, its edges included
/// (with a minute to spare for the time the test takes to push).
fn timestamp(limits: &BatchLimits, now: i64) -> impl Strategy<Value = i64> {
    let oldest = now - limits.max_age_s as i64 * 1_000 + 10 * 60_000;
    let newest = now + limits.max_future_s as i64 * 1_000 - 60_000;
    prop_oneof![
        8 => (now - 20 * 60_000)..=now,
        1 => oldest..=(oldest + 60_000),
        1 => (newest - 60_000)..=newest,
    ]
}

/// Dyadic values (multiples of 1/4), so that sums are exact in any order.
fn quarter(range: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = f64> {
    range.prop_map(|k| k as f64 / 4.0)
}

fn transaction(limits: &BatchLimits, now: i64) -> impl Strategy<Value = WireTransaction> {
    let n = limits.max_name_len;
    let max_ms = limits.max_duration_ms;
    (
        name(n),
        proptest::option::of(name(n)),
        timestamp(limits, now),
        prop_oneof![8 => quarter(0..=400_000), 1 => Just(0.0), 1 => Just(max_ms)],
        proptest::option::of(100u16..=599),
        proptest::option::weighted(
            0.3,
            (name(n), proptest::option::of(text(limits.max_message_len))),
        ),
    )
        .prop_map(
            |(action, namespace, start_ms, duration_ms, status, error)| WireTransaction {
                action,
                namespace,
                start_ms,
                duration_ms,
                status,
                error: error.map(|(class, message)| WireTransactionError { class, message }),
            },
        )
}

fn tags(limits: &BatchLimits) -> impl Strategy<Value = BTreeMap<String, String>> {
    let (k, v, most) = (
        limits.max_tag_key_len,
        limits.max_tag_value_len,
        limits.max_tags,
    );
    prop_oneof![
        6 => btree_map(name(k), text(v), 0..=4),
        1 => btree_map(name(k), text(v), most..=most),
    ]
}

fn metric(limits: &BatchLimits, now: i64) -> impl Strategy<Value = WireMetric> {
    (
        prop_oneof![
            Just(MetricKind::Counter),
            Just(MetricKind::Gauge),
            Just(MetricKind::Distribution)
        ],
        name(limits.max_name_len),
        quarter(-4_000_000..=4_000_000),
        tags(limits),
        timestamp(limits, now),
    )
        .prop_map(|(kind, name, value, tags, timestamp_ms)| WireMetric {
            kind,
            name,
            value: if kind == MetricKind::Counter {
                value.abs()
            } else {
                value
            },
            tags,
            timestamp_ms,
            start_ms: None,
            histogram: None,
        })
}

/// Two samples of one metric whose tag maps join to the same `k=v` text:
/// `{"{a}={b}": c}` and `{a: "{b}={c}"}`. They are two series.
fn ambiguous_pair(limits: &BatchLimits, now: i64) -> impl Strategy<Value = Vec<WireMetric>> {
    let part = limits.max_tag_key_len / 2 - 1;
    (metric(limits, now), name(part), name(part), name(part)).prop_map(|(m, a, b, c)| {
        let one = WireMetric {
            tags: [(format!("{a}={b}"), c.clone())].into(),
            ..m.clone()
        };
        let two = WireMetric {
            tags: [(a, format!("{b}={c}"))].into(),
            ..m
        };
        vec![one, two]
    })
}

fn frame(limits: &BatchLimits) -> impl Strategy<Value = WireFrame> {
    let n = limits.max_name_len;
    (
        name(n),
        proptest::option::of(prop_oneof![Just(u32::MAX), Just(0u32), 1u32..5_000]),
        proptest::option::of(name(n)),
        any::<bool>(),
    )
        .prop_map(|(file, line, function, in_app)| WireFrame {
            file,
            line,
            function,
            // Sent explicitly: the model then knows the top frame without
            // guessing from the path.
            in_app: Some(in_app),
        })
}

fn error_sample(limits: &BatchLimits, now: i64) -> impl Strategy<Value = WireErrorSample> {
    let n = limits.max_name_len;
    let most = limits.max_backtrace_frames;
    (
        name(n),
        text(limits.max_message_len),
        prop_oneof![6 => vec(frame(limits), 0..=3), 1 => vec(frame(limits), most..=most)],
        proptest::option::of(name(n)),
        timestamp(limits, now),
    )
        .prop_map(
            |(class, message, backtrace, action, timestamp_ms)| WireErrorSample {
                class,
                message,
                backtrace,
                action,
                timestamp_ms,
            },
        )
}

/// `[A-Za-z0-9._-]`, starting alphanumeric, up to 32 (upper case is folded).
fn environment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("production".to_owned()),
        "[A-Za-z0-9][A-Za-z0-9._-]{0,7}",
        "[A-Za-z0-9][A-Za-z0-9._-]{31}",
    ]
}

/// An app name unique to batch `index` (a fixed-width prefix), awkward
/// after it, at most 64 characters, no control characters (not even tabs
/// and newlines), no leading or trailing whitespace.
fn app(index: usize) -> impl Strategy<Value = String> {
    vec(awkward_char(), 0..=60).prop_map(move |tail| {
        let tail: String = tail.into_iter().filter(|c| !c.is_control()).collect();
        let s = format!("{index:03}:{tail}");
        s.trim_end().to_owned()
    })
}

fn batch(limits: &BatchLimits, now: i64, index: usize) -> impl Strategy<Value = WireBatch> {
    (
        app(index),
        environment(),
        (
            name(limits.max_name_len),
            name(limits.max_name_len),
            proptest::option::of(name(limits.max_name_len)),
        ),
        vec(transaction(limits, now), 0..=10),
        vec(metric(limits, now), 0..=10),
        proptest::option::weighted(0.5, ambiguous_pair(limits, now)),
        vec(error_sample(limits, now), 0..=4),
    )
        .prop_map(
            move |(
                app,
                environment,
                (agent, version, hostname),
                transactions,
                mut metrics,
                pair,
                errors,
            )| {
                metrics.extend(pair.into_iter().flatten());
                WireBatch {
                    batch_id: Some(format!("awkward-{index}")),
                    agent: WireAgent {
                        name: agent,
                        version,
                        hostname,
                    },
                    app,
                    environment,
                    transactions,
                    metrics,
                    errors,
                }
            },
        )
        .prop_filter("a batch needs at least one sample", |b| {
            !(b.transactions.is_empty() && b.metrics.is_empty() && b.errors.is_empty())
        })
}

/// One batch at every maximum item count, over a few awkward names (few
/// buckets, many samples).
fn at_max_counts(limits: &BatchLimits, now: i64, index: usize) -> WireBatch {
    let start = now - 2 * 60_000;
    let actions = ["$where", "a.b.c", "=", "日本🦀"];
    let kinds = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Distribution,
    ];
    WireBatch {
        batch_id: Some(format!("awkward-{index}")),
        agent: WireAgent {
            name: "$agent".into(),
            version: "1.0=.".into(),
            hostname: None,
        },
        app: format!("{index:03}:max counts $.="),
        environment: "production".into(),
        transactions: (0..limits.max_transactions)
            .map(|i| WireTransaction {
                action: actions[i % actions.len()].to_owned(),
                namespace: (i % 3 == 0).then(|| "$ns".to_owned()),
                start_ms: start + (i as i64 % 90) * 1_000,
                duration_ms: (i % 1_000) as f64 / 4.0,
                status: Some([200, 302, 404, 500][i % 4]),
                error: None,
            })
            .collect(),
        metrics: (0..limits.max_metrics)
            .map(|i| WireMetric {
                kind: kinds[i % kinds.len()],
                name: "$m.x".into(),
                value: (i % 97) as f64 / 4.0,
                tags: [(
                    ["$k", "k.k", "a=b"][i / 3 % 3].to_owned(),
                    ["v", "$v", "b=c"][i / 3 % 3].to_owned(),
                )]
                .into(),
                timestamp_ms: start + i as i64 * 10,
                start_ms: None,
                histogram: None,
            })
            .collect(),
        errors: (0..limits.max_errors)
            .map(|i| WireErrorSample {
                class: ["$Err", "Err.Two"][i % 2].to_owned(),
                message: format!("message {i} $ . ="),
                backtrace: vec![WireFrame {
                    file: "app/$x.rb".into(),
                    line: Some(i as u32),
                    function: Some("f.$g".into()),
                    in_app: Some(true),
                }],
                action: Some("$where".into()),
                timestamp_ms: start + i as i64 * 100,
            })
            .collect(),
    }
}

/// One batch whose JSON is just under `max_decoded_bytes`: the most error
/// samples, each with the longest message (in three-byte characters), and
/// frames up to the size.
fn near_max_decoded(
    limits: &BatchLimits,
    max_decoded_bytes: usize,
    now: i64,
    index: usize,
) -> WireBatch {
    let frame = WireFrame {
        file: "app/日本.rb".repeat(limits.max_name_len / 10),
        line: Some(u32::MAX),
        function: Some("$f".into()),
        in_app: Some(false),
    };
    let mut batch = WireBatch {
        batch_id: Some(format!("awkward-{index}")),
        agent: WireAgent {
            name: "a".into(),
            version: "1".into(),
            hostname: None,
        },
        app: format!("{index:03}:near max decoded bytes"),
        environment: "production".into(),
        transactions: Vec::new(),
        metrics: Vec::new(),
        errors: (0..limits.max_errors)
            .map(|i| WireErrorSample {
                class: "$Big".into(),
                message: "日".repeat(limits.max_message_len),
                backtrace: Vec::new(),
                action: None,
                timestamp_ms: now - 60_000 + i as i64,
            })
            .collect(),
    };
    let size = |b: &WireBatch| serde_json::to_vec(b).map_or(usize::MAX, |j| j.len());
    let frame_size = serde_json::to_vec(&frame).map_or(usize::MAX, |j| j.len()) + 1;
    // Room for the frames, less each error's `"backtrace":[]` and a margin.
    let room = max_decoded_bytes.saturating_sub(size(&batch) + limits.max_errors * 16 + 8_192);
    let frames = (room / frame_size).min(limits.max_errors * limits.max_backtrace_frames);
    for i in 0..frames {
        let e = &mut batch.errors[i % limits.max_errors];
        e.backtrace.push(frame.clone());
    }
    batch
}

/// `generated` batches from a fixed seed, then the batch at the maximum
/// item counts and the one just under `max_decoded_bytes`. Batch `i` has
/// the app name prefix `{i:03}:` and the batch id `awkward-{i}`.
pub fn batches(
    limits: &BatchLimits,
    max_decoded_bytes: usize,
    now: i64,
    generated: usize,
) -> Vec<WireBatch> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut out: Vec<WireBatch> = (0..generated)
        .map(|i| {
            batch(limits, now, i)
                .new_tree(&mut runner)
                .expect("a batch strategy always finds a value")
                .current()
        })
        .collect();
    out.push(at_max_counts(limits, now, generated));
    out.push(near_max_decoded(
        limits,
        max_decoded_bytes,
        now,
        generated + 1,
    ));
    out
}
