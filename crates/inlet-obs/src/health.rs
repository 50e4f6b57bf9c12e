//! What each component of a process says about its ability to work.
//!
//! Components (the key store, the publisher, the consumer…) call
//! [`Health::set`] whenever their state changes; `/health/ready` reads a
//! [`HealthReport`] without doing any I/O of its own, so a readiness probe
//! can never pile up on a slow dependency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// One component's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    /// Whether the component can do its job now.
    pub ready: bool,
    /// Short explanation (e.g. `populated generation 4, 1000 keys`).
    pub detail: String,
}

/// A process's health registry. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    components: RwLock<BTreeMap<String, ComponentHealth>>,
    shutting_down: AtomicBool,
}

/// Snapshot served as JSON by `/health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// Every component is ready, at least one is registered, and the
    /// process is not shutting down.
    pub ready: bool,
    /// Shutdown has begun: the process takes no new work.
    pub shutting_down: bool,
    /// Per-component state.
    pub components: BTreeMap<String, ComponentHealth>,
}

/// How much `/health/ready` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessDetail {
    /// Every component's `detail` ([`HealthReport`]): for admin listeners,
    /// read by operators.
    Full,
    /// Whether the process and each component are ready, and nothing more
    /// ([`ReadinessSummary`]): for a public listener. A detail can carry
    /// an internal error message, a host name or a key count.
    Summary,
}

/// The public form of a [`HealthReport`]: no `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessSummary {
    /// As [`HealthReport::ready`].
    pub ready: bool,
    /// As [`HealthReport::shutting_down`].
    pub shutting_down: bool,
    /// Per component, only whether it is ready.
    pub components: BTreeMap<String, ComponentReady>,
}

/// One component in a [`ReadinessSummary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComponentReady {
    /// As [`ComponentHealth::ready`].
    pub ready: bool,
}

impl HealthReport {
    /// The report without details.
    pub fn summary(&self) -> ReadinessSummary {
        ReadinessSummary {
            ready: self.ready,
            shutting_down: self.shutting_down,
            components: self
                .components
                .iter()
                .map(|(name, c)| (name.clone(), ComponentReady { ready: c.ready }))
                .collect(),
        }
    }
}

impl Health {
    /// An empty registry. Not ready until a component reports.
    pub fn new() -> Self {
        Health::default()
    }

    /// Registers or updates a component.
    pub fn set(&self, component: &str, ready: bool, detail: impl Into<String>) {
        let state = ComponentHealth {
            ready,
            detail: detail.into(),
        };
        let mut map = self
            .inner
            .components
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match map.get_mut(component) {
            Some(existing) => *existing = state,
            None => {
                map.insert(component.to_owned(), state);
            }
        }
    }

    /// Marks the process as shutting down: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether the process is ready (see [`HealthReport::ready`]).
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    /// The current state of every component.
    pub fn report(&self) -> HealthReport {
        let components = self
            .inner
            .components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let shutting_down = self.is_shutting_down();
        HealthReport {
            ready: !shutting_down && !components.is_empty() && components.values().all(|c| c.ready),
            shutting_down,
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_component_and_no_shutdown() {
        let h = Health::new();
        assert!(!h.is_ready(), "nothing reported yet");
        h.set("store", true, "ok");
        h.set("queue", false, "connecting");
        assert!(!h.is_ready());
        h.set("queue", true, "connected");
        assert!(h.is_ready());
        h.begin_shutdown();
        let r = h.report();
        assert!(!r.ready && r.shutting_down);
        assert_eq!(r.components["queue"].detail, "connected");
        let summary = serde_json::to_value(r.summary()).unwrap();
        assert_eq!(
            summary,
            serde_json::json!({
                "ready": false,
                "shutting_down": true,
                "components": {"queue": {"ready": true}, "store": {"ready": true}},
            })
        );
    }
}
