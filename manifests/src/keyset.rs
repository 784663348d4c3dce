//! Key sets: the release keys a root threshold has authorised, and their own signing threshold.

use crate::codec::Reader;
use crate::error::{Document, Error, Signed};
use crate::keys::{check_keys, PublicKey, SignatureAdded, SignatureEntry, SignatureList};
use crate::manifest::ProductId;
use crate::root::{TrustRoot, TrustRootRef};

/// Domain-separation tag of the signed bytes of a key set.
pub const KEY_SET_TAG: &[u8; 8] = b"SGL-KSET";

/// Newest key set format version: 2 names the trust root version the key set is signed under.
pub const KEY_SET_VERSION: u16 = 2;

/// Domain-separation tag of a stand-alone signed key set file.
pub const SIGNED_KEY_SET_TAG: &[u8; 8] = b"SGL-SKEY";

/// A key set: the release keys allowed to sign manifests.
///
/// Root keys sign its exact encoded bytes. A newer `version` rotates or revokes release keys;
/// devices store the highest version they have confirmed and refuse older ones.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct KeySet<'a> {
    /// Monotonic key set version.
    pub version: u32,
    /// How many distinct release keys must sign a manifest.
    pub threshold: u8,
    /// If present, manifests verified under this key set must name this product.
    pub product_scope: Option<ProductId<'a>>,
    /// The release public keys, borrowed from the signed bytes.
    pub keys: &'a [PublicKey],
    /// The trust root version whose keys sign this key set (format version 2, step 5d); `None`
    /// in a version 1 key set, which only the provisioned root of a device that has not
    /// rotated accepts.
    #[cfg_attr(
        feature = "alloc",
        serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "serialize_root_version"
        )
    )]
    pub root_version: Option<u32>,
}

/// Version 2 writes the root version as a plain `u32` after the keys (no option tag: the
/// format version says whether it is there).
#[cfg(feature = "alloc")]
fn serialize_root_version<S: serde::Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(v.unwrap_or(0))
}

impl<'a> KeySet<'a> {
    /// Decodes and validates the signed bytes of a key set (steps 5a–5b). This does not check
    /// signatures: use [`SignedKeySet::verify`].
    // Out of line for the bootloader's stack, as `verify::check_manifest`.
    #[inline(never)]
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let (mut r, format) =
            Reader::tagged_versions(bytes, KEY_SET_TAG, Document::KeySet, KEY_SET_VERSION)?;
        let set = KeySet {
            version: r.u32()?,
            threshold: r.u8()?,
            product_scope: r.option(ProductId::read)?,
            keys: r.keys()?,
            root_version: if format >= 2 { Some(r.u32()?) } else { None },
        };
        r.finish()?;
        check_keys(set.keys, set.threshold, Document::KeySet)?;
        if let Some(scope) = &set.product_scope {
            scope.check(Document::KeySet)?;
        }
        Ok(set)
    }

    /// Builds a validated key set (format version 1, naming no root; see
    /// [`KeySet::with_root_version`]).
    pub fn new(
        version: u32,
        threshold: u8,
        product_scope: Option<ProductId<'a>>,
        keys: &'a [PublicKey],
    ) -> Result<Self, Error> {
        check_keys(keys, threshold, Document::KeySet)?;
        if let Some(scope) = &product_scope {
            scope.check(Document::KeySet)?;
        }
        Ok(KeySet {
            version,
            threshold,
            product_scope,
            keys,
            root_version: None,
        })
    }

    /// Names the trust root version that signs this key set (format version 2).
    pub fn with_root_version(mut self, root_version: u32) -> Self {
        self.root_version = Some(root_version);
        self
    }

    /// Encodes the bytes that root keys sign: format version 2 if the key set names its root,
    /// else version 1.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        let format = if self.root_version.is_some() {
            KEY_SET_VERSION
        } else {
            1
        };
        crate::codec::encode_tagged_version(self, KEY_SET_TAG, format, Document::KeySet)
    }
}

/// The exact bytes of a key set together with root signatures over them.
///
/// This is both the stand-alone key set file (behind [`SIGNED_KEY_SET_TAG`]) and the first part
/// of a bundle's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct SignedKeySet<'a> {
    /// The exact signed bytes of the [`KeySet`].
    pub key_set: &'a [u8],
    /// Root signatures over `key_set`.
    pub signatures: SignatureList,
}

/// A key set whose root signatures have been checked (output of steps 4–5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeySet<'a> {
    key_set: KeySet<'a>,
}

impl<'a> VerifiedKeySet<'a> {
    /// The verified key set.
    pub fn key_set(&self) -> &KeySet<'a> {
        &self.key_set
    }

    /// Gives back the verified key set.
    pub fn into_key_set(self) -> KeySet<'a> {
        self.key_set
    }
}

impl<'a> SignedKeySet<'a> {
    /// Decodes a stand-alone signed key set file.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::tagged(bytes, SIGNED_KEY_SET_TAG, Document::SignedKeySet)?;
        let set = SignedKeySet {
            key_set: r.byte_string()?,
            signatures: r.list(SignatureEntry::read)?,
        };
        r.finish()?;
        Ok(set)
    }

    /// Encodes a stand-alone signed key set file.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        crate::codec::encode_tagged(self, SIGNED_KEY_SET_TAG, Document::SignedKeySet)
    }

    /// Adds a root signature; a second signature by the same key replaces the first. Ed25519
    /// signatures are deterministic, so a key that signs again makes the same entry:
    /// [`SignatureAdded::Unchanged`].
    pub fn add_signature(&mut self, entry: SignatureEntry) -> Result<SignatureAdded, Error> {
        add_signature(&mut self.signatures, entry, Document::SignedKeySet)
    }

    /// Steps 4 and 5a–5b of FORMAT.md §6: the root threshold signed these exact bytes, then
    /// the bytes decode to a valid key set.
    ///
    /// `root` is taken as the device's provisioned root: a version 1 key set (naming no root)
    /// passes under it, and a version 2 key set must name its version (step 5d).
    pub fn verify(&self, root: &TrustRoot) -> Result<VerifiedKeySet<'a>, Error> {
        verify_key_set(
            self.key_set,
            self.signatures.iter().copied(),
            root.as_ref(),
            false,
        )
    }
}

/// Steps 4, 5a–5b and 5d over the exact key set bytes and their root signatures. `rotated`
/// says whether `root` was reached through a root chain (steps R1–R3) rather than provisioned.
pub(crate) fn verify_key_set<'a>(
    key_set: &'a [u8],
    signatures: impl IntoIterator<Item = SignatureEntry>,
    root: TrustRootRef<'_>,
    rotated: bool,
) -> Result<VerifiedKeySet<'a>, Error> {
    // Step 4: signatures over the exact received bytes, before they are decoded.
    root.verify_signed(key_set, signatures, Signed::KeySet)?;
    // Step 5a–5b: strict decode and key list checks.
    let key_set = KeySet::decode(key_set)?;
    // Step 5d: a key set names the root it is signed under; one naming none (version 1) only
    // passes under a provisioned root, never after a rotation.
    match key_set.root_version {
        Some(v) if v == root.root_version => {}
        None if !rotated => {}
        _ => return Err(Error::KeySetRootMismatch),
    }
    Ok(VerifiedKeySet { key_set })
}

/// Adds `entry` to `list`, replacing an earlier signature by the same key; says which.
pub(crate) fn add_signature(
    list: &mut SignatureList,
    entry: SignatureEntry,
    doc: Document,
) -> Result<SignatureAdded, Error> {
    if let Some(existing) = list.iter_mut().find(|e| e.key_id == entry.key_id) {
        if *existing == entry {
            return Ok(SignatureAdded::Unchanged);
        }
        *existing = entry;
        return Ok(SignatureAdded::Replaced);
    }
    list.push(entry).map_err(|_| Error::TooLarge(doc))?;
    Ok(SignatureAdded::New)
}
