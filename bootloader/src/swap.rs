//! Swap mechanics: moving images between the slots, one recorded half-step at a time.
//!
//! # Swap-offset
//!
//! The new bundle sits at staging sectors `S[1..=n]`, the old one at active sectors `A[0..m)`.
//! With `k = max(n, m)` (at most the slot size) the install runs `2k` half-steps, each
//! followed by a progress record:
//!
//! | half-step | erase | copy | the source stays intact until |
//! |---|---|---|---|
//! | `2i` | `S[i]` (spare, or new sector `i-1` already installed) | `A[i] → S[i]` (old sector `i`) | half-step `2i+1` |
//! | `2i+1` | `A[i]` | `S[i+1] → A[i]` (new sector `i`) | half-step `2i+2` |
//!
//! After it the active slot holds the new bundle and `S[0..m)` the old one (no offset). The
//! revert runs the mirror image, `i` from `k-1` down to 0:
//!
//! | half-step | erase | copy |
//! |---|---|---|
//! | first | `S[i+1]` | `A[i] → S[i+1]` (new sector `i` back to its staged place) |
//! | second | `A[i]` | `S[i] → A[i]` (old sector `i` back) |
//!
//! A power cut inside a half-step repeats that half-step (its source is intact, its
//! destination is erased first). The progress record that says a half-step is done is kept
//! in two copies (see `store.rs`), so a flipped bit cannot make a later boot redo a finished
//! half-step, whose source the next one has already erased. Each of `A[0..k)` and `S[0..k)`
//! is erased **once** per update and each of `A[0..k)` and `S[1..=k]` once per revert;
//! sectors beyond `k` are not touched. Chunks that read as erased are not written.
//!
//! With feature `encryption` and a device key, each copy passes its chunks through a keystream
//! (`crypt.rs`): staging → active decrypts the new image's payload bytes on install; every
//! active → staging copy encrypts the whole sector under the device-local key, and the revert's
//! staging → active copy of the previous image undoes it. Each transform depends only on the
//! intact source, the keys and the offset, so a repeated half-step still writes the same bytes.

use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sigil_manifests::bundle::{BundleHeader, HEADER_LEN};

use crate::error::Error;
use crate::layout::{Layout, CHUNK};
use crate::store::Loaded;

/// Which way a swap moves the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Install,
    Revert,
}

/// Runs or resumes a swap from the recorded progress; records every half-step but the last
/// (the phase change that follows records that one).
pub(crate) fn run<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    loaded: &mut Loaded,
    direction: Direction,
    mut keys: Keys<'_>,
) -> Result<(), Error> {
    let sectors = loaded.state.swap_sectors;
    let total = sectors.checked_mul(2).ok_or(Error::Corrupt)?;
    let mut progress = loaded.state.swap_progress;
    while progress < total {
        half_step(flash, layout, direction, sectors, progress, &mut keys)?;
        progress = progress.saturating_add(1);
        if progress < total {
            loaded.state.swap_progressed(progress);
            loaded.commit(flash, layout)?;
        }
    }
    Ok(())
}

/// The keystreams of an encrypting swap (feature `encryption`; see `crypt.rs`), or nothing.
#[cfg(feature = "encryption")]
pub(crate) type Keys<'k> = Option<&'k mut crate::crypt::SwapKeys>;
/// Without the feature every half-step copies bytes as they are.
#[cfg(not(feature = "encryption"))]
pub(crate) type Keys<'k> = core::marker::PhantomData<&'k ()>;

fn half_step<F: NorFlash>(
    flash: &mut F,
    l: &Layout,
    direction: Direction,
    sectors: u32,
    step: u32,
    keys: &mut Keys<'_>,
) -> Result<(), Error> {
    let pair = step / 2;
    let first_half = step.is_multiple_of(2);
    // Active sector `i` pairs with staging sector `i` or `i + 1` (the tables above): the
    // first half-step copies active → staging, the second staging → active, and each erases
    // its destination first.
    let (i, up) = match direction {
        Direction::Install => (pair, !first_half),
        Direction::Revert => {
            let i = sectors
                .checked_sub(1)
                .and_then(|k| k.checked_sub(pair))
                .ok_or(Error::Corrupt)?;
            (i, first_half)
        }
    };
    let active = l.active_sector(i).ok_or(Error::Corrupt)?;
    let staging = l
        .staging_sector(i.saturating_add(u32::from(up)))
        .ok_or(Error::Corrupt)?;
    let (src, dst) = if first_half {
        (active, staging)
    } else {
        (staging, active)
    };
    let erase_end = dst.checked_add(l.sector_size()).ok_or(Error::Corrupt)?;
    flash
        .erase(dst, erase_end)
        .map_err(|e| Error::Flash(e.kind()))?;
    // What the copy does to the bytes: with keys, the half-step's keystream at the slot
    // offset of the sector it moves (the bundle offset for the new image).
    #[cfg(feature = "encryption")]
    let mut step = match keys.as_deref_mut() {
        Some(keys) => {
            use crate::crypt::Transform;
            let base = i.checked_mul(l.sector_size()).ok_or(Error::Corrupt)?;
            let t = match (direction, first_half) {
                (Direction::Install, true) => Transform::Local { role: 0, base },
                (Direction::Install, false) => Transform::Payload { base },
                (Direction::Revert, true) => Transform::Local { role: 1, base },
                (Direction::Revert, false) => Transform::Local { role: 0, base },
            };
            Some((keys, t))
        }
        None => None,
    };
    #[cfg(not(feature = "encryption"))]
    let _ = keys;
    // One sector, chunk by chunk; a chunk that reads as erased after its transform is not
    // written.
    let chunk = l.chunk();
    let chunk_len = usize::try_from(chunk).map_err(|_| Error::Corrupt)?;
    let erased = l.geometry().erased;
    let mut storage = [0u8; CHUNK as usize];
    let buf = storage.get_mut(..chunk_len).ok_or(Error::Corrupt)?;
    let mut off = 0u32;
    while off < l.sector_size() {
        let from = src.checked_add(off).ok_or(Error::Corrupt)?;
        let to = dst.checked_add(off).ok_or(Error::Corrupt)?;
        flash.read(from, buf).map_err(|e| Error::Flash(e.kind()))?;
        #[cfg(feature = "encryption")]
        if let Some((keys, t)) = step.as_mut() {
            keys.apply(*t, off, buf, erased)?;
        }
        if buf.iter().any(|&b| b != erased) {
            flash.write(to, buf).map_err(|e| Error::Flash(e.kind()))?;
        }
        off = off.checked_add(chunk).ok_or(Error::Corrupt)?;
    }
    Ok(())
}

/// Sectors the active bundle occupies, for sizing the swap only.
///
/// Only as many sectors as the two bundles occupy move. The length comes from the active
/// bundle's header alone (step 1 of the format), which saves hashing the old image on every
/// update: if the active bundle is valid, step 7 has cross-checked that header against its
/// signed manifest on every boot, so the length is exact; if it is not valid, nothing
/// bootable can be lost. A header that does not parse preserves the whole slot. The header is
/// read as one whole chunk, so the read is aligned for every read size the layout accepts.
pub(crate) fn active_extent<F: NorFlash>(flash: &mut F, l: &Layout) -> Result<u32, Error> {
    let chunk_len = usize::try_from(l.chunk()).map_err(|_| Error::Corrupt)?;
    let mut storage = [0u8; CHUNK as usize];
    let buf = storage.get_mut(..chunk_len).ok_or(Error::Corrupt)?;
    flash
        .read(l.active_offset(), buf)
        .map_err(|e| Error::Flash(e.kind()))?;
    let head = buf.first_chunk::<HEADER_LEN>().ok_or(Error::Corrupt)?;
    let len = BundleHeader::parse(head).and_then(|h| h.total_len());
    Ok(match len {
        Ok(len) if len <= u64::from(l.max_bundle_len()) => l.sectors_for(len),
        _ => l.slot_sectors(),
    })
}
