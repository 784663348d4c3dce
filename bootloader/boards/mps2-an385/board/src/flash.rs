//! A NOR flash driver over the SSRAM window that stands in for flash, persisted to a host file.
//!
//! QEMU loads `flash.bin` into the window before reset (`-device loader,file=flash.bin,...`);
//! every erase and write is applied to the window *and* written through to the same file with
//! semihosting `SYS_SEEK`/`SYS_WRITE`, so the next QEMU run (the next boot) sees it, and so do
//! the host tools (`sigil-flash state`). The window is what the image executes from.
//!
//! [`Flash`] is the bootloader's driver (privileged: semihosting works only there). After the
//! jump the application uses [`AppFlash`]: it reads the window in place (the MPU lets
//! unprivileged code read it) and erases and writes through the bootloader's flash service
//! ([`crate::service`]), which refuses anything that touches the locked protected state.
//!
//! NOR semantics are enforced, not assumed: erase works on whole sectors and sets them to the
//! erased value; a write must be `WRITE_SIZE`-aligned and can only clear bits (the result is
//! `old & new`, as on real NOR cells); anything out of bounds or misaligned is an error.

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError,
    NorFlashErrorKind, ReadNorFlash,
};
use sigil_board_common::HostFile;
use sigil_bootloader::BootFlash;

use crate::config;
use crate::glue;
use crate::service::{Op, Status};

/// Bytes handled per step (a stack buffer; the bootloader core also moves 256-byte chunks).
const CHUNK: usize = 256;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlashError {
    /// Offset or length not aligned to the read, write or erase size.
    NotAligned,
    /// The range leaves the flash device.
    OutOfBounds,
    /// `flash.bin` is missing, of the wrong size, or a write to it failed: the flash would not
    /// persist, so nothing is written at all.
    HostFile,
    /// The flash window was already handed out.
    Taken,
    /// The bootloader's flash service refused: the range touches the protected state, which is
    /// locked until reset.
    Locked,
    /// The bootloader's flash service refused: the application writes only the request sector
    /// and, when idle, the staged bundle.
    NotWritable,
    /// The bootloader's flash service refused the call (see [`crate::service::Status`]).
    Service,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::HostFile
            | FlashError::Taken
            | FlashError::Locked
            | FlashError::NotWritable
            | FlashError::Service => NorFlashErrorKind::Other,
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
            FlashError::NotWritable => {
                "refused: the application writes only requests and, when idle, the staged bundle"
            }
            FlashError::Service => "the bootloader's flash service refused the call",
        })
    }
}

/// The board's flash device: the SSRAM window at [`config::FLASH_BASE`], persisted to
/// [`sigil_board_common::host_file::HOST_FILE`]. Only one exists at a time.
#[derive(Debug)]
pub struct Flash {
    file: HostFile,
    window: glue::Window,
}

impl Flash {
    /// Takes the flash window and opens its host file, which must exist and be exactly
    /// [`config::FLASH_SIZE`] bytes (an image made by `sigil-flash`).
    pub fn new() -> Result<Self, FlashError> {
        let window = glue::Window::take().ok_or(FlashError::Taken)?;
        let file = HostFile::open(config::FLASH_SIZE).map_err(|_| FlashError::HostFile)?;
        Ok(Flash { file, window })
    }

    /// Writes `bytes` (already applied to the window) through to the host file at `offset`.
    ///
    /// This is the moment a flash operation becomes persistent, so the QEMU power-cut tests
    /// (`tests/src/gdb.rs`) put a breakpoint on this function by name: keep it out of line.
    #[inline(never)]
    fn persist(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.file
            .write_at(offset, bytes)
            .map_err(|_| FlashError::HostFile)
    }
}

/// The window is memory: the bootloader verifies bundles where they lie, with no envelope
/// buffer and no chunk copies (every write still goes through [`NorFlash`] and the host file).
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
        glue::read_window(&self.window, offset, bytes).ok_or(FlashError::OutOfBounds)
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
        let erased = [config::ERASED; CHUNK];
        let mut at = from;
        while at < to {
            let n = CHUNK.min(to.saturating_sub(at) as usize);
            let chunk = erased.get(..n).ok_or(FlashError::OutOfBounds)?;
            glue::write_window(&mut self.window, at, chunk).ok_or(FlashError::OutOfBounds)?;
            self.persist(at, chunk)?;
            at = at.checked_add(n as u32).ok_or(FlashError::OutOfBounds)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len())?;
        let mut at = offset;
        for data in bytes.chunks(CHUNK) {
            let mut cells = [0u8; CHUNK];
            let cells = cells.get_mut(..data.len()).ok_or(FlashError::OutOfBounds)?;
            glue::read_window(&self.window, at, cells).ok_or(FlashError::OutOfBounds)?;
            // NOR programming only moves bits from 1 to 0.
            for (cell, &new) in cells.iter_mut().zip(data) {
                *cell &= new;
            }
            glue::write_window(&mut self.window, at, cells).ok_or(FlashError::OutOfBounds)?;
            self.persist(at, cells)?;
            at = at
                .checked_add(data.len() as u32)
                .ok_or(FlashError::OutOfBounds)?;
        }
        Ok(())
    }
}

/// Programming clears bits only, so writing a location again is well defined (the result is
/// the AND), as the boot-control log may do after a torn write.
impl MultiwriteNorFlash for Flash {}

/// The application's flash device, after the jump: the same window and geometry as [`Flash`],
/// read in place, erased and programmed by the bootloader's flash service (`svc`). Only one
/// exists at a time.
#[derive(Debug)]
pub struct AppFlash {
    window: glue::Window,
}

impl AppFlash {
    /// Takes the flash window (once per run).
    pub fn new() -> Result<Self, FlashError> {
        let window = glue::Window::take().ok_or(FlashError::Taken)?;
        Ok(AppFlash { window })
    }

    /// Calls the flash service with raw arguments (see [`crate::service`] for what each
    /// operation takes): what the hostile test application uses to try what `NorFlash` would
    /// not ask. Takes `&mut self`, so no slice of the window is alive while the service writes.
    pub fn raw_service_call(&mut self, op: Op, a: u32, b: u32, c: u32) -> Status {
        let _ = &mut self.window;
        Status::from_word(glue::service_call(op as u32, a, b, c))
    }

    fn call(&mut self, op: Op, a: u32, b: u32, c: u32) -> Result<(), FlashError> {
        match self.raw_service_call(op, a, b, c) {
            Status::Ok => Ok(()),
            Status::Locked => Err(FlashError::Locked),
            Status::NotAligned => Err(FlashError::NotAligned),
            Status::OutOfBounds => Err(FlashError::OutOfBounds),
            Status::Flash => Err(FlashError::HostFile),
            Status::NotWritable => Err(FlashError::NotWritable),
            _ => Err(FlashError::Service),
        }
    }
}

impl BootFlash for AppFlash {
    const MAPPED: bool = true;

    fn mapped(&self, offset: u32, len: u32) -> Option<&[u8]> {
        glue::window_slice(&self.window, offset, usize::try_from(len).ok()?)
    }
}

impl ErrorType for AppFlash {
    type Error = FlashError;
}

impl ReadNorFlash for AppFlash {
    const READ_SIZE: usize = config::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len())?;
        glue::read_window(&self.window, offset, bytes).ok_or(FlashError::OutOfBounds)
    }

    fn capacity(&self) -> usize {
        config::FLASH_SIZE
    }
}

impl NorFlash for AppFlash {
    const WRITE_SIZE: usize = config::WRITE_SIZE;
    const ERASE_SIZE: usize = config::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to)?;
        self.call(Op::Erase, from, to, 0)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len())?;
        let mut at = offset;
        // Staged through a stack buffer: the service takes its source from the application's
        // RAM only, wherever `bytes` lives (a constant lives in the flash window).
        for data in bytes.chunks(CHUNK) {
            let mut buf = [0u8; CHUNK];
            let buf = buf.get_mut(..data.len()).ok_or(FlashError::OutOfBounds)?;
            buf.copy_from_slice(data);
            let len = buf.len() as u32;
            self.call(Op::Write, at, buf.as_ptr() as u32, len)?;
            at = at.checked_add(len).ok_or(FlashError::OutOfBounds)?;
        }
        Ok(())
    }
}

/// Programming clears bits only, as with [`Flash`].
impl MultiwriteNorFlash for AppFlash {}
