//! A file-backed [`NorFlash`]: a flash image file, or a Linux block/MTD-block device.
//!
//! | property | behaviour |
//! |---|---|
//! | geometry | `ERASE` (sector) and `WRITE` (program unit) are const parameters, as `NorFlash` needs; reads are byte-granular |
//! | capacity | the file's length (a block device's size), which must be a whole number of sectors |
//! | erase | sets every byte of the sectors to the erased value |
//! | program | only moves bits away from the erased value (`0xFF`: clears bits). Programming a unit that is not erased is **refused** with [`FlashError::NotErased`] (real parts refuse it or corrupt their ECC); writing the erased value over a programmed unit is a no-op, as on real NOR |
//! | durability | [`SyncMode::EveryOperation`] (default): every erase and program is followed by `fdatasync`, so boot-control records are on the medium before the call returns; [`SyncMode::Explicit`]: the caller batches with [`FileFlash::sync`] (bulk staging writes) |
//!
//! The same type backs the agent on a device and the tests, and the bootloader's host boot
//! logic can run on the very same file to play a reboot.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// Why a flash operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlashError {
    /// The image file or device could not be opened, read, written or synced.
    #[error("flash {path}: {op} at offset {offset:#x}")]
    Io {
        /// The image file or device.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// Byte offset of the operation.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The image is not a whole number of sectors, or is empty.
    #[error(
        "flash {path}: size {size} bytes is not a positive multiple of the {sector}-byte sector"
    )]
    BadSize {
        /// The image file or device.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The sector size.
        sector: usize,
    },
    /// The erased value is neither 0xFF nor 0x00.
    #[error("erased value {0:#04x} is not supported (NOR flash erases to 0xFF or 0x00)")]
    BadErasedValue(u8),
    /// A program operation targeted a unit that holds data: erase it first.
    #[error("flash {path}: program at {offset:#x} over a unit that is not erased (erase first)")]
    NotErased {
        /// The image file or device.
        path: PathBuf,
        /// Offset of the first offending write unit.
        offset: u64,
    },
    /// Offset or length outside the device, or not aligned to the sector / write unit.
    #[error("flash operation out of bounds or misaligned: {0:?}")]
    Bounds(NorFlashErrorKind),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::Bounds(kind) => *kind,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// When [`FileFlash`] calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After every erase and every program.
    EveryOperation,
    /// Only when [`FileFlash::sync`] is called.
    Explicit,
}

/// Largest I/O buffer used for erasing (bytes).
const ERASE_BUF: usize = 64 * 1024;

/// NOR flash semantics over a file or block device (see the module documentation).
#[derive(Debug)]
pub struct FileFlash<const ERASE: usize, const WRITE: usize> {
    file: File,
    path: PathBuf,
    capacity: usize,
    erased: u8,
    sync: SyncMode,
}

impl<const ERASE: usize, const WRITE: usize> FileFlash<ERASE, WRITE> {
    /// Opens an existing image file or device read-write; its size is the capacity.
    pub fn open(path: &Path, erased: u8) -> Result<Self, FlashError> {
        check_erased(erased)?;
        let io = |op, source| FlashError::Io {
            path: path.to_owned(),
            op,
            offset: 0,
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io("open", e))?;
        // `seek` rather than metadata: a block device reports its size only this way.
        let size = file.seek(SeekFrom::End(0)).map_err(|e| io("size", e))?;
        let capacity = usize::try_from(size).unwrap_or(usize::MAX);
        if size == 0 || ERASE == 0 || capacity % ERASE != 0 || size > u64::from(u32::MAX) {
            return Err(FlashError::BadSize {
                path: path.to_owned(),
                size,
                sector: ERASE,
            });
        }
        Ok(FileFlash {
            file,
            path: path.to_owned(),
            capacity,
            erased,
            sync: SyncMode::EveryOperation,
        })
    }

    /// Creates (or truncates) an image file of `sectors` erased sectors.
    pub fn create(path: &Path, sectors: usize, erased: u8) -> Result<Self, FlashError> {
        check_erased(erased)?;
        let io = |op, source| FlashError::Io {
            path: path.to_owned(),
            op,
            offset: 0,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io("create", e))?;
        let buf = vec![erased; ERASE];
        for s in 0..sectors {
            let at = (s as u64).saturating_mul(ERASE as u64);
            file.write_all_at(&buf, at).map_err(|e| io("fill", e))?;
        }
        file.sync_all().map_err(|e| io("sync", e))?;
        drop(file);
        Self::open(path, erased)
    }

    /// The image file or device.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value erased bytes read as.
    pub fn erased(&self) -> u8 {
        self.erased
    }

    /// Chooses when data is synced to the medium.
    pub fn set_sync_mode(&mut self, mode: SyncMode) {
        self.sync = mode;
    }

    /// Flushes every completed write and erase to the medium (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), FlashError> {
        self.file.sync_data().map_err(|source| FlashError::Io {
            path: self.path.clone(),
            op: "sync",
            offset: 0,
            source,
        })
    }

    fn after_op(&mut self) -> Result<(), FlashError> {
        match self.sync {
            SyncMode::EveryOperation => self.sync(),
            SyncMode::Explicit => Ok(()),
        }
    }

    fn io_err(&self, op: &'static str, offset: u64, source: io::Error) -> FlashError {
        let e = FlashError::Io {
            path: self.path.clone(),
            op,
            offset,
            source,
        };
        // NorFlash callers only see the error kind: log the diagnosis here.
        tracing::error!(error = %e, "flash I/O failed");
        e
    }
}

fn check_erased(erased: u8) -> Result<(), FlashError> {
    if erased == 0xFF || erased == 0x00 {
        Ok(())
    } else {
        Err(FlashError::BadErasedValue(erased))
    }
}

/// A file or block device is read through `NorFlash`, never in place.
impl<const ERASE: usize, const WRITE: usize> sigil_bootloader::BootFlash
    for FileFlash<ERASE, WRITE>
{
}

impl<const ERASE: usize, const WRITE: usize> ErrorType for FileFlash<ERASE, WRITE> {
    type Error = FlashError;
}

impl<const ERASE: usize, const WRITE: usize> ReadNorFlash for FileFlash<ERASE, WRITE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len()).map_err(FlashError::Bounds)?;
        self.file
            .read_exact_at(bytes, u64::from(offset))
            .map_err(|e| self.io_err("read", u64::from(offset), e))
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<const ERASE: usize, const WRITE: usize> NorFlash for FileFlash<ERASE, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to).map_err(FlashError::Bounds)?;
        let buf = vec![self.erased; ERASE_BUF.min(ERASE).max(1)];
        let mut at = u64::from(from);
        let end = u64::from(to);
        while at < end {
            let n = usize::try_from(end.saturating_sub(at))
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let chunk = buf.get(..n).unwrap_or(&buf);
            self.file
                .write_all_at(chunk, at)
                .map_err(|e| self.io_err("erase", at, e))?;
            at = at.saturating_add(n as u64);
        }
        self.after_op()
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len()).map_err(FlashError::Bounds)?;
        let at = u64::from(offset);
        let mut current = vec![0u8; bytes.len()];
        self.file
            .read_exact_at(&mut current, at)
            .map_err(|e| self.io_err("read before program", at, e))?;
        let e = self.erased;
        for (i, (old_unit, new_unit)) in current
            .chunks_mut(WRITE.max(1))
            .zip(bytes.chunks(WRITE.max(1)))
            .enumerate()
        {
            let unit_erased = old_unit.iter().all(|&b| b == e);
            let data_erased = new_unit.iter().all(|&b| b == e);
            if !unit_erased && !data_erased {
                let err = FlashError::NotErased {
                    path: self.path.clone(),
                    offset: at.saturating_add((i * WRITE) as u64),
                };
                tracing::error!(error = %err, "refused a NOR program over data");
                return Err(err);
            }
            // Programming only moves bits away from the erased value.
            for (o, n) in old_unit.iter_mut().zip(new_unit) {
                *o = if e == 0xFF { *o & *n } else { *o | *n };
            }
        }
        self.file
            .write_all_at(&current, at)
            .map_err(|e| self.io_err("program", at, e))?;
        self.after_op()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flash = FileFlash<4096, 8>;

    #[test]
    fn nor_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.img");
        let mut f = Flash::create(&path, 4, 0xFF).unwrap();
        assert_eq!(f.capacity(), 4 * 4096);
        let mut buf = [0u8; 16];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 16]);

        f.write(8, &[0x0F; 8]).unwrap();
        // Programming over data is refused and changes nothing.
        let e = f.write(8, &[0x00; 8]).unwrap_err();
        assert!(matches!(e, FlashError::NotErased { offset: 8, .. }), "{e}");
        f.read(8, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[0x0F; 8]);
        // Writing the erased value over data is a no-op, as on real NOR.
        f.write(8, &[0xFF; 8]).unwrap();
        f.read(8, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[0x0F; 8]);

        // Misaligned and out-of-bounds operations.
        assert!(matches!(f.write(3, &[0; 8]), Err(FlashError::Bounds(_))));
        assert!(matches!(f.erase(0, 100), Err(FlashError::Bounds(_))));
        assert!(matches!(
            f.read(4 * 4096, &mut buf),
            Err(FlashError::Bounds(_))
        ));

        f.erase(0, 4096).unwrap();
        f.read(8, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[0xFF; 8]);

        // Contents persist across handles.
        f.write(4096, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        drop(f);
        let mut g = Flash::open(&path, 0xFF).unwrap();
        g.read(4096, &mut buf[..8]).unwrap();
        assert_eq!(&buf[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn erased_zero_sets_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.img");
        let mut f = FileFlash::<4096, 4>::create(&path, 1, 0x00).unwrap();
        f.write(0, &[0xF0; 4]).unwrap();
        assert!(f.write(0, &[0x0F; 4]).is_err());
        let mut b = [0u8; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0xF0; 4]);
    }

    #[test]
    fn refuses_bad_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.img");
        std::fs::write(&path, vec![0xFF; 5000]).unwrap();
        assert!(matches!(
            Flash::open(&path, 0xFF),
            Err(FlashError::BadSize { size: 5000, .. })
        ));
        assert!(matches!(
            Flash::open(&path, 0x5A),
            Err(FlashError::BadErasedValue(0x5A))
        ));
        let missing = dir.path().join("missing.img");
        let e = Flash::open(&missing, 0xFF).unwrap_err();
        assert!(e.to_string().contains("missing.img"), "{e}");
    }
}
