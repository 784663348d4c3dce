//! The lock: the protected state unwritable until reset.
//!
//! [`BoardLock::lock`] sets the nRF51 MPU's protection (`PROTENSET0/1`) on the 4 KiB blocks
//! that hold the protected state and nothing else (board/build.rs checks the map), with
//! `DISABLEINDEBUG` cleared so an attached debugger does not lift it; on the part the NVMC then
//! ignores every erase and write there until reset, whatever code asks. It also sets the
//! driver's latch, so [`crate::Flash`] refuses such requests with an error.
//!
//! QEMU 7.2 does not model the nRF51 MPU (its registers are unimplemented: writes are ignored,
//! reads return 0), so under QEMU only the driver's latch holds; the Cortex-M0 has no MPU and
//! no unprivileged mode of its own, so an application that drives the NVMC registers itself is
//! not stopped in QEMU. README.md says what that leaves untested.

use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use sigil_bootloader::{LockFailed, StateLock};

use crate::config;
use crate::glue;

static LATCHED: AtomicBool = AtomicBool::new(false);

/// The locked flash address range, once [`BoardLock::lock`] has run. In an application
/// (built without the `bootloader` feature) always: it runs after the lock, never before.
pub(crate) fn latched() -> Option<Range<u32>> {
    (!cfg!(feature = "bootloader") || LATCHED.load(Ordering::Acquire)).then_some(config::LOCKED)
}

/// The board's [`StateLock`].
#[derive(Debug, Default)]
pub struct BoardLock {
    /// PROTENSET0/1 as read back after the lock (all zero under QEMU, which does not model them).
    pub protenset: [u32; 2],
}

impl BoardLock {
    /// A lock not yet set.
    pub fn new() -> Self {
        BoardLock::default()
    }
}

impl StateLock for BoardLock {
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed> {
        // The core passes the protected region as flash offsets: it must be what board.toml
        // reserved, whole protection blocks.
        let start = config::FLASH_BASE
            .checked_add(protected.start)
            .ok_or(LockFailed)?;
        let end = config::FLASH_BASE
            .checked_add(protected.end)
            .ok_or(LockFailed)?;
        if start != config::LOCKED.start || end > config::LOCKED.end {
            return Err(LockFailed);
        }
        self.protenset = glue::protect(&config::LOCKED);
        LATCHED.store(true, Ordering::Release);
        Ok(())
    }
}
