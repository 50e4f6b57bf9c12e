//! The process-wide Prometheus registry.
//!
//! Each crate defines a `Metrics` struct with a `register(&MetricsRegistry)`
//! constructor; the process creates one registry and passes it to all of
//! them, then serves [`MetricsRegistry::render`] at `/metrics`.
//! Names follow `inlet_<subsystem>_<what>_<unit>` (`_total` for counters,
//! `_seconds` for durations); the registry adds no prefix of its own.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// A shareable Prometheus registry (cheap to clone).
#[derive(Clone, Debug)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// A registry for one process of `service` (e.g. `api`, `worker`),
    /// with process metrics (CPU, RSS, open fds) and
    /// `inlet_build_info{service,version}`.
    pub fn new(service: &str) -> Self {
        let registry = Registry::new();
        // Both registrations can only fail on duplicate names, which a
        // fresh registry cannot have.
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
        MetricsRegistry { registry }
    }

    /// The underlying registry, to register collectors with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector, returning it (for `let m = reg.add(m)?`).
    pub fn add<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        collector: C,
    ) -> prometheus::Result<C> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    /// All metrics in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on inconsistent metric families,
        // which registration already rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The `Content-Type` of [`MetricsRegistry::render`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Standard latency buckets for I/O in seconds (0.5 ms … 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    #[test]
    fn renders_registered_metrics() {
        let reg = MetricsRegistry::new("test");
        let c = reg
            .add(IntCounter::new("inlet_test_things_total", "Things.").unwrap())
            .unwrap();
        c.inc_by(3);
        let text = reg.render();
        assert!(text.contains("inlet_test_things_total 3"), "{text}");
        assert!(text.contains("inlet_build_info{service=\"test\""), "{text}");
        assert!(reg.add(c).is_err(), "duplicate registration is refused");
    }
}
