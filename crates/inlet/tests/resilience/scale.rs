//! How big a run is: `INLET_RESILIENCE_SCALE` (default 0.1; 1.0 for the
//! full run), and the lock that keeps scenarios from overlapping.

use std::time::Duration;

/// The default scale of a normal test run.
pub const DEFAULT_SCALE: f64 = 0.1;

/// The scale factor: `INLET_RESILIENCE_SCALE`, else [`DEFAULT_SCALE`].
pub fn factor() -> f64 {
    std::env::var("INLET_RESILIENCE_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .map_or(DEFAULT_SCALE, |f| f.clamp(0.01, 10.0))
}

/// `full` scaled, never below `min`.
pub fn count(full: f64, min: usize) -> usize {
    ((full * factor()).round() as usize).max(min)
}

/// `full_s` seconds scaled, never below `min_s`.
pub fn secs(full_s: f64, min_s: f64) -> Duration {
    Duration::from_secs_f64((full_s * factor()).max(min_s))
}

/// Scenarios share machines and ports: one at a time per process (nextest
/// runs each test in its own process and serializes them with the
/// `resilience` test group; `cargo test` runs them as threads of one
/// process, hence this lock).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
