//! Prometheus metrics of the push API.

use inlet_domain::LATENCY_BUCKETS;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Metrics of the HTTP layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    /// `inlet_api_requests_total{route, status, code}`: answered requests;
    /// `code` is the error code, or `accepted` for 202 and `ok` for other
    /// 2xx.
    pub requests: IntCounterVec,
    /// `inlet_api_request_duration_seconds{route}`: from the request line
    /// to the response.
    pub duration: HistogramVec,
    /// `inlet_api_request_body_bytes{stage}`: push body sizes, `received`
    /// (as sent) and `decoded` (decompressed).
    pub body_bytes: HistogramVec,
    /// `inlet_api_batch_items_total{kind}`: accepted samples by kind
    /// (`transaction`, `metric`, `error`).
    pub items: IntCounterVec,
    /// `inlet_api_otlp_items_total{signal, outcome}`: spans, data points
    /// and log records of accepted OTLP exports, `accepted` (stored, or
    /// nothing to store) or `rejected` (left out: `partial_success`).
    pub otlp_items: IntCounterVec,
    /// `inlet_api_in_flight_requests`: requests being handled.
    pub in_flight: IntGauge,
    /// `inlet_api_dependency_ready{dependency}`: 1 when `auth` can decide /
    /// the `queue` publisher is connected.
    pub dependency_ready: IntGaugeVec,
    /// `inlet_api_ready`: 1 when `/health/ready` answers 200.
    pub ready: IntGauge,
    /// `inlet_api_rate_limited_total`: pushes refused by the per-key rate
    /// limit.
    pub rate_limited: prometheus::IntCounter,
    /// `inlet_api_in_flight_bytes{budget}`: bytes reserved in the memory
    /// budgets, `body` (push bodies until their answer) and `decode`
    /// (decompressed bodies while validated). Pushes refused for want of
    /// room are `inlet_api_requests_total{code="server_busy"}`.
    pub in_flight_bytes: IntGaugeVec,
    /// `inlet_api_tls_reloads_total{outcome}`: checks of `[api.tls]`'s
    /// files that found a change, `loaded` (served from then on), or that
    /// `failed` (a file unreadable — at every check until it is readable —
    /// or a changed pair not PEM or not matching: the previous certificate
    /// stays in use).
    pub tls_reloads: IntCounterVec,
    /// The series every accepted push touches, resolved once (a label
    /// lookup hashes the labels and takes a lock).
    pub hot: HotSeries,
}

/// Pre-resolved children of the vectors above, for the accepted-push path.
#[derive(Clone, Debug)]
pub struct HotSeries {
    /// `inlet_api_requests_total{route="/v1/push",status="202",code="accepted"}`.
    pub push_accepted: IntCounter,
    /// `inlet_api_request_duration_seconds{route="/v1/push"}`.
    pub push_duration: Histogram,
    /// `inlet_api_request_body_bytes{stage="received"}`.
    pub body_received: Histogram,
    /// `inlet_api_request_body_bytes{stage="decoded"}`.
    pub body_decoded: Histogram,
    /// `inlet_api_batch_items_total{kind="transaction"}`.
    pub transactions: IntCounter,
    /// `inlet_api_batch_items_total{kind="metric"}`.
    pub metrics: IntCounter,
    /// `inlet_api_batch_items_total{kind="error"}`.
    pub errors: IntCounter,
}

/// The push route's pattern, as `match_pattern` reports it.
pub const PUSH_ROUTE: &str = "/v1/push";

/// The stable code a response carries (the `code` label of
/// `inlet_api_requests_total`), stored in response extensions for the
/// metrics middleware: `accepted` by the push handler, an error's code by
/// `ApiError`'s response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCode(pub &'static str);

impl ApiMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = ApiMetrics::unregistered()?;
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every collector, for registration and for the metrics-reference
    /// check (which reads their descriptions).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.body_bytes.clone()),
            Box::new(self.items.clone()),
            Box::new(self.otlp_items.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.dependency_ready.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.rate_limited.clone()),
            Box::new(self.in_flight_bytes.clone()),
            Box::new(self.tls_reloads.clone()),
        ]
    }

    /// Creates the metrics without registering them.
    pub fn unregistered() -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "inlet_api_requests_total",
                "Answered HTTP requests by route, status and code.",
            ),
            &["route", "status", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "inlet_api_request_duration_seconds",
                "HTTP request duration.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let body_bytes = HistogramVec::new(
            HistogramOpts::new(
                "inlet_api_request_body_bytes",
                "Push body size, as received and decoded.",
            )
            .buckets(prometheus::exponential_buckets(256.0, 4.0, 9)?),
            &["stage"],
        )?;
        let items = IntCounterVec::new(
            Opts::new("inlet_api_batch_items_total", "Accepted samples by kind."),
            &["kind"],
        )?;
        let hot = HotSeries {
            push_accepted: requests.with_label_values(&[PUSH_ROUTE, "202", "accepted"]),
            push_duration: duration.with_label_values(&[PUSH_ROUTE]),
            body_received: body_bytes.with_label_values(&["received"]),
            body_decoded: body_bytes.with_label_values(&["decoded"]),
            transactions: items.with_label_values(&["transaction"]),
            metrics: items.with_label_values(&["metric"]),
            errors: items.with_label_values(&["error"]),
        };
        Ok(ApiMetrics {
            requests,
            duration,
            body_bytes,
            items,
            hot,
            otlp_items: IntCounterVec::new(
                Opts::new(
                    "inlet_api_otlp_items_total",
                    "Spans, data points and log records of accepted OTLP exports, accepted or rejected.",
                ),
                &["signal", "outcome"],
            )?,
            in_flight: IntGauge::new("inlet_api_in_flight_requests", "Requests being handled.")?,
            dependency_ready: IntGaugeVec::new(
                Opts::new(
                    "inlet_api_dependency_ready",
                    "1 when the dependency is ready (auth can decide, queue connected).",
                ),
                &["dependency"],
            )?,
            ready: IntGauge::new("inlet_api_ready", "1 when /health/ready answers 200.")?,
            rate_limited: prometheus::IntCounter::new(
                "inlet_api_rate_limited_total",
                "Pushes refused by the per-key rate limit.",
            )?,
            in_flight_bytes: IntGaugeVec::new(
                Opts::new(
                    "inlet_api_in_flight_bytes",
                    "Bytes reserved in the memory budgets (body, decode).",
                ),
                &["budget"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new(
                    "inlet_api_tls_reloads_total",
                    "Changes of the TLS certificate or key files seen, loaded or failed.",
                ),
                &["outcome"],
            )?,
        })
    }
}
