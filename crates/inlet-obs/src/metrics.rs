//! The process-wide Prometheus registry.
//!
//! A process creates one [`prometheus::Registry`] with [`process_registry`]
//! and passes it to each crate's `…Metrics::register(&Registry)` (e.g.
//! `inlet_queue::QueueMetrics`, `inlet_auth::AuthMetrics`), then serves
//! [`render`] at `/metrics`. The libraries take a plain `Registry`, so a
//! service that keeps its own registry can register Inlet's metrics on it
//! without this crate.
//!
//! Names follow `inlet_<subsystem>_<what>_<unit>` (`_total` for counters,
//! `_seconds` for durations); nothing adds a prefix of its own. Every
//! latency histogram uses the one layout `inlet_domain::LATENCY_BUCKETS`.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// A registry for one process of `service` (e.g. `api`, `worker`), with
/// process metrics (CPU, RSS, open fds) and
/// `inlet_build_info{service,version}`.
pub fn process_registry(service: &str) -> Registry {
    let registry = Registry::new();
    // Both registrations can only fail on duplicate names, which a fresh
    // registry cannot have.
    let _ = registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    if let Ok(info) = IntGaugeVec::new(
        Opts::new("inlet_build_info", "Build information; always 1."),
        &["service", "version"],
    ) {
        info.with_label_values(&[service, env!("CARGO_PKG_VERSION")])
            .set(1);
        let _ = registry.register(Box::new(info));
    }
    registry
}

/// All metrics of `registry` in the Prometheus text exposition format
/// (0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec only fails on inconsistent metric families, which
    // registration already rules out.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// The `Content-Type` of [`render`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    #[test]
    fn renders_registered_metrics() {
        let reg = process_registry("test");
        let c = IntCounter::new("inlet_test_things_total", "Things.").unwrap();
        reg.register(Box::new(c.clone())).unwrap();
        c.inc_by(3);
        let text = render(&reg);
        assert!(text.contains("inlet_test_things_total 3"), "{text}");
        assert!(text.contains("inlet_build_info{service=\"test\""), "{text}");
        assert!(
            reg.register(Box::new(c)).is_err(),
            "duplicate registration is refused"
        );
    }
}
