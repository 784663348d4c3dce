//! The bundle container: fixed header, signed envelope, zero padding, payload (FORMAT.md §5).

use crate::error::{Document, Error};
use crate::keys::SignatureList;
use crate::keyset::{KeySet, SignedKeySet};
use crate::manifest::Manifest;
use crate::view::EnvelopeView;
use crate::MAX_ENVELOPE_LEN;

/// Length of the fixed bundle header.
pub const HEADER_LEN: usize = 32;

/// Magic bytes that start every bundle.
pub const BUNDLE_MAGIC: &[u8; 8] = b"SGL-BNDL";

/// The header format version of a bundle without a root chain.
pub const HEADER_VERSION: u16 = 1;

/// The header format version of a bundle that carries a root chain (FORMAT.md §5): the
/// reserved field of version 1 holds the chain's length.
pub const HEADER_VERSION_CHAIN: u16 = 2;

/// The structural fields of the fixed header. Nothing here is trusted: step 1 bounds them and
/// step 7 cross-checks them against the signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleHeader {
    /// Length of the root chain that follows the header (0: none, header version 1).
    pub chain_len: u32,
    /// Length of the envelope that follows the header and the chain.
    pub envelope_len: u32,
    /// Offset of the payload from the start of the bundle.
    pub payload_offset: u32,
    /// Length of the payload.
    pub payload_size: u64,
}

fn le_u16(b: &[u8; HEADER_LEN], at: usize) -> u16 {
    let mut x = [0u8; 2];
    x.copy_from_slice(b.get(at..at.saturating_add(2)).unwrap_or(&[0, 0]));
    u16::from_le_bytes(x)
}

fn le_u32(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(b.get(at..at.saturating_add(4)).unwrap_or(&[0; 4]));
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(b.get(at..at.saturating_add(8)).unwrap_or(&[0; 8]));
    u64::from_le_bytes(x)
}

impl BundleHeader {
    /// Step 1 of FORMAT.md §6: magic, version, header length, reserved bytes, envelope length
    /// limits, payload offset after the envelope and within one maximal alignment, no overflow.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, Error> {
        if bytes.get(..8) != Some(&BUNDLE_MAGIC[..]) {
            return Err(Error::WrongTag(Document::Header));
        }
        let version = le_u16(bytes, 8);
        if version != HEADER_VERSION && version != HEADER_VERSION_CHAIN {
            return Err(Error::UnsupportedVersion(Document::Header, version));
        }
        if usize::from(le_u16(bytes, 10)) != HEADER_LEN {
            return Err(Error::BadLength(Document::Header));
        }
        let chain_len = le_u32(bytes, 28);
        if version == HEADER_VERSION && chain_len != 0 {
            return Err(Error::NonZeroReserved);
        }
        if version == HEADER_VERSION_CHAIN
            && (chain_len == 0 || chain_len as usize > crate::rotation::MAX_CHAIN_LEN)
        {
            return Err(Error::BadLength(Document::RootChain));
        }
        let header = BundleHeader {
            chain_len,
            envelope_len: le_u32(bytes, 12),
            payload_offset: le_u32(bytes, 16),
            payload_size: le_u64(bytes, 20),
        };
        if header.envelope_len == 0 || header.envelope_len as usize > MAX_ENVELOPE_LEN {
            return Err(Error::BadLength(Document::Envelope));
        }
        let envelope_end = header.envelope_end()?;
        let padding = header
            .payload_offset
            .checked_sub(envelope_end)
            .ok_or(Error::PayloadOffsetOutOfRange)?;
        if padding >= crate::MAX_ALIGNMENT {
            return Err(Error::PayloadOffsetOutOfRange);
        }
        header.total_len()?;
        Ok(header)
    }

    /// Builds the header for an envelope of `envelope_len` bytes and a payload aligned to
    /// `alignment`.
    pub fn new(envelope_len: usize, alignment: u32, payload_size: u64) -> Result<Self, Error> {
        Self::with_chain(0, envelope_len, alignment, payload_size)
    }

    /// As [`BundleHeader::new`], behind a root chain of `chain_len` bytes (0: none).
    pub fn with_chain(
        chain_len: usize,
        envelope_len: usize,
        alignment: u32,
        payload_size: u64,
    ) -> Result<Self, Error> {
        if envelope_len == 0 || envelope_len > MAX_ENVELOPE_LEN {
            return Err(Error::TooLarge(Document::Envelope));
        }
        if chain_len > crate::rotation::MAX_CHAIN_LEN {
            return Err(Error::TooLarge(Document::RootChain));
        }
        let envelope_len =
            u32::try_from(envelope_len).map_err(|_| Error::TooLarge(Document::Envelope))?;
        let chain_len =
            u32::try_from(chain_len).map_err(|_| Error::TooLarge(Document::RootChain))?;
        let mut header = BundleHeader {
            chain_len,
            envelope_len,
            payload_offset: 0,
            payload_size,
        };
        header.payload_offset = align_up(header.envelope_end()?, alignment)?;
        header.total_len()?;
        Ok(header)
    }

    /// Encodes the 32-byte header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let version = if self.chain_len > 0 {
            HEADER_VERSION_CHAIN
        } else {
            HEADER_VERSION
        };
        let fields: [(usize, &[u8]); 7] = [
            (0, BUNDLE_MAGIC),
            (8, &version.to_le_bytes()),
            (10, &(HEADER_LEN as u16).to_le_bytes()),
            (12, &self.envelope_len.to_le_bytes()),
            (16, &self.payload_offset.to_le_bytes()),
            (20, &self.payload_size.to_le_bytes()),
            (28, &self.chain_len.to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(dst) = out.get_mut(at..at.saturating_add(bytes.len())) {
                dst.copy_from_slice(bytes);
            }
        }
        out
    }

    /// Offset of the envelope: just past the header and the root chain.
    pub fn envelope_start(&self) -> Result<u32, Error> {
        (HEADER_LEN as u32)
            .checked_add(self.chain_len)
            .ok_or(Error::LengthOverflow)
    }

    /// Offset just past the envelope.
    pub fn envelope_end(&self) -> Result<u32, Error> {
        self.envelope_start()?
            .checked_add(self.envelope_len)
            .ok_or(Error::LengthOverflow)
    }

    /// Number of padding bytes between the envelope and the payload.
    pub fn padding_len(&self) -> Result<u32, Error> {
        self.payload_offset
            .checked_sub(self.envelope_end()?)
            .ok_or(Error::PayloadOffsetOutOfRange)
    }

    /// Total bundle length: payload offset plus payload size.
    pub fn total_len(&self) -> Result<u64, Error> {
        u64::from(self.payload_offset)
            .checked_add(self.payload_size)
            .ok_or(Error::LengthOverflow)
    }
}

/// Rounds `value` up to a multiple of `alignment` (a power of two up to 1 MiB).
pub fn align_up(value: u32, alignment: u32) -> Result<u32, Error> {
    if !alignment.is_power_of_two() || alignment > crate::MAX_ALIGNMENT {
        return Err(Error::InvalidAlignment);
    }
    let mask = alignment.checked_sub(1).ok_or(Error::InvalidAlignment)?;
    Ok(value.checked_add(mask).ok_or(Error::LengthOverflow)? & !mask)
}

/// The signed envelope: the key set with its root signatures, then the manifest with its
/// release signatures. Signatures cover the exact bytes carried here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct Envelope<'a> {
    /// The key set and the root signatures over it.
    pub signed_key_set: SignedKeySet<'a>,
    /// The exact signed bytes of the [`Manifest`].
    pub manifest: &'a [u8],
    /// Release-key signatures over `manifest`.
    pub manifest_signatures: SignatureList,
}

impl<'a> Envelope<'a> {
    /// Step 2: strict, canonical decode of the envelope bytes (through [`EnvelopeView`], the
    /// one envelope parser), copying the signatures into lists for editing and display.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let view = EnvelopeView::parse(bytes)?;
        let collect = |sigs: crate::view::SignatureBytes<'a>| -> Result<SignatureList, Error> {
            sigs.iter()
                .try_fold(SignatureList::new(), |mut list, entry| {
                    list.push(entry)
                        .map_err(|_| Error::Malformed(Document::Envelope))?;
                    Ok(list)
                })
        };
        Ok(Envelope {
            signed_key_set: SignedKeySet {
                key_set: view.key_set,
                signatures: collect(view.key_set_signatures)?,
            },
            manifest: view.manifest,
            manifest_signatures: collect(view.manifest_signatures)?,
        })
    }

    /// Encodes the envelope.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        let bytes = postcard::to_allocvec(self).map_err(|_| Error::TooLarge(Document::Envelope))?;
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(Error::TooLarge(Document::Envelope));
        }
        Ok(bytes)
    }

    /// Adds a release signature over the manifest; a second signature by the same key replaces
    /// the first. A key that signs again makes the same entry (ed25519 is deterministic):
    /// [`crate::SignatureAdded::Unchanged`].
    pub fn add_manifest_signature(
        &mut self,
        entry: crate::SignatureEntry,
    ) -> Result<crate::SignatureAdded, Error> {
        crate::keyset::add_signature(&mut self.manifest_signatures, entry, Document::Envelope)
    }

    /// Encodes header, envelope and padding: everything that precedes the payload.
    #[cfg(feature = "alloc")]
    pub fn encode_prefix(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        self.encode_prefix_with_chain(None)
    }

    /// As [`Envelope::encode_prefix`], with a root chain (an encoded `SGL-RCHN` document)
    /// between the header and the envelope.
    #[cfg(feature = "alloc")]
    pub fn encode_prefix_with_chain(
        &self,
        chain: Option<&[u8]>,
    ) -> Result<alloc::vec::Vec<u8>, Error> {
        let manifest = Manifest::decode(self.manifest)?;
        let envelope = self.encode()?;
        let chain = chain.unwrap_or(&[]);
        let header = BundleHeader::with_chain(
            chain.len(),
            envelope.len(),
            manifest.payload_alignment,
            manifest.payload_size,
        )?;
        let mut out = alloc::vec::Vec::with_capacity(header.payload_offset as usize);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(chain);
        out.extend_from_slice(&envelope);
        out.resize(header.payload_offset as usize, 0);
        Ok(out)
    }
}

/// A bundle prefix (header + envelope) parsed for display, with nothing verified.
///
/// It exists for `sigil inspect` and for adding signatures; nothing here may be installed. Use
/// [`crate::BundleVerifier`] to obtain a [`crate::VerifiedBundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedBundle<'a> {
    header: BundleHeader,
    chain: Option<&'a [u8]>,
    envelope: Envelope<'a>,
}

impl<'a> UnverifiedBundle<'a> {
    /// Parses the header and envelope at the start of `bytes` (steps 1–2 only).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let head: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        let header = BundleHeader::parse(head)?;
        let start = header.envelope_start()? as usize;
        let env = bytes
            .get(start..header.envelope_end()? as usize)
            .ok_or(Error::Truncated)?;
        let chain = match header.chain_len {
            0 => None,
            _ => Some(bytes.get(HEADER_LEN..start).ok_or(Error::Truncated)?),
        };
        Ok(UnverifiedBundle {
            header,
            chain,
            envelope: Envelope::decode(env)?,
        })
    }

    /// The root chain the bundle carries (unverified bytes of an `SGL-RCHN` document), if any.
    pub fn chain(&self) -> Option<&'a [u8]> {
        self.chain
    }

    /// The unverified header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// The unverified envelope.
    pub fn envelope(&self) -> &Envelope<'a> {
        &self.envelope
    }

    /// Decodes the manifest for display. Its signatures are not checked.
    pub fn unverified_manifest(&self) -> Result<Manifest<'a>, Error> {
        Manifest::decode(self.envelope.manifest)
    }

    /// Decodes the key set for display. Its signatures are not checked.
    pub fn unverified_key_set(&self) -> Result<KeySet<'a>, Error> {
        KeySet::decode(self.envelope.signed_key_set.key_set)
    }

    /// Gives back the envelope, e.g. to add a signature and re-encode.
    pub fn into_envelope(self) -> Envelope<'a> {
        self.envelope
    }
}

/// Builds a whole bundle in memory: `key_set` signed by `root_keys`, `manifest` signed by
/// `release_keys`, then `payload`. For tests, tools and small images; `sigil sign` streams large
/// ones through [`Envelope::encode_prefix`] instead.
#[cfg(feature = "alloc")]
pub fn assemble_bundle(
    key_set: &[u8],
    root_keys: &[&ed25519_dalek::SigningKey],
    manifest: &[u8],
    release_keys: &[&ed25519_dalek::SigningKey],
    payload: &[u8],
) -> Result<alloc::vec::Vec<u8>, Error> {
    use crate::SignatureEntry;
    let mut envelope = Envelope {
        signed_key_set: SignedKeySet {
            key_set,
            signatures: SignatureList::new(),
        },
        manifest,
        manifest_signatures: SignatureList::new(),
    };
    for key in root_keys {
        envelope
            .signed_key_set
            .add_signature(SignatureEntry::sign(key, key_set))?;
    }
    for key in release_keys {
        envelope.add_manifest_signature(SignatureEntry::sign(key, manifest))?;
    }
    let mut out = envelope.encode_prefix()?;
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = BundleHeader::new(600, 256, 12345).unwrap();
        assert_eq!(h.payload_offset, 768);
        assert_eq!(BundleHeader::parse(&h.encode()), Ok(h));
    }

    #[test]
    fn align_up_checks_alignment_and_overflow() {
        assert_eq!(align_up(33, 32), Ok(64));
        assert_eq!(align_up(64, 32), Ok(64));
        assert_eq!(align_up(1, 3), Err(Error::InvalidAlignment));
        assert_eq!(align_up(1, 2 << 20), Err(Error::InvalidAlignment));
        assert_eq!(align_up(u32::MAX, 16), Err(Error::LengthOverflow));
    }

    #[test]
    fn header_fields_are_bounded() {
        let good = BundleHeader::new(100, 16, 10).unwrap().encode();
        let mut b = good;
        b[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            BundleHeader::parse(&b),
            Err(Error::BadLength(Document::Envelope))
        );
        let mut b = good;
        b[12..16].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(
            BundleHeader::parse(&b),
            Err(Error::BadLength(Document::Envelope))
        );
        let mut b = good;
        b[16..20].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(BundleHeader::parse(&b), Err(Error::PayloadOffsetOutOfRange));
        let mut b = good;
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(BundleHeader::parse(&b), Err(Error::PayloadOffsetOutOfRange));
        let mut b = good;
        b[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(BundleHeader::parse(&b), Err(Error::LengthOverflow));
        let mut b = good;
        b[31] = 1;
        assert_eq!(BundleHeader::parse(&b), Err(Error::NonZeroReserved));
        let mut b = good;
        b[10] = 31;
        assert_eq!(
            BundleHeader::parse(&b),
            Err(Error::BadLength(Document::Header))
        );
    }
}
