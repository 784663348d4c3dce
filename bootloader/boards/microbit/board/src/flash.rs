//! The NOR flash driver over the nRF51's NVMC, persisted to a host file.
//!
//! The flash is the part's code flash, programmed and erased through QEMU's model of the NVMC
//! (its rules: 1 KiB pages erase to `0xFF`, 32-bit words program as `old & new`). QEMU does
//! not keep that flash anywhere: it starts each run from the images it loads, and a system
//! reset inside a run loads them again over whatever was written (QEMU 7.2's ROM reset, see
//! README.md). So, as on mps2-an385, every erase and program is also written through to the
//! host file `flash.bin` with semihosting, and one QEMU run is one power-on.
//!
//! After the lock is set ([`crate::BoardLock`]) the driver refuses anything that touches the
//! protected blocks ([`FlashError::Locked`]); on the part the NVMC itself ignores them (the
//! nRF51 MPU's PROTENSET).

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError,
    NorFlashErrorKind, ReadNorFlash,
};
use sigil_board_common::HostFile;
use sigil_bootloader::BootFlash;

use crate::config;
use crate::glue;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlashError {
    /// Offset or length not aligned to the read, write or erase size.
    NotAligned,
    /// The range leaves the flash device.
    OutOfBounds,
    /// `flash.bin` is missing, of the wrong size, or a write to it failed.
    HostFile,
    /// The flash window was already handed out.
    Taken,
    /// The range touches the protected state, locked until reset.
    Locked,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::HostFile | FlashError::Taken | FlashError::Locked => {
                NorFlashErrorKind::Other
            }
        }
    }
}

impl From<NorFlashErrorKind> for FlashError {
    fn from(kind: NorFlashErrorKind) -> Self {
        match kind {
            NorFlashErrorKind::NotAligned => FlashError::NotAligned,
            _ => FlashError::OutOfBounds,
        }
    }
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FlashError::NotAligned => "flash access not aligned",
            FlashError::OutOfBounds => "flash access out of bounds",
            FlashError::HostFile => {
                "host file flash.bin missing, of the wrong size, or not writable"
            }
            FlashError::Taken => "flash driver already in use",
            FlashError::Locked => "refused: the protected state is locked until reset",
        })
    }
}

/// The managed flash at [`config::FLASH_BASE`], persisted to `flash.bin`. One exists at a time.
#[derive(Debug)]
pub struct Flash {
    file: HostFile,
    window: glue::Window,
}

impl Flash {
    /// Takes the flash and opens its host file, which must be exactly [`config::FLASH_SIZE`]
    /// bytes (an image made by `sigil-flash` for this board).
    pub fn new() -> Result<Self, FlashError> {
        let window = glue::Window::take().ok_or(FlashError::Taken)?;
        let file = HostFile::open(config::FLASH_SIZE).map_err(|_| FlashError::HostFile)?;
        Ok(Flash { file, window })
    }

    /// Writes the flash bytes at `offset..offset + len` (as the NVMC left them) through to the
    /// host file. Out of line: the moment an operation becomes persistent.
    #[inline(never)]
    fn persist(&mut self, offset: u32, len: usize) -> Result<(), FlashError> {
        let bytes = glue::window_slice(&self.window, offset, len).ok_or(FlashError::OutOfBounds)?;
        self.file
            .write_at(offset, bytes)
            .map_err(|_| FlashError::HostFile)
    }

    fn check_unlocked(from: u32, to: u32) -> Result<(), FlashError> {
        match crate::lock::latched() {
            Some(locked)
                if sigil_board_common::touches_locked(&locked, config::FLASH_BASE, from, to) =>
            {
                Err(FlashError::Locked)
            }
            _ => Ok(()),
        }
    }
}

/// The flash is memory-mapped: bundles are verified in place.
impl BootFlash for Flash {
    const MAPPED: bool = true;

    fn mapped(&self, offset: u32, len: u32) -> Option<&[u8]> {
        glue::window_slice(&self.window, offset, usize::try_from(len).ok()?)
    }
}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = config::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len())?;
        let src =
            glue::window_slice(&self.window, offset, bytes.len()).ok_or(FlashError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        config::FLASH_SIZE
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = config::WRITE_SIZE;
    const ERASE_SIZE: usize = config::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to)?;
        Self::check_unlocked(from, to)?;
        let mut at = from;
        while at < to {
            glue::erase_page(&mut self.window, at).ok_or(FlashError::OutOfBounds)?;
            self.persist(at, config::ERASE_SIZE)?;
            at = at
                .checked_add(config::ERASE_SIZE as u32)
                .ok_or(FlashError::OutOfBounds)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len())?;
        let len = u32::try_from(bytes.len()).map_err(|_| FlashError::OutOfBounds)?;
        Self::check_unlocked(offset, offset.saturating_add(len))?;
        let mut at = offset;
        for word in bytes.chunks_exact(4) {
            let [a, b, c, d] = <[u8; 4]>::try_from(word).map_err(|_| FlashError::NotAligned)?;
            glue::program(&mut self.window, at, u32::from_le_bytes([a, b, c, d]))
                .ok_or(FlashError::OutOfBounds)?;
            at = at.checked_add(4).ok_or(FlashError::OutOfBounds)?;
        }
        self.persist(offset, bytes.len())
    }
}

/// Programming clears bits only (`old & new`), so writing a word again is well defined. (The
/// nRF51 specifies at most two writes of a word between erases, n_WRITE; QEMU does not enforce
/// it: see README.md.)
impl MultiwriteNorFlash for Flash {}
