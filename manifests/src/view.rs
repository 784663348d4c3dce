//! The one envelope parser: a zero-copy view over the envelope bytes (FORMAT.md §5, step 2).
//!
//! The envelope is postcard (§1), but verification reads it without building copies: the two
//! signature lists stay borrowed `N × 96`-byte runs, iterated in place. This keeps the
//! bootloader's stack and flash small. [`crate::Envelope::decode`] (for tools) is built on this
//! view, so there is one parser; the property tests check it against postcard's encoder.

use crate::error::{Document, Error};
use crate::keys::SignatureEntry;
use crate::MAX_KEYS;

/// Encoded length of one signature entry: key id then signature.
pub const SIGNATURE_ENTRY_LEN: usize = 96;

/// A borrowed, validated signature list: at most [`MAX_KEYS`] entries of 96 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes<'a>(&'a [u8]);

impl<'a> SignatureBytes<'a> {
    /// The entries, decoded one at a time.
    pub fn iter(&self) -> impl Iterator<Item = SignatureEntry> + 'a {
        self.0.chunks_exact(SIGNATURE_ENTRY_LEN).map(|entry| {
            let (id, sig) = entry.split_at(32);
            let mut out = SignatureEntry {
                key_id: [0; 32],
                signature: [0; 64],
            };
            out.key_id.copy_from_slice(id);
            out.signature.copy_from_slice(sig);
            out
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len() / SIGNATURE_ENTRY_LEN
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The four envelope fields, borrowed from the envelope bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeView<'a> {
    /// The exact key set bytes root keys signed.
    pub key_set: &'a [u8],
    /// Root signatures over `key_set`.
    pub key_set_signatures: SignatureBytes<'a>,
    /// The exact manifest bytes release keys signed.
    pub manifest: &'a [u8],
    /// Release signatures over `manifest`.
    pub manifest_signatures: SignatureBytes<'a>,
}

struct Reader<'a> {
    rest: &'a [u8],
}

const DOC: Document = Document::Envelope;

impl<'a> Reader<'a> {
    /// A canonical (minimal) unsigned LEB128 varint that fits in a `u32`.
    fn varint(&mut self) -> Result<u32, Error> {
        let mut value: u32 = 0;
        for (i, shift) in [0u32, 7, 14, 21, 28].into_iter().enumerate() {
            let (&byte, rest) = self.rest.split_first().ok_or(Error::Malformed(DOC))?;
            self.rest = rest;
            let low = u32::from(byte & 0x7f);
            // The fifth byte may only carry the top four bits of a u32.
            if i == 4 && low > 0x0f {
                return Err(Error::Malformed(DOC));
            }
            value |= low.checked_shl(shift).ok_or(Error::Malformed(DOC))?;
            if byte & 0x80 == 0 {
                // A final zero byte after the first adds nothing: an overlong encoding.
                if i > 0 && byte == 0 {
                    return Err(Error::NonCanonical(DOC));
                }
                return Ok(value);
            }
        }
        Err(Error::Malformed(DOC))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        if len > self.rest.len() {
            return Err(Error::Malformed(DOC));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn byte_string(&mut self) -> Result<&'a [u8], Error> {
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| Error::Malformed(DOC))?)
    }

    fn signatures(&mut self) -> Result<SignatureBytes<'a>, Error> {
        let count = usize::try_from(self.varint()?).map_err(|_| Error::Malformed(DOC))?;
        if count > MAX_KEYS {
            return Err(Error::Malformed(DOC));
        }
        // count ≤ 8, so the product cannot overflow.
        let len = count
            .checked_mul(SIGNATURE_ENTRY_LEN)
            .ok_or(Error::Malformed(DOC))?;
        Ok(SignatureBytes(self.take(len)?))
    }
}

impl<'a> EnvelopeView<'a> {
    /// Step 2: reads exactly one envelope from `bytes`: canonical varints, lengths within the
    /// bytes, at most eight signatures per list, nothing left over.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader { rest: bytes };
        let view = EnvelopeView {
            key_set: r.byte_string()?,
            key_set_signatures: r.signatures()?,
            manifest: r.byte_string()?,
            manifest_signatures: r.signatures()?,
        };
        if !r.rest.is_empty() {
            return Err(Error::TrailingBytes(DOC));
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(bytes: &[u8]) -> Result<u32, Error> {
        Reader { rest: bytes }.varint()
    }

    #[test]
    fn varints_are_minimal_and_bounded() {
        assert_eq!(varint(&[0x00]), Ok(0));
        assert_eq!(varint(&[0x7f]), Ok(127));
        assert_eq!(varint(&[0x80, 0x01]), Ok(128));
        assert_eq!(varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(u32::MAX));
        assert_eq!(varint(&[0x80, 0x00]), Err(Error::NonCanonical(DOC)));
        assert_eq!(varint(&[0xff, 0x80, 0x00]), Err(Error::NonCanonical(DOC)));
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(Error::Malformed(DOC))
        );
        assert_eq!(
            varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(Error::Malformed(DOC))
        );
        assert_eq!(varint(&[0x80]), Err(Error::Malformed(DOC)));
        assert_eq!(varint(&[]), Err(Error::Malformed(DOC)));
    }

    #[test]
    fn lists_and_lengths_are_bounded() {
        // key set "ab", nine signatures: refused before reading them.
        assert_eq!(
            EnvelopeView::parse(&[2, b'a', b'b', 9]),
            Err(Error::Malformed(DOC))
        );
        // a length past the end.
        assert_eq!(EnvelopeView::parse(&[5, b'a']), Err(Error::Malformed(DOC)));
        // empty lists, one-byte manifest, then a stray byte.
        assert_eq!(
            EnvelopeView::parse(&[0, 0, 1, b'm', 0, 7]),
            Err(Error::TrailingBytes(DOC))
        );
        let v = EnvelopeView::parse(&[0, 0, 1, b'm', 0]).unwrap();
        assert_eq!(v.manifest, b"m");
        assert!(v.key_set.is_empty() && v.key_set_signatures.is_empty());
    }
}
