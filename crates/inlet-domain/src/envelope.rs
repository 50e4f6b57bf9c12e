//! The queue envelope: one accepted push on its way from the API to the
//! worker.
//!
//! # Wire format, version 1 (all integers big endian)
//!
//! ```text
//! 0   4  magic "INLE"
//! 4   1  schema version (1)
//! 5   1  flags: bit 0 = provisional auth
//! 6  16  message id (UUIDv7)
//! 22  8  received at, Unix ms (i64)
//! 30  8  key id (u64)
//! 38 32  key digest (SHA-256)
//! 70  1  content encoding (0 identity, 1 gzip, 2 deflate, 3 zstd)
//! 71  1  account id length n (0 = not yet known: provisional), then n bytes
//! ..  1  batch id length m (0 = none), then m bytes
//! ..  4  body length b, then b bytes (the body exactly as received)
//! ```
//!
//! The body is forwarded as the agent compressed it: the API decompresses
//! only to validate, and the broker carries the smaller form.
//!
//! # Combined messages ("bundles"), version 1
//!
//! Concurrent pushes may travel as one broker message ([`Bundle`]): each
//! part is a whole envelope as above, so every push keeps its own message
//! id, idempotency key, auth mode and (in the worker) its own fate.
//!
//! ```text
//! 0  4  magic "INLB"
//! 4  1  bundle version (1)
//! 5  2  number of parts p (u16, at least 1)
//! 7  .. p times: part length (u32), then that many bytes (an envelope)
//! ```

use bytes::Bytes;
use uuid::Uuid;

use crate::{AccountId, AuthMode, BatchId, ContentEncoding, KeyDigest, KeyId};

const MAGIC: &[u8; 4] = b"INLE";
/// The envelope schema version this build writes.
pub const ENVELOPE_VERSION: u8 = 1;
const FLAG_PROVISIONAL: u8 = 1;
const FIXED_LEN: usize = 71;

/// MIME type of an encoded envelope (AMQP `content-type`).
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.inlet.envelope.v1";

const BUNDLE_MAGIC: &[u8; 4] = b"INLB";
const BUNDLE_VERSION: u8 = 1;
/// The most parts a bundle can hold (its count is a u16).
pub const MAX_BUNDLE_PARTS: usize = u16::MAX as usize;

/// MIME type of an encoded bundle (AMQP `content-type`).
pub const BUNDLE_CONTENT_TYPE: &str = "application/vnd.inlet.bundle.v1";

/// One accepted push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique per accepted push (UUIDv7: time-ordered).
    pub message_id: Uuid,
    /// Whose data it is. `None` only for provisional pushes, whose account
    /// the worker resolves when it re-checks the key.
    pub account_id: Option<AccountId>,
    /// Which key authenticated it.
    pub key_id: KeyId,
    /// Digest of that key, so the worker can re-check provisional pushes.
    pub key_digest: KeyDigest,
    /// Confirmed or provisional.
    pub auth_mode: AuthMode,
    /// When the API received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// The body's encoding.
    pub content_encoding: ContentEncoding,
    /// The agent's idempotency key, if any.
    pub batch_id: Option<BatchId>,
    /// The batch JSON, as received (possibly compressed). Shared, not
    /// copied, with the buffer the API read it into.
    pub body: Bytes,
}

/// Why bytes could not be decoded as an envelope. Such a message can never
/// be processed: it goes to the dead-letter queue at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than its own length fields say.
    #[error("envelope truncated")]
    Truncated,
    /// Not an Inlet envelope.
    #[error("not an Inlet envelope (bad magic)")]
    BadMagic,
    /// Written by a newer (or unknown) schema version.
    #[error("unsupported envelope version {0}")]
    Version(u8),
    /// A field holds a value outside its domain.
    #[error("invalid envelope field {field}")]
    Field {
        /// Which field.
        field: &'static str,
    },
    /// Bytes left over after the body.
    #[error("trailing bytes after envelope body")]
    Trailing,
}

impl Envelope {
    /// A new message id: UUIDv7, so ids sort by creation time.
    pub fn new_message_id() -> Uuid {
        Uuid::now_v7()
    }

    /// The key the worker deduplicates on: the agent's batch id scoped to
    /// the key when present (a batch retried after a lost response gets a
    /// new message id but the same batch id; scoping by key rather than by
    /// account keeps it stable whether the push was accepted provisionally
    /// or confirmed), else the message id.
    pub fn dedup_key(&self) -> String {
        match &self.batch_id {
            Some(b) => format!("b:{}:{}", self.key_id, b.as_str()),
            None => format!("m:{}", self.message_id.simple()),
        }
    }

    /// Serialises the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let account = self
            .account_id
            .as_ref()
            .map_or(&b""[..], |a| a.as_str().as_bytes());
        let batch = self
            .batch_id
            .as_ref()
            .map_or(&b""[..], |b| b.as_str().as_bytes());
        let mut out =
            Vec::with_capacity(FIXED_LEN + 2 + account.len() + batch.len() + 4 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.push(ENVELOPE_VERSION);
        out.push(match self.auth_mode {
            AuthMode::Confirmed => 0,
            AuthMode::Provisional => FLAG_PROVISIONAL,
        });
        out.extend_from_slice(self.message_id.as_bytes());
        out.extend_from_slice(&self.received_at_ms.to_be_bytes());
        out.extend_from_slice(&self.key_id.as_u64().to_be_bytes());
        out.extend_from_slice(self.key_digest.as_bytes());
        out.push(self.content_encoding.to_byte());
        // Both lengths fit: an account id is at most 64 bytes, a batch id 64.
        out.push(account.len() as u8);
        out.extend_from_slice(account);
        out.push(batch.len() as u8);
        out.extend_from_slice(batch);
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses an envelope, validating every field.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let flags = r.u8()?;
        if flags & !FLAG_PROVISIONAL != 0 {
            return Err(EnvelopeError::Field { field: "flags" });
        }
        let auth_mode = if flags & FLAG_PROVISIONAL != 0 {
            AuthMode::Provisional
        } else {
            AuthMode::Confirmed
        };
        let message_id = Uuid::from_bytes(r.array()?);
        let received_at_ms = i64::from_be_bytes(r.array()?);
        let key_id = KeyId::from_u64(u64::from_be_bytes(r.array()?));
        let key_digest = KeyDigest::from_bytes(r.array()?);
        let content_encoding = ContentEncoding::from_byte(r.u8()?).ok_or(EnvelopeError::Field {
            field: "content_encoding",
        })?;
        let n = r.u8()? as usize;
        let account_id = if n == 0 {
            None
        } else {
            Some(
                std::str::from_utf8(r.take(n)?)
                    .ok()
                    .and_then(|s| AccountId::parse(s).ok())
                    .ok_or(EnvelopeError::Field {
                        field: "account_id",
                    })?,
            )
        };
        if account_id.is_none() && auth_mode == AuthMode::Confirmed {
            // A confirmed push always knows its account.
            return Err(EnvelopeError::Field {
                field: "account_id",
            });
        }
        let m = r.u8()? as usize;
        let batch_id = if m == 0 {
            None
        } else {
            Some(
                std::str::from_utf8(r.take(m)?)
                    .ok()
                    .and_then(BatchId::parse)
                    .ok_or(EnvelopeError::Field { field: "batch_id" })?,
            )
        };
        let len = u32::from_be_bytes(r.array()?) as usize;
        let body = Bytes::copy_from_slice(r.take(len)?);
        if !r.0.is_empty() {
            return Err(EnvelopeError::Trailing);
        }
        Ok(Envelope {
            message_id,
            account_id,
            key_id,
            key_digest,
            auth_mode,
            received_at_ms,
            content_encoding,
            batch_id,
            body,
        })
    }
}

/// A combined message being built: encoded envelopes, appended one by one.
#[derive(Debug, Clone)]
pub struct Bundle {
    bytes: Vec<u8>,
    parts: usize,
}

impl Default for Bundle {
    fn default() -> Self {
        Bundle::new()
    }
}

impl Bundle {
    /// An empty bundle.
    pub fn new() -> Bundle {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(BUNDLE_MAGIC);
        bytes.push(BUNDLE_VERSION);
        bytes.extend_from_slice(&[0, 0]);
        Bundle { bytes, parts: 0 }
    }

    /// Appends one encoded envelope. `false` (and nothing appended) when
    /// the bundle already holds [`MAX_BUNDLE_PARTS`].
    pub fn push(&mut self, envelope: &[u8]) -> bool {
        if self.parts == MAX_BUNDLE_PARTS {
            return false;
        }
        self.bytes
            .extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(envelope);
        self.parts += 1;
        self.bytes[5..7].copy_from_slice(&(self.parts as u16).to_be_bytes());
        true
    }

    /// Parts appended so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Bytes the encoded bundle takes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no part was appended.
    pub fn is_empty(&self) -> bool {
        self.parts == 0
    }

    /// The encoded bundle.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Whether `bytes` are a bundle (by their magic), rather than a single
    /// envelope.
    pub fn is_bundle(bytes: &[u8]) -> bool {
        bytes.starts_with(BUNDLE_MAGIC)
    }

    /// Splits an encoded bundle into its parts (each to be decoded with
    /// [`Envelope::decode`] on its own, so one bad part does not take its
    /// neighbours with it).
    pub fn split(bytes: &[u8]) -> Result<Vec<&[u8]>, EnvelopeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != BUNDLE_MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let version = r.u8()?;
        if version != BUNDLE_VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let count = u16::from_be_bytes(r.array()?) as usize;
        if count == 0 {
            return Err(EnvelopeError::Field { field: "parts" });
        }
        // Each part takes at least its 4-byte length: a count the bytes
        // cannot hold is refused before anything is allocated for it.
        if count > r.0.len() / 4 {
            return Err(EnvelopeError::Truncated);
        }
        let mut parts = Vec::with_capacity(count);
        for _ in 0..count {
            let len = u32::from_be_bytes(r.array()?) as usize;
            parts.push(r.take(len)?);
        }
        if !r.0.is_empty() {
            return Err(EnvelopeError::Trailing);
        }
        Ok(parts)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            message_id: Envelope::new_message_id(),
            account_id: Some(AccountId::parse("acme").unwrap()),
            key_id: KeyId::from_u64(42),
            key_digest: KeyDigest::of_secret("k"),
            auth_mode: AuthMode::Provisional,
            received_at_ms: 1_790_000_000_123,
            content_encoding: ContentEncoding::Gzip,
            batch_id: BatchId::parse("batch-7"),
            body: Bytes::from_static(b"{\"x\":1}"),
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(Envelope::decode(&e.encode()), Ok(e.clone()));
        let mut e2 = e.clone();
        e2.batch_id = None;
        e2.auth_mode = AuthMode::Confirmed;
        e2.body.clear();
        assert_eq!(Envelope::decode(&e2.encode()), Ok(e2));
        // Provisional pushes may not know their account yet...
        let mut e3 = e;
        e3.account_id = None;
        assert_eq!(Envelope::decode(&e3.encode()), Ok(e3.clone()));
        // ...confirmed ones must.
        e3.auth_mode = AuthMode::Confirmed;
        assert_eq!(
            Envelope::decode(&e3.encode()),
            Err(EnvelopeError::Field {
                field: "account_id"
            })
        );
    }

    #[test]
    fn message_ids_are_v7_and_ordered() {
        let a = Envelope::new_message_id();
        let b = Envelope::new_message_id();
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn dedup_key_prefers_batch_id() {
        let e = sample();
        assert_eq!(e.dedup_key(), "b:000000000000002a:batch-7");
        let mut e2 = e.clone();
        e2.batch_id = None;
        assert!(e2.dedup_key().starts_with("m:"));
    }

    #[test]
    fn corrupt_input_is_rejected() {
        let bytes = sample().encode();
        assert_eq!(Envelope::decode(b"XXXX"), Err(EnvelopeError::BadMagic));
        assert_eq!(
            Envelope::decode(&bytes[..10]),
            Err(EnvelopeError::Truncated)
        );
        assert_eq!(
            Envelope::decode(&bytes[..bytes.len() - 1]),
            Err(EnvelopeError::Truncated)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Envelope::decode(&longer), Err(EnvelopeError::Trailing));
        let mut v = bytes.clone();
        v[4] = 9;
        assert_eq!(Envelope::decode(&v), Err(EnvelopeError::Version(9)));
        let mut v = bytes.clone();
        v[5] = 0x80;
        assert_eq!(
            Envelope::decode(&v),
            Err(EnvelopeError::Field { field: "flags" })
        );
        let mut v = bytes;
        v[70] = 7;
        assert_eq!(
            Envelope::decode(&v),
            Err(EnvelopeError::Field {
                field: "content_encoding"
            })
        );
    }

    #[test]
    fn a_bundle_splits_into_its_envelopes() {
        let (a, b) = (sample(), sample());
        let mut bundle = Bundle::new();
        assert!(bundle.is_empty());
        assert!(bundle.push(&a.encode()));
        assert!(bundle.push(&b.encode()));
        assert_eq!(bundle.parts(), 2);
        let bytes = bundle.into_bytes();
        assert!(Bundle::is_bundle(&bytes));
        assert!(!Bundle::is_bundle(&a.encode()));
        let parts = Bundle::split(&bytes).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(Envelope::decode(parts[0]), Ok(a));
        assert_eq!(Envelope::decode(parts[1]), Ok(b));
    }

    #[test]
    fn a_corrupt_bundle_is_rejected() {
        let mut bundle = Bundle::new();
        bundle.push(&sample().encode());
        let bytes = bundle.into_bytes();
        assert_eq!(
            Bundle::split(&bytes[..bytes.len() - 1]),
            Err(EnvelopeError::Truncated)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Bundle::split(&longer), Err(EnvelopeError::Trailing));
        let mut v = bytes.clone();
        v[4] = 2;
        assert_eq!(Bundle::split(&v), Err(EnvelopeError::Version(2)));
        assert_eq!(
            Bundle::split(&Bundle::new().into_bytes()),
            Err(EnvelopeError::Field { field: "parts" })
        );
        // A count far larger than the bytes can hold.
        let mut v = Bundle::new().into_bytes();
        v[5..7].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Bundle::split(&v), Err(EnvelopeError::Truncated));
        assert_eq!(Bundle::split(b"INLE"), Err(EnvelopeError::BadMagic));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(&bytes);
            let _ = Bundle::split(&bytes);
        }

        #[test]
        fn round_trip_any(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            account in "[a-z0-9][a-z0-9._-]{0,63}",
            batch in proptest::option::of("[A-Za-z0-9_-]{1,64}"),
            received in any::<i64>(),
            key in any::<u64>(),
            provisional in any::<bool>(),
        ) {
            let e = Envelope {
                message_id: Envelope::new_message_id(),
                account_id: Some(AccountId::parse(&account).unwrap()),
                key_id: KeyId::from_u64(key),
                key_digest: KeyDigest::of_secret(&account),
                auth_mode: if provisional { AuthMode::Provisional } else { AuthMode::Confirmed },
                received_at_ms: received,
                content_encoding: ContentEncoding::Identity,
                batch_id: batch.as_deref().and_then(BatchId::parse),
                body: body.into(),
            };
            prop_assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        }
    }
}
