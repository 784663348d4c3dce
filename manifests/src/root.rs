//! The trust root: root public keys and the threshold of them that must sign a key set.

use crate::codec::Reader;
use crate::error::{Document, Error, Signed};
use crate::keys::{check_keys, verify_threshold, KeyList, PublicKey, SignatureEntry};

/// Domain-separation tag of a trust root file.
pub const TRUST_ROOT_TAG: &[u8; 8] = b"SGL-ROOT";

/// A trust root, provisioned into the bootloader at build time and into the agent's configuration.
///
/// The provisioned root is not signed: whoever provisions the device decides it. Later roots
/// reach the device through root updates ([`crate::rotation`]), each signed by a threshold of
/// the root before it and a threshold of its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct TrustRoot {
    /// Version of this root; each root update raises it by exactly one.
    pub root_version: u32,
    /// How many distinct root keys must sign a key set.
    pub threshold: u8,
    /// The root public keys.
    pub keys: KeyList,
}

impl TrustRoot {
    /// Decodes and validates a trust root file (FORMAT.md §4, step 0 of verification).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let root = TrustRootRef::decode(bytes)?;
        Ok(TrustRoot {
            root_version: root.root_version,
            threshold: root.threshold,
            keys: KeyList::from_slice(root.keys)
                .map_err(|_| Error::TooLarge(Document::TrustRoot))?,
        })
    }

    /// The root as a borrowed [`TrustRootRef`].
    pub fn as_ref(&self) -> TrustRootRef<'_> {
        TrustRootRef {
            root_version: self.root_version,
            threshold: self.threshold,
            keys: &self.keys,
        }
    }

    /// The `root_version` of a trust root document, read from its prefix and first field
    /// without decoding (or checking) the rest: for skipping updates a device already holds.
    pub(crate) fn peek_version(bytes: &[u8]) -> Result<u32, Error> {
        Reader::tagged(bytes, TRUST_ROOT_TAG, Document::TrustRoot)?.u32()
    }

    /// Checks that a threshold of distinct keys of this root signed the exact bytes `message`
    /// (FORMAT.md §3). The one check of root signatures: key sets (step 4) and both halves of
    /// a root update (step R3) pass here.
    pub fn verify_signed(
        &self,
        message: &[u8],
        signatures: impl IntoIterator<Item = SignatureEntry>,
        what: Signed,
    ) -> Result<(), Error> {
        self.as_ref().verify_signed(message, signatures, what)
    }

    /// Builds a validated trust root from keys and a threshold.
    pub fn new(root_version: u32, threshold: u8, keys: &[PublicKey]) -> Result<Self, Error> {
        let keys = KeyList::from_slice(keys).map_err(|_| Error::TooLarge(Document::TrustRoot))?;
        check_keys(&keys, threshold, Document::TrustRoot)?;
        Ok(TrustRoot {
            root_version,
            threshold,
            keys,
        })
    }

    /// Encodes the trust root file.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        crate::codec::encode_tagged(self, TRUST_ROOT_TAG, Document::TrustRoot)
    }
}

/// A validated trust root whose keys are borrowed from the bytes it was decoded from: how the
/// verifier holds a root reached through a root chain, without copying its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustRootRef<'a> {
    /// Version of this root.
    pub root_version: u32,
    /// How many distinct root keys must sign.
    pub threshold: u8,
    /// The root public keys, each passing the key check (FORMAT.md §3).
    pub keys: &'a [PublicKey],
}

impl<'a> TrustRootRef<'a> {
    /// Step 0: strict decode of a trust root document, its keys and threshold checked.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let root = Self::read(bytes)?;
        check_keys(root.keys, root.threshold, Document::TrustRoot)?;
        Ok(root)
    }

    /// The strict decode of [`TrustRootRef::decode`] without the key checks, for the bytes of a
    /// root the device adopted (step R2): their SHA-256 equals the stored floor's, so they are
    /// the very bytes whose keys passed step 0 when the root was adopted. The key checks cost
    /// about three quarters of a signature check per key; a boot with nothing to apply skips
    /// them.
    pub(crate) fn read_adopted(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::read(bytes)
    }

    fn read(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::tagged(bytes, TRUST_ROOT_TAG, Document::TrustRoot)?;
        let root = TrustRootRef {
            root_version: r.u32()?,
            threshold: r.u8()?,
            keys: r.keys()?,
        };
        r.finish()?;
        Ok(root)
    }

    /// See [`TrustRoot::verify_signed`].
    pub fn verify_signed(
        &self,
        message: &[u8],
        signatures: impl IntoIterator<Item = SignatureEntry>,
        what: Signed,
    ) -> Result<(), Error> {
        verify_threshold(message, signatures, self.keys, self.threshold, what)
    }
}
