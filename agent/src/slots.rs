//! The agent's view of the boot-control API over a [`FileFlash`], with the flash geometry
//! chosen at run time.
//!
//! `NorFlash` fixes its sector and write sizes as constants, and the bootloader's
//! [`Layout::check_flash`](sigil_bootloader::Layout::check_flash) insists they match the
//! layout. The agent reads its geometry from the configuration, so [`open`] picks the
//! `FileFlash<ERASE, WRITE>` instance for the configured sizes (see [`SUPPORTED_ERASE_SIZES`]
//! and [`SUPPORTED_WRITE_SIZES`]) and hides it behind the object-safe [`Slots`] trait. Every
//! state change goes through [`BootControl`]; only the partial erase needed to resume a
//! download reaches the flash directly (the boot-control API has no ranged erase yet).

use std::path::Path;

use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sigil_bootloader::{BootControl, BootState, Error as BootError, ImageDigest, Layout, Phase};
use sigil_manifests::{DevicePolicy, TrustRoot, VerifiedBundle};

use crate::flash::{FileFlash, FlashError, SyncMode};

/// Sector sizes the agent supports (bytes).
pub const SUPPORTED_ERASE_SIZES: [u32; 9] =
    [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144];

/// Write (program) unit sizes the agent supports (bytes).
pub const SUPPORTED_WRITE_SIZES: [u32; 6] = [1, 2, 4, 8, 16, 32];

/// Why a slot operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// The flash image or device could not be opened.
    #[error("cannot open the flash device")]
    Open(#[source] FlashError),
    /// The geometry has no compiled-in flash type.
    #[error("unsupported flash geometry: erase size {erase} and write size {write} (supported: erase {SUPPORTED_ERASE_SIZES:?}, write {SUPPORTED_WRITE_SIZES:?})")]
    Unsupported {
        /// Configured sector size.
        erase: u32,
        /// Configured write size.
        write: u32,
    },
    /// The boot-control API refused or failed.
    #[error("boot control: {0}")]
    Boot(BootError),
    /// Syncing the flash failed.
    #[error("cannot sync the flash device")]
    Sync(#[source] FlashError),
}

impl From<BootError> for SlotError {
    fn from(e: BootError) -> Self {
        SlotError::Boot(e)
    }
}

/// Boot control plus the staging-slot access the agent needs, object-safe.
pub trait Slots: Send {
    /// Reads the boot-control state from flash again.
    fn reload(&mut self) -> Result<BootState, SlotError>;
    /// The state last read or written.
    fn state(&self) -> BootState;
    /// The flash layout.
    fn layout(&self) -> Layout;
    /// Erases the staged-bundle sectors covering `from..to` (offsets from the bundle start,
    /// sector-aligned `from`; Idle only).
    fn erase_staged(&mut self, from: u32, to: u32) -> Result<(), SlotError>;
    /// Programs `bytes` at `offset` from the staged bundle start (Idle only, write-aligned).
    fn write_staged(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SlotError>;
    /// Reads staged-bundle bytes at `offset`.
    fn read_staged(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), SlotError>;
    /// [`BootControl::write_key_record`]: programs the key record of the staged encrypted
    /// bundle of `bundle_len` bytes at [`Layout::key_record_offset`] (Idle only; the unit
    /// there must be erased).
    fn write_key_record(&mut self, bundle_len: u64, record: &[u8]) -> Result<(), SlotError>;
    /// Batches flash syncs (`true`) during bulk staging, or syncs every operation (`false`).
    fn set_bulk(&mut self, bulk: bool);
    /// Flushes the flash device to the medium.
    fn sync(&mut self) -> Result<(), SlotError>;
    /// [`BootControl::request_install`] for the staged bundle with this manifest digest.
    fn request_install(&mut self, digest: &ImageDigest) -> Result<(), SlotError>;
    /// [`BootControl::install_requested`].
    fn install_requested(&self) -> Option<ImageDigest>;
    /// [`BootControl::cancel`].
    fn cancel(&mut self) -> Result<(), SlotError>;
    /// [`BootControl::confirm`]: the confirm request for the running image, whose manifest
    /// digest is `digest` (refused unless it is the image on trial; final at the next boot).
    fn confirm(&mut self, digest: &ImageDigest) -> Result<(), SlotError>;
    /// [`BootControl::confirm_requested`].
    fn confirm_requested(&self) -> bool;
    /// [`BootControl::verify_staged`].
    fn verify_staged<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, SlotError>;
    /// [`BootControl::verify_active`].
    fn verify_active<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, SlotError>;
}

impl<const E: usize, const W: usize> Slots for BootControl<FileFlash<E, W>> {
    fn reload(&mut self) -> Result<BootState, SlotError> {
        Ok(BootControl::reload(self)?)
    }

    fn state(&self) -> BootState {
        BootControl::state(self)
    }

    fn layout(&self) -> Layout {
        *BootControl::layout(self)
    }

    fn erase_staged(&mut self, from: u32, to: u32) -> Result<(), SlotError> {
        if self.state().phase != Phase::Idle {
            return Err(BootError::WrongPhase(self.state().phase).into());
        }
        let layout = *BootControl::layout(self);
        let s = layout.sector_size();
        let to = to.min(layout.max_bundle_len());
        if !from.is_multiple_of(s) || from >= to {
            return Err(BootError::OutOfBounds.into());
        }
        // Round the end up to a whole sector; both ends stay inside the staged-bundle area.
        let to = to
            .div_ceil(s)
            .saturating_mul(s)
            .min(layout.max_bundle_len());
        let base = layout.staged_bundle_offset();
        let (a, b) = match (base.checked_add(from), base.checked_add(to)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(BootError::OutOfBounds.into()),
        };
        self.flash()
            .erase(a, b)
            .map_err(|e| SlotError::Boot(BootError::Flash(e.kind())))
    }

    fn write_staged(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SlotError> {
        Ok(self.write_staging(offset, bytes)?)
    }

    fn read_staged(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), SlotError> {
        use embedded_storage::nor_flash::ReadNorFlash;
        let layout = *BootControl::layout(self);
        let len = u32::try_from(buf.len()).map_err(|_| BootError::OutOfBounds)?;
        let end = offset.checked_add(len).ok_or(BootError::OutOfBounds)?;
        if end > layout.max_bundle_len() {
            return Err(BootError::OutOfBounds.into());
        }
        let at = layout
            .staged_bundle_offset()
            .checked_add(offset)
            .ok_or(BootError::OutOfBounds)?;
        self.flash()
            .read(at, buf)
            .map_err(|e| SlotError::Boot(BootError::Flash(e.kind())))
    }

    fn write_key_record(&mut self, bundle_len: u64, record: &[u8]) -> Result<(), SlotError> {
        Ok(BootControl::write_key_record(self, bundle_len, record)?)
    }

    fn set_bulk(&mut self, bulk: bool) {
        self.flash().set_sync_mode(if bulk {
            SyncMode::Explicit
        } else {
            SyncMode::EveryOperation
        });
    }

    fn sync(&mut self) -> Result<(), SlotError> {
        self.flash().sync().map_err(SlotError::Sync)
    }

    fn request_install(&mut self, digest: &ImageDigest) -> Result<(), SlotError> {
        Ok(BootControl::request_install(self, digest)?)
    }

    fn install_requested(&self) -> Option<ImageDigest> {
        BootControl::install_requested(self)
    }

    fn cancel(&mut self) -> Result<(), SlotError> {
        Ok(BootControl::cancel(self)?)
    }

    fn confirm(&mut self, digest: &ImageDigest) -> Result<(), SlotError> {
        Ok(BootControl::confirm(self, digest)?)
    }

    fn confirm_requested(&self) -> bool {
        BootControl::confirm_requested(self)
    }

    fn verify_staged<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, SlotError> {
        Ok(BootControl::verify_staged(
            self,
            root,
            policy,
            envelope_buf,
        )?)
    }

    fn verify_active<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, SlotError> {
        Ok(BootControl::verify_active(
            self,
            root,
            policy,
            envelope_buf,
        )?)
    }
}

fn boxed<const E: usize, const W: usize>(
    path: &Path,
    erased: u8,
    layout: Layout,
) -> Result<Box<dyn Slots>, SlotError> {
    let flash = FileFlash::<E, W>::open(path, erased).map_err(SlotError::Open)?;
    Ok(Box::new(BootControl::new(flash, layout)?))
}

macro_rules! by_write {
    ($e:literal, $w:expr, $path:expr, $erased:expr, $layout:expr) => {
        match $w {
            1 => boxed::<$e, 1>($path, $erased, $layout),
            2 => boxed::<$e, 2>($path, $erased, $layout),
            4 => boxed::<$e, 4>($path, $erased, $layout),
            8 => boxed::<$e, 8>($path, $erased, $layout),
            16 => boxed::<$e, 16>($path, $erased, $layout),
            32 => boxed::<$e, 32>($path, $erased, $layout),
            w => Err(SlotError::Unsupported {
                erase: $e,
                write: w,
            }),
        }
    };
}

/// Whether [`open`] supports this geometry.
pub fn supported(erase: u32, write: u32) -> bool {
    SUPPORTED_ERASE_SIZES.contains(&erase) && SUPPORTED_WRITE_SIZES.contains(&write)
}

/// Opens the flash image or device at `path` with `layout`'s geometry and reads the
/// boot-control state.
pub fn open(path: &Path, layout: Layout) -> Result<Box<dyn Slots>, SlotError> {
    let g = layout.geometry();
    let (e, w, erased) = (g.erase_size, g.write_size, g.erased);
    if g.read_size != 1 {
        return Err(SlotError::Unsupported { erase: e, write: w });
    }
    match e {
        1024 => by_write!(1024, w, path, erased, layout),
        2048 => by_write!(2048, w, path, erased, layout),
        4096 => by_write!(4096, w, path, erased, layout),
        8192 => by_write!(8192, w, path, erased, layout),
        16384 => by_write!(16384, w, path, erased, layout),
        32768 => by_write!(32768, w, path, erased, layout),
        65536 => by_write!(65536, w, path, erased, layout),
        131072 => by_write!(131072, w, path, erased, layout),
        262144 => by_write!(262144, w, path, erased, layout),
        _ => Err(SlotError::Unsupported { erase: e, write: w }),
    }
}
