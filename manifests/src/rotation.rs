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

use core::ops::Range;

use crate::codec::{Reader, PREFIX_LEN};
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

/// Largest trust root document: the prefix, a `u32` version, the threshold, and eight keys.
pub const MAX_ROOT_LEN: usize = PREFIX_LEN + 5 + 1 + 1 + 8 * 32;

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
        Self::parse_at(bytes).map(|(view, _)| view)
    }

    /// [`RootUpdateView::parse`], and where the new root's document starts in `bytes`.
    fn parse_at(bytes: &'a [u8]) -> Result<(Self, usize), Error> {
        let mut r = Reader::tagged(bytes, ROOT_UPDATE_TAG, Document::RootUpdate)?;
        let root = r.byte_string()?;
        let root_at = bytes
            .len()
            .saturating_sub(r.rest().len())
            .saturating_sub(root.len());
        let view = RootUpdateView {
            root,
            by_previous: signatures(&mut r)?,
            by_new: signatures(&mut r)?,
        };
        r.finish()?;
        Ok((view, root_at))
    }

    /// The new root's version, read without decoding the rest of the root.
    pub fn version(&self) -> Result<u32, Error> {
        TrustRoot::peek_version(self.root)
    }

    /// Step R3: `previous` signed, the version is exactly one above it, the new root decodes
    /// (step 0) and its own threshold signed. Signatures are checked over the exact bytes.
    pub fn verify(&self, previous: TrustRootRef<'_>) -> Result<TrustRootRef<'a>, Error> {
        self.verify_version(previous, self.version()?)
    }

    /// [`RootUpdateView::verify`] of an update whose [`RootUpdateView::version`] the caller
    /// has read already.
    fn verify_version(
        &self,
        previous: TrustRootRef<'_>,
        version: u32,
    ) -> Result<TrustRootRef<'a>, Error> {
        let next = previous
            .root_version
            .checked_add(1)
            .ok_or(Error::RootVersionSkipped)?;
        if version != next {
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
///
/// [`ChainStream`] runs the same steps ([`Walk`]) over a chain fed in pieces.
// One pass over the chain (decode, order and checks together), out of line: the bootloader
// links it once, beside the envelope checks.
#[inline(never)]
pub fn walk<'a>(
    provisioned: TrustRootRef<'a>,
    floor: Option<RootFloor>,
    chain: Option<&'a [u8]>,
) -> Result<ReachedRoot<'a>, Error> {
    let mut walk = Walk::new(provisioned.root_version, floor);
    let mut current = walk.starts_provisioned().then_some(ReachedRoot {
        root: provisioned,
        digest: None,
    });
    if let Some(chain) = chain {
        // R1: the chain's structure, read as it is walked.
        Walk::check_len(chain.len())?;
        let mut r = Reader::tagged(chain, ROOT_CHAIN_TAG, Document::RootChain)?;
        for _ in 0..Walk::count(&mut r)? {
            let step = walk.update(current.map(|c| c.root), r.byte_string()?)?;
            if let Some((reached, _)) = step {
                current = Some(reached);
            }
        }
        r.finish()?;
    }
    walk.end(current)
}

/// Where a walk along a root chain stands between two updates (steps R1–R3): the one place
/// of the walk's rules, for [`walk`] (a chain in memory) and [`ChainStream`] (a chain fed in
/// pieces).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    /// The adopted root, when it is newer than the provisioned one.
    floor: Option<RootFloor>,
    /// The version of the root the device is on.
    device_version: u32,
    /// The version of the last update read (the provisioned root's before any).
    newest: u32,
    /// Whether an update has been read.
    started: bool,
}

impl Walk {
    fn new(provisioned_version: u32, floor: Option<RootFloor>) -> Self {
        let floor = floor.filter(|f| f.version > provisioned_version);
        Walk {
            floor,
            device_version: floor.map_or(provisioned_version, |f| f.version),
            newest: provisioned_version,
            started: false,
        }
    }

    /// Whether the device is on its provisioned root (the walk starts there).
    fn starts_provisioned(&self) -> bool {
        self.floor.is_none()
    }

    /// R1: a chain of at most [`MAX_CHAIN_LEN`] bytes.
    fn check_len(len: usize) -> Result<(), Error> {
        if len > MAX_CHAIN_LEN {
            return Err(Error::RootChainTooLong);
        }
        Ok(())
    }

    /// R1: the chain's update count, 1 to [`MAX_ROOT_CHAIN`].
    fn count(r: &mut Reader<'_>) -> Result<usize, Error> {
        let n = r.len(usize::MAX)?;
        if n > MAX_ROOT_CHAIN {
            return Err(Error::RootChainTooLong);
        }
        if n == 0 {
            return Err(Error::Malformed(Document::RootChain));
        }
        Ok(n)
    }

    /// One update of the chain, `current` being the root reached so far (`None` before the
    /// device's root is found): R1 (its decode and its version one above the last), then R2
    /// or R3. `Some` with the root the walk moves to and where its document lies in `bytes`;
    /// `None` when the update is at or below the device's root.
    fn update<'u>(
        &mut self,
        current: Option<TrustRootRef<'_>>,
        bytes: &'u [u8],
    ) -> Result<Option<(ReachedRoot<'u>, Range<usize>)>, Error> {
        let (update, root_at) = RootUpdateView::parse_at(bytes)?;
        let root_at = root_at..root_at.saturating_add(update.root.len());
        let version = update.version()?;
        if self.started && self.newest.checked_add(1) != Some(version) {
            return Err(Error::RootVersionSkipped);
        }
        self.started = true;
        self.newest = version;
        // At or below the device's root: already checked (the one at its version is matched
        // below only while the device's root is still to be found).
        if version < self.device_version || (current.is_some() && version == self.device_version) {
            return Ok(None);
        }
        let digest = root_digest(update.root);
        let root = match current {
            // R2: the update at the device's version is the root it adopted.
            None => {
                if version != self.device_version {
                    return Err(Error::RootChainGap);
                }
                if self.floor.map(|f| f.digest) != Some(digest) {
                    return Err(Error::RootMismatch);
                }
                TrustRootRef::read_adopted(update.root)?
            }
            // R3: one version at a time.
            Some(previous) => update.verify_version(previous, version)?,
        };
        let digest = Some(digest);
        Ok(Some((ReachedRoot { root, digest }, root_at)))
    }

    /// After the last update: the root reached, or why the chain does not lead to one.
    fn end<'a>(&self, current: Option<ReachedRoot<'a>>) -> Result<ReachedRoot<'a>, Error> {
        match current {
            Some(reached) => Ok(reached),
            None if self.newest < self.device_version => Err(Error::RootRolledBack),
            None => Err(Error::RootChainGap),
        }
    }
}

/// `buf[held_len..][..filled]`.
fn work_area(buf: &[u8], held_len: usize, filled: usize) -> &[u8] {
    buf.get(held_len..)
        .and_then(|w| w.get(..filled))
        .unwrap_or(&[])
}

/// The root a [`ChainStream`] is on.
#[derive(Debug, Clone, Copy)]
enum Held {
    /// Not found yet: the device's adopted root is further along the chain.
    Nothing,
    /// The provisioned root.
    Provisioned,
    /// A root of the chain: its document is at the start of the buffer; its SHA-256.
    Chain([u8; 32]),
}

/// Steps R1–R3 over a root chain fed in pieces ([`walk`]'s rules, through [`Walk`]), for a
/// verifier that copies the bundle into a buffer: the buffer holds the document of the root
/// the walk is on (at most [`MAX_ROOT_LEN`] bytes) and, behind it, the chain bytes received
/// and not yet read, so one root update at a time (about 1.8 KiB at most) instead of the
/// whole chain (up to [`MAX_CHAIN_LEN`]). The results are those of [`walk`] over the same
/// bytes, with `BufferTooSmall` where one update does not fit.
#[derive(Debug)]
pub(crate) struct ChainStream<'a> {
    buf: &'a mut [u8],
    /// `buf[..held_len]`: the document of the root the walk is on, if it came from the chain.
    held_len: usize,
    held: Held,
    /// `buf[held_len..][..filled]`: chain bytes received and not read yet.
    filled: usize,
    /// Chain bytes not received yet.
    remaining: usize,
    /// Updates not read yet; `None` until the chain's count is read.
    left: Option<usize>,
    walk: Walk,
}

impl<'a> ChainStream<'a> {
    /// A walk over a chain of `len` bytes, from the provisioned root's version and the
    /// device's floor, in `buf`.
    pub(crate) fn new(
        buf: &'a mut [u8],
        len: usize,
        provisioned_version: u32,
        floor: Option<RootFloor>,
    ) -> Result<Self, Error> {
        Walk::check_len(len)?;
        let walk = Walk::new(provisioned_version, floor);
        Ok(ChainStream {
            buf,
            held_len: 0,
            held: if walk.starts_provisioned() {
                Held::Provisioned
            } else {
                Held::Nothing
            },
            filled: 0,
            remaining: len,
            left: None,
            walk,
        })
    }

    /// Takes chain bytes from the front of `data` (no more than the chain holds) and walks as
    /// far as they allow: `true` once the whole chain has been read and walked.
    pub(crate) fn feed(
        &mut self,
        provisioned: TrustRootRef<'_>,
        data: &mut &[u8],
    ) -> Result<bool, Error> {
        let space = self.capacity().saturating_sub(self.filled);
        let n = space.min(self.remaining).min(data.len());
        let (head, tail) = data.split_at(n);
        let at = self.held_len.saturating_add(self.filled);
        self.buf
            .get_mut(at..)
            .and_then(|b| b.get_mut(..n))
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(head);
        *data = tail;
        self.filled = self.filled.saturating_add(n);
        self.remaining = self.remaining.saturating_sub(n);
        loop {
            let work = work_area(self.buf, self.held_len, self.filled);
            match self.left {
                None => {
                    let count = Reader::tagged(work, ROOT_CHAIN_TAG, Document::RootChain)
                        .and_then(|mut r| Ok((Walk::count(&mut r)?, r.rest().len())));
                    match count {
                        Ok((count, rest)) => {
                            let used = work.len().saturating_sub(rest);
                            self.left = Some(count);
                            self.consume(used, None);
                        }
                        // The prefix and a count take at most 15 bytes.
                        Err(e) => return self.stalled(e, PREFIX_LEN.saturating_add(5)),
                    }
                }
                Some(0) => {
                    if self.filled > 0 || self.remaining > 0 {
                        return Err(Error::TrailingBytes(Document::RootChain));
                    }
                    return Ok(true);
                }
                Some(left) => {
                    let mut r = Reader::new(work, Document::RootChain);
                    let update = match r.byte_string() {
                        Ok(update) => update,
                        Err(e) => {
                            // The update's length prefix and bytes, if the prefix has arrived.
                            let mut len = Reader::new(work, Document::RootChain);
                            let need = len.u32().map_or(0, |l| {
                                let prefix = work.len().saturating_sub(len.rest().len());
                                (l as usize).saturating_add(prefix)
                            });
                            return self.stalled(e, need);
                        }
                    };
                    let used = work.len().saturating_sub(r.rest().len());
                    let update_at = used.saturating_sub(update.len());
                    let current = match self.held {
                        Held::Nothing => None,
                        Held::Provisioned => Some(provisioned),
                        Held::Chain(_) => {
                            let doc = self.buf.get(..self.held_len).unwrap_or(&[]);
                            Some(TrustRootRef::read_adopted(doc)?)
                        }
                    };
                    let moved = self.walk.update(current, update)?.map(|(reached, doc)| {
                        let at = update_at.saturating_add(doc.start);
                        (
                            reached.digest.unwrap_or_default(),
                            at..at.saturating_add(doc.len()),
                        )
                    });
                    self.left = Some(left.saturating_sub(1));
                    self.consume(used, moved);
                }
            }
        }
    }

    /// The root the walk reached and the rest of the buffer (after the root's document), once
    /// [`ChainStream::feed`] returned `true`.
    pub(crate) fn finish(
        &mut self,
        provisioned: TrustRootRef<'a>,
    ) -> Result<(ReachedRoot<'a>, &'a mut [u8]), Error> {
        let buf = core::mem::take(&mut self.buf);
        let (doc, rest) = buf.split_at_mut(self.held_len.min(buf.len()));
        let doc: &'a [u8] = doc;
        let current = match self.held {
            Held::Nothing => None,
            Held::Provisioned => Some(ReachedRoot {
                root: provisioned,
                digest: None,
            }),
            Held::Chain(digest) => Some(ReachedRoot {
                root: TrustRootRef::read_adopted(doc)?,
                digest: Some(digest),
            }),
        };
        Ok((self.walk.end(current)?, rest))
    }

    fn capacity(&self) -> usize {
        self.buf.len().saturating_sub(self.held_len)
    }

    /// A parse of the next item failed with `e` over the bytes at hand: wait for more if the
    /// chain has more and there is room, else the error (all the chain's bytes are here, so
    /// it is [`walk`]'s), or `BufferTooSmall` if the item (`need` bytes) does not fit.
    fn stalled(&self, e: Error, need: usize) -> Result<bool, Error> {
        if self.remaining == 0 {
            return Err(e);
        }
        if self.filled < self.capacity() {
            return Ok(false);
        }
        if need > self.filled {
            return Err(Error::BufferTooSmall);
        }
        Err(e)
    }

    /// Drops the first `used` bytes of the work area; `moved` is the root the walk moved to:
    /// its digest and its document's place in the work area, which goes to the front.
    fn consume(&mut self, used: usize, moved: Option<([u8; 32], Range<usize>)>) {
        let work_at = self.held_len;
        let end = work_at.saturating_add(self.filled).min(self.buf.len());
        let rest_at = work_at.saturating_add(used).min(end);
        if let Some((digest, doc)) = moved {
            let from = work_at.saturating_add(doc.start).min(end);
            let to = work_at.saturating_add(doc.end).min(end);
            self.buf.copy_within(from..to, 0);
            self.held_len = to.saturating_sub(from);
            self.held = Held::Chain(digest);
        }
        // The document went below `rest_at`: the update it came from is before the rest.
        self.buf.copy_within(rest_at..end, self.held_len);
        self.filled = end.saturating_sub(rest_at);
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
