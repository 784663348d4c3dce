//! Flash layout: the protected state, the request sector, the active slot and the staging slot.
//!
//! All four regions live on one [`NorFlash`] device, at sector-aligned offsets, and do not
//! overlap. With a sector size `S`, an active slot of `N` sectors and `P` =
//! [`Layout::protected_len`]:
//!
//! | region | offset | size | written by | holds |
//! |---|---|---|---|---|
//! | protected state | `protected` | `P` = 2 banks | the bootloader only (locked before every jump) | boot-state records, each written twice, banks used alternately ([`crate::record`]) |
//! | requests | `requests` | `S` | the application / agent | install, confirm and cancel requests ([`crate::request`]) |
//! | active | `active` | `N × S` | the bootloader | the bundle that boots; its payload is the executable image |
//! | staging | `staging` | `(N + 1) × S` | the application (sectors 1..=N, in Idle) and the bootloader | sector 0: swap spare; sectors 1..=N: the staged bundle |
//!
//! A bank is the smallest whole number of sectors that holds four record slots (two records,
//! each written twice): one sector from 1 KiB sectors up, four 256-byte sectors below.
//!
//! The staging slot is one sector larger than the active slot (the *swap-offset* scheme): a new
//! bundle is written **one sector in**, at `staging + S` ([`Layout::staged_bundle_offset`]), so
//! the swap can move every sector exactly once (see [`crate::boot`]).
//!
//! Geometry: sectors divide or are multiples of 256 bytes; write and read sizes are powers of
//! two, the write size at most 64 bytes and the read size at most 256 bytes and at most a
//! sector. Every read the code makes is a whole number of read units at a read-aligned offset,
//! so every geometry [`Layout::new`] accepts works (`tests/geometry.rs` runs an update and a
//! revert on each).
//!
//! [`Layout::new`] is a `const fn`, so a board port checks its layout at compile time:
//!
//! ```
//! use sigil_bootloader::{Geometry, Layout};
//! const GEOMETRY: Geometry = Geometry { erase_size: 4096, write_size: 8, read_size: 1, erased: 0xFF };
//! const LAYOUT: Layout = match Layout::new(GEOMETRY, 0x8000, 0xA000, 0x1_0000, 0x4_0000, 48) {
//!     Ok(layout) => layout,
//!     Err(e) => panic!("{}", e.message()),
//! };
//! assert_eq!(LAYOUT.protected_region(), 0x8000..0xA000);
//! assert_eq!(LAYOUT.staged_bundle_offset(), 0x4_1000);
//! ```

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

use core::ops::Range;

use crate::record::RECORD_LEN;
use crate::request::REQUEST_LEN;

/// Bytes moved per flash read or write when copying sectors and streaming verification.
pub(crate) const CHUNK: u32 = 256;

/// The unit the key record of an encrypted bundle is placed in beside the bundle: the 138-byte
/// `SGL-WKEY` record at its start, the rest erased.
pub const KEY_RECORD_UNIT: u32 = 256;

/// Largest write granularity the layout accepts.
pub const MAX_WRITE_SIZE: u32 = 64;

/// Largest read granularity the layout accepts (one copy chunk).
pub const MAX_READ_SIZE: u32 = CHUNK;

/// Record slots per bank of the protected state: two records, each written twice.
const SLOTS_PER_BANK: u32 = 4;

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
    /// The write size is not a power of two up to [`MAX_WRITE_SIZE`].
    BadWriteSize,
    /// The read size is not a power of two up to [`MAX_READ_SIZE`] and the sector size.
    BadReadSize,
    /// A sector cannot hold one request record.
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
            LayoutError::BadWriteSize => "write size must be a power of two, at most 64 bytes",
            LayoutError::BadReadSize => {
                "read size must be a power of two, at most 256 bytes and at most a sector"
            }
            LayoutError::SectorTooSmall => "a sector cannot hold one request record",
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
    protected: u32,
    requests: u32,
    active: u32,
    staging: u32,
    slot_sectors: u32,
    // Derived from the fields above by `new`, once: the boot reads them in every loop over
    // the protected state and the requests.
    bank_len: u32,
    record_stride: u32,
    records_per_bank: u32,
    request_stride: u32,
    requests_per_sector: u32,
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

/// `len` rounded up to a multiple of `unit` (a power of two).
const fn round_up(len: u32, unit: u32) -> u32 {
    match len.checked_rem(unit) {
        Some(0) | None => len,
        Some(rem) => len.saturating_add(unit.saturating_sub(rem)),
    }
}

const fn max(a: u32, b: u32) -> u32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Sectors of one protected-state bank for sectors of `s` bytes.
const fn bank_sectors(s: u32) -> u32 {
    let bytes = (RECORD_LEN as u32).saturating_mul(SLOTS_PER_BANK);
    match bytes.checked_div(s) {
        Some(0) => 1,
        Some(n) if n.saturating_mul(s) == bytes => n,
        Some(n) => n.saturating_add(1),
        None => 1,
    }
}

impl Layout {
    /// Checks and builds a layout: protected state at `protected`
    /// ([`Layout::protected_len`] bytes), request sector at `requests` (1 sector), active slot
    /// at `active` (`slot_sectors` sectors), staging slot at `staging` (`slot_sectors + 1`
    /// sectors).
    pub const fn new(
        geometry: Geometry,
        protected: u32,
        requests: u32,
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
        if w == 0 || !w.is_power_of_two() || w > MAX_WRITE_SIZE {
            return Err(LayoutError::BadWriteSize);
        }
        if r == 0 || !r.is_power_of_two() || r > MAX_READ_SIZE || r > s {
            return Err(LayoutError::BadReadSize);
        }
        if round_up(REQUEST_LEN as u32, max(w, r)) > s {
            return Err(LayoutError::SectorTooSmall);
        }
        if !divides(s, protected)
            || !divides(s, requests)
            || !divides(s, active)
            || !divides(s, staging)
        {
            return Err(LayoutError::Misaligned);
        }
        if slot_sectors == 0 {
            return Err(LayoutError::EmptySlot);
        }
        let staging_sectors = match slot_sectors.checked_add(1) {
            Some(n) => n,
            None => return Err(LayoutError::Overflow),
        };
        let protected_sectors = bank_sectors(s).saturating_mul(2);
        let ends = (
            end(protected, protected_sectors, s),
            end(requests, 1, s),
            end(active, slot_sectors, s),
            end(staging, staging_sectors, s),
        );
        let (p_end, q_end, a_end, s_end) = match ends {
            (Some(p), Some(q), Some(a), Some(st)) => (p, q, a, st),
            _ => return Err(LayoutError::Overflow),
        };
        let (p, q, a, st) = (protected, requests, active, staging);
        if !disjoint(p, p_end, q, q_end)
            || !disjoint(p, p_end, a, a_end)
            || !disjoint(p, p_end, st, s_end)
            || !disjoint(q, q_end, a, a_end)
            || !disjoint(q, q_end, st, s_end)
            || !disjoint(a, a_end, st, s_end)
        {
            return Err(LayoutError::Overlap);
        }
        // The larger of the write and read sizes: every record slot is padded to it.
        let io_unit = max(w, r);
        let bank_len = bank_sectors(s).saturating_mul(s);
        let record_stride = round_up(RECORD_LEN as u32, io_unit);
        let request_stride = round_up(REQUEST_LEN as u32, io_unit);
        Ok(Layout {
            geometry,
            protected,
            requests,
            active,
            staging,
            slot_sectors,
            bank_len,
            record_stride,
            records_per_bank: match bank_len.checked_div(record_stride) {
                Some(n) => n,
                None => 0,
            },
            request_stride,
            requests_per_sector: match s.checked_div(request_stride) {
                Some(n) => n,
                None => 0,
            },
        })
    }

    /// Bytes of the protected-state region for `geometry` (two banks), for board ports placing
    /// the request sector after it. Meaningful for geometries [`Layout::new`] accepts.
    pub const fn protected_len(geometry: Geometry) -> u32 {
        bank_sectors(geometry.erase_size)
            .saturating_mul(2)
            .saturating_mul(geometry.erase_size)
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
        let last = [
            self.protected_region().end,
            self.request_region().end,
            self.active_end(),
            self.staging_end(),
        ]
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

    /// The protected-state region: the range a board locks before every jump.
    pub const fn protected_region(&self) -> Range<u32> {
        // Two banks: `Layout::protected_len`.
        self.protected
            ..self
                .protected
                .saturating_add(self.bank_len.saturating_mul(2))
    }

    /// The request sector.
    pub const fn request_region(&self) -> Range<u32> {
        self.requests..self.requests.saturating_add(self.geometry.erase_size)
    }

    /// Offset of the request sector.
    pub const fn request_offset(&self) -> u32 {
        self.requests
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

    /// Offset, from the staged bundle's start, of the key record of an encrypted bundle of
    /// `bundle_len` bytes (FORMAT.md §9, `crypt.rs`): the first [`KEY_RECORD_UNIT`] boundary
    /// at or after the bundle's end. `None` if the record's unit does not fit the slot.
    pub fn key_record_offset(&self, bundle_len: u64) -> Option<u32> {
        let len = u32::try_from(bundle_len).ok()?;
        let at = len.checked_next_multiple_of(KEY_RECORD_UNIT)?;
        (at.checked_add(KEY_RECORD_UNIT)? <= self.max_bundle_len()).then_some(at)
    }

    /// The largest bundle either slot holds: `N × S` bytes.
    pub const fn max_bundle_len(&self) -> u32 {
        self.slot_sectors.saturating_mul(self.geometry.erase_size)
    }

    /// Byte stride of one protected-state record slot (the record padded to the larger of the
    /// write and read sizes).
    pub const fn record_stride(&self) -> u32 {
        self.record_stride
    }

    /// Bytes of one protected-state bank.
    pub const fn bank_len(&self) -> u32 {
        self.bank_len
    }

    /// Record slots one bank holds.
    pub const fn records_per_bank(&self) -> u32 {
        self.records_per_bank
    }

    /// Byte stride of one request slot.
    pub const fn request_stride(&self) -> u32 {
        self.request_stride
    }

    /// Request slots the request sector holds.
    pub const fn requests_per_sector(&self) -> u32 {
        self.requests_per_sector
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

    /// Offset of protected-state bank `i` (0 or 1).
    pub(crate) fn bank(&self, i: u32) -> Option<u32> {
        i.checked_mul(self.bank_len())?.checked_add(self.protected)
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

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        erase_size: 1024,
        write_size: 4,
        read_size: 1,
        erased: 0xFF,
    };
    const K: u32 = 1024;

    #[test]
    fn accepts_a_plain_layout() {
        let l = Layout::new(G, 0, 2 * K, 3 * K, 7 * K, 4).unwrap();
        assert_eq!(l.protected_region(), 0..2 * K);
        assert_eq!(l.request_region(), 2 * K..3 * K);
        assert_eq!(l.staged_bundle_offset(), 8 * K);
        assert_eq!(l.max_bundle_len(), 4 * K);
        assert_eq!(l.records_per_bank(), 4);
        assert_eq!(l.request_stride(), 44);
    }

    #[test]
    fn small_sectors_get_multi_sector_banks() {
        let small = Geometry {
            erase_size: 256,
            ..G
        };
        assert_eq!(Layout::protected_len(small), 2048);
        let l = Layout::new(small, 0, 2048, 2304, 2304 + 1024, 4).unwrap();
        assert_eq!(l.bank_len(), 1024);
        assert_eq!(l.bank(1), Some(1024));
    }

    #[test]
    fn strides_cover_the_read_size() {
        for (w, r, record, request) in [(1, 32, 256, 64), (64, 64, 256, 64), (8, 256, 256, 256)] {
            let g = Geometry {
                write_size: w,
                read_size: r,
                ..G
            };
            let l = Layout::new(g, 0, 2 * K, 3 * K, 7 * K, 4).unwrap();
            assert_eq!((l.record_stride(), l.request_stride()), (record, request));
        }
    }

    #[test]
    fn refuses_bad_layouts() {
        assert_eq!(
            Layout::new(G, 0, K, 3 * K, 7 * K, 4),
            Err(LayoutError::Overlap)
        );
        assert_eq!(
            Layout::new(G, 0, 2 * K, 2 * K, 7 * K, 4),
            Err(LayoutError::Overlap)
        );
        assert_eq!(
            Layout::new(G, 0, 2 * K, 3 * K + 1, 8 * K, 4),
            Err(LayoutError::Misaligned)
        );
        assert_eq!(
            Layout::new(G, 0, 2 * K, 3 * K, 7 * K, 0),
            Err(LayoutError::EmptySlot)
        );
        assert_eq!(
            Layout::new(G, 0, 2 * K, 3 * K, u32::MAX - 1023, 4),
            Err(LayoutError::Overflow)
        );
        let tiny = Geometry {
            erase_size: 32,
            ..G
        };
        assert_eq!(
            Layout::new(tiny, 0, 32 * 64, 32 * 65, 32 * 80, 2),
            Err(LayoutError::SectorTooSmall)
        );
        let odd = Geometry {
            erase_size: 300,
            ..G
        };
        assert_eq!(
            Layout::new(odd, 0, 600, 3000, 6000, 2),
            Err(LayoutError::BadSectorSize)
        );
        for w in [0, 3, 12, 128] {
            let g = Geometry { write_size: w, ..G };
            assert_eq!(
                Layout::new(g, 0, 2 * K, 3 * K, 7 * K, 4),
                Err(LayoutError::BadWriteSize),
                "write size {w}"
            );
        }
        for r in [0, 3, 48, 512] {
            let g = Geometry { read_size: r, ..G };
            assert_eq!(
                Layout::new(g, 0, 2 * K, 3 * K, 7 * K, 4),
                Err(LayoutError::BadReadSize),
                "read size {r}"
            );
        }
        let small = Geometry {
            erase_size: 128,
            read_size: 256,
            ..G
        };
        assert_eq!(
            Layout::new(small, 0, 4096, 8192, 16384, 4),
            Err(LayoutError::BadReadSize)
        );
    }
}
