//! The consumer as the supervisor sees it: its setup (topology, prefetch,
//! `basic.consume`), forwarding deliveries to the [`Consumer`] handle as
//! its own work, and its graceful stop.
//!
//! [`Consumer`]: crate::Consumer

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Event};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{ConnectionState, close_quietly};
use crate::consumer::incoming::{Incoming, Shared};
use crate::error::QueueError;
use crate::metrics::{QueueMetrics, Role};
use crate::publisher::Publisher;
use crate::settings::QueueSettings;
use crate::supervisor::{self, Ended, Session, Step, Stopped, Supervised, set_state};
use crate::topology::{self, short};

/// Bound on broker round trips during shutdown (cancel, close).
pub(super) const SHUTDOWN_STEP: Duration = Duration::from_secs(5);

/// What the supervisor of one consumer serves: deliveries go to `tx`.
pub(super) struct Feed {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::Sender<Incoming>,
    pub(super) state_tx: watch::Sender<ConnectionState>,
    pub(super) cancel: CancellationToken,
}

/// The supervisor task of one consumer. `holds` yields `None` once
/// `Shared` (held by every `Incoming`) is gone; `publisher` is the retry
/// publisher when the consumer owns it.
pub(super) async fn run(feed: Feed, mut holds: mpsc::Receiver<()>, publisher: Option<Publisher>) {
    // The connection and channel of a graceful stop, kept open until the
    // work already handed out is settled. The channel handle must live
    // too: lapin closes a channel whose last handle is dropped while the
    // connection is open, and the broker then requeues every delivery
    // still unacked on it (their acks fail `NotSettled`).
    let last_conn = supervisor::supervise(&feed).await;
    // Shutdown: no more deliveries are forwarded. Wait for every Incoming
    // already handed out to be settled or dropped, then close.
    let Feed {
        shared,
        tx,
        state_tx,
        ..
    } = feed;
    drop(tx);
    drop(shared);
    while holds.recv().await.is_some() {}
    if let Some(Stopped {
        conn,
        kept: channel,
    }) = last_conn
    {
        close_quietly(&conn, "consumer stopped", SHUTDOWN_STEP).await;
        // Dropped after the connection is closed: nothing left to close.
        drop(channel);
    }
    if let Some(p) = publisher {
        p.close().await;
    }
    set_state(&state_tx, ConnectionState::Closed);
    debug!(role = "consumer", "consumer supervisor stopped");
}

impl Supervised for Feed {
    type Parts = (Channel, lapin::Consumer);
    /// The consuming channel.
    type Kept = Channel;
    type Session<'c> = FeedSession<'c>;
    const NOT_READY: &'static str = "consumer not ready within connect_timeout_ms";

    fn role(&self) -> Role {
        Role::Consumer
    }

    fn settings(&self) -> &QueueSettings {
        &self.shared.settings
    }

    fn metrics(&self) -> &QueueMetrics {
        &self.shared.metrics
    }

    fn state(&self) -> &watch::Sender<ConnectionState> {
        &self.state_tx
    }

    fn stop(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Declares the topology, sets the prefetch and starts consuming.
    async fn setup(
        &self,
        conn: &Connection,
        keep: &mut Vec<Channel>,
    ) -> Result<(Channel, lapin::Consumer), QueueError> {
        let settings = &self.shared.settings;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| QueueError::amqp("open channel", e))?;
        keep.push(channel.clone());
        let names = topology::declare(&channel, settings).await?;
        channel
            .basic_qos(settings.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| QueueError::amqp("basic.qos", e))?;
        let tag = format!(
            "{}-{:08x}",
            settings.connection_name_for(Role::Consumer.as_str()),
            rand::random::<u32>()
        );
        let consumer = channel
            .basic_consume(
                short(&names.queue)?,
                short(&tag)?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| QueueError::amqp(format!("basic.consume on {}", names.queue), e))?;
        Ok((channel, consumer))
    }

    fn start<'c>(
        &'c self,
        _conn: &'c Connection,
        (channel, consumer): (Channel, lapin::Consumer),
    ) -> FeedSession<'c> {
        info!(role = "consumer", queue = %self.shared.names.queue, "consuming");
        FeedSession {
            feed: self,
            channel,
            consumer,
        }
    }
}

/// One connection of a consumer.
pub(super) struct FeedSession<'c> {
    feed: &'c Feed,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Session for FeedSession<'_> {
    type Kept = Channel;
    type Work = Option<lapin::Result<Delivery>>;

    async fn on_event(&mut self, event: Event) -> Step {
        let metrics = &self.feed.shared.metrics;
        match event {
            Event::ConnectionBlocked(reason) => {
                // Should not happen: this connection never publishes.
                warn!(role = "consumer", %reason, "broker blocked the consumer connection");
                metrics.set_blocked(Role::Consumer, true);
            }
            Event::ConnectionUnblocked => metrics.set_blocked(Role::Consumer, false),
            // (Only channel-level errors reach here.)
            Event::Error(e) if !self.channel.status().connected() => {
                return Step::Break(Ended::Lost(format!("channel closed by the broker: {e}")));
            }
            _ => {}
        }
        Step::Continue(())
    }

    async fn work(&mut self) -> Option<lapin::Result<Delivery>> {
        self.consumer.next().await
    }

    /// Hands one delivery (each push of a bundle) to the `Consumer`
    /// handle, waiting for room.
    async fn on_work(&mut self, delivery: Option<lapin::Result<Delivery>>) -> Step {
        let Feed {
            shared, tx, cancel, ..
        } = self.feed;
        match delivery {
            Some(Ok(delivery)) => {
                shared.metrics.consumer_deliveries_total.inc();
                let mut parts = Incoming::split(shared.clone(), delivery).into_iter();
                while let Some(incoming) = parts.next() {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => {
                            // Not handed out: back to the queue.
                            let held = std::iter::once(incoming).chain(parts).collect();
                            stop_consuming(shared, &self.channel, &mut self.consumer, held).await;
                            return Step::Break(Ended::Stop);
                        }
                        permit = tx.reserve() => match permit {
                            Ok(permit) => permit.send(incoming),
                            // The Consumer handle is gone.
                            Err(_) => return Step::Break(Ended::Stop),
                        }
                    }
                }
                Step::Continue(())
            }
            Some(Err(e)) => Step::Break(Ended::Lost(format!("consumer stream failed: {e}"))),
            None => Step::Break(Ended::Lost(
                "the broker cancelled the consumer (queue deleted?)".into(),
            )),
        }
    }

    async fn check(&mut self) -> Step {
        if self.channel.status().connected() {
            Step::Continue(())
        } else {
            Step::Break(Ended::Lost("channel no longer connected".into()))
        }
    }

    async fn stopping(&mut self) {
        stop_consuming(
            &self.feed.shared,
            &self.channel,
            &mut self.consumer,
            Vec::new(),
        )
        .await;
    }

    fn end(self) -> Channel {
        self.channel
    }
}

/// Ends consuming on a graceful stop: `basic.cancel`, then every delivery
/// received but not handed out (`held`, and what lapin has buffered) goes
/// back to the queue at once. Work already handed out is not touched.
async fn stop_consuming(
    shared: &Arc<Shared>,
    channel: &Channel,
    consumer: &mut lapin::Consumer,
    held: Vec<Incoming>,
) {
    match tokio::time::timeout(
        SHUTDOWN_STEP,
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await
    {
        Ok(Ok(())) => debug!(role = "consumer", "basic.cancel sent"),
        Ok(Err(e)) => warn!(role = "consumer", error = %e, "basic.cancel failed"),
        Err(_) => warn!(role = "consumer", "basic.cancel timed out"),
    }
    let mut unsent = held;
    // Only what is already buffered: never waits for the stream.
    while let Some(Some(Ok(delivery))) = consumer.next().now_or_never() {
        shared.metrics.consumer_deliveries_total.inc();
        unsent.extend(Incoming::split(shared.clone(), delivery));
    }
    for incoming in unsent {
        let _ = tokio::time::timeout(SHUTDOWN_STEP, incoming.requeue()).await;
    }
}
