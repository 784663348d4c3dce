//! The protected-state record log: two banks used alternately, every record written twice.
//!
//! | rule | why |
//! |---|---|
//! | the state is the valid record with the highest sequence number in either bank | a torn, corrupt or bit-flipped record is simply not valid (CRC-32), so it can never be the newest |
//! | every record is written twice, in two consecutive free slots of one bank, the second after the first completed | one flipped bit, or a torn second write, leaves the other copy: the state never falls back a record, so no floor falls, no trial boot is granted twice and no half-step of a swap is repeated over its own source |
//! | a newest record found with one valid copy is written again (both copies, next sequence number) before the bootloader acts on it | the state goes back to two copies before it is used |
//! | a record pair goes into the first two fully erased slots after the last slot that is not erased, in the bank that holds the current record | never program over bytes a torn write or a flipped bit may have touched |
//! | when that bank has no two such slots, the *other* bank is erased and the pair becomes its slots 0 and 1 | the current record is never inside the bank being erased; a half-erased bank only holds older records |
//! | sequence numbers only grow; at `u32::MAX` the log refuses to write | no wrap-around ambiguity; only the bootloader writes here, a few records per boot, so 4 × 10⁹ outlive any flash |

use embedded_storage::nor_flash::{NorFlash, NorFlashError};

use crate::error::Error;
use crate::layout::Layout;
use crate::record::{u32_at, BootState, Floors, RECORD_LEN, SEQUENCE_AT};

/// Largest record slot: the 256-byte record padded to a read or write size of at most 256.
const MAX_STRIDE: usize = 256;

/// Where the next record pair goes, found by [`load`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    /// The bank (0 or 1) that holds the current record, if any.
    bank: Option<u32>,
    /// The first free slot in that bank, if two remain.
    next_slot: Option<u32>,
}

/// The current state and where to append the next record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded {
    pub(crate) state: BootState,
    /// Valid copies of the current record found (0 for a blank region).
    pub(crate) copies: u8,
    cursor: Cursor,
}

/// Reads the slots of `bank` into `best`, the newest valid record found so far (of either
/// bank) with its raw bytes in `best_raw`: a record replaces it only with a higher sequence
/// number; one with the same sequence number counts as a further copy only if it lies in the
/// same bank and its bytes are the same (two different valid records under one sequence
/// number are not something the bootloader writes: the first is kept as a lone copy, and it
/// is rewritten as a pair before it is used). Returns one past the last slot that is not
/// fully erased.
fn scan_bank<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    bank: u32,
    best: &mut Loaded,
    best_raw: &mut [u8; RECORD_LEN],
) -> Result<u32, Error> {
    let base = layout.bank(bank).ok_or(Error::Corrupt)?;
    let stride = layout.record_stride();
    let stride_len = usize::try_from(stride).map_err(|_| Error::Corrupt)?;
    let erased = layout.geometry().erased;
    let mut buf = [0u8; MAX_STRIDE];
    let slot_buf = buf.get_mut(..stride_len).ok_or(Error::Corrupt)?;
    let mut used = 0;
    for slot in 0..layout.records_per_bank() {
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
        used = slot.saturating_add(1);
        let Some(raw) = slot_buf.first_chunk::<RECORD_LEN>() else {
            return Err(Error::Corrupt);
        };
        // Only a record newer than the best so far is decoded (into the best, in place); an
        // older one or one of the same sequence number counts only as a further copy of the
        // best, by its bytes.
        let newer = best.cursor.bank.is_none()
            || u32_at(raw, SEQUENCE_AT).is_some_and(|seq| seq > best.state.sequence);
        if newer {
            if best.state.decode_from(raw, layout.slot_sectors()) {
                best.copies = 1;
                best.cursor.bank = Some(bank);
                *best_raw = *raw;
            } else {
                log_debug!("protected bank {} slot {}: not a valid record", bank, slot);
            }
        } else if best.cursor.bank == Some(bank) && raw == best_raw {
            best.copies = best.copies.saturating_add(1);
        }
    }
    Ok(used)
}

/// Reads both banks and returns the current state.
pub(crate) fn load<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<Loaded, Error> {
    let mut loaded = Loaded {
        state: BootState::blank(),
        copies: 0,
        cursor: Cursor {
            bank: None,
            next_slot: None,
        },
    };
    let mut raw = [0u8; RECORD_LEN];
    let used_a = scan_bank(flash, layout, 0, &mut loaded, &mut raw)?;
    let used_b = scan_bank(flash, layout, 1, &mut loaded, &mut raw)?;
    // A pair needs two free slots, in the bank of the current record (bank 0 if none).
    let used = if loaded.cursor.bank == Some(1) {
        used_b
    } else {
        used_a
    };
    loaded.cursor.next_slot = (used.saturating_add(2) <= layout.records_per_bank()).then_some(used);
    Ok(loaded)
}

/// Whether the protected region holds no valid record (a factory-fresh device).
pub(crate) fn is_blank(loaded: &Loaded) -> bool {
    loaded.copies == 0
}

impl Loaded {
    /// Writes the state, changed in place by a transition, as the new record, twice (its
    /// sequence number is assigned here). After an `Err` the state is not what flash holds:
    /// the boot ends there.
    pub(crate) fn commit<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &Layout,
    ) -> Result<(), Error> {
        self.state.sequence = self
            .state
            .sequence
            .checked_add(1)
            .ok_or(Error::StateExhausted)?;
        let (bank, slot) = match (self.cursor.bank, self.cursor.next_slot) {
            (Some(b), Some(slot)) => (b, slot),
            (None, Some(slot)) => (0, slot),
            (current, None) => {
                // The current bank is full (or, with no valid record anywhere, bank 0 is full
                // of garbage): erase the bank that does not hold the current record.
                let other = match current {
                    Some(0) => 1,
                    _ => 0,
                };
                let from = layout.bank(other).ok_or(Error::Corrupt)?;
                let to = from.checked_add(layout.bank_len()).ok_or(Error::Corrupt)?;
                log_debug!("erasing protected bank {}", other);
                flash.erase(from, to).map_err(|e| Error::Flash(e.kind()))?;
                (other, 0)
            }
        };
        let stride = layout.record_stride();
        let stride_len = usize::try_from(stride).map_err(|_| Error::Corrupt)?;
        let mut buf = [layout.geometry().erased; MAX_STRIDE];
        if let Some(dst) = buf.first_chunk_mut::<RECORD_LEN>() {
            self.state.encode_into(dst);
        }
        let record = buf.get(..stride_len).ok_or(Error::Corrupt)?;
        for copy in 0..2u32 {
            let at = layout
                .bank(bank)
                .and_then(|b| b.checked_add(slot.checked_add(copy)?.checked_mul(stride)?))
                .ok_or(Error::Corrupt)?;
            flash
                .write(at, record)
                .map_err(|e| Error::Flash(e.kind()))?;
        }
        let following = slot.saturating_add(2);
        self.cursor = Cursor {
            bank: Some(bank),
            next_slot: (following.saturating_add(2) <= layout.records_per_bank())
                .then_some(following),
        };
        self.copies = 2;
        Ok(())
    }

    /// Rewrites a current record that has a single valid copy as a fresh pair.
    pub(crate) fn heal<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &Layout,
    ) -> Result<(), Error> {
        if self.copies == 1 {
            log_warn!("protected state: newest record has one valid copy; rewriting it");
            self.commit(flash, layout)?;
        }
        Ok(())
    }
}

/// Factory provisioning: writes the first protected record, with `floors`, into a protected
/// region that holds no valid record (`Error::AlreadyProvisioned` otherwise). Run by the
/// factory programmer (or `sigil-flash`) before the device leaves the line; a device that
/// boots unprovisioned starts from the floors of the image it first boots.
pub fn provision<F: NorFlash>(flash: &mut F, layout: &Layout, floors: Floors) -> Result<(), Error> {
    layout.check_flash::<F>(flash.capacity())?;
    let mut loaded = load(flash, layout)?;
    if !is_blank(&loaded) {
        return Err(Error::AlreadyProvisioned);
    }
    loaded.state.raise_floors(floors);
    loaded.commit(flash, layout)
}
