//! The boot-control record log: two sectors used alternately.
//!
//! | rule | why |
//! |---|---|
//! | the state is the valid record with the highest sequence number in either sector | a torn or corrupt record is simply not valid, so the previous one stands |
//! | a record goes into the first fully erased slot after the last non-erased slot of the sector that holds the current record | never program over bytes a torn write may have touched |
//! | when that sector is full, the *other* sector is erased and the record becomes its slot 0 | the current record is never inside the sector being erased; a half-erased sector only holds older records |
//! | sequence numbers only grow; at `u32::MAX` the log refuses to write | no wrap-around ambiguity (4 × 10⁹ records outlive any flash) |

use embedded_storage::nor_flash::{NorFlash, NorFlashError};

use crate::error::Error;
use crate::layout::Layout;
use crate::record::{BootState, RECORD_LEN};

/// Largest record slot (80 bytes padded to a write size of at most 64).
const MAX_STRIDE: usize = 128;

/// Where the next record goes, found by [`load`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    /// The state sector (0 or 1) that holds the current record, if any.
    sector: Option<u32>,
    /// The first free slot in that sector, if one remains.
    next_slot: Option<u32>,
}

/// The current state and where to append the next record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded {
    pub(crate) state: BootState,
    cursor: Cursor,
}

struct SectorScan {
    best: Option<BootState>,
    /// One past the last slot that is not fully erased.
    used: u32,
}

fn scan_sector<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    sector: u32,
) -> Result<SectorScan, Error> {
    let base = layout.state_sector(sector).ok_or(Error::Corrupt)?;
    let stride = layout.record_stride();
    let stride_len = usize::try_from(stride).map_err(|_| Error::Corrupt)?;
    let erased = layout.geometry().erased;
    let mut buf = [0u8; MAX_STRIDE];
    let slot_buf = buf.get_mut(..stride_len).ok_or(Error::Corrupt)?;
    let mut scan = SectorScan {
        best: None,
        used: 0,
    };
    for slot in 0..layout.records_per_sector() {
        let at = slot
            .checked_mul(stride)
            .and_then(|o| o.checked_add(base))
            .ok_or(Error::Corrupt)?;
        flash
            .read(at, slot_buf)
            .map_err(|e| Error::Flash(e.kind()))?;
        if slot_buf.iter().all(|&b| b == erased) {
            continue;
        }
        scan.used = slot.saturating_add(1);
        let record = slot_buf.get(..RECORD_LEN).and_then(BootState::decode);
        match record {
            Some(r) if consistent(&r, layout) => {
                if scan.best.is_none_or(|b| r.sequence > b.sequence) {
                    scan.best = Some(r);
                }
            }
            _ => log_debug!("state sector {} slot {}: not a valid record", sector, slot),
        }
    }
    Ok(scan)
}

/// A CRC-valid record that still makes no sense for this layout is ignored like a corrupt one.
fn consistent(r: &BootState, layout: &Layout) -> bool {
    let max_progress = r.swap_sectors.checked_mul(2);
    r.swap_sectors <= layout.slot_sectors() && max_progress.is_some_and(|m| r.swap_progress <= m)
}

/// Reads both state sectors and returns the current state.
pub(crate) fn load<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<Loaded, Error> {
    let a = scan_sector(flash, layout, 0)?;
    let b = scan_sector(flash, layout, 1)?;
    let slots = layout.records_per_sector();
    let free_after = |used: u32| if used < slots { Some(used) } else { None };
    let (state, cursor) = match (a.best, b.best) {
        (Some(x), Some(y)) if y.sequence > x.sequence => (
            y,
            Cursor {
                sector: Some(1),
                next_slot: free_after(b.used),
            },
        ),
        (Some(x), _) => (
            x,
            Cursor {
                sector: Some(0),
                next_slot: free_after(a.used),
            },
        ),
        (None, Some(y)) => (
            y,
            Cursor {
                sector: Some(1),
                next_slot: free_after(b.used),
            },
        ),
        (None, None) => {
            log_warn!("no valid boot-control record: starting from the blank state");
            (
                BootState::blank(),
                Cursor {
                    sector: None,
                    next_slot: free_after(a.used),
                },
            )
        }
    };
    Ok(Loaded { state, cursor })
}

impl Loaded {
    /// Writes `next` as the new state (its sequence number is assigned here).
    pub(crate) fn commit<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &Layout,
        mut next: BootState,
    ) -> Result<(), Error> {
        next.sequence = self
            .state
            .sequence
            .checked_add(1)
            .ok_or(Error::StateExhausted)?;
        let (sector, slot) = match (self.cursor.sector, self.cursor.next_slot) {
            (Some(s), Some(slot)) => (s, slot),
            (None, Some(slot)) => (0, slot),
            (current, None) => {
                // The current sector is full (or, with no valid record anywhere, sector 0 is
                // full of garbage): erase the sector that does not hold the current record.
                let other = match current {
                    Some(0) => 1,
                    _ => 0,
                };
                let from = layout.state_sector(other).ok_or(Error::Corrupt)?;
                let to = from
                    .checked_add(layout.sector_size())
                    .ok_or(Error::Corrupt)?;
                log_debug!("erasing state sector {}", other);
                flash.erase(from, to).map_err(|e| Error::Flash(e.kind()))?;
                (other, 0)
            }
        };
        let stride = layout.record_stride();
        let stride_len = usize::try_from(stride).map_err(|_| Error::Corrupt)?;
        let mut buf = [layout.geometry().erased; MAX_STRIDE];
        if let Some(dst) = buf.get_mut(..RECORD_LEN) {
            dst.copy_from_slice(&next.encode());
        }
        let at = layout
            .state_sector(sector)
            .and_then(|b| b.checked_add(slot.checked_mul(stride)?))
            .ok_or(Error::Corrupt)?;
        let record = buf.get(..stride_len).ok_or(Error::Corrupt)?;
        flash
            .write(at, record)
            .map_err(|e| Error::Flash(e.kind()))?;
        let following = slot.saturating_add(1);
        self.cursor = Cursor {
            sector: Some(sector),
            next_slot: (following < layout.records_per_sector()).then_some(following),
        };
        self.state = next;
        Ok(())
    }
}
