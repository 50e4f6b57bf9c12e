//! The AMQP properties of the messages a publisher sends: a push's
//! envelope (alone, or as a push of a bundle retried or dead-lettered on
//! its own) and a bundle.

use std::time::{SystemTime, UNIX_EPOCH};

use inlet_domain::{BUNDLE_CONTENT_TYPE, ENVELOPE_CONTENT_TYPE, Envelope};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Header naming the account a push belongs to (absent while a
/// provisional push's account is unknown).
pub const HEADER_ACCOUNT: &str = "x-inlet-account";
/// Header naming the key id that authenticated a push.
pub const HEADER_KEY_ID: &str = "x-inlet-key-id";
/// Header with the auth mode (`confirmed` / `provisional`).
pub const HEADER_AUTH_MODE: &str = "x-inlet-auth-mode";

/// The AMQP properties of an envelope message (`id`: its message id as
/// text): what it is published with alone, and what a push of a bundle
/// carries when it is retried or dead-lettered on its own.
pub(crate) fn envelope_properties(envelope: &Envelope, id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    // A provisional push may not know its account yet: no header then.
    if let Some(account) = &envelope.account_id {
        headers.insert(
            HEADER_ACCOUNT.into(),
            AMQPValue::LongString(LongString::from(account.as_str())),
        );
    }
    headers.insert(
        HEADER_KEY_ID.into(),
        AMQPValue::LongString(LongString::from(envelope.key_id.to_string())),
    );
    headers.insert(
        HEADER_AUTH_MODE.into(),
        AMQPValue::LongString(LongString::from(envelope.auth_mode.as_str())),
    );
    BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_content_type(ShortString::from(ENVELOPE_CONTENT_TYPE))
        .with_timestamp(unix_seconds())
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Header of a bundle: how many pushes it holds.
pub const HEADER_PARTS: &str = "x-inlet-parts";

/// The AMQP properties of a bundle: its own message id, the bundle content
/// type, persistent, and [`HEADER_PARTS`]. The pushes' own headers
/// (account, key, auth mode) are in their envelopes, and on the copies a
/// worker sends to the delay or dead-letter queues.
pub(super) fn bundle_properties(id: &str, parts: usize) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_PARTS.into(), AMQPValue::LongLongInt(parts as i64));
    BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_content_type(ShortString::from(BUNDLE_CONTENT_TYPE))
        .with_timestamp(unix_seconds())
        .with_delivery_mode(2)
        .with_headers(headers)
}
