//! Strict, canonical postcard decoding behind a domain-separation tag and a format version.
//!
//! Every signed document starts with an 8-byte ASCII tag and a little-endian `u16` format
//! version (FORMAT.md §2). The body is postcard. Decoding is strict: the tag and version are
//! checked before the body is touched, trailing bytes are rejected, and the decoded value must
//! re-encode to exactly the received bytes — so every accepted document has one encoding.
//! The canonical check compares while serialising and needs no buffer.

use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};

use crate::error::{Document, Error};

/// Length of the tag + version prefix of every tagged document.
pub const PREFIX_LEN: usize = 10;

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// A serialiser output that compares each byte against the expected encoding instead of storing it.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl Flavor for Compare<'_> {
    type Output = bool;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        match self.expected.get(self.pos) {
            Some(&b) if b == data => {
                // Cannot overflow: pos < expected.len() here.
                self.pos = self.pos.saturating_add(1);
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.pos == self.expected.len())
    }
}

/// Decodes `body` as exactly one canonical `T`.
pub fn decode_body<'a, T>(body: &'a [u8], doc: Document) -> Result<T, Error>
where
    T: Deserialize<'a> + Serialize,
{
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|_| Error::Malformed(doc))?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes(doc));
    }
    let canonical = postcard::serialize_with_flavor(
        &value,
        Compare {
            expected: body,
            pos: 0,
        },
    )
    .unwrap_or(false);
    if !canonical {
        return Err(Error::NonCanonical(doc));
    }
    Ok(value)
}

/// Checks the tag and version prefix and decodes the body that follows.
pub fn decode_tagged<'a, T>(bytes: &'a [u8], tag: &[u8; 8], doc: Document) -> Result<T, Error>
where
    T: Deserialize<'a> + Serialize,
{
    let body = check_prefix(bytes, tag, doc)?;
    decode_body(body, doc)
}

/// Checks the tag and version prefix; returns the body.
pub fn check_prefix<'a>(bytes: &'a [u8], tag: &[u8; 8], doc: Document) -> Result<&'a [u8], Error> {
    if bytes.get(..8) != Some(&tag[..]) {
        return Err(Error::WrongTag(doc));
    }
    let version = match bytes.get(8..PREFIX_LEN) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => return Err(Error::Malformed(doc)),
    };
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion(doc, version));
    }
    bytes.get(PREFIX_LEN..).ok_or(Error::Malformed(doc))
}

/// Encodes `value` behind `tag` and the current format version.
#[cfg(feature = "alloc")]
pub fn encode_tagged<T: Serialize>(value: &T, tag: &[u8; 8]) -> Result<alloc::vec::Vec<u8>, Error> {
    let mut out = alloc::vec::Vec::with_capacity(128);
    out.extend_from_slice(tag);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let body = postcard::to_allocvec(value).map_err(|_| Error::TooLarge)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Serde support for 64-byte arrays (ed25519 signatures) as a fixed tuple: 64 raw bytes in postcard.
pub mod bytes64 {
    use core::fmt;

    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    /// Serialises as a 64-element tuple.
    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }

    /// Deserialises a 64-element tuple.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut out = [0u8; 64];
                for slot in out.iter_mut() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(64, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_tuple(64, V)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // fixed test sizes
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        n: u32,
        flag: bool,
    }

    const TAG: &[u8; 8] = b"SGL-TEST";

    fn prefixed(body: &[u8]) -> ([u8; 32], usize) {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(TAG);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..10 + body.len()].copy_from_slice(body);
        (out, 10 + body.len())
    }

    #[test]
    fn canonical_body_decodes() {
        let (b, n) = prefixed(&[0x7f, 0x01]);
        let d: Doc = decode_tagged(&b[..n], TAG, Document::Manifest).unwrap();
        assert_eq!(d, Doc { n: 127, flag: true });
    }

    #[test]
    fn overlong_varint_is_non_canonical() {
        // 127 encoded in two bytes instead of one.
        let (b, n) = prefixed(&[0xff, 0x00, 0x01]);
        let r: Result<Doc, _> = decode_tagged(&b[..n], TAG, Document::Manifest);
        assert_eq!(r, Err(Error::NonCanonical(Document::Manifest)));
    }

    #[test]
    fn bool_other_than_zero_or_one_is_malformed() {
        let (b, n) = prefixed(&[0x01, 0x02]);
        let r: Result<Doc, _> = decode_tagged(&b[..n], TAG, Document::Manifest);
        assert_eq!(r, Err(Error::Malformed(Document::Manifest)));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let (b, n) = prefixed(&[0x01, 0x01, 0x00]);
        let r: Result<Doc, _> = decode_tagged(&b[..n], TAG, Document::Manifest);
        assert_eq!(r, Err(Error::TrailingBytes(Document::Manifest)));
    }

    #[test]
    fn tag_and_version_are_checked_before_the_body() {
        let (mut b, n) = prefixed(&[0xff, 0xff]);
        b[8] = 2;
        let r: Result<Doc, _> = decode_tagged(&b[..n], TAG, Document::Manifest);
        assert_eq!(r, Err(Error::UnsupportedVersion(Document::Manifest, 2)));
        b[0] = b'X';
        let r: Result<Doc, _> = decode_tagged(&b[..n], TAG, Document::Manifest);
        assert_eq!(r, Err(Error::WrongTag(Document::Manifest)));
        let r: Result<Doc, _> = decode_tagged(&b[..9], b"XGL-TEST", Document::Manifest);
        assert_eq!(r, Err(Error::Malformed(Document::Manifest)));
    }
}
