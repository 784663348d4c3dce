//! Requests: the only boot-control records the application (and `sigil-agent`) writes.
//!
//! The request region is one sector beside the protected state. The application appends a
//! record to it; the bootloader reads the newest valid one at boot, checks it against the
//! protected state and a full verification (the table in [`crate::boot`]), records what it did
//! in the protected state, and then erases the region. A request therefore carries no sequence
//! number and no floor: nothing in it can lower a floor, mark an image rejected or use up the
//! protected state.
//!
//! One record is 44 bytes, padded with the erased value to
//! [`crate::Layout::request_stride`]:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SGRQ` |
//! | 4 | 1 | record version (1) |
//! | 5 | 1 | kind: 1 install, 2 confirm, 3 cancel |
//! | 6 | 2 | reserved, zero |
//! | 8 | 32 | [`ImageDigest`] the request names (zero for cancel) |
//! | 40 | 4 | CRC-32 of bytes 0..40 |
//!
//! | rule | why |
//! |---|---|
//! | the request is the valid record in the highest slot | the application appends; a torn or corrupt record is not valid and the one before it stands |
//! | a record goes into the first fully erased slot after the last slot that is not | never program over bytes a torn write may have touched |
//! | when the sector is full the application erases it and writes slot 0 | a cut in that erase loses the request (the application sees none and asks again), never a floor |
//! | the bootloader erases the sector after acting on it | requests are consumed once; a cut before the erase shows the same request to the next boot, which finds it already done (every row of the table is idempotent) |

use embedded_storage::nor_flash::{NorFlash, NorFlashError};

use crate::crc::crc32;
use crate::error::Error;
use crate::layout::Layout;
use crate::record::{digest_at, u32_at, ImageDigest, Writer};

/// Length of one encoded request.
pub const REQUEST_LEN: usize = 44;

/// Largest request slot: the stride rounds the record up to the read and write sizes (at most
/// 256 bytes).
const MAX_REQUEST_STRIDE: usize = 256;

const MAGIC: [u8; 4] = *b"SGRQ";
const VERSION: u8 = 1;
const CRC_AT: usize = 40;

/// What the application asks the bootloader to do at the next boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Install the bundle staged in the staging slot, whose manifest digest is this.
    Install(ImageDigest),
    /// The running trial image, whose manifest digest is this, is good: make it final.
    Confirm(ImageDigest),
    /// Withdraw an install request.
    Cancel,
}

impl Request {
    /// The record's 44 bytes (without the padding to the slot stride). Applications use
    /// [`crate::BootControl`]; this is for tools and tests that write flash images directly.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let (kind, digest) = match self {
            Request::Install(d) => (1u8, *d),
            Request::Confirm(d) => (2, *d),
            Request::Cancel => (3, [0; 32]),
        };
        let mut out = [0u8; REQUEST_LEN];
        let mut w = Writer(&mut out);
        w.put(MAGIC);
        w.put([VERSION, kind, 0, 0]);
        w.put(digest);
        let crc = crc32(out.get(..CRC_AT).unwrap_or(&[]));
        if let Some((_, last)) = out.split_last_chunk_mut::<4>() {
            *last = crc.to_le_bytes();
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.get(..4)? != MAGIC || *bytes.get(4)? != VERSION {
            return None;
        }
        if crc32(bytes.get(..CRC_AT)?) != u32_at(bytes, CRC_AT)? {
            return None;
        }
        if bytes.get(6..8)? != [0, 0] {
            return None;
        }
        let digest = digest_at(bytes, 8)?;
        match bytes.get(5)? {
            1 => Some(Request::Install(digest)),
            2 => Some(Request::Confirm(digest)),
            3 if digest == [0; 32] => Some(Request::Cancel),
            _ => None,
        }
    }
}

/// The request region as read: the newest valid request and where the next one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Requests {
    /// The newest valid request.
    pub(crate) newest: Option<Request>,
    /// The first slot after the last one that is not erased (`None`: the sector is full).
    next_slot: Option<u32>,
    /// Whether any byte of the region is not erased.
    dirty: bool,
}

impl Requests {
    /// Whether the bootloader has anything to erase.
    pub(crate) fn dirty(&self) -> bool {
        self.dirty
    }
}

fn slot_at(layout: &Layout, slot: u32) -> Result<u32, Error> {
    slot.checked_mul(layout.request_stride())
        .and_then(|o| o.checked_add(layout.request_offset()))
        .ok_or(Error::Corrupt)
}

/// Reads the request region.
pub(crate) fn read<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<Requests, Error> {
    let stride = usize::try_from(layout.request_stride()).map_err(|_| Error::Corrupt)?;
    let erased = layout.geometry().erased;
    let mut buf = [0u8; MAX_REQUEST_STRIDE];
    let slot_buf = buf.get_mut(..stride).ok_or(Error::Corrupt)?;
    let mut found = Requests {
        newest: None,
        next_slot: Some(0),
        dirty: false,
    };
    let slots = layout.requests_per_sector();
    for slot in 0..slots {
        flash
            .read(slot_at(layout, slot)?, slot_buf)
            .map_err(|e| Error::Flash(e.kind()))?;
        if slot_buf.iter().all(|&b| b == erased) {
            continue;
        }
        found.dirty = true;
        let next = slot.saturating_add(1);
        found.next_slot = (next < slots).then_some(next);
        match slot_buf.get(..REQUEST_LEN).and_then(Request::decode) {
            Some(r) => found.newest = Some(r),
            None => log_debug!("request slot {}: not a valid request", slot),
        }
    }
    Ok(found)
}

/// Appends `request` (application side), erasing the region first when it is full.
pub(crate) fn append<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    current: &mut Requests,
    request: Request,
) -> Result<(), Error> {
    let slot = match current.next_slot {
        Some(slot) => slot,
        None => {
            erase(flash, layout)?;
            *current = Requests {
                newest: None,
                next_slot: Some(0),
                dirty: false,
            };
            0
        }
    };
    let stride = usize::try_from(layout.request_stride()).map_err(|_| Error::Corrupt)?;
    let mut buf = [layout.geometry().erased; MAX_REQUEST_STRIDE];
    if let Some(dst) = buf.get_mut(..REQUEST_LEN) {
        dst.copy_from_slice(&request.encode());
    }
    let record = buf.get(..stride).ok_or(Error::Corrupt)?;
    flash
        .write(slot_at(layout, slot)?, record)
        .map_err(|e| Error::Flash(e.kind()))?;
    let next = slot.saturating_add(1);
    *current = Requests {
        newest: Some(request),
        next_slot: (next < layout.requests_per_sector()).then_some(next),
        dirty: true,
    };
    Ok(())
}

/// Erases the request region (the bootloader, after acting on a request).
pub(crate) fn erase<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<(), Error> {
    let from = layout.request_offset();
    let to = from
        .checked_add(layout.sector_size())
        .ok_or(Error::Corrupt)?;
    flash.erase(from, to).map_err(|e| Error::Flash(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_bit_flip() {
        for r in [
            Request::Install([7; 32]),
            Request::Confirm([1; 32]),
            Request::Cancel,
        ] {
            let bytes = r.encode();
            assert_eq!(Request::decode(&bytes), Some(r));
            for i in 0..REQUEST_LEN * 8 {
                let mut bad = bytes;
                bad[i / 8] ^= 1 << (i % 8);
                assert_eq!(Request::decode(&bad), None, "bit {i}");
            }
        }
    }
}
