//! An in-memory NOR flash with the board's geometry, so the boot-control records the tool
//! writes go through the same `sigil-bootloader` code, byte for byte, as on the device.
//!
//! `NorFlash` fixes its sizes as associated constants, so the geometry is a pair of const
//! generics; [`with_flash`] picks the instance matching a board's runtime configuration.

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use sigil_bootloader::Layout;

/// NOR flash over a byte vector: erase sets sectors to the erased value, writes only clear bits.
#[derive(Debug)]
pub struct MemFlash<const ERASE: usize, const WRITE: usize> {
    bytes: Vec<u8>,
    erased: u8,
}

impl<const ERASE: usize, const WRITE: usize> MemFlash<ERASE, WRITE> {
    /// Wraps `bytes` (the whole flash device).
    pub fn new(bytes: Vec<u8>, erased: u8) -> Self {
        MemFlash { bytes, erased }
    }

    /// Gives the bytes back.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl<const ERASE: usize, const WRITE: usize> ErrorType for MemFlash<ERASE, WRITE> {
    type Error = NorFlashErrorKind;
}

impl<const ERASE: usize, const WRITE: usize> ReadNorFlash for MemFlash<ERASE, WRITE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl<const ERASE: usize, const WRITE: usize> NorFlash for MemFlash<ERASE, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        let erased = self.erased;
        self.bytes
            .get_mut(from as usize..to as usize)
            .ok_or(NorFlashErrorKind::OutOfBounds)?
            .fill(erased);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        let start = offset as usize;
        let cells = self
            .bytes
            .get_mut(start..start + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        for (cell, &new) in cells.iter_mut().zip(bytes) {
            *cell &= new;
        }
        Ok(())
    }
}

/// Work to do on a flash device of whatever geometry the board has.
pub trait FlashOp {
    /// The result.
    type Output;
    /// Runs on the flash (its geometry matches the layout).
    fn run<F: NorFlash>(self, flash: &mut F, layout: Layout) -> Self::Output;
}

/// Runs `op` over `bytes` with a `MemFlash` of the layout's geometry; `None` if the geometry is
/// not one this tool is built for (read size 1; erase 256 B..256 KiB; write 1..=32 B).
pub fn with_flash<O: FlashOp>(
    bytes: Vec<u8>,
    layout: Layout,
    op: O,
) -> Result<(Vec<u8>, O::Output), Vec<u8>> {
    let g = layout.geometry();
    if g.read_size != 1 {
        return Err(bytes);
    }
    macro_rules! by_erase {
        ($($e:literal)*) => {
            match g.erase_size {
                $($e => by_write::<$e, O>(bytes, layout, op),)*
                _ => Err(bytes),
            }
        };
    }
    by_erase!(256 512 1024 2048 4096 8192 16384 32768 65536 131072 262144)
}

fn by_write<const E: usize, O: FlashOp>(
    bytes: Vec<u8>,
    layout: Layout,
    op: O,
) -> Result<(Vec<u8>, O::Output), Vec<u8>> {
    let erased = layout.geometry().erased;
    macro_rules! by_write {
        ($($w:literal)*) => {
            match layout.geometry().write_size {
                $($w => {
                    let mut flash = MemFlash::<E, $w>::new(bytes, erased);
                    let out = op.run(&mut flash, layout);
                    Ok((flash.into_bytes(), out))
                })*
                _ => Err(bytes),
            }
        };
    }
    by_write!(1 2 4 8 16 32)
}
