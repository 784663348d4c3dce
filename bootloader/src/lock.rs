//! The board hook that locks the protected state before the application runs.
//!
//! [`crate::Bootloader::boot`] calls [`StateLock::lock`] on every path that returns an image,
//! after its last write to the protected state and the request sector, and returns
//! [`crate::Error::LockFailed`] (do not jump) if the lock cannot be set. From then until the
//! next reset the application cannot write the protected region: it can only append requests,
//! which the next boot checks against the protected state.
//!
//! What the lock is depends on the part (the bench-tester guide has the table): nRF52840 ACL
//! regions locked until reset, STM32 write protection or a secure hide-protection area,
//! TrustZone-M secure flash, an MPU plus a privileged flash service on parts without any of
//! those. A port whose hardware has no such mechanism has no protection against its own
//! application, and must say so.

use core::ops::Range;

/// The lock could not be set; the bootloader does not jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockFailed;

/// Makes the protected state unwritable until the next reset.
pub trait StateLock {
    /// Locks `protected` (flash offsets, [`crate::Layout::protected_region`]) against writes and
    /// erases until the next reset.
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed>;
}

impl<T: StateLock + ?Sized> StateLock for &mut T {
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed> {
        T::lock(self, protected)
    }
}
