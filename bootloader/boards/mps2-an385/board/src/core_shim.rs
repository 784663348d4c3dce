//! Stand-in for the core's lock API (`sigil_bootloader::{StateLock, LockFailed}`,
//! `Layout::protected_region`) until the core that has it is merged; removed then.

use core::ops::Range;

/// The lock could not be set; the bootloader does not jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockFailed;

/// Makes the protected state unwritable until the next reset.
pub trait StateLock {
    /// Locks `protected` (flash offsets) against writes and erases until the next reset.
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed>;
}

/// The state region of the current core (two sectors).
pub fn protected_region() -> Range<u32> {
    let start = crate::config::STATE;
    start..start + 2 * crate::config::ERASE_SIZE as u32
}
