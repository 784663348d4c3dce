//! The error type of the boot logic and of the application-side API.

use core::fmt;

use embedded_storage::nor_flash::NorFlashErrorKind;

use crate::layout::LayoutError;
use crate::record::Phase;

/// Why a boot, or a boot-control request, did not succeed.
///
/// From [`crate::Bootloader::boot`] every error means the same thing to a board port: do not
/// jump, stay in the safe failure state (or reset and try again for [`Error::Flash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The flash driver reported an error (a power cut looks like this in the simulator).
    Flash(NorFlashErrorKind),
    /// The layout does not fit the flash device.
    Layout(LayoutError),
    /// The active slot holds no image that verifies: there is nothing safe to run.
    NoBootableImage(sigil_manifests::Error),
    /// A bundle (staged or active) failed verification.
    Verify(sigil_manifests::Error),
    /// The protected-state log has used every sequence number.
    StateExhausted,
    /// The board could not lock the protected state: the bootloader does not jump.
    LockFailed,
    /// `provision` found a protected state already written.
    AlreadyProvisioned,
    /// The request names another image than the one it applies to (for example a confirm
    /// for an image that is not the one on trial).
    WrongImage,
    /// The request is not allowed in this phase (for example, staging during a trial).
    WrongPhase(Phase),
    /// An offset or length lies outside the staging area, or is not write-aligned.
    OutOfBounds,
    /// An internal offset computation overflowed (a layout that `Layout::new` should refuse).
    Corrupt,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Flash(kind) => write!(f, "flash error: {kind:?}"),
            Error::Layout(e) => write!(f, "flash layout: {e}"),
            Error::NoBootableImage(e) => write!(f, "no bootable image: active slot: {e}"),
            Error::Verify(e) => write!(f, "bundle verification failed: {e}"),
            Error::StateExhausted => {
                f.write_str("protected-state log has no sequence numbers left")
            }
            Error::LockFailed => f.write_str("the protected state could not be locked"),
            Error::AlreadyProvisioned => f.write_str("the protected state is already provisioned"),
            Error::WrongImage => f.write_str("the request names another image"),
            Error::WrongPhase(p) => write!(f, "not allowed while the device is in phase: {p}"),
            Error::OutOfBounds => {
                f.write_str("offset or length outside the staging area or misaligned")
            }
            Error::Corrupt => f.write_str("internal offset overflow"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Layout(e) => Some(e),
            Error::NoBootableImage(e) | Error::Verify(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LayoutError> for Error {
    fn from(e: LayoutError) -> Self {
        Error::Layout(e)
    }
}
