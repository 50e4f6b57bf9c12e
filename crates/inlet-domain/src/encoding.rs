//! Body content encodings and bounded decompression.
//!
//! Decompression never produces more than the caller's limit (plus one
//! byte, to tell "exactly at the limit" from "over it"): a gzip bomb costs
//! at most `limit` bytes of memory and stops there.

use std::borrow::Cow;
use std::io::Read;

/// How a push body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    /// Not compressed.
    Identity,
    /// gzip (RFC 1952), one or more members.
    Gzip,
    /// HTTP "deflate": zlib-wrapped (RFC 1950); raw deflate is accepted too.
    Deflate,
    /// Zstandard (RFC 8878).
    Zstd,
}

/// A `Content-Encoding` this build cannot decode (HTTP 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported content encoding {0:?} (supported: identity, gzip, deflate, zstd)")]
pub struct UnsupportedEncoding(pub String);

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decompressed body exceeds the limit (HTTP 413).
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was hit, in bytes.
        limit: usize,
    },
    /// The compressed data is corrupt or truncated (HTTP 400).
    #[error("body is not valid {encoding} data: {reason}")]
    Corrupt {
        /// The encoding that failed.
        encoding: &'static str,
        /// Decoder's explanation.
        reason: String,
    },
}

impl ContentEncoding {
    /// Parses a `Content-Encoding` header value (case-insensitive; absent
    /// or empty means identity).
    pub fn parse(header: &str) -> Result<Self, UnsupportedEncoding> {
        let v = header.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("identity") {
            Ok(ContentEncoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Ok(ContentEncoding::Gzip)
        } else if v.eq_ignore_ascii_case("deflate") {
            Ok(ContentEncoding::Deflate)
        } else if v.eq_ignore_ascii_case("zstd") {
            Ok(ContentEncoding::Zstd)
        } else {
            Err(UnsupportedEncoding(v.chars().take(64).collect()))
        }
    }

    /// The header token.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Deflate => "deflate",
            ContentEncoding::Zstd => "zstd",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ContentEncoding::Identity => 0,
            ContentEncoding::Gzip => 1,
            ContentEncoding::Deflate => 2,
            ContentEncoding::Zstd => 3,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => ContentEncoding::Identity,
            1 => ContentEncoding::Gzip,
            2 => ContentEncoding::Deflate,
            3 => ContentEncoding::Zstd,
            _ => return None,
        })
    }

    /// Decodes `input`, refusing to produce more than `limit` bytes.
    pub fn decode<'a>(self, input: &'a [u8], limit: usize) -> Result<Cow<'a, [u8]>, DecodeError> {
        match self {
            ContentEncoding::Identity => {
                if input.len() > limit {
                    Err(DecodeError::TooLarge { limit })
                } else {
                    Ok(Cow::Borrowed(input))
                }
            }
            ContentEncoding::Gzip => read_bounded(
                flate2::read::MultiGzDecoder::new(input),
                input,
                limit,
                "gzip",
            ),
            ContentEncoding::Deflate => {
                // A zlib stream starts with a header whose first 16 bits are
                // a multiple of 31 and whose method is 8 (deflate).
                let zlib = input.len() >= 2
                    && input[0] & 0x0f == 8
                    && u16::from_be_bytes([input[0], input[1]]).is_multiple_of(31);
                if zlib {
                    read_bounded(
                        flate2::read::ZlibDecoder::new(input),
                        input,
                        limit,
                        "deflate",
                    )
                } else {
                    read_bounded(
                        flate2::read::DeflateDecoder::new(input),
                        input,
                        limit,
                        "deflate",
                    )
                }
            }
            ContentEncoding::Zstd => match zstd::stream::read::Decoder::new(input) {
                Ok(d) => read_bounded(d, input, limit, "zstd"),
                Err(e) => Err(DecodeError::Corrupt {
                    encoding: "zstd",
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// Compresses `input` (for clients and tests).
    pub fn encode(self, input: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        match self {
            ContentEncoding::Identity => input.to_vec(),
            ContentEncoding::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                // Writing to a Vec cannot fail.
                let _ = e.write_all(input);
                e.finish().unwrap_or_default()
            }
            ContentEncoding::Deflate => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                let _ = e.write_all(input);
                e.finish().unwrap_or_default()
            }
            ContentEncoding::Zstd => zstd::bulk::compress(input, 3).unwrap_or_default(),
        }
    }
}

fn read_bounded<'a, R: Read>(
    reader: R,
    input: &[u8],
    limit: usize,
    encoding: &'static str,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    // Start small: the compressed size is a hint, the limit is the bound.
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit).min(1 << 20));
    let mut bounded = reader.take(limit as u64 + 1);
    match bounded.read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(DecodeError::TooLarge { limit }),
        Ok(_) => Ok(Cow::Owned(out)),
        Err(e) => Err(DecodeError::Corrupt {
            encoding,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ContentEncoding; 4] = [
        ContentEncoding::Identity,
        ContentEncoding::Gzip,
        ContentEncoding::Deflate,
        ContentEncoding::Zstd,
    ];

    #[test]
    fn round_trips() {
        let data = b"{\"hello\": \"world\"}".repeat(100);
        for enc in ALL {
            let packed = enc.encode(&data);
            assert_eq!(enc.decode(&packed, data.len()).unwrap().as_ref(), &data[..]);
            assert_eq!(ContentEncoding::parse(enc.as_str()), Ok(enc));
            assert_eq!(ContentEncoding::from_byte(enc.to_byte()), Some(enc));
        }
    }

    #[test]
    fn header_parsing() {
        assert_eq!(ContentEncoding::parse(""), Ok(ContentEncoding::Identity));
        assert_eq!(ContentEncoding::parse(" GZIP "), Ok(ContentEncoding::Gzip));
        assert!(ContentEncoding::parse("br").is_err());
        assert!(ContentEncoding::parse("gzip, br").is_err());
    }

    #[test]
    fn raw_deflate_is_accepted() {
        use std::io::Write as _;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"raw deflate body").unwrap();
        let raw = e.finish().unwrap();
        assert_eq!(
            ContentEncoding::Deflate.decode(&raw, 100).unwrap().as_ref(),
            b"raw deflate body"
        );
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        for enc in ALL {
            let packed = enc.encode(&zeros);
            assert_eq!(
                enc.decode(&packed, 1 << 20),
                Err(DecodeError::TooLarge { limit: 1 << 20 }),
                "{enc:?}"
            );
        }
        // Exactly at the limit is fine.
        let packed = ContentEncoding::Gzip.encode(&zeros[..1000]);
        assert_eq!(
            ContentEncoding::Gzip.decode(&packed, 1000).unwrap().len(),
            1000
        );
    }

    #[test]
    fn garbage_and_truncation_are_corrupt() {
        for enc in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
            assert!(
                matches!(
                    enc.decode(b"definitely not compressed", 100),
                    Err(DecodeError::Corrupt { .. })
                ),
                "{enc:?}"
            );
        }
        let data = b"0123456789".repeat(1000);
        for enc in [
            ContentEncoding::Gzip,
            ContentEncoding::Deflate,
            ContentEncoding::Zstd,
        ] {
            let packed = enc.encode(&data);
            let cut = &packed[..packed.len() / 2];
            // Either an error, or (for a stream cut on a block boundary) a
            // short output — never the full data and never a panic.
            match enc.decode(cut, data.len()) {
                Err(DecodeError::Corrupt { .. }) => {}
                Ok(out) => assert!(out.len() < data.len(), "{enc:?}"),
                Err(e) => panic!("{enc:?}: {e}"),
            }
        }
    }
}
