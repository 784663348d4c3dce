//! A host model of NOR flash with fault injection (feature `sim`).
//!
//! | property | model |
//! |---|---|
//! | geometry | `ERASE` and `WRITE` are const parameters (NorFlash needs them as constants); any size; erased value configurable |
//! | write | only moves bits away from the erased value (`0xFF`: clears bits); programming a byte that is not erased is counted as a *violation* (real parts refuse it or corrupt ECC) |
//! | erase | resets a whole sector to the erased value |
//! | counters | reads, writes and erases per sector |
//! | power cut | the armed fault fires on the N-th write or erase from now: the operation is cut (nothing, a prefix, or part of an erase lands) and every later operation fails until [`SimFlash::power_on`] |
//!
//! Fault kinds ([`Cut`]): `Clean` (the operation does not happen), `Torn { landed }` (the first
//! `landed` bytes of a write land), `PartialErase { erased }` (the first `erased` bytes of the
//! sector are erased, the rest keep their old contents), `ScatteredErase { seed }` (a random
//! half of the sector's bytes are erased).

// A host-only test model: bounds are checked by `check_*` first, and an out-of-range index
// would be a test failure, not a device hazard.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::vec;
use std::vec::Vec;

use core::ops::Range;

use crate::{BootFlash, LockFailed, StateLock};
use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// What happens to the operation a power cut interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing of the operation lands.
    Clean,
    /// A write lands its first `landed` bytes (an erase is cut cleanly).
    Torn {
        /// Bytes that land.
        landed: usize,
    },
    /// An erase resets only the first `erased` bytes of the sector (a write is cut cleanly).
    PartialErase {
        /// Bytes that are erased.
        erased: usize,
    },
    /// An erase resets a pseudo-random half of the sector's bytes (a write is cut cleanly).
    ScatteredErase {
        /// Seed of the choice.
        seed: u64,
    },
}

/// A power cut planned for a future write or erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Index of the write/erase that is cut, counting from 0 at [`SimFlash::arm`].
    pub at_op: u64,
    /// What lands of it.
    pub cut: Cut,
}

/// The simulator's error: what the driver reports, and `Other` once the power is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimError(pub NorFlashErrorKind);

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

/// Per-sector operation counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SectorStats {
    /// Read calls that touched the sector.
    pub reads: u64,
    /// Write calls that touched the sector.
    pub writes: u64,
    /// Erases of the sector.
    pub erases: u64,
}

/// Which of the two mutating operations a fault met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A write.
    Write,
    /// An erase.
    Erase,
}

/// A simulated NOR flash of `ERASE`-byte sectors and `WRITE`-byte write units.
#[derive(Debug, Clone)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize, const READ: usize = 1> {
    data: Vec<u8>,
    erased: u8,
    stats: Vec<SectorStats>,
    fault: Option<Fault>,
    ops_since_arm: u64,
    ops_total: u64,
    powered: bool,
    violations: u64,
    log: Option<Vec<OpKind>>,
    /// The range a [`StateLock`] locked until the next reset.
    locked: Option<Range<u32>>,
    lock_refusals: u64,
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> SimFlash<WRITE, ERASE, READ> {
    /// A fully erased device of `sectors` sectors.
    pub fn new(sectors: usize, erased: u8) -> Self {
        SimFlash {
            data: vec![erased; sectors * ERASE],
            erased,
            stats: vec![SectorStats::default(); sectors],
            fault: None,
            ops_since_arm: 0,
            ops_total: 0,
            powered: true,
            violations: 0,
            log: None,
            locked: None,
            lock_refusals: 0,
        }
    }

    /// The raw contents.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Raw mutable contents, for tests that tamper with flash directly.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The erased value.
    pub fn erased(&self) -> u8 {
        self.erased
    }

    /// Plans a power cut; operation indices count from now.
    pub fn arm(&mut self, fault: Fault) {
        self.fault = Some(fault);
        self.ops_since_arm = 0;
    }

    /// Removes a planned fault that has not fired.
    pub fn disarm(&mut self) {
        self.fault = None;
    }

    /// Restores power (the fault, if it fired, is gone).
    pub fn power_on(&mut self) {
        self.locked = None;
        self.powered = true;
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Writes and erases since the device was created.
    pub fn ops(&self) -> u64 {
        self.ops_total
    }

    /// Writes to bytes that were not erased (a bug in the code under test).
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// Counters of sector `i`.
    pub fn stats(&self, i: usize) -> SectorStats {
        self.stats.get(i).copied().unwrap_or_default()
    }

    /// Zeroes all counters.
    pub fn reset_stats(&mut self) {
        self.stats
            .iter_mut()
            .for_each(|s| *s = SectorStats::default());
    }

    /// Starts recording the kind of every write and erase.
    pub fn record_ops(&mut self) {
        self.log = Some(Vec::new());
    }

    /// The recorded operation kinds.
    pub fn recorded_ops(&self) -> &[OpKind] {
        self.log.as_deref().unwrap_or(&[])
    }

    /// Locks `range` against writes and erases until [`SimFlash::reset`] or
    /// [`SimFlash::power_on`] (what a board's [`StateLock`] does to the real part).
    pub fn lock(&mut self, range: Range<u32>) {
        self.locked = Some(range);
    }

    /// The locked range, if any.
    pub fn locked(&self) -> Option<Range<u32>> {
        self.locked.clone()
    }

    /// Writes and erases refused because they touched the locked range.
    pub fn lock_refusals(&self) -> u64 {
        self.lock_refusals
    }

    /// A reset without a power cut: the lock is released, nothing else changes.
    pub fn reset(&mut self) {
        self.locked = None;
    }

    /// Refuses (and counts) an operation on `from..to` that touches the locked range.
    fn check_lock(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        match &self.locked {
            Some(l) if from < l.end && l.start < to => {
                self.lock_refusals += 1;
                Err(SimError(NorFlashErrorKind::Other))
            }
            _ => Ok(()),
        }
    }

    fn sectors(offset: usize, len: usize) -> Range<usize> {
        let first = offset / ERASE;
        let last = (offset + len.max(1) - 1) / ERASE;
        first..last + 1
    }

    /// Counts a mutating operation; `Some(cut)` if the power fails during it.
    fn next_op(&mut self, kind: OpKind) -> Result<Option<Cut>, SimError> {
        if !self.powered {
            return Err(SimError(NorFlashErrorKind::Other));
        }
        if let Some(log) = &mut self.log {
            log.push(kind);
        }
        self.ops_total += 1;
        let index = self.ops_since_arm;
        self.ops_since_arm += 1;
        match self.fault {
            Some(f) if f.at_op == index => {
                self.fault = None;
                self.powered = false;
                Ok(Some(f.cut))
            }
            _ => Ok(None),
        }
    }

    fn program(&mut self, offset: usize, bytes: &[u8]) {
        let e = self.erased;
        for (dst, &b) in self.data[offset..offset + bytes.len()]
            .iter_mut()
            .zip(bytes)
        {
            if *dst != e && b != e {
                self.violations += 1;
            }
            // Bits can only move away from their erased value.
            *dst = ((*dst & b) & e) | ((*dst | b) & !e);
        }
    }
}

/// Read through `NorFlash` in chunks, like SPI NOR.
impl<const WRITE: usize, const ERASE: usize, const READ: usize> BootFlash
    for SimFlash<WRITE, ERASE, READ>
{
}

/// A [`SimFlash`] that the bootloader reads in place, as a port with memory-mapped flash does
/// (writes and erases still go through the simulated device and its fault injection).
#[derive(Debug)]
pub struct Mapped<'f, const WRITE: usize, const ERASE: usize, const READ: usize = 1>(
    pub &'f mut SimFlash<WRITE, ERASE, READ>,
);

impl<const WRITE: usize, const ERASE: usize, const READ: usize> ErrorType
    for Mapped<'_, WRITE, ERASE, READ>
{
    type Error = SimError;
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> ReadNorFlash
    for Mapped<'_, WRITE, ERASE, READ>
{
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> NorFlash
    for Mapped<'_, WRITE, ERASE, READ>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        self.0.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        self.0.write(offset, bytes)
    }
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> BootFlash
    for Mapped<'_, WRITE, ERASE, READ>
{
    const MAPPED: bool = true;

    fn mapped(&self, offset: u32, len: u32) -> Option<&[u8]> {
        if !self.0.powered {
            return None;
        }
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.0.data.get(start..end)
    }
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> ErrorType
    for SimFlash<WRITE, ERASE, READ>
{
    type Error = SimError;
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> ReadNorFlash
    for SimFlash<WRITE, ERASE, READ>
{
    const READ_SIZE: usize = READ;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError(NorFlashErrorKind::Other));
        }
        check_read(self, offset, bytes.len()).map_err(SimError)?;
        let offset = offset as usize;
        for s in Self::sectors(offset, bytes.len()) {
            self.stats[s].reads += 1;
        }
        bytes.copy_from_slice(&self.data[offset..offset + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const ERASE: usize, const READ: usize> NorFlash
    for SimFlash<WRITE, ERASE, READ>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        check_erase(self, from, to).map_err(SimError)?;
        self.check_lock(from, to)?;
        let (from, to) = (from as usize, to as usize);
        for sector in from / ERASE..to / ERASE {
            let cut = self.next_op(OpKind::Erase)?;
            let base = sector * ERASE;
            let e = self.erased;
            let bytes = &mut self.data[base..base + ERASE];
            match cut {
                None => {
                    bytes.fill(e);
                    self.stats[sector].erases += 1;
                }
                Some(Cut::PartialErase { erased }) => {
                    bytes[..erased.min(ERASE)].fill(e);
                    return Err(SimError(NorFlashErrorKind::Other));
                }
                Some(Cut::ScatteredErase { seed }) => {
                    let mut state = seed | 1;
                    for b in bytes.iter_mut() {
                        if xorshift(&mut state) & 1 == 1 {
                            *b = e;
                        }
                    }
                    return Err(SimError(NorFlashErrorKind::Other));
                }
                Some(_) => return Err(SimError(NorFlashErrorKind::Other)),
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        check_write(self, offset, bytes.len()).map_err(SimError)?;
        self.check_lock(offset, offset.saturating_add(bytes.len() as u32))?;
        let cut = self.next_op(OpKind::Write)?;
        let offset = offset as usize;
        for s in Self::sectors(offset, bytes.len()) {
            self.stats[s].writes += 1;
        }
        match cut {
            None => {
                self.program(offset, bytes);
                Ok(())
            }
            Some(Cut::Torn { landed }) => {
                self.program(offset, &bytes[..landed.min(bytes.len())]);
                Err(SimError(NorFlashErrorKind::Other))
            }
            Some(_) => Err(SimError(NorFlashErrorKind::Other)),
        }
    }
}

/// A [`StateLock`] for host tests: records the range the bootloader asked to lock (the rig
/// then applies it with [`SimFlash::lock`] before the application runs), or fails on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingLock {
    /// The range of the last successful `lock` call.
    pub locked: Option<Range<u32>>,
    /// Calls made.
    pub calls: u32,
    /// Make every call fail, as a board whose lock hardware refuses.
    pub fail: bool,
}

impl StateLock for RecordingLock {
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed> {
        self.calls = self.calls.saturating_add(1);
        if self.fail {
            return Err(LockFailed);
        }
        self.locked = Some(protected);
        Ok(())
    }
}
