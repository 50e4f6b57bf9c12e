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

/// The combining state of one publisher.
pub(super) struct Combiner {
    inner: Arc<Inner>,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// `combine_in_flight`, at most `max_in_flight`.
    window: usize,
    /// The publisher's runtime: bundles are published there, not on the
    /// runtime of whichever request opened them.
    runtime: tokio::runtime::Handle,
}

struct State {
    /// The bundle gathering pushes, if any.
    open: Option<Open>,
    /// Places of the window taken: publishes of this combiner awaiting
    /// their confirms (a [`Place`] each).
    taken: usize,
}

impl State {
    /// Takes the open bundle, if any, to be published now: it takes a
    /// place in the window (a window it may overrun: full, or lingered
    /// out).
    fn take_open(&mut self) -> Option<Open> {
        let due = self.open.take();
        self.taken += usize::from(due.is_some());
        due
    }
}

struct Open {
    /// Tells the linger timer whether the bundle it was started for is
    /// still the open one.
    id: u64,
    parts: Vec<Part>,
    bytes: usize,
    waiters: Vec<oneshot::Sender<Result<Confirmed, PublishError>>>,
}

/// How [`Publisher::publish`](super::Publisher::publish) sends a push.
pub(super) enum Entry {
    /// At once, on its own, holding its place in the window, if combining
    /// is on, until its publish is answered or dropped.
    Alone(Option<Place>),
    /// Through [`Combiner::submit`]: it gathers with others.
    Gather,
}

/// A place in the window, held by one publish while it awaits its
/// confirm. Dropped (the publish answered, or abandoned), it passes to the
/// bundle that gathered meanwhile, which is published at once; with none
/// open the place is free.
pub(super) struct Place {
    combiner: Arc<Combiner>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let combiner = &self.combiner;
        let due = {
            let mut state = lock(&combiner.state);
            let due = state.open.take();
            if due.is_none() {
                state.taken -= 1;
            }
            due
        };
        if let Some(due) = due {
            let place = Place {
                combiner: combiner.clone(),
            };
            combiner.spawn(publish_bundle(place, due));
        }
    }
}

impl Combiner {
    /// The combiner of the publisher `inner`, publishing on `runtime`.
    pub(super) fn new(inner: Arc<Inner>, runtime: tokio::runtime::Handle) -> Combiner {
        let s = &inner.settings;
        let window = s.combine_in_flight.min(s.max_in_flight);
        Combiner {
            inner,
            state: Mutex::new(State {
                open: None,
                taken: 0,
            }),
            next_id: AtomicU64::new(0),
            window,
            runtime,
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.runtime.spawn(task));
    }

    /// How `payload` (an encoded envelope) goes: alone while combining is
    /// off or the window has room (taking a place in it), or if it is too
    /// large to share a bundle; else it gathers.
    pub(super) fn enter(self: &Arc<Self>, payload: &[u8]) -> Entry {
        let s = &self.inner.settings;
        if !s.combines() {
            return Entry::Alone(None);
        }
        let fits = payload.len() + PART_FRAMING <= s.combine_max_bytes / 2;
        let mut state = lock(&self.state);
        if fits && (state.open.is_some() || state.taken >= self.window) {
            return Entry::Gather;
        }
        state.taken += 1;
        Entry::Alone(Some(self.place_taken()))
    }

    /// A [`Place`] for a place already counted in `taken`.
    fn place_taken(self: &Arc<Self>) -> Place {
        Place {
            combiner: self.clone(),
        }
    }

    /// Adds `part` to the open bundle (opening one if needed) and waits for
    /// the outcome of the message that carries it.
    pub(super) async fn submit(self: &Arc<Self>, part: Part) -> Result<Confirmed, PublishError> {
        let s = &self.inner.settings;
        let (tx, rx) = oneshot::channel();
        let size = part.payload.len() + PART_FRAMING;
        let mut due = Vec::new();
        let mut linger = None;
        {
            let mut state = lock(&self.state);
            if state
                .open
                .as_ref()
                .is_some_and(|o| o.bytes + size > s.combine_max_bytes)
            {
                due.extend(state.take_open());
            }
            let opened = state.open.is_none();
            let o = state.open.get_or_insert_with(|| Open {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                parts: Vec::with_capacity(s.combine_max_parts.min(64)),
                bytes: BUNDLE_HEADER,
                waiters: Vec::with_capacity(s.combine_max_parts.min(64)),
            });
            o.parts.push(part);
            o.bytes += size;
            o.waiters.push(tx);
            let id = o.id;
            // Full; or just opened while a place is free (one freed since
            // `enter`): nothing would publish it but the linger.
            if o.parts.len() >= s.combine_max_parts || (opened && state.taken < self.window) {
                due.extend(state.take_open());
            } else if opened {
                linger = Some(id);
            }
        }
        for bundle in due {
            self.spawn(publish_bundle(self.place_taken(), bundle));
        }
        if let Some(id) = linger {
            let this = self.clone();
            self.spawn(async move {
                tokio::time::sleep(this.inner.settings.combine_linger()).await;
                let due = {
                    let mut state = lock(&this.state);
                    match state.open.as_ref() {
                        Some(o) if o.id == id => state.take_open(),
                        _ => None,
                    }
                };
                if let Some(due) = due {
                    publish_bundle(this.place_taken(), due).await;
                }
            });
        }
        // The sender is only dropped unanswered if the runtime shuts down
        // under the bundle's task.
        rx.await
            .unwrap_or(Err(PublishError::unavailable(UnavailableReason::Closed)))
    }

    /// Publishes the open bundle now, if any (for `close`: its pushes were
    /// accepted before it, and should not wait their linger only to be
    /// refused).
    pub(super) async fn flush(self: &Arc<Self>) {
        let due = lock(&self.state).take_open();
        if let Some(due) = due {
            publish_bundle(self.place_taken(), due).await;
        }
    }
}

/// Publishes `bundle` holding `place`, and answers every push in it. The
/// place passes on as soon as the broker answered, before the pushes
/// hear of it.
async fn publish_bundle(place: Place, bundle: Open) {
    let Open { parts, waiters, .. } = bundle;
    let outcome = publish(&place.combiner.inner, parts).await;
    drop(place);
    for w in waiters {
        // A push whose request went away no longer listens: fine.
        let _ = w.send(outcome.clone());
    }
}

/// Publishes one bundle of `parts` (or, holding one push, that push's own
/// message).
async fn publish(inner: &Inner, mut parts: Vec<Part>) -> Result<Confirmed, PublishError> {
    inner.metrics.publish_parts.observe(parts.len() as f64);
    if parts.len() == 1 {
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
    }
}
