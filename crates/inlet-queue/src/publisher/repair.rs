//! Channel repair: the broker closes a channel on a channel-level error
//! (e.g. a `publish_raw` to a missing exchange); the connection stays, and
//! the closed channel is replaced by a fresh confirm channel.

use std::sync::{Arc, Mutex};

use lapin::Connection;
use lapin::options::ConfirmSelectOptions;
use tracing::debug;

use crate::error::QueueError;
use crate::publisher::link::{Inner, Link, PubChannel};

/// Replaces broker-closed channels of the current link with fresh confirm
/// channels on the same connection. Err means the connection is unusable.
pub(super) async fn repair_channels(inner: &Inner, conn: &Connection) -> Result<(), String> {
    let Some(link) = inner.current_link() else {
        return Ok(());
    };
    if link.channels.iter().all(|c| c.channel.status().connected()) {
        return Ok(());
    }
    let mut channels = Vec::with_capacity(link.channels.len());
    for c in link.channels.iter() {
        if c.channel.status().connected() {
            channels.push(c.clone());
        } else {
            let fresh =
                tokio::time::timeout(inner.settings.connect_timeout(), open_confirm_channel(conn))
                    .await
                    .map_err(|_| "timed out replacing a closed channel".to_owned())?
                    .map_err(|e| format!("cannot replace a closed channel: {e}"))?;
            channels.push(Arc::new(fresh));
        }
    }
    debug!(
        role = inner.role.as_str(),
        "replaced broker-closed publisher channel(s)"
    );
    inner.set_link(Some(Arc::new(Link {
        channels: channels.into_boxed_slice(),
        conn: link.conn.clone(),
    })));
    Ok(())
}

/// Opens a channel in confirm mode.
pub(super) async fn open_confirm_channel(conn: &Connection) -> Result<PubChannel, QueueError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| QueueError::amqp("open channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| QueueError::amqp("confirm.select", e))?;
    Ok(PubChannel {
        channel,
        order: Mutex::new(()),
    })
}
