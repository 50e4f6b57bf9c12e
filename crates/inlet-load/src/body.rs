//! Request bodies, pre-generated so that generating them is not what is
//! measured: a pool of synthetic batches without their first fields
//! ([`BodyPool`]), and one request's body as a fresh head before a pooled
//! tail ([`request_body`]).

use std::time::Duration;

use inlet_domain::WireAgent;

use crate::synthetic::synthetic_batch;

/// How many distinct bodies the pool holds.
pub(crate) const POOL_SIZE: usize = 64;
/// How often the pool is regenerated, so timestamps stay close to now.
pub(crate) const POOL_REFRESH: Duration = Duration::from_secs(5);

/// Pre-generated batch bodies without their first fields: each is the JSON
/// of a synthetic batch from `"app":` to the closing brace, compressed on
/// its own when gzip is on.
#[derive(Debug)]
pub(crate) struct BodyPool {
    pub tails: Vec<(Vec<u8>, u64)>,
}

impl BodyPool {
    pub(crate) fn generate(app: &str, environment: &str, gzip: bool) -> BodyPool {
        let mut rng = rand::rng();
        let agent = WireAgent {
            name: "inlet-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: Some("load".into()),
        };
        let now = inlet_domain::now_ms();
        let tails = (0..POOL_SIZE)
            .map(|_| {
                let batch = synthetic_batch(&mut rng, &agent, app, environment, now);
                let items =
                    (batch.transactions.len() + batch.metrics.len() + batch.errors.len()) as u64;
                let mut v = serde_json::to_value(&batch).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.remove("batch_id");
                    m.remove("agent");
                }
                let json = v.to_string();
                let tail = json.strip_prefix('{').unwrap_or(&json).as_bytes().to_vec();
                let tail = if gzip {
                    inlet_domain::ContentEncoding::Gzip.encode(&tail)
                } else {
                    tail
                };
                (tail, items)
            })
            .collect();
        BodyPool { tails }
    }
}

/// A body for one request: a fresh head (`{"batch_id":…,"agent":…,`)
/// followed by a pooled tail.
///
/// With gzip, the head is its own gzip member in a stored (uncompressed)
/// deflate block, and the pooled tail a second, compressed member: RFC 1952
/// defines a multi-member file as the concatenation of its members, and the
/// server decodes every member. A fresh `batch_id` per request then costs
/// a few hundred bytes of copying instead of a whole compression.
pub(crate) fn request_body(head: &[u8], tail: &[u8], gzip: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(head.len() + tail.len() + 32);
    if gzip {
        stored_gzip_member(head, &mut body);
    } else {
        body.extend_from_slice(head);
    }
    body.extend_from_slice(tail);
    body
}

/// Appends `data` (at most 64 KiB) as one gzip member holding a single
/// stored deflate block (RFC 1952 §2.3 framing around an RFC 1951 §3.2.4
/// stored block; the CRC-32 is `crc32fast`'s).
///
/// The bytes are exactly those of `flate2`'s
/// `GzEncoder::new(_, Compression::none())` but for the header's XFL byte
/// (the test `the_stored_member_is_flate2s_uncompressed_member` checks it);
/// they are written by hand because `flate2` cannot emit them without a
/// compressor, and a compressor costs what the generator must not: every
/// encoder allocates and zeroes miniz_oxide's window and hash tables
/// (hundreds of KiB) even for level 0. Measured for a 145-byte head in a
/// release build on the 2-core development machine: about 14 µs per head
/// through `GzEncoder` with mimalloc (the `inlet` binary's allocator),
/// about 200 µs with the system allocator, and about 7 µs reusing one
/// `flate2::Compress` with `reset()` (which zeroes the tables again, and
/// still leaves the gzip header and trailer to write by hand) — against
/// about 0.1 µs here, while the whole generator spends about 50 µs of CPU
/// per request (`docs/client.md`). With `flate2` the generator would
/// spend a quarter to four times its budget on ten bytes of framing.
fn stored_gzip_member(data: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let data = &data[..usize::from(len)];
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    // BFINAL=1, BTYPE=00 (stored), then LEN and its complement.
    out.push(1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;

    use inlet_domain::{Batch, BatchLimits, now_ms};

    use super::*;

    #[test]
    fn the_stored_member_is_flate2s_uncompressed_member() {
        for len in [0, 1, 145, 4096, 30_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut ours = Vec::new();
            stored_gzip_member(&data, &mut ours);
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
            e.write_all(&data).unwrap();
            let mut theirs = e.finish().unwrap();
            // XFL: flate2 says "fastest algorithm" (4); no algorithm ran here.
            assert_eq!(theirs[8], 4);
            theirs[8] = 0;
            assert_eq!(ours, theirs, "{len} bytes");
        }
    }

    #[test]
    fn request_bodies_are_valid_batches_with_fresh_heads() {
        for gzip in [true, false] {
            let pool = BodyPool::generate("shop", "load", gzip);
            assert_eq!(pool.tails.len(), POOL_SIZE);
            let (tail, items) = &pool.tails[0];
            let head = format!(
                "{{\"batch_id\":\"b-1\",\"agent\":{},",
                r#"{"name":"inlet-load","version":"1","hostname":"load-0007"}"#
            );
            let body = request_body(head.as_bytes(), tail, gzip);
            let encoding = if gzip {
                inlet_domain::ContentEncoding::Gzip
            } else {
                inlet_domain::ContentEncoding::Identity
            };
            let json = encoding.decode(&body, 1 << 20).unwrap();
            let b = Batch::decode(&json, &BatchLimits::default(), now_ms()).unwrap();
            assert_eq!(b.batch_id().unwrap().as_str(), "b-1");
            assert_eq!(b.agent().hostname.as_deref(), Some("load-0007"));
            assert_eq!(b.item_count() as u64, *items);
        }
    }
}
