//! The one envelope parser: a zero-copy view over the envelope bytes (FORMAT.md §5, step 2).
//!
//! The envelope is postcard (§1), read with the strict [`crate::codec`] reader without building copies: the two
//! signature lists stay borrowed `N × 96`-byte runs, iterated in place. This keeps the
//! bootloader's stack and flash small. [`crate::Envelope::decode`] (for tools) is built on this
//! view, so there is one parser; the property tests check it against postcard's encoder.

use crate::codec::Reader;
use crate::error::{Document, Error};
use crate::keys::SignatureEntry;
use crate::{MAX_ENVELOPE_LEN, MAX_KEYS};

/// Encoded length of one signature entry: key id then signature.
pub const SIGNATURE_ENTRY_LEN: usize = 96;

/// A borrowed, validated signature list: at most [`MAX_KEYS`] entries of 96 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes<'a>(pub(crate) &'a [u8]);

impl<'a> SignatureBytes<'a> {
    /// The entries, decoded one at a time.
    pub fn iter(&self) -> impl Iterator<Item = SignatureEntry> + 'a {
        // Fixed-size chunks (the list is whole entries, checked when it was read): each entry
        // is copied out once, with no length checks or division in the loop.
        let (entries, _) = self.0.as_chunks::<SIGNATURE_ENTRY_LEN>();
        entries.iter().map(|entry| {
            // 96 bytes split at 32: the conversions below cannot fail.
            let (key_id, signature) = entry.split_at(32);
            SignatureEntry {
                key_id: key_id.try_into().unwrap_or([0; 32]),
                signature: signature.try_into().unwrap_or([0; 64]),
            }
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

const DOC: Document = Document::Envelope;

/// A signature list left in place: a count of at most [`MAX_KEYS`], then `count × 96` bytes.
// A thin wrapper: inlined, each caller calls `entries` itself (less flash than a call layer).
#[inline(always)]
pub(crate) fn signatures<'a>(r: &mut Reader<'a>) -> Result<SignatureBytes<'a>, Error> {
    Ok(SignatureBytes(r.entries(MAX_KEYS, SIGNATURE_ENTRY_LEN)?))
}

impl<'a> EnvelopeView<'a> {
    /// Step 2: reads exactly one envelope from `bytes`: at most [`MAX_ENVELOPE_LEN`] bytes,
    /// canonical varints, lengths within the bytes, at most eight signatures per list, nothing
    /// left over.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        // The same bound as the header's `envelope_len` (step 1): no valid bundle carries more.
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(Error::BadLength(DOC));
        }
        let mut r = Reader::new(bytes, DOC);
        let view = EnvelopeView {
            key_set: r.byte_string()?,
            key_set_signatures: signatures(&mut r)?,
            manifest: r.byte_string()?,
            manifest_signatures: signatures(&mut r)?,
        };
        r.finish()?;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_longer_than_any_bundle_holds_are_refused() {
        let zeros = [0u8; MAX_ENVELOPE_LEN + 1];
        assert_eq!(EnvelopeView::parse(&zeros), Err(Error::BadLength(DOC)));
        // At the limit the bytes are read (and here refused for what they hold).
        assert_eq!(
            EnvelopeView::parse(&zeros[..MAX_ENVELOPE_LEN]),
            Err(Error::TrailingBytes(DOC))
        );
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
