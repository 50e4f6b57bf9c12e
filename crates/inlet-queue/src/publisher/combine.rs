//! Combining concurrent pushes into one broker message (a [`Bundle`]).
//!
//! The broker's cost is per message (≈ 80 µs of RabbitMQ CPU for a 1 KiB
//! persistent, confirmed message on our machines), and so is the worker's
//! ack; a push is a few hundred bytes to a few KiB. So while publishes are
//! awaiting confirms, [`Publisher::publish`](super::Publisher::publish)
//! does not publish a push at once but adds it to the *open* bundle, which
//! is published when it holds `combine_max_parts` pushes, would exceed
//! `combine_max_bytes`, or `combine_linger_us` after its first push —
//! whichever comes first. Every push of the bundle is then answered with
//! the bundle's outcome: `Ok` only once the broker confirmed the message
//! holding it.
//!
//! With nothing in flight a push is published at once on its own, exactly
//! as without combining, so a quiet API pays no linger. A bundle that
//! ends up holding one push is also published as that push's own
//! envelope.
//!
//! Bundles are published by tasks of their own, never by a request's
//! future: a client that disconnects (dropping its push) cannot strand
//! the pushes that joined its bundle.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use inlet_domain::{Bundle, Envelope};
use lapin::BasicProperties;
use tokio::sync::oneshot;

use crate::error::{PublishError, UnavailableReason};
use crate::publisher::link::{Inner, lock};
use crate::publisher::properties::bundle_properties;
use crate::publisher::publish::Confirmed;

/// One push waiting to be published: its encoded envelope, the
/// properties it would be published with alone, and whom to answer.
pub(super) struct Part {
    pub(super) payload: Vec<u8>,
    pub(super) properties: BasicProperties,
    pub(super) id: String,
}

/// Framing of a part inside a bundle (its length).
const PART_FRAMING: usize = 4;
/// A bundle's own header.
const BUNDLE_HEADER: usize = 7;

/// The open bundle, if any, of one publisher.
pub(super) struct Combiner {
    inner: Arc<Inner>,
    open: Mutex<Option<Open>>,
    next_id: AtomicU64,
    /// The publisher's runtime: bundles are published there, not on the
    /// runtime of whichever request opened them.
    runtime: tokio::runtime::Handle,
}

struct Open {
    /// Tells the linger timer whether the bundle it was started for is
    /// still the open one.
    id: u64,
    parts: Vec<Part>,
    bytes: usize,
    waiters: Vec<oneshot::Sender<Result<Confirmed, PublishError>>>,
}

impl Combiner {
    /// The combiner of the publisher `inner`, publishing on `runtime`.
    pub(super) fn new(inner: Arc<Inner>, runtime: tokio::runtime::Handle) -> Combiner {
        Combiner {
            inner,
            open: Mutex::new(None),
            next_id: AtomicU64::new(0),
            runtime,
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.runtime.spawn(task));
    }

    /// Whether `payload` (an encoded envelope) should go through the
    /// combiner: combining is on, the push is small enough to share a
    /// bundle, and a bundle is open or publishes are awaiting confirms.
    pub(super) fn takes(&self, payload: &[u8]) -> bool {
        let inner = &self.inner;
        let s = &inner.settings;
        s.combines()
            && payload.len() + PART_FRAMING <= s.combine_max_bytes / 2
            && (inner.permits.available_permits() < s.max_in_flight || lock(&self.open).is_some())
    }

    /// Adds `part` to the open bundle (opening one if needed) and waits for
    /// the outcome of the message that carries it.
    pub(super) async fn submit(self: &Arc<Self>, part: Part) -> Result<Confirmed, PublishError> {
        let s = &self.inner.settings;
        let combiner = self;
        let (tx, rx) = oneshot::channel();
        let size = part.payload.len() + PART_FRAMING;
        let mut ready = Vec::new();
        let mut opened = None;
        {
            let mut open = lock(&combiner.open);
            if open
                .as_ref()
                .is_some_and(|o| o.bytes + size > s.combine_max_bytes)
            {
                ready.extend(open.take());
            }
            let o = open.get_or_insert_with(|| {
                let id = combiner.next_id.fetch_add(1, Ordering::Relaxed);
                opened = Some(id);
                Open {
                    id,
                    parts: Vec::with_capacity(s.combine_max_parts.min(64)),
                    bytes: BUNDLE_HEADER,
                    waiters: Vec::with_capacity(s.combine_max_parts.min(64)),
                }
            });
            o.parts.push(part);
            o.bytes += size;
            o.waiters.push(tx);
            if o.parts.len() >= s.combine_max_parts {
                ready.extend(open.take());
            }
        }
        for full in ready {
            combiner.spawn(publish(self.inner.clone(), full));
        }
        if let Some(id) = opened {
            let this = self.clone();
            combiner.spawn(async move {
                tokio::time::sleep(this.inner.settings.combine_linger()).await;
                let due = {
                    let mut open = lock(&this.open);
                    match open.as_ref() {
                        Some(o) if o.id == id => open.take(),
                        _ => None,
                    }
                };
                if let Some(due) = due {
                    publish(this.inner.clone(), due).await;
                }
            });
        }
        // The sender is only dropped unanswered if the runtime shuts down
        // under the bundle's task.
        rx.await
            .unwrap_or(Err(PublishError::unavailable(UnavailableReason::Closed)))
    }
}

/// Publishes one bundle (or, holding one push, that push's own message)
/// and answers every push in it.
async fn publish(inner: Arc<Inner>, open: Open) {
    let Open {
        mut parts, waiters, ..
    } = open;
    inner.metrics.publish_parts.observe(parts.len() as f64);
    let outcome = if parts.len() == 1 {
        let Part {
            payload,
            properties,
            id,
        } = parts.pop().expect("one part");
        inner.publish_push(&payload, properties, &id).await
    } else {
        let mut bundle = Bundle::new();
        for p in &parts {
            // At most combine_max_parts ≤ MAX_BUNDLE_PARTS (validated).
            bundle.push(&p.payload);
        }
        let id = Envelope::new_message_id().hyphenated().to_string();
        let properties = bundle_properties(&id, parts.len());
        drop(parts);
        inner
            .publish_push(&bundle.into_bytes(), properties, &id)
            .await
    };
    for w in waiters {
        // A push whose request went away no longer listens: fine.
        let _ = w.send(outcome.clone());
    }
}
