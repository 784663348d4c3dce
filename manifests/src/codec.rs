//! The wire format (FORMAT.md §1–2): a tag + version prefix, then a postcard body.
//!
//! Every signed document starts with an 8-byte ASCII tag and a little-endian `u16` format
//! version. The body is postcard, read here by hand with [`Reader`]: each field has exactly one
//! accepted encoding (minimal varints, `0`/`1` option tags, known enum variants, UTF-8
//! strings, bounded lists) and nothing may follow the value, so every accepted document is the
//! one postcard encoding of what was decoded. The property tests check this against postcard's
//! encoder, which the builders (feature `alloc`) use to write documents.
//!
//! Reading by hand, rather than through serde, keeps the verifier small and its stack shallow
//! enough for the bootloader, and borrows every string and byte run from the input.

use crate::error::{Document, Error};

/// Length of the tag + version prefix of every tagged document.
pub const PREFIX_LEN: usize = 10;

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// A strict reader over the postcard body of one document; errors name that document.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    doc: Document,
}

impl<'a> Reader<'a> {
    /// Reads an untagged body (the envelope).
    pub(crate) fn new(bytes: &'a [u8], doc: Document) -> Self {
        Reader { rest: bytes, doc }
    }

    /// Checks the tag and version prefix, then reads the body behind it.
    // Inlined, as `tagged_versions`: the caller then builds the reader from the body with its
    // own constant `doc`, rather than unpacking a returned `Result<Reader>`.
    #[inline(always)]
    pub(crate) fn tagged(bytes: &'a [u8], tag: &[u8; 8], doc: Document) -> Result<Self, Error> {
        Ok(Reader::new(check_prefix(bytes, tag, doc)?, doc))
    }

    /// As [`Reader::tagged`] for a document with format versions `1..=newest` (FORMAT.md §7):
    /// the reader and the version the document declares.
    #[inline(always)]
    pub(crate) fn tagged_versions(
        bytes: &'a [u8],
        tag: &[u8; 8],
        doc: Document,
        newest: u16,
    ) -> Result<(Self, u16), Error> {
        let (body, version) = split_prefix(bytes, tag, doc, newest)?;
        Ok((Reader::new(body, doc), version))
    }

    fn malformed(&self) -> Error {
        Error::Malformed(self.doc)
    }

    /// Ends the document: nothing may follow the value.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes(self.doc))
        }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// `len` raw bytes.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], Error> {
        if len > self.rest.len() {
            return Err(self.malformed());
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// One raw byte: a `u8`.
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        let (&byte, rest) = self.rest.split_first().ok_or(self.malformed())?;
        self.rest = rest;
        Ok(byte)
    }

    /// A minimal unsigned LEB128 varint of at most `bits` significant bits.
    fn varint(&mut self, bits: u32) -> Result<u64, Error> {
        let mut value: u64 = 0;
        let mut shift: u32 = 0;
        loop {
            let byte = self.u8()?;
            let low = u64::from(byte & 0x7f);
            // The last byte may only carry the bits the type has left.
            let room = bits.saturating_sub(shift);
            if room < 7 && low.checked_shr(room).unwrap_or(0) != 0 {
                return Err(self.malformed());
            }
            value |= low.checked_shl(shift).ok_or(self.malformed())?;
            if byte & 0x80 == 0 {
                // A final zero byte after the first adds nothing: an overlong encoding.
                if shift > 0 && byte == 0 {
                    return Err(Error::NonCanonical(self.doc));
                }
                return Ok(value);
            }
            shift = shift.saturating_add(7);
            if shift >= bits {
                return Err(self.malformed());
            }
        }
    }

    /// A `u32` varint.
    // A thin wrapper, inlined as `u64`. `varint(32)` refuses any value of more than 32
    // significant bits, so the cast keeps every bit.
    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        self.varint(32).map(|v| v as u32)
    }

    /// A `u64` varint.
    // A thin wrapper: inlined, each caller calls `varint` itself (less flash).
    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        self.varint(64)
    }

    /// A list length of at most `max` elements.
    pub(crate) fn len(&mut self, max: usize) -> Result<usize, Error> {
        let n = usize::try_from(self.u32()?).map_err(|_| self.malformed())?;
        if n > max {
            return Err(self.malformed());
        }
        Ok(n)
    }

    /// A length-prefixed byte string (`&[u8]`).
    pub(crate) fn byte_string(&mut self) -> Result<&'a [u8], Error> {
        let len = usize::try_from(self.u32()?).map_err(|_| self.malformed())?;
        self.take(len)
    }

    /// A length-prefixed UTF-8 string (`&str`).
    pub(crate) fn str(&mut self) -> Result<&'a str, Error> {
        let bytes = self.byte_string()?;
        core::str::from_utf8(bytes).map_err(|_| self.malformed())
    }

    /// A fixed array of `N` raw bytes.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        self.array_into(&mut out)?;
        Ok(out)
    }

    /// `out.len()` raw bytes into `out`: for fields read where they stay, rather than returned
    /// (a 32-byte array inside a `Result` is copied byte by byte at every call site).
    pub(crate) fn array_into(&mut self, out: &mut [u8]) -> Result<(), Error> {
        out.copy_from_slice(self.take(out.len())?);
        Ok(())
    }

    /// An `Option` of a fixed array, read into `out` (see [`Reader::array_into`]).
    pub(crate) fn option_into<const N: usize>(
        &mut self,
        out: &mut Option<[u8; N]>,
    ) -> Result<(), Error> {
        if self.present()? {
            self.array_into(out.insert([0; N]))?;
        }
        Ok(())
    }

    /// An `Option` tag: `0` (none) or `1` (some).
    fn present(&mut self) -> Result<bool, Error> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed()),
        }
    }

    /// A list of at most `max` fixed-size entries of `entry_len` bytes, left in place: the
    /// count, then the entries' bytes.
    pub(crate) fn entries(&mut self, max: usize, entry_len: usize) -> Result<&'a [u8], Error> {
        let n = self.len(max)?;
        let len = n.checked_mul(entry_len).ok_or(self.malformed())?;
        self.take(len)
    }

    /// A list of at most [`crate::MAX_KEYS`] public keys, borrowed in place.
    pub(crate) fn keys(&mut self) -> Result<&'a [[u8; 32]], Error> {
        match self.entries(crate::MAX_KEYS, 32)?.as_chunks::<32>() {
            (keys, []) => Ok(keys),
            _ => Err(self.malformed()),
        }
    }

    /// An `Option`: a `0`/`1` tag, then the value if `1`.
    pub(crate) fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.present()? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A list of at most `N` elements into a fixed-capacity vector.
    pub(crate) fn list<T, const N: usize>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<heapless::Vec<T, N>, Error> {
        let n = self.len(N)?;
        let mut out = heapless::Vec::new();
        for _ in 0..n {
            let item = read(self)?;
            out.push(item).map_err(|_| self.malformed())?;
        }
        Ok(out)
    }
}

/// Checks the tag and version prefix; returns the body.
pub fn check_prefix<'a>(bytes: &'a [u8], tag: &[u8; 8], doc: Document) -> Result<&'a [u8], Error> {
    split_prefix(bytes, tag, doc, FORMAT_VERSION).map(|(body, _)| body)
}

/// Checks the tag and that the declared format version is one of `1..=newest`; returns the
/// body and the version. The one prefix check of every tagged document.
#[inline(never)]
fn split_prefix<'a>(
    bytes: &'a [u8],
    tag: &[u8; 8],
    doc: Document,
    newest: u16,
) -> Result<(&'a [u8], u16), Error> {
    if bytes.get(..8) != Some(&tag[..]) {
        return Err(Error::WrongTag(doc));
    }
    let version = match bytes.get(8..PREFIX_LEN) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => return Err(Error::Malformed(doc)),
    };
    if version == 0 || version > newest {
        return Err(Error::UnsupportedVersion(doc, version));
    }
    Ok((
        bytes.get(PREFIX_LEN..).ok_or(Error::Malformed(doc))?,
        version,
    ))
}

/// Encodes `value` behind `tag` and the current format version.
#[cfg(feature = "alloc")]
pub fn encode_tagged<T: serde::Serialize>(
    value: &T,
    tag: &[u8; 8],
    doc: Document,
) -> Result<alloc::vec::Vec<u8>, Error> {
    encode_tagged_version(value, tag, FORMAT_VERSION, doc)
}

/// Encodes `value` behind `tag` and format `version` (documents with more than one, §7).
#[cfg(feature = "alloc")]
pub fn encode_tagged_version<T: serde::Serialize>(
    value: &T,
    tag: &[u8; 8],
    version: u16,
    doc: Document,
) -> Result<alloc::vec::Vec<u8>, Error> {
    let mut out = alloc::vec::Vec::with_capacity(128);
    out.extend_from_slice(tag);
    out.extend_from_slice(&version.to_le_bytes());
    let body = postcard::to_allocvec(value).map_err(|_| Error::TooLarge(doc))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Serde support for 64-byte arrays (ed25519 signatures) as a fixed tuple: 64 raw bytes in postcard.
#[cfg(feature = "alloc")]
pub mod bytes64 {
    use serde::ser::SerializeTuple;
    use serde::Serializer;

    /// Serialises as a 64-element tuple.
    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // fixed test sizes
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    const TAG: &[u8; 8] = b"SGL-TEST";
    const DOC: Document = Document::Manifest;

    /// A test document: a `u32` then an `Option<u8>`.
    fn decode(bytes: &[u8]) -> Result<(u32, Option<u8>), Error> {
        let mut r = Reader::tagged(bytes, TAG, DOC)?;
        let value = (r.u32()?, r.option(Reader::u8)?);
        r.finish()?;
        Ok(value)
    }

    fn prefixed(body: &[u8]) -> Vec<u8> {
        let mut out = TAG.to_vec();
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    fn varint(bytes: &[u8], bits: u32) -> Result<u64, Error> {
        Reader::new(bytes, DOC).varint(bits)
    }

    #[test]
    fn canonical_body_decodes() {
        assert_eq!(decode(&prefixed(&[0x7f, 0x01, 9])), Ok((127, Some(9))));
        assert_eq!(decode(&prefixed(&[0x80, 0x01, 0])), Ok((128, None)));
    }

    #[test]
    fn varints_are_minimal_and_bounded() {
        assert_eq!(varint(&[0x00], 32), Ok(0));
        assert_eq!(varint(&[0x7f], 32), Ok(127));
        assert_eq!(varint(&[0x80, 0x01], 32), Ok(128));
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0x0f], 32),
            Ok(u64::from(u32::MAX))
        );
        let max64 = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&max64, 64), Ok(u64::MAX));
        let mut over64 = max64;
        over64[9] = 0x02;
        assert_eq!(varint(&over64, 64), Err(Error::Malformed(DOC)));
        assert_eq!(varint(&[0x80, 0x00], 32), Err(Error::NonCanonical(DOC)));
        assert_eq!(
            varint(&[0xff, 0x80, 0x00], 64),
            Err(Error::NonCanonical(DOC))
        );
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], 32),
            Err(Error::Malformed(DOC))
        );
        assert_eq!(
            varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 32),
            Err(Error::Malformed(DOC))
        );
        assert_eq!(varint(&[0x80], 32), Err(Error::Malformed(DOC)));
        assert_eq!(varint(&[], 32), Err(Error::Malformed(DOC)));
    }

    #[test]
    fn u32_reads_every_u32_and_nothing_wider() {
        let u32_of = |bytes: &[u8]| Reader::new(bytes, DOC).u32();
        assert_eq!(u32_of(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(u32::MAX));
        assert_eq!(u32_of(&[0x80, 0x80, 0x80, 0x80, 0x08]), Ok(1 << 31));
        // 2^32, and 2^35 - 1: one bit more than a u32 holds, refused rather than cut.
        assert_eq!(
            u32_of(&[0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(Error::Malformed(DOC))
        );
        assert_eq!(
            u32_of(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(Error::Malformed(DOC))
        );
    }

    #[test]
    fn overlong_varint_is_non_canonical() {
        // 127 encoded in two bytes instead of one.
        assert_eq!(
            decode(&prefixed(&[0xff, 0x00, 0x00])),
            Err(Error::NonCanonical(DOC))
        );
    }

    #[test]
    fn option_tags_other_than_zero_or_one_are_malformed() {
        assert_eq!(
            decode(&prefixed(&[0x01, 0x02, 0x05])),
            Err(Error::Malformed(DOC))
        );
    }

    #[test]
    fn strings_must_be_utf8_and_lists_bounded() {
        assert_eq!(Reader::new(&[2, b'o', b'k'], DOC).str(), Ok("ok"));
        assert_eq!(
            Reader::new(&[1, 0xff], DOC).str(),
            Err(Error::Malformed(DOC))
        );
        assert_eq!(
            Reader::new(&[5, b'a'], DOC).byte_string(),
            Err(Error::Malformed(DOC))
        );
        let three: Result<heapless::Vec<u8, 2>, _> =
            Reader::new(&[3, 1, 2, 3], DOC).list(Reader::u8);
        assert_eq!(three, Err(Error::Malformed(DOC)));
        let two: heapless::Vec<u8, 2> = Reader::new(&[2, 1, 2], DOC).list(Reader::u8).unwrap();
        assert_eq!(&two[..], &[1, 2]);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert_eq!(
            decode(&prefixed(&[0x01, 0x00, 0x00])),
            Err(Error::TrailingBytes(DOC))
        );
    }

    #[test]
    fn tag_and_version_are_checked_before_the_body() {
        let mut b = prefixed(&[0xff, 0xff]);
        b[8] = 2;
        assert_eq!(decode(&b), Err(Error::UnsupportedVersion(DOC, 2)));
        b[0] = b'X';
        assert_eq!(decode(&b), Err(Error::WrongTag(DOC)));
        assert_eq!(decode(&TAG[..]), Err(Error::Malformed(DOC)));
    }
}
