//! Root rotation (FORMAT.md §4 "Root update", "Root chain"; steps R1–R3 of §6).
//!
//! Trust root N+1 reaches a device in a **root update**: the exact bytes of root N+1, signed by
//! a threshold of root N's keys (the retiring root vouches for its successor) and by a
//! threshold of root N+1's own keys (its holders accept it). Its version is exactly N+1, so a
//! **root chain** of updates walks, one version at a time, from a root the device holds to
//! the root a bundle's key set is signed under.
//!
//! A device keeps a [`RootFloor`]: the version and digest of the root it has adopted. The walk
//! ([`walk`]) starts at that root: updates at or below its version are not checked again (the
//! one at its version must have its digest), updates above it are checked one by one. The
//! verifier holds every root it reaches as a [`TrustRootRef`] borrowed from the chain bytes.

use sha2::{Digest, Sha256};

use crate::codec::Reader;
use crate::error::{Document, Error, Signed};
use crate::root::{TrustRoot, TrustRootRef};
use crate::view::{signatures, SignatureBytes};

/// Domain-separation tag of a root update.
pub const ROOT_UPDATE_TAG: &[u8; 8] = b"SGL-RUPD";

/// Domain-separation tag of a root chain (a bundle's chain section, or a chain file).
pub const ROOT_CHAIN_TAG: &[u8; 8] = b"SGL-RCHN";

/// Most root updates one chain carries, and so most that one verification (one boot) applies.
///
/// Each update costs up to 16 signature checks and 8 key checks; eight of them bound a boot to
/// about the work of 200 signature checks, whatever an attacker stages (SECURITY.md, "Root
/// rotation"). A device more than eight roots behind is brought forward by an intermediate
/// release that carries the first eight.
pub const MAX_ROOT_CHAIN: usize = 8;

/// Largest root chain in bytes: eight updates of eight-key roots with sixteen signatures.
pub const MAX_CHAIN_LEN: usize = 16 * 1024;

/// The root a device has adopted: its version and the SHA-256 of its exact document bytes
/// ([`root_digest`]). Kept in the bootloader's protected state, never lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootFloor {
    /// The adopted root's version.
    pub version: u32,
    /// SHA-256 of the adopted root's document bytes.
    pub digest: [u8; 32],
}

/// SHA-256 of a trust root document's exact bytes: how a device names the root it adopted.
pub fn root_digest(root: &[u8]) -> [u8; 32] {
    Sha256::digest(root).into()
}

/// A root update, borrowed from its bytes with the signatures left in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootUpdateView<'a> {
    /// The exact `SGL-ROOT` document of the new root: the bytes both thresholds sign.
    pub root: &'a [u8],
    /// Signatures by the previous root's keys.
    pub by_previous: SignatureBytes<'a>,
    /// Signatures by the new root's keys.
    pub by_new: SignatureBytes<'a>,
}

impl<'a> RootUpdateView<'a> {
    /// Step R1: strict decode of one root update.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::tagged(bytes, ROOT_UPDATE_TAG, Document::RootUpdate)?;
        let view = RootUpdateView {
            root: r.byte_string()?,
            by_previous: signatures(&mut r)?,
            by_new: signatures(&mut r)?,
        };
        r.finish()?;
        Ok(view)
    }

    /// The new root's version, read without decoding the rest of the root.
    pub fn version(&self) -> Result<u32, Error> {
        TrustRoot::peek_version(self.root)
    }

    /// Step R3: `previous` signed, the version is exactly one above it, the new root decodes
    /// (step 0) and its own threshold signed. Signatures are checked over the exact bytes.
    pub fn verify(&self, previous: TrustRootRef<'_>) -> Result<TrustRootRef<'a>, Error> {
        let next = previous
            .root_version
            .checked_add(1)
            .ok_or(Error::RootVersionSkipped)?;
        if self.version()? != next {
            return Err(Error::RootVersionSkipped);
        }
        previous.verify_signed(
            self.root,
            self.by_previous.iter(),
            Signed::RootUpdateByPrevious,
        )?;
        let root = TrustRootRef::decode(self.root)?;
        root.verify_signed(self.root, self.by_new.iter(), Signed::RootUpdateByNew)?;
        Ok(root)
    }
}

/// A root chain, borrowed: 1 to [`MAX_ROOT_CHAIN`] root updates whose versions are
/// consecutive, each a strictly decoded [`RootUpdateView`] (step R1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootChainView<'a> {
    body: &'a [u8],
}

impl<'a> RootChainView<'a> {
    /// Step R1: the tag, the count (1 to [`MAX_ROOT_CHAIN`]), each update's strict decode and
    /// consecutive versions, nothing after the last.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_CHAIN_LEN {
            return Err(Error::RootChainTooLong);
        }
        let mut r = Reader::tagged(bytes, ROOT_CHAIN_TAG, Document::RootChain)?;
        let body = r.rest();
        let n = r.len(usize::MAX)?;
        if n == 0 {
            return Err(Error::Malformed(Document::RootChain));
        }
        if n > MAX_ROOT_CHAIN {
            return Err(Error::RootChainTooLong);
        }
        let mut last: Option<u32> = None;
        for _ in 0..n {
            let version = RootUpdateView::parse(r.byte_string()?)?.version()?;
            if let Some(prev) = last {
                if prev.checked_add(1) != Some(version) {
                    return Err(Error::RootVersionSkipped);
                }
            }
            last = Some(version);
        }
        r.finish()?;
        Ok(RootChainView { body })
    }

    /// The exact bytes of each update document, oldest first.
    pub fn update_bytes(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.body, Document::RootChain);
        let n = r.len(MAX_ROOT_CHAIN).unwrap_or(0);
        // `parse` read these very bytes: every step below succeeds.
        (0..n).map_while(move |_| r.byte_string().ok())
    }

    /// The updates in order, oldest first.
    pub fn updates(&self) -> impl Iterator<Item = RootUpdateView<'a>> + 'a {
        self.update_bytes()
            .map_while(|b| RootUpdateView::parse(b).ok())
    }
}

/// The root a walk ends on: where a bundle's key set is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReachedRoot<'a> {
    /// The root.
    pub root: TrustRootRef<'a>,
    /// SHA-256 of its document bytes if it came from the chain; `None` for the provisioned root.
    pub digest: Option<[u8; 32]>,
}

impl ReachedRoot<'_> {
    /// The floor a device stores once it adopts this root; `None` for the provisioned root.
    pub fn floor(&self) -> Option<RootFloor> {
        self.digest.map(|digest| RootFloor {
            version: self.root.root_version,
            digest,
        })
    }
}

/// Steps R1–R3: from the device's root (`provisioned`, or the root `floor` names) along
/// `chain` to the newest root it reaches.
///
/// - R1: the chain decodes ([`RootChainView::parse`]).
/// - R2: the device's root is found: the provisioned root if the floor is at or below its
///   version, else the chain's update at the floor's version, whose root bytes must have the
///   floor's digest (`RootMismatch`; `RootChainGap` if the chain holds none). Updates at or
///   below that version are not checked again. The newest root must not be older than the
///   device's (`RootRolledBack`).
/// - R3: each later update is verified under the root before it ([`RootUpdateView::verify`]).
// One pass over the chain (decode, order and checks together), out of line: the bootloader
// links it once, beside the envelope checks.
#[inline(never)]
pub fn walk<'a>(
    provisioned: TrustRootRef<'a>,
    floor: Option<RootFloor>,
    chain: Option<&'a [u8]>,
) -> Result<ReachedRoot<'a>, Error> {
    let floor = floor.filter(|f| f.version > provisioned.root_version);
    let device_version = floor.map_or(provisioned.root_version, |f| f.version);
    let mut current = floor.is_none().then_some(ReachedRoot {
        root: provisioned,
        digest: None,
    });
    let mut newest = provisioned.root_version;
    if let Some(chain) = chain {
        // R1: the chain's structure, read as it is walked.
        if chain.len() > MAX_CHAIN_LEN {
            return Err(Error::RootChainTooLong);
        }
        let mut r = Reader::tagged(chain, ROOT_CHAIN_TAG, Document::RootChain)?;
        let n = r.len(usize::MAX)?;
        if n > MAX_ROOT_CHAIN {
            return Err(Error::RootChainTooLong);
        }
        if n == 0 {
            return Err(Error::Malformed(Document::RootChain));
        }
        for i in 0..n {
            let update = RootUpdateView::parse(r.byte_string()?)?;
            let version = update.version()?;
            if i > 0 && newest.checked_add(1) != Some(version) {
                return Err(Error::RootVersionSkipped);
            }
            newest = version;
            if version < device_version {
                continue;
            }
            let Some(previous) = current else {
                // R2: the update at the device's version is the root it adopted.
                if version != device_version {
                    return Err(Error::RootChainGap);
                }
                let digest = root_digest(update.root);
                if floor.map(|f| f.digest) != Some(digest) {
                    return Err(Error::RootMismatch);
                }
                current = Some(ReachedRoot {
                    root: TrustRootRef::read_adopted(update.root)?,
                    digest: Some(digest),
                });
                continue;
            };
            if version == device_version {
                continue;
            }
            // R3: one version at a time.
            let root = update.verify(previous.root)?;
            current = Some(ReachedRoot {
                root,
                digest: Some(root_digest(update.root)),
            });
        }
        r.finish()?;
    }
    match current {
        Some(reached) => Ok(reached),
        None if newest < device_version => Err(Error::RootRolledBack),
        None => Err(Error::RootChainGap),
    }
}

/// A root chain whose updates passed steps R1–R3 from a known root (tools: the server, the
/// agent, `sigil inspect`).
#[cfg(feature = "alloc")]
pub fn verify_root_chain(
    provisioned: &TrustRoot,
    floor: Option<RootFloor>,
    chain: &[u8],
) -> Result<(TrustRoot, Option<RootFloor>), Error> {
    let reached = walk(provisioned.as_ref(), floor, Some(chain))?;
    let root = TrustRoot::new(
        reached.root.root_version,
        reached.root.threshold,
        reached.root.keys,
    )?;
    Ok((root, reached.floor()))
}

/// A root update with its signature lists copied out, for building and signing (`sigil root
/// rotate`, `sigil root sign`).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootUpdate<'a> {
    /// The exact `SGL-ROOT` document of the new root.
    pub root: &'a [u8],
    /// Signatures by the previous root's keys.
    pub by_previous: crate::keys::SignatureList,
    /// Signatures by the new root's keys.
    pub by_new: crate::keys::SignatureList,
}

#[cfg(feature = "alloc")]
impl<'a> RootUpdate<'a> {
    /// An unsigned update to the root document `root`.
    pub fn new(root: &'a [u8]) -> Self {
        RootUpdate {
            root,
            by_previous: Default::default(),
            by_new: Default::default(),
        }
    }

    /// Step R1 decode (through [`RootUpdateView`], the one parser).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let view = RootUpdateView::parse(bytes)?;
        let collect = |sigs: SignatureBytes<'a>| {
            sigs.iter()
                .try_fold(crate::keys::SignatureList::new(), |mut list, e| {
                    list.push(e)
                        .map_err(|_| Error::Malformed(Document::RootUpdate))?;
                    Ok(list)
                })
        };
        Ok(RootUpdate {
            root: view.root,
            by_previous: collect(view.by_previous)?,
            by_new: collect(view.by_new)?,
        })
    }

    /// Encodes the root update.
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        crate::codec::encode_tagged(self, ROOT_UPDATE_TAG, Document::RootUpdate)
    }

    /// Adds a signature by a key of the previous root (replacing an earlier one by that key).
    pub fn add_by_previous(
        &mut self,
        entry: crate::SignatureEntry,
    ) -> Result<crate::SignatureAdded, Error> {
        crate::keyset::add_signature(&mut self.by_previous, entry, Document::RootUpdate)
    }

    /// Adds a signature by a key of the new root (replacing an earlier one by that key).
    pub fn add_by_new(
        &mut self,
        entry: crate::SignatureEntry,
    ) -> Result<crate::SignatureAdded, Error> {
        crate::keyset::add_signature(&mut self.by_new, entry, Document::RootUpdate)
    }
}

/// Encodes a root chain from the encoded updates, oldest first (1 to [`MAX_ROOT_CHAIN`],
/// consecutive versions), checking it decodes (step R1).
#[cfg(feature = "alloc")]
pub fn encode_chain(updates: &[alloc::vec::Vec<u8>]) -> Result<alloc::vec::Vec<u8>, Error> {
    let lists: alloc::vec::Vec<&[u8]> = updates.iter().map(|u| u.as_slice()).collect();
    let out = crate::codec::encode_tagged(&lists, ROOT_CHAIN_TAG, Document::RootChain)?;
    RootChainView::parse(&out)?;
    Ok(out)
}

/// The exact bytes of each update of a root chain, oldest first (step R1 decode).
#[cfg(feature = "alloc")]
pub fn decode_chain(bytes: &[u8]) -> Result<alloc::vec::Vec<&[u8]>, Error> {
    Ok(RootChainView::parse(bytes)?.update_bytes().collect())
}
