//! Flash layout: the boot-control (state) region, the active slot and the staging slot.
//!
//! All three regions live on one [`NorFlash`] device, at sector-aligned offsets. With a sector
//! size `S` and an active slot of `N` sectors:
//!
//! | region | offset | size | holds |
//! |---|---|---|---|
//! | state | `state` | `2 × S` | boot-control records, two sectors used alternately |
//! | active | `active` | `N × S` | the bundle that boots; its payload is the executable image |
//! | staging | `staging` | `(N + 1) × S` | sector 0: swap spare; sectors 1..=N: the staged bundle |
//!
//! The staging slot is one sector larger than the active slot (the *swap-offset* scheme): a new
//! bundle is written **one sector in**, at `staging + S` ([`Layout::staged_bundle_offset`]), so
//! the swap can move every sector exactly once (see [`crate::boot`]).
//!
//! A bundle in either slot starts at the slot's first byte (plus one sector in the staging
//! slot); the executable image is its payload, at `active + payload_offset` once installed.
//!
//! [`Layout::new`] is a `const fn`, so a board port checks its layout at compile time:
//!
//! ```
//! use sigil_bootloader::{Geometry, Layout};
//! const GEOMETRY: Geometry = Geometry { erase_size: 4096, write_size: 8, read_size: 1, erased: 0xFF };
//! const LAYOUT: Layout = match Layout::new(GEOMETRY, 0x8000, 0x1_0000, 0x4_0000, 48) {
//!     Ok(layout) => layout,
//!     Err(e) => panic!("{}", e.message()),
//! };
//! assert_eq!(LAYOUT.staged_bundle_offset(), 0x4_1000);
//! ```

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

use crate::record::RECORD_LEN;

/// Bytes moved per flash read or write when copying sectors and streaming verification.
pub(crate) const CHUNK: u32 = 256;

/// Largest write granularity the record format supports (a record slot is at most 128 bytes).
pub const MAX_WRITE_SIZE: u32 = 64;

/// The properties of a flash device that the layout depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Erase sector size in bytes (`NorFlash::ERASE_SIZE`).
    pub erase_size: u32,
    /// Write granularity in bytes (`NorFlash::WRITE_SIZE`).
    pub write_size: u32,
    /// Read granularity in bytes (`ReadNorFlash::READ_SIZE`).
    pub read_size: u32,
    /// The value every byte holds after an erase (0xFF on most NOR flash).
    pub erased: u8,
}

impl Geometry {
    /// The geometry of flash type `F`, whose erased bytes read as `erased`.
    pub const fn of<F: NorFlash>(erased: u8) -> Geometry {
        // Sizes above u32 are refused by `Layout::new` (they saturate here).
        Geometry {
            erase_size: saturate(F::ERASE_SIZE),
            write_size: saturate(F::WRITE_SIZE),
            read_size: saturate(F::READ_SIZE),
            erased,
        }
    }
}

const fn saturate(v: usize) -> u32 {
    if v > u32::MAX as usize {
        u32::MAX
    } else {
        v as u32
    }
}

/// Why a layout is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// A size is zero, or the sector size is not a multiple of the copy chunk (256 bytes) nor
    /// a divisor of it.
    BadSectorSize,
    /// The write or read granularity does not divide the copy chunk, or exceeds
    /// [`MAX_WRITE_SIZE`].
    BadWriteSize,
    /// A sector cannot hold one boot-control record.
    SectorTooSmall,
    /// A region offset is not a multiple of the sector size.
    Misaligned,
    /// The active slot has no sectors.
    EmptySlot,
    /// A region end overflows the 32-bit address space.
    Overflow,
    /// Two regions overlap.
    Overlap,
    /// A region ends beyond the flash device.
    OutOfFlash,
    /// The layout was built for another geometry than the flash it is used with.
    GeometryMismatch,
}

impl LayoutError {
    /// A constant message, usable in a `const` panic.
    pub const fn message(&self) -> &'static str {
        match self {
            LayoutError::BadSectorSize => "sector size must divide or be a multiple of 256 bytes",
            LayoutError::BadWriteSize => "write/read size must divide 256 bytes and be at most 64",
            LayoutError::SectorTooSmall => "a sector cannot hold one boot-control record",
            LayoutError::Misaligned => "region offset is not sector aligned",
            LayoutError::EmptySlot => "the active slot has no sectors",
            LayoutError::Overflow => "a region end overflows 32 bits",
            LayoutError::Overlap => "flash regions overlap",
            LayoutError::OutOfFlash => "a region ends beyond the flash device",
            LayoutError::GeometryMismatch => "layout geometry differs from the flash device",
        }
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for LayoutError {}

/// A checked flash layout (see the module documentation for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    geometry: Geometry,
    state: u32,
    active: u32,
    staging: u32,
    slot_sectors: u32,
}

const fn end(offset: u32, sectors: u32, sector: u32) -> Option<u32> {
    match sectors.checked_mul(sector) {
        Some(len) => offset.checked_add(len),
        None => None,
    }
}

/// `d` is non-zero and divides `n`.
const fn divides(d: u32, n: u32) -> bool {
    matches!(n.checked_rem(d), Some(0))
}

const fn disjoint(a: u32, a_end: u32, b: u32, b_end: u32) -> bool {
    a_end <= b || b_end <= a
}

impl Layout {
    /// Checks and builds a layout: state region at `state` (2 sectors), active slot at `active`
    /// (`slot_sectors` sectors), staging slot at `staging` (`slot_sectors + 1` sectors).
    pub const fn new(
        geometry: Geometry,
        state: u32,
        active: u32,
        staging: u32,
        slot_sectors: u32,
    ) -> Result<Layout, LayoutError> {
        let s = geometry.erase_size;
        let w = geometry.write_size;
        let r = geometry.read_size;
        if s == 0 || !(divides(CHUNK, s) || divides(s, CHUNK)) {
            return Err(LayoutError::BadSectorSize);
        }
        if w > MAX_WRITE_SIZE || !divides(w, CHUNK) || !divides(r, CHUNK) {
            return Err(LayoutError::BadWriteSize);
        }
        if record_stride(w) > s {
            return Err(LayoutError::SectorTooSmall);
        }
        if !divides(s, state) || !divides(s, active) || !divides(s, staging) {
            return Err(LayoutError::Misaligned);
        }
        if slot_sectors == 0 {
            return Err(LayoutError::EmptySlot);
        }
        let staging_sectors = match slot_sectors.checked_add(1) {
            Some(n) => n,
            None => return Err(LayoutError::Overflow),
        };
        let (state_end, active_end, staging_end) = match (
            end(state, 2, s),
            end(active, slot_sectors, s),
            end(staging, staging_sectors, s),
        ) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(LayoutError::Overflow),
        };
        if !disjoint(state, state_end, active, active_end)
            || !disjoint(state, state_end, staging, staging_end)
            || !disjoint(active, active_end, staging, staging_end)
        {
            return Err(LayoutError::Overlap);
        }
        Ok(Layout {
            geometry,
            state,
            active,
            staging,
            slot_sectors,
        })
    }

    /// Checks that this layout fits flash type `F` with `capacity` bytes.
    pub fn check_flash<F: NorFlash>(&self, capacity: usize) -> Result<(), LayoutError> {
        let g = &self.geometry;
        let same = usize::try_from(g.erase_size).ok() == Some(F::ERASE_SIZE)
            && usize::try_from(g.write_size).ok() == Some(F::WRITE_SIZE)
            && usize::try_from(g.read_size).ok() == Some(F::READ_SIZE);
        if !same {
            return Err(LayoutError::GeometryMismatch);
        }
        let last = [self.state_end(), self.active_end(), self.staging_end()]
            .into_iter()
            .max()
            .unwrap_or(u32::MAX);
        if usize::try_from(last).map_or(true, |last| last > capacity) {
            return Err(LayoutError::OutOfFlash);
        }
        Ok(())
    }

    /// The flash geometry.
    pub const fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Sector size in bytes.
    pub const fn sector_size(&self) -> u32 {
        self.geometry.erase_size
    }

    /// Number of sectors of the active slot (`N`).
    pub const fn slot_sectors(&self) -> u32 {
        self.slot_sectors
    }

    /// Offset of the state region.
    pub const fn state_offset(&self) -> u32 {
        self.state
    }

    /// Offset of the active slot: the installed bundle starts here.
    pub const fn active_offset(&self) -> u32 {
        self.active
    }

    /// Offset of the staging slot (its sector 0 is the swap spare).
    pub const fn staging_offset(&self) -> u32 {
        self.staging
    }

    /// Where the agent writes a new bundle: one sector into the staging slot.
    pub const fn staged_bundle_offset(&self) -> u32 {
        // Cannot overflow: `new` checked the staging slot end.
        self.staging.saturating_add(self.geometry.erase_size)
    }

    /// The largest bundle either slot holds: `N × S` bytes.
    pub const fn max_bundle_len(&self) -> u32 {
        self.slot_sectors.saturating_mul(self.geometry.erase_size)
    }

    /// Byte stride of one boot-control record slot (the record padded to the write size).
    pub const fn record_stride(&self) -> u32 {
        record_stride(self.geometry.write_size)
    }

    /// Records one state sector holds.
    pub const fn records_per_sector(&self) -> u32 {
        match self.geometry.erase_size.checked_div(self.record_stride()) {
            Some(n) => n,
            None => 0,
        }
    }

    pub(crate) const fn state_end(&self) -> u32 {
        self.state
            .saturating_add(self.geometry.erase_size.saturating_mul(2))
    }

    pub(crate) const fn active_end(&self) -> u32 {
        self.active.saturating_add(self.max_bundle_len())
    }

    pub(crate) const fn staging_end(&self) -> u32 {
        self.staging
            .saturating_add(self.max_bundle_len())
            .saturating_add(self.geometry.erase_size)
    }

    /// Offset of sector `i` of the active slot.
    pub(crate) fn active_sector(&self, i: u32) -> Option<u32> {
        i.checked_mul(self.sector_size())?.checked_add(self.active)
    }

    /// Offset of sector `i` of the staging slot (sector 0 is the spare).
    pub(crate) fn staging_sector(&self, i: u32) -> Option<u32> {
        i.checked_mul(self.sector_size())?.checked_add(self.staging)
    }

    /// Offset of state sector `i` (0 or 1).
    pub(crate) fn state_sector(&self, i: u32) -> Option<u32> {
        i.checked_mul(self.sector_size())?.checked_add(self.state)
    }

    /// Sectors a bundle of `len` bytes occupies.
    pub(crate) fn sectors_for(&self, len: u64) -> u32 {
        // A bundle that fits a slot has a u32 length; dividing in u32 keeps the 64-bit software
        // division out of the firmware (Cortex-M3 divides 32-bit numbers in hardware).
        match u32::try_from(len) {
            Ok(len) => len.div_ceil(self.sector_size().max(1)),
            Err(_) => u32::MAX,
        }
    }

    /// Bytes per copy/read chunk: 256, or the sector size if smaller.
    pub(crate) const fn chunk(&self) -> u32 {
        if self.geometry.erase_size < CHUNK {
            self.geometry.erase_size
        } else {
            CHUNK
        }
    }
}

/// A record padded to whole write units.
pub(crate) const fn record_stride(write_size: u32) -> u32 {
    let len = RECORD_LEN as u32;
    match len.checked_rem(write_size) {
        Some(0) | None => len,
        Some(rem) => len.saturating_add(write_size.saturating_sub(rem)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        erase_size: 256,
        write_size: 4,
        read_size: 1,
        erased: 0xFF,
    };

    #[test]
    fn accepts_a_plain_layout() {
        let l = Layout::new(G, 0, 512, 512 + 4 * 256, 4).unwrap();
        assert_eq!(l.staged_bundle_offset(), 512 + 5 * 256);
        assert_eq!(l.max_bundle_len(), 1024);
        assert_eq!(l.records_per_sector(), 3);
    }

    #[test]
    fn refuses_bad_layouts() {
        assert_eq!(Layout::new(G, 0, 256, 2048, 4), Err(LayoutError::Overlap));
        assert_eq!(
            Layout::new(G, 0, 513, 2048, 4),
            Err(LayoutError::Misaligned)
        );
        assert_eq!(Layout::new(G, 0, 512, 2048, 0), Err(LayoutError::EmptySlot));
        assert_eq!(
            Layout::new(G, 0, 512, u32::MAX - 255, 4),
            Err(LayoutError::Overflow)
        );
        let tiny = Geometry {
            erase_size: 64,
            ..G
        };
        assert_eq!(
            Layout::new(tiny, 0, 128, 512, 2),
            Err(LayoutError::SectorTooSmall)
        );
        let odd = Geometry {
            erase_size: 300,
            ..G
        };
        assert_eq!(
            Layout::new(odd, 0, 600, 3000, 2),
            Err(LayoutError::BadSectorSize)
        );
        let wide = Geometry {
            write_size: 128,
            ..G
        };
        assert_eq!(
            Layout::new(wide, 0, 512, 2048, 2),
            Err(LayoutError::BadWriteSize)
        );
    }
}
