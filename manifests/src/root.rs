//! The trust root: root public keys and the threshold of them that must sign a key set.

use crate::codec::Reader;
use crate::error::{Document, Error};
use crate::keys::{check_keys, KeyList, PublicKey};

/// Domain-separation tag of a trust root file.
pub const TRUST_ROOT_TAG: &[u8; 8] = b"SGL-ROOT";

/// A trust root, provisioned into the bootloader at build time and into the agent's configuration.
///
/// It is not signed: whoever provisions the device decides it. `root_version` leaves room for
/// root rotation (a new root signed by the old threshold), which is not built yet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct TrustRoot {
    /// Version of this root; a later rotation will require it to increase.
    pub root_version: u32,
    /// How many distinct root keys must sign a key set.
    pub threshold: u8,
    /// The root public keys.
    pub keys: KeyList,
}

impl TrustRoot {
    /// Decodes and validates a trust root file (FORMAT.md §4, step 0 of verification).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::tagged(bytes, TRUST_ROOT_TAG, Document::TrustRoot)?;
        let root = TrustRoot {
            root_version: r.u32()?,
            threshold: r.u8()?,
            keys: KeyList::from_slice(r.keys()?)
                .map_err(|_| Error::Malformed(Document::TrustRoot))?,
        };
        r.finish()?;
        check_keys(&root.keys, root.threshold, Document::TrustRoot)?;
        Ok(root)
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
