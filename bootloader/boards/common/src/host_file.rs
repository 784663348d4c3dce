//! The host file that persists a QEMU port's flash: QEMU loads it into the flash at start-up
//! (`-device loader`), the board's driver writes every erase and program through to it with
//! semihosting `SYS_SEEK`/`SYS_WRITE`, and the next QEMU run (the next power-on) and the host
//! tools (`sigil-flash state`) see the result. Semihosting works from privileged code only.

use semihosting::fs::File;
use semihosting::io::{Seek, SeekFrom, Write};

/// The host file a QEMU port's flash is persisted to, relative to QEMU's working directory.
pub const HOST_FILE: &core::ffi::CStr = c"flash.bin";

/// The open host file of the flash.
#[derive(Debug)]
pub struct HostFile {
    file: File,
}

/// The host file is missing, of the wrong size, or a write to it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFileError;

impl HostFile {
    /// Opens [`HOST_FILE`], which must be exactly `size` bytes (an image made by `sigil-flash`
    /// for the board): otherwise the flash would not persist, so nothing is written at all.
    pub fn open(size: usize) -> Result<Self, HostFileError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(HOST_FILE)
            .map_err(|_| HostFileError)?;
        let len = file.metadata().map_err(|_| HostFileError)?.len();
        if u64::try_from(size).ok() != Some(len) {
            return Err(HostFileError);
        }
        Ok(HostFile { file })
    }

    /// Writes `bytes` (already applied to the flash) at flash offset `offset`.
    pub fn write_at(&mut self, offset: u32, bytes: &[u8]) -> Result<(), HostFileError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .map_err(|_| HostFileError)?;
        self.file.write_all(bytes).map_err(|_| HostFileError)
    }
}
