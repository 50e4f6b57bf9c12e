//! The invalidation channel: tells every running authenticator to drop
//! cached decisions, and the supervised listener that applies them.

use std::time::Duration;

use deadpool_redis::redis;
use futures::StreamExt as _;
use inlet_domain::KeyDigest;
use inlet_domain::backoff::{Backoff, Jitter};
use tokio_util::sync::CancellationToken;

use super::{RedisStore, store_error};
use crate::authenticator::Authenticator;
use crate::store::StoreError;

impl RedisStore {
    /// Tells every running authenticator to forget a key's cached decision.
    pub async fn publish_invalidation(&self, digest: &KeyDigest) -> Result<(), StoreError> {
        self.publish(&digest.to_hex()).await
    }

    /// [`Self::publish_invalidation`] for many keys, in one round trip.
    pub async fn publish_invalidations(&self, digests: &[KeyDigest]) -> Result<(), StoreError> {
        if digests.is_empty() {
            return Ok(());
        }
        let channel = self.invalidation_channel();
        let mut pipe = redis::pipe();
        for digest in digests {
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(digest.to_hex())
                .ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Tells every running authenticator to forget all cached decisions.
    pub async fn publish_invalidate_all(&self) -> Result<(), StoreError> {
        self.publish("*").await
    }

    /// Tells every running authenticator that a full reload committed: forget
    /// all cached decisions and stale-if-error entries.
    pub async fn publish_reload(&self) -> Result<(), StoreError> {
        self.publish(Invalidation::RELOAD).await
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("PUBLISH")
            .arg(self.invalidation_channel())
            .arg(payload)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| store_error(&e))
    }

    /// Runs until cancelled: subscribes to the invalidation channel and
    /// applies each invalidation to `auth`. Reconnects by itself; after
    /// every (re)subscription it drops every cached decision, because
    /// messages published while disconnected are lost. A heartbeat PING
    /// detects hung connections. `inlet_auth_invalidation_listener_up`
    /// reports whether the subscription is live.
    pub async fn run_invalidation_listener(&self, auth: &Authenticator, cancel: CancellationToken) {
        let channel = self.invalidation_channel();
        let up = &auth.metrics().invalidation_listener_up;
        // From 100 ms, doubling up to 5 s, each pause in the upper half.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
            .with_jitter(Jitter::Equal);
        let step = Duration::from_secs(1).max(self.command_timeout * 4);
        while !cancel.is_cancelled() {
            let subscribed = async {
                let client = redis::Client::open(self.url.as_str()).ok()?;
                let pubsub = tokio::time::timeout(step, client.get_async_pubsub())
                    .await
                    .ok()?
                    .ok()?;
                let (mut sink, stream) = pubsub.split();
                tokio::time::timeout(step, sink.subscribe(channel.as_str()))
                    .await
                    .ok()?
                    .ok()?;
                Some((sink, stream))
            }
            .await;
            let Some((mut sink, mut stream)) = subscribed else {
                up.set(0);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            };
            backoff.reset();
            up.set(1);
            auth.invalidate_all();
            let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
            heartbeat.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => { up.set(0); return; }
                    msg = stream.next() => match msg {
                        Some(m) => match Invalidation::parse(m.get_payload_bytes()) {
                            Invalidation::Key(digest) => auth.invalidate(&digest).await,
                            Invalidation::All => auth.invalidate_all(),
                            Invalidation::Reload => auth.invalidate_after_reload(),
                        },
                        None => break,
                    },
                    _ = heartbeat.tick() => {
                        let ping = tokio::time::timeout(step, sink.ping::<redis::Value>()).await;
                        if !matches!(ping, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            up.set(0);
            tracing::warn!("invalidation channel lost; resubscribing");
        }
    }

    /// Subscribes to the invalidation channel once and waits until the
    /// subscription is live (for start-up code and tests); returns whether
    /// it became live within `timeout`.
    pub async fn wait_listener_up(auth: &Authenticator, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if auth.metrics().invalidation_listener_up.get() == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// One message on the invalidation channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Forget this key.
    Key(KeyDigest),
    /// Forget every cached decision (also done after every
    /// resubscription); stale-if-error entries are kept.
    All,
    /// A full reload committed a new generation: forget every cached
    /// decision *and* every stale-if-error entry (the reload may carry
    /// revocations that were never published one by one).
    Reload,
}

impl Invalidation {
    /// The payload for [`Invalidation::Reload`]. Listeners that predate it
    /// read it as [`Invalidation::All`].
    const RELOAD: &'static str = "reload";

    fn parse(payload: &[u8]) -> Invalidation {
        match std::str::from_utf8(payload) {
            Ok(Self::RELOAD) => Invalidation::Reload,
            Ok(s) => KeyDigest::parse(s).map_or(Invalidation::All, Invalidation::Key),
            Err(_) => Invalidation::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let d = KeyDigest::of_secret("k");
        assert_eq!(
            Invalidation::parse(d.to_hex().as_bytes()),
            Invalidation::Key(d)
        );
        assert_eq!(Invalidation::parse(b"reload"), Invalidation::Reload);
        assert_eq!(Invalidation::parse(b"*"), Invalidation::All);
        // Anything unknown is the safe default: forget every decision.
        assert_eq!(Invalidation::parse(b"\xff\xfe"), Invalidation::All);
        assert_eq!(Invalidation::parse(b"reload-v2"), Invalidation::All);
    }
}
