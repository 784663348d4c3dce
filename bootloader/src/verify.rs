//! Streams a bundle from flash through `sigil-manifests`' one verification sequence.
//!
//! Nothing here checks anything itself: the bytes are read in chunks of at most 256 bytes into
//! a stack buffer and fed to [`BundleVerifier`] in order, and only the [`VerifiedBundle`] it
//! returns is trusted.

use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sigil_manifests::bundle::HEADER_LEN;
use sigil_manifests::{BundleVerifier, DevicePolicy, TrustRoot, VerifiedBundle};

use crate::error::Error;
use crate::layout::{Layout, CHUNK};
use crate::record::{ImageCounters, ImageDigest};

/// The flash a [`crate::Bootloader`] boots from.
///
/// Most microcontrollers map their internal NOR flash into the address space. A port that can
/// read a slot in place says so with `MAPPED = true` and [`BootFlash::mapped`]: the bootloader
/// then verifies bundles where they lie ([`sigil_manifests::verify_in_place`]), with no envelope
/// buffer and no chunk copies, and the buffered path is compiled out. Other flash (SPI NOR,
/// files in host tools) keeps the defaults and is read in chunks through `NorFlash`.
pub trait BootFlash: NorFlash {
    /// Whether [`BootFlash::mapped`] serves reads; a constant, so each port keeps one path.
    const MAPPED: bool = false;

    /// The bytes at `offset..offset + len`, read in place, or `None` outside the device.
    fn mapped(&self, offset: u32, len: u32) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }
}

impl<T: BootFlash> BootFlash for &mut T {
    const MAPPED: bool = T::MAPPED;

    fn mapped(&self, offset: u32, len: u32) -> Option<&[u8]> {
        T::mapped(self, offset, len)
    }
}

/// Facts about a verified bundle that outlive the envelope buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageInfo {
    pub(crate) total_len: u64,
    pub(crate) payload_offset: u64,
    pub(crate) payload_size: u64,
    pub(crate) security_counter: u32,
    pub(crate) key_set_version: u32,
    pub(crate) digest: ImageDigest,
    pub(crate) root: Option<sigil_manifests::RootFloor>,
    /// The manifest's encryption parameters (an encrypted release).
    #[cfg(feature = "encryption")]
    pub(crate) encryption: Option<sigil_manifests::Encryption>,
}

impl ImageInfo {
    pub(crate) fn of(v: &VerifiedBundle<'_>) -> Self {
        ImageInfo {
            total_len: v.total_len(),
            payload_offset: v.payload_offset(),
            payload_size: v.payload_size(),
            security_counter: v.security_counter(),
            key_set_version: v.key_set_version(),
            digest: v.manifest_digest(),
            root: v.root_floor(),
            #[cfg(feature = "encryption")]
            encryption: v.manifest().payload_format.encryption().copied(),
        }
    }

    pub(crate) fn counters(&self) -> ImageCounters {
        ImageCounters {
            security_counter: self.security_counter,
            key_set_version: self.key_set_version,
            digest: self.digest,
            root: self.root,
        }
    }
}

/// Verifies the bundle that starts at flash offset `base` and may extend at most
/// `layout.max_bundle_len()` bytes. The outer error is a flash failure; the inner one says why
/// the bytes are not a valid bundle for this device.
pub(crate) fn verify_at<'b, F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    base: u32,
    root: &'b TrustRoot,
    policy: DevicePolicy<'b>,
    envelope_buf: &'b mut [u8],
) -> Result<Result<VerifiedBundle<'b>, sigil_manifests::Error>, Error> {
    // The policy bounds the bundle to the slot, so every read below stays inside the slot.
    let policy = policy.with_max_bundle_len(u64::from(layout.max_bundle_len()));
    let mut verifier = BundleVerifier::new(root, policy, envelope_buf);
    let chunk = usize::try_from(layout.chunk()).map_err(|_| Error::Corrupt)?;
    let mut storage = [0u8; CHUNK as usize];
    let data = storage.get_mut(..chunk).ok_or(Error::Corrupt)?;

    flash.read(base, data).map_err(|e| Error::Flash(e.kind()))?;
    // Feed exactly the header first: only then is the bundle's length known.
    if let Err(e) = verifier.feed(data.get(..HEADER_LEN).ok_or(Error::Corrupt)?) {
        return Ok(Err(e));
    }
    let Some(total) = verifier.total_len() else {
        return Ok(Err(sigil_manifests::Error::Truncated));
    };
    let mut pos = HEADER_LEN as u64;
    let mut chunk_start = 0u64;
    while pos < total {
        let chunk_end = chunk_start.saturating_add(chunk as u64);
        if pos >= chunk_end {
            chunk_start = chunk_end;
            let at = u32::try_from(chunk_start)
                .ok()
                .and_then(|o| o.checked_add(base))
                .ok_or(Error::Corrupt)?;
            flash.read(at, data).map_err(|e| Error::Flash(e.kind()))?;
            continue;
        }
        let from = usize::try_from(pos.saturating_sub(chunk_start)).map_err(|_| Error::Corrupt)?;
        let to = usize::try_from(total.min(chunk_end).saturating_sub(chunk_start))
            .map_err(|_| Error::Corrupt)?;
        if let Err(e) = verifier.feed(data.get(from..to).ok_or(Error::Corrupt)?) {
            return Ok(Err(e));
        }
        pos = total.min(chunk_end);
    }
    Ok(verifier.finish())
}
