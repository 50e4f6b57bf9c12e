//! `docs/metrics.md` lists exactly the metrics the code defines: adding a
//! metric without documenting it (or leaving a removed one documented)
//! fails here. The live check is in `pipeline.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

/// Every `inlet_*` metric name in the first column of a table in
/// docs/metrics.md.
pub fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, name)| name.to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|n| n.starts_with("inlet_"))
        .collect()
}

fn defined() -> BTreeSet<String> {
    let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = Vec::new();
    collectors.extend(
        inlet_auth::AuthMetrics::unregistered()
            .unwrap()
            .collectors(),
    );
    collectors.extend(
        inlet_auth::SyncMetrics::unregistered()
            .unwrap()
            .collectors(),
    );
    collectors.extend(inlet_api::ApiMetrics::unregistered().unwrap().collectors());
    collectors.extend(
        inlet_queue::QueueMetrics::unregistered()
            .unwrap()
            .collectors(),
    );
    collectors.extend(
        inlet_worker::WorkerMetrics::unregistered()
            .unwrap()
            .collectors(),
    );
    let mut names: BTreeSet<String> = collectors
        .iter()
        .flat_map(|c| {
            c.desc()
                .into_iter()
                .map(|d| d.fq_name.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    // Registered by every process registry (`inlet_obs::process_registry`).
    let registry = inlet_obs::process_registry("test");
    for family in registry.gather() {
        if family.name().starts_with("inlet_") {
            names.insert(family.name().to_owned());
        }
    }
    names
}

#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    let documented = documented();
    let defined = defined();
    let undocumented: Vec<_> = defined.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&defined).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/metrics.md is out of date.\n  defined but not documented: {undocumented:?}\n  documented but not defined: {stale:?}"
    );
    assert!(defined.len() > 40, "sanity: {} metrics", defined.len());
}
