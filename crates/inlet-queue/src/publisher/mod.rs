//! The confirmed publisher: "202 means durable".
//!
//! [`Publisher::publish`] returns `Ok` only after the broker's publisher
//! confirm (`basic.ack`) for that message, and fails fast with a typed
//! [`PublishError`] otherwise. A supervisor task owns the connection:
//!
//! - it connects (bounded by `connect_timeout_ms`), declares the topology,
//!   opens `publisher_channels` channels in confirm mode and publishes them
//!   as the current *link*;
//! - it listens to the connection's events: `blocked`/`unblocked` flip the
//!   link's blocked flag (publishing on a blocked connection would hang
//!   until the alarm clears, so new publishes fail with `Unavailable`); a
//!   connection error, a closed event stream, or a watchdog seeing the
//!   connection not `connected()` ends the link;
//! - a broker-closed channel (e.g. a `publish_raw` to a missing exchange)
//!   is replaced without dropping the connection;
//! - when a link ends, it is withdrawn (new publishes fail with
//!   `Unavailable` at once) and its `lost` token is cancelled, which
//!   resolves every in-flight publish on it with `Unavailable` right away
//!   instead of waiting for lapin or the confirm timeout; then the
//!   supervisor reconnects with jittered exponential backoff and declares
//!   the topology again.
//!
//! # The hot path
//!
//! One publish: a `try_acquire` on the in-flight semaphore (full means
//! `Backpressure`, never a queue), a read-locked clone of the current link,
//! a round-robin channel pick, `basic_publish`, then awaiting the confirm
//! under one deadline (`confirm_timeout_ms`) raced against the link's
//! `lost` token. No task is spawned, no lock is held across an await, and
//! nothing is allocated besides what lapin needs for the frames and the
//! message properties.
//!
//! lapin assigns a publish its confirm sequence number and queues its
//! frames under two different locks, so two threads publishing on one
//! channel at once could reach the socket in the other order than their
//! numbers, and a broker ack would then resolve the wrong publish (a false
//! "durable"). Both steps happen synchronously in the first poll of
//! lapin's `basic_publish` future (lapin 4.12.3, `generated/channel.rs`
//! `basic_publish` → `before_basic_publish` + `send_method_frame_with_body`
//! → `push_frames`), so that first poll runs under a per-channel
//! `std::sync::Mutex`; the lock is never held across an await.
//!
//! # Returned (unroutable) messages
//!
//! With `mandatory`, an unroutable message is `basic.return`ed before its
//! ack, and lapin hands the return to the next confirm it completes. Within
//! one multiple-ack batch that may be a different publish of the batch, so
//! the returned message's `message_id` is compared with ours and a mismatch
//! is logged. A whole batch is unroutable in practice only when the
//! topology was deleted under a running publisher; then every publish of
//! the batch gets a return and fails with `Unroutable`, whichever it is.
//! An unroutable publish also wakes the supervisor, which declares the
//! topology again (at most once a second), so a deleted queue or exchange
//! costs a few 503s rather than an outage until the next reconnect.

//!
//! # Layout
//!
//! - `mod.rs` (this file): the public handle, [`Publisher`];
//! - `link`: what the parts share, the handle's state and the current
//!   link (channels and per-connection flags);
//! - `publish`: the hot path, one publish and its confirm;
//! - `combine`: combining concurrent pushes into one message (a bundle);
//! - `properties`: the AMQP properties of envelope and bundle messages;
//! - `session`: the publisher's hooks for the crate's connection
//!   supervisor (setup, connection events, blocked state, shutdown);
//! - `repair`: replacing broker-closed channels;
//! - `redeclare`: declaring the topology, and declaring it again after
//!   unroutable publishes.

mod combine;
mod link;
mod properties;
mod publish;
mod redeclare;
mod repair;
mod session;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use inlet_domain::Envelope;
use lapin::BasicProperties;
use lapin::types::ShortString;
use tokio::sync::watch;
use tokio_util::sync::DropGuard;
use tracing::warn;

use crate::connection::ConnectionState;
use crate::error::{PublishError, QueueError};
use crate::metrics::{QueueMetrics, Role};
use crate::publisher::link::{Inner, lock};
use crate::settings::QueueSettings;
use crate::topology::Names;

use crate::publisher::combine::{Combiner, Entry, Part};
pub(crate) use crate::publisher::properties::envelope_properties;
pub use crate::publisher::properties::{
    HEADER_ACCOUNT, HEADER_AUTH_MODE, HEADER_KEY_ID, HEADER_PARTS,
};
pub use crate::publisher::publish::Confirmed;

/// A confirmed AMQP publisher with fail-fast errors, backpressure and its
/// own reconnecting supervisor. Cheap to clone; all clones share one
/// connection. The supervisor stops (closing the connection) when the last
/// clone is dropped or [`Publisher::close`] is called.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    combiner: Arc<Combiner>,
    _stop_on_drop: Arc<DropGuard>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("role", &self.inner.role)
            .field("prefix", &self.inner.names.prefix)
            .field("state", &*self.inner.state_tx.borrow())
            .finish()
    }
}

impl Publisher {
    /// Starts a publisher with role `publisher` (connection name
    /// `{connection_name}-publisher`). Must be called inside a tokio
    /// runtime: lapin binds its I/O to the runtime that connects.
    ///
    /// Returns at once: the connection is made in the background, and a
    /// broker that is down is not an error (see [`Self::state`] and
    /// [`Self::wait_connected`]). Fails only on invalid settings or when no
    /// tokio runtime is running.
    pub fn start(settings: QueueSettings, metrics: QueueMetrics) -> Result<Publisher, QueueError> {
        Publisher::start_with_role(settings, metrics, Role::Publisher)
    }

    pub(crate) fn start_with_role(
        settings: QueueSettings,
        metrics: QueueMetrics,
        role: Role,
    ) -> Result<Publisher, QueueError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| QueueError::Connect {
            url: settings.redacted_url(),
            reason: "Publisher::start must be called inside a tokio runtime".into(),
        })?;
        let inner = Inner::new(settings, metrics, role)?;
        let stop = inner.stop.clone();
        let task = runtime.spawn(session::run(inner.clone()));
        *lock(&inner.supervisor) = Some(task);
        Ok(Publisher {
            combiner: Arc::new(Combiner::new(inner.clone(), runtime)),
            inner,
            _stop_on_drop: Arc::new(stop.drop_guard()),
        })
    }

    /// Publishes one envelope to the push exchange and waits for the
    /// broker's confirm. `Ok` means the broker has taken responsibility for
    /// the message (persistent, on a durable queue).
    ///
    /// The message carries `message_id` (the envelope's UUID),
    /// `content_type` [`ENVELOPE_CONTENT_TYPE`], a timestamp in seconds,
    /// delivery mode 2, and the headers [`HEADER_ACCOUNT`] (when the
    /// account is known), [`HEADER_KEY_ID`] and [`HEADER_AUTH_MODE`].
    ///
    /// With combining on (`combine_max_parts` above 1) and the window of
    /// `combine_in_flight` publishes awaiting confirms full, the envelope
    /// may instead travel in a bundle with
    /// others (`content_type` [`inlet_domain::BUNDLE_CONTENT_TYPE`], header
    /// [`HEADER_PARTS`]); `Ok` still means the message holding it was
    /// confirmed. A [`Consumer`](crate::Consumer) hands out each envelope
    /// of a bundle as its own [`Incoming`](crate::Incoming).
    pub async fn publish(&self, envelope: &Envelope) -> Result<Confirmed, PublishError> {
        let payload = envelope.encode();
        let mut id_buf = [0u8; 36];
        let id: &str = envelope.message_id.hyphenated().encode_lower(&mut id_buf);
        let properties = envelope_properties(envelope, id);
        match self.combiner.enter(&payload) {
            Entry::Gather => {
                let part = Part {
                    payload,
                    properties,
                    id: id.to_owned(),
                };
                self.combiner.submit(part).await
            }
            // The place is held until the publish is answered (or this
            // future dropped): then it passes to the pushes gathered
            // meanwhile.
            Entry::Alone(_place) => {
                self.inner.metrics.publish_parts.observe(1.0);
                self.inner.publish_push(&payload, properties, id).await
            }
        }
    }

    /// Publishes raw bytes to any exchange with the same confirm semantics
    /// as [`Self::publish`] (mandatory, so a missing route is `Unroutable`).
    /// The caller chooses every property; set `delivery_mode` 2 for a
    /// persistent message. Publishing to a missing exchange fails with
    /// `Unroutable` (reply code 404); the broker closes that channel and
    /// the supervisor replaces it.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<Confirmed, PublishError> {
        let in_topology = self.inner.in_topology(exchange, routing_key);
        let exchange =
            ShortString::try_new(exchange).map_err(|_| PublishError::Invalid("exchange name"))?;
        let routing_key =
            ShortString::try_new(routing_key).map_err(|_| PublishError::Invalid("routing key"))?;
        let expected_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        self.inner
            .publish(
                exchange,
                routing_key,
                payload,
                properties,
                expected_id.as_deref(),
                in_topology,
            )
            .await
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state_tx.borrow().clone()
    }

    /// A receiver of state changes (for readiness probes).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state_tx.subscribe()
    }

    /// Waits until connected (true) or `timeout` passes (false).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.state_tx.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(ConnectionState::is_connected)).await,
            Ok(Ok(_))
        )
    }

    /// The names of the topology this publisher declares.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// The settings it was started with.
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// Publishes currently awaiting a confirm.
    pub fn in_flight(&self) -> usize {
        self.inner.settings.max_in_flight - self.inner.permits.available_permits()
    }

    /// Graceful shutdown: publishes the pushes gathering for a combined
    /// message, refuses new publishes (`Unavailable`/`Closed`), waits for
    /// in-flight publishes to resolve (at most `confirm_timeout_ms`), then
    /// closes the connection and stops the supervisor. Idempotent.
    pub async fn close(&self) {
        let inner = &self.inner;
        self.combiner.flush().await;
        inner.closing.store(true, Ordering::SeqCst);
        let limit = u32::try_from(inner.settings.max_in_flight).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            inner.settings.confirm_timeout(),
            inner.permits.acquire_many(limit),
        )
        .await;
        if drained.is_err() {
            warn!(
                role = inner.role.as_str(),
                in_flight = self.in_flight(),
                "closing the publisher with publishes still awaiting confirms"
            );
        }
        drop(drained);
        inner.stop.cancel();
        let task = lock(&inner.supervisor).take();
        if let Some(task) = task {
            // The supervisor's own close is bounded; this is a backstop.
            let bound = inner.settings.connect_timeout() + Duration::from_secs(1);
            if tokio::time::timeout(bound, task).await.is_err() {
                warn!(
                    role = inner.role.as_str(),
                    "publisher supervisor did not stop in time"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UnavailableReason;
    use inlet_domain::{
        AccountId, AuthMode, ContentEncoding, ENVELOPE_CONTENT_TYPE, KeyDigest, KeyId,
    };
    use lapin::types::AMQPValue;
    use std::time::Instant;

    fn envelope() -> Envelope {
        Envelope {
            message_id: Envelope::new_message_id(),
            account_id: Some(AccountId::parse("acme").unwrap()),
            key_id: KeyId::from_u64(0xabc),
            key_digest: KeyDigest::of_secret("k"),
            auth_mode: AuthMode::Provisional,
            received_at_ms: 1,
            content_encoding: ContentEncoding::Identity,
            batch_id: None,
            body: b"{}".to_vec().into(),
        }
    }

    #[test]
    fn envelope_properties_carry_ids_and_long_string_headers() {
        let e = envelope();
        let id = e.message_id.to_string();
        let p = envelope_properties(&e, &id);
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some(e.message_id.to_string().as_str())
        );
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some(ENVELOPE_CONTENT_TYPE)
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert!(p.timestamp().is_some());
        let h = p.headers().as_ref().unwrap().inner();
        for (k, v) in [
            (HEADER_ACCOUNT, "acme"),
            (HEADER_KEY_ID, "0000000000000abc"),
            (HEADER_AUTH_MODE, "provisional"),
        ] {
            match h.get(k) {
                Some(AMQPValue::LongString(s)) => assert_eq!(s.to_string(), v),
                other => panic!("{k}: {other:?} (must be a LongString)"),
            }
        }
    }

    #[tokio::test]
    async fn invalid_settings_are_refused_at_start() {
        let s = QueueSettings {
            prefetch: 0,
            ..QueueSettings::default()
        };
        let err = Publisher::start(s, QueueMetrics::unregistered().unwrap()).unwrap_err();
        assert!(err.to_string().contains("queue.prefetch"), "{err}");
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Publisher::start(
            QueueSettings::default(),
            QueueMetrics::unregistered().unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_broker_fails_fast_and_reports_disconnected() {
        // A port nobody listens on: refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let s = QueueSettings {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            ..QueueSettings::default()
        };
        let p = Publisher::start(s, QueueMetrics::unregistered().unwrap()).unwrap();
        let t = Instant::now();
        let err = p.publish(&envelope()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(
            err,
            PublishError::unavailable(UnavailableReason::NotConnected)
        );
        let mut rx = p.watch_state();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!p.wait_connected(Duration::from_millis(50)).await);
        p.close().await;
        assert_eq!(p.state(), ConnectionState::Closed);
        assert_eq!(
            p.publish(&envelope()).await.unwrap_err(),
            PublishError::unavailable(UnavailableReason::Closed)
        );
    }
}
