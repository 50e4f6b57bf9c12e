//! Combining concurrent pushes into one broker message (a [`Bundle`]).
//!
//! The broker's cost is per message (≈ 80 µs of RabbitMQ CPU for a 1 KiB
//! persistent, confirmed message on our machines), and so is the worker's
//! ack; a push is a few hundred bytes to a few KiB. So the publisher keeps
//! a *window* of `combine_in_flight` publishes awaiting confirms: below
//! it, [`Publisher::publish`](super::Publisher::publish) publishes a push
//! at once, alone. With the window full, a push joins the *open* bundle,
//! which is published when a confirm frees a place in the window, when it
//! holds `combine_max_parts` pushes or would exceed `combine_max_bytes`,
//! or `combine_linger_us` after its first push — whichever comes first.
//! Every push of the bundle is then answered with the bundle's outcome:
//! `Ok` only once the broker confirmed the message holding it.
//!
//! The broker's confirms pace the bundles (as TCP's acks pace Nagle's
//! segments): a quiet API pays no linger, a push under load waits about
//! a confirm's time divided by the window, and bundles grow with the load
//! while the broker sees about a window's worth of messages per confirm
//! time. A bundle that ends up holding one push is published as that
//! push's own envelope.
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
    /// bundle, and a bundle is open or the window is full.
    pub(super) fn takes(&self, payload: &[u8]) -> bool {
        let s = &self.inner.settings;
        s.combines()
            && payload.len() + PART_FRAMING <= s.combine_max_bytes / 2
            && (!self.window_has_room() || lock(&self.open).is_some())
    }

    /// Fewer than `combine_in_flight` publishes (at most `max_in_flight`)
    /// await confirms.
    fn window_has_room(&self) -> bool {
        let s = &self.inner.settings;
        self.inner.in_flight() < s.combine_in_flight.min(s.max_in_flight)
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
            // Full, or a confirm freed a place since this push was taken.
            if o.parts.len() >= s.combine_max_parts || combiner.window_has_room() {
                ready.extend(open.take());
            }
        }
        for due in ready {
            combiner.spawn(self.clone().publish(due));
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
                    this.publish(due).await;
                }
            });
        }
        // The sender is only dropped unanswered if the runtime shuts down
        // under the bundle's task.
        rx.await
            .unwrap_or(Err(PublishError::unavailable(UnavailableReason::Closed)))
    }

    /// A publish outside the combiner (a push that found room in the
    /// window) was answered: its place is free, so the bundle that
    /// gathered meanwhile, if any, goes now.
    pub(super) fn release(self: &Arc<Self>) {
        if !self.window_has_room() {
            return;
        }
        let due = lock(&self.open).take();
        if let Some(due) = due {
            self.spawn(self.clone().publish(due));
        }
    }

    /// Publishes `due`, then — while the window has room — the bundle
    /// that gathered meanwhile: a confirm frees a place, and the pushes
    /// waiting for one go at once rather than at their linger.
    async fn publish(self: Arc<Self>, due: Open) {
        let mut due = Some(due);
        while let Some(bundle) = due {
            publish(&self.inner, bundle).await;
            due = if self.window_has_room() {
                lock(&self.open).take()
            } else {
                None
            };
        }
    }
}

/// Publishes one bundle (or, holding one push, that push's own message)
/// and answers every push in it.
async fn publish(inner: &Inner, open: Open) {
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
