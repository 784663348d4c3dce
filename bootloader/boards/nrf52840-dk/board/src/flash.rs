//! The NOR flash driver: nrf-hal's `Nvmc` (which implements `embedded-storage`) over the
//! managed flash region, refusing anything that touches the protected state once it is locked.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use nrf52840_pac::NVMC;
use nrf_hal_common::nvmc::{Nvmc, NvmcError};
use sigil_bootloader::BootFlash;

use crate::config;
use crate::glue;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlashError {
    /// The NVMC driver refused the operation (alignment, bounds).
    Nvmc(NorFlashErrorKind),
    /// The flash region was already handed out.
    Taken,
    /// The range touches the protected state, locked until reset.
    Locked,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::Nvmc(kind) => *kind,
            FlashError::Taken | FlashError::Locked => NorFlashErrorKind::Other,
        }
    }
}

impl From<NvmcError> for FlashError {
    fn from(e: NvmcError) -> Self {
        FlashError::Nvmc(e.kind())
    }
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FlashError::Nvmc(NorFlashErrorKind::NotAligned) => {
                f.write_str("flash access not aligned")
            }
            FlashError::Nvmc(NorFlashErrorKind::OutOfBounds) => {
                f.write_str("flash access out of bounds")
            }
            FlashError::Nvmc(_) => f.write_str("NVMC error"),
            FlashError::Taken => f.write_str("flash driver already in use"),
            FlashError::Locked => f.write_str("refused: the protected state is locked until reset"),
        }
    }
}

/// The managed flash at [`config::FLASH_BASE`] through the NVMC. One exists at a time.
pub struct Flash {
    nvmc: Nvmc<NVMC>,
}

impl core::fmt::Debug for Flash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Flash")
    }
}

impl Flash {
    /// Takes the NVMC and the managed flash region (once per boot).
    pub fn new(nvmc: NVMC) -> Result<Self, FlashError> {
        let storage = glue::flash_region().ok_or(FlashError::Taken)?;
        Ok(Flash {
            nvmc: Nvmc::new(nvmc, storage),
        })
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

/// The driver reads by copy: the core verifies bundles through its envelope buffer.
impl BootFlash for Flash {}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = config::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        Ok(self.nvmc.read(offset, bytes)?)
    }

    fn capacity(&self) -> usize {
        self.nvmc.capacity()
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = config::WRITE_SIZE;
    const ERASE_SIZE: usize = config::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        Self::check_unlocked(from, to)?;
        Ok(self.nvmc.erase(from, to)?)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| FlashError::Nvmc(NorFlashErrorKind::OutOfBounds))?;
        Self::check_unlocked(offset, offset.saturating_add(len))?;
        Ok(self.nvmc.write(offset, bytes)?)
    }
}

/// nrf-hal's `Nvmc` is multiwrite: programming clears bits only (the nRF52840 allows two
/// writes of a word between erases, n_WRITE).
impl MultiwriteNorFlash for Flash {}

// The geometry board.toml declares is the driver's.
const _: () = assert!(config::WRITE_SIZE == <Nvmc<NVMC> as NorFlash>::WRITE_SIZE);
const _: () = assert!(config::ERASE_SIZE == <Nvmc<NVMC> as NorFlash>::ERASE_SIZE);
const _: () = assert!(config::READ_SIZE == <Nvmc<NVMC> as ReadNorFlash>::READ_SIZE);
