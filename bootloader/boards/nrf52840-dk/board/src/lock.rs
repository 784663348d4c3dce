//! The lock: the protected state unwritable until reset.
//!
//! [`BoardLock::lock`] configures ACL region 0 of the nRF52840 over the protected state's
//! pages with write and erase disabled. The NVMC then refuses every write and erase there,
//! from any code, until reset; an ACL region cannot be reconfigured once written, so the
//! application cannot lift it. The driver's latch makes [`crate::Flash`] refuse such requests
//! with an error instead of running into the ACL.

use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use sigil_bootloader::{LockFailed, StateLock};

use crate::config;

static LATCHED: AtomicBool = AtomicBool::new(false);

/// The locked flash address range, once [`BoardLock::lock`] has run. In an application (built
/// without the `bootloader` feature) always: it runs after the lock, never before.
pub(crate) fn latched() -> Option<Range<u32>> {
    (!cfg!(feature = "bootloader") || LATCHED.load(Ordering::Acquire)).then_some(config::LOCKED)
}

/// The board's [`StateLock`].
#[derive(Debug, Default)]
pub struct BoardLock {
    /// ACL region 0's PERM register as read back after the lock (bit 1: write disabled).
    pub perm: u32,
}

impl BoardLock {
    /// A lock not yet set.
    pub fn new() -> Self {
        BoardLock::default()
    }
}

impl StateLock for BoardLock {
    #[cfg(feature = "bootloader")]
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed> {
        // The core passes the protected region as flash offsets: it must be what board.toml
        // reserved (whole pages).
        let start = config::FLASH_BASE
            .checked_add(protected.start)
            .ok_or(LockFailed)?;
        let end = config::FLASH_BASE
            .checked_add(protected.end)
            .ok_or(LockFailed)?;
        if start != config::LOCKED.start || end != config::LOCKED.end {
            return Err(LockFailed);
        }
        self.perm = crate::glue::acl_lock(&config::LOCKED);
        // PERM.WRITE (bit 1) reads back as set once the region is active.
        if self.perm & 0b10 == 0 {
            return Err(LockFailed);
        }
        LATCHED.store(true, Ordering::Release);
        Ok(())
    }

    #[cfg(not(feature = "bootloader"))]
    fn lock(&mut self, _protected: Range<u32>) -> Result<(), LockFailed> {
        // Only the bootloader locks.
        Err(LockFailed)
    }
}
