//! What every Sigil board port shares, so a port holds only what its part makes different
//! (flash driver, lock, jump, logging backend):
//!
//! | piece | what |
//! |---|---|
//! | [`boot`] | the boot sequence around the portable core: trust root, product, policy, [`sigil_bootloader::Bootloader::boot`] with the board's lock, every failure mapped to an [`exit`] code |
//! | [`check_vector_table`] | the checks on a verified image's vector table before any jump: the stack pointer in the application's RAM, the reset vector a Thumb address inside the verified payload, the table aligned for VTOR |
//! | [`exit`] | the exit codes the QEMU tests read and a bench tester sees in the log |
//! | [`HostFile`] (feature `semihosting`) | the host file that persists the flash of the QEMU ports across runs (one run is one power-on) |
//!
//! No `unsafe` code: the boards' glue holds it.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "semihosting")]
pub mod host_file;
#[cfg(feature = "semihosting")]
pub mod semihosting_log;
pub mod test_app;
#[doc(hidden)]
#[cfg(feature = "semihosting")]
pub use semihosting as __semihosting;

use core::ops::Range;

#[cfg(feature = "semihosting")]
pub use host_file::HostFile;

use sigil_bootloader::{
    BootConfig, BootFlash, Bootloader, Error, Layout, StateLock, VerifiedImage,
};
use sigil_manifests::{ProductId, TrustRoot};

/// Exit codes of the firmware (a QEMU run's exit status; on a board, the code in the log line
/// of the safe state), read by the boot tests.
pub mod exit {
    /// The bootloader refused to boot: no verified image (the device's safe state).
    pub const NO_BOOTABLE_IMAGE: u8 = 0x50;
    /// The flash device (or its host file) failed.
    pub const FLASH_ERROR: u8 = 0x51;
    /// A verified image's vector table does not point into the image: not started.
    pub const BAD_VECTOR_TABLE: u8 = 0x52;
    /// Any other boot error (exhausted state log, bad layout, bad trust root).
    pub const BOOT_ERROR: u8 = 0x53;
    /// The application was stopped by a fault: it broke the lock's rules.
    pub const APP_FAULT: u8 = 0x54;
    /// The lock could not be set: the bootloader did not jump.
    pub const LOCK_FAILED: u8 = 0x55;
    /// The bootloader took an exception of its own, before starting an image (never expected).
    pub const EXCEPTION: u8 = 0x56;
    /// A panic (never expected).
    pub const PANIC: u8 = 0x5F;
    /// Benchmark run finished.
    pub const BENCH_DONE: u8 = 0x5A;
}

/// The device policy a port compiles in (its `board.toml` `[device]` table).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Product vendor.
    pub vendor: &'static str,
    /// Product device class.
    pub device: &'static str,
    /// The component the active slot holds.
    pub component: &'static str,
    /// Trial boots before a revert.
    pub trial_attempts: u8,
}

/// Logs one line through the `log` crate (feature `log`); nothing otherwise, but the arguments
/// are still type-checked.
macro_rules! info {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        log::info!($($arg)*);
        #[cfg(not(feature = "log"))]
        if false {
            let _ = format_args!($($arg)*);
        }
    }};
}

/// One boot decision: decodes the compiled-in `trust_root`, lets the portable core verify (and
/// install, trial or revert) over `flash`, with `lock` set on every path that returns an image.
/// On success the verified image and the core (which owns the flash); otherwise the
/// [`exit`] code that says why the device stays in its safe state. `envelope_buf` is empty for
/// memory-mapped flash (bundles are verified in place).
pub fn boot<'a, F: BootFlash, L: StateLock>(
    trust_root: &'a TrustRoot,
    policy: &'a Policy,
    flash: F,
    layout: Layout,
    lock: &mut L,
    envelope_buf: &mut [u8],
) -> Result<(VerifiedImage, Bootloader<'a, F>), u8> {
    boot_with(
        config(trust_root, policy)?,
        flash,
        layout,
        lock,
        envelope_buf,
    )
}

/// The core's configuration from the compiled-in `trust_root` and `policy`, for a port that adds
/// to it (a device key: `BootConfig::with_device_key`) before [`boot_with`].
pub fn config<'a>(trust_root: &'a TrustRoot, policy: &'a Policy) -> Result<BootConfig<'a>, u8> {
    let Ok(product) = ProductId::new(policy.vendor, policy.device) else {
        info!("invalid product id in board.toml");
        return Err(exit::BOOT_ERROR);
    };
    Ok(BootConfig::new(trust_root, product, policy.component)
        .with_trial_attempts(policy.trial_attempts))
}

/// [`boot`] with a configuration the port built ([`config`]).
pub fn boot_with<'a, F: BootFlash, L: StateLock>(
    config: BootConfig<'a>,
    flash: F,
    layout: Layout,
    lock: &mut L,
    envelope_buf: &mut [u8],
) -> Result<(VerifiedImage, Bootloader<'a, F>), u8> {
    let mut bootloader = Bootloader::new(flash, layout, config).map_err(|_e| {
        info!("{}", _e);
        exit::BOOT_ERROR
    })?;
    match bootloader.boot(envelope_buf, lock) {
        Ok(image) => {
            info!(
                "sigil-boot: verified image: {} bytes at flash offset {:#x}, security counter {}, {}",
                image.payload_size(),
                image.payload_offset(),
                image.security_counter(),
                if image.is_trial() { "trial boot" } else { "confirmed" },
            );
            Ok((image, bootloader))
        }
        Err(e) => {
            info!("refusing to boot: {}", e);
            Err(match e {
                Error::NoBootableImage(_) => exit::NO_BOOTABLE_IMAGE,
                Error::Flash(_) => exit::FLASH_ERROR,
                Error::LockFailed => exit::LOCK_FAILED,
                _ => exit::BOOT_ERROR,
            })
        }
    }
}

/// Decodes the trust root compiled into the bootloader (its build script validated it).
pub fn trust_root(bytes: &[u8]) -> Result<TrustRoot, u8> {
    TrustRoot::decode(bytes).map_err(|_| {
        info!("compiled-in trust root does not decode");
        exit::BOOT_ERROR
    })
}

/// The board's checked `sigil_bootloader::Layout` from its generated `config` constants, as a
/// constant: a layout that does not fit the driver's geometry fails the build. Invoked in the
/// board crate as `pub const LAYOUT: Layout = sigil_board_common::board_layout!(Flash);`.
#[macro_export]
macro_rules! board_layout {
    ($flash:ty) => {
        match sigil_bootloader::Layout::new(
            sigil_bootloader::Geometry::of::<$flash>(config::ERASED),
            config::PROTECTED,
            config::REQUESTS,
            config::ACTIVE,
            config::STAGING,
            config::SLOT_SECTORS,
        ) {
            Ok(layout) => layout,
            Err(e) => panic!("{}", e.message()),
        }
    };
}

/// Whether the flash offsets `from..to` of a device at address `base` touch the address range
/// `locked` (the protected state a board's driver refuses once its lock is set).
pub fn touches_locked(locked: &Range<u32>, base: u32, from: u32, to: u32) -> bool {
    let start = base.saturating_add(from);
    let end = base.saturating_add(to);
    start < locked.end && locked.start < end
}

/// Why a verified image was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JumpError {
    /// The vector table could not be read.
    Flash,
    /// The image is not aligned for VTOR.
    Misaligned,
    /// The initial stack pointer is not inside the application's RAM.
    BadStackPointer,
    /// The reset vector is not a Thumb address inside the verified payload.
    BadResetVector,
    /// The lock is not set: the bootloader core did not lock the protected state.
    NotLocked,
}

impl JumpError {
    /// The exit code of the safe state this error leaves the device in.
    pub fn exit_code(self) -> u8 {
        match self {
            JumpError::NotLocked => exit::LOCK_FAILED,
            _ => exit::BAD_VECTOR_TABLE,
        }
    }
}

impl core::fmt::Display for JumpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JumpError::Flash => "vector table unreadable",
            JumpError::Misaligned => "image not aligned for VTOR",
            JumpError::BadStackPointer => "initial stack pointer outside the application's RAM",
            JumpError::BadResetVector => "reset vector outside the verified image",
            JumpError::NotLocked => "the protected state is not locked",
        })
    }
}

/// Checks the first two words of a verified image's vector table (`words`, read from the
/// image at address `table`, whose payload is `payload_size` bytes): the table is aligned to
/// `vtor_align`, the initial stack pointer is 8-byte aligned inside `app_ram` (its end
/// included), and the reset vector is a Thumb address inside the payload, past the two words.
/// Returns the stack pointer and the reset vector.
pub fn check_vector_table(
    table: u32,
    words: [u8; 8],
    payload_size: u64,
    app_ram: Range<u32>,
    vtor_align: u32,
) -> Result<(u32, u32), JumpError> {
    if vtor_align == 0 || !table.is_multiple_of(vtor_align) {
        return Err(JumpError::Misaligned);
    }
    let [s0, s1, s2, s3, r0, r1, r2, r3] = words;
    let sp = u32::from_le_bytes([s0, s1, s2, s3]);
    let reset = u32::from_le_bytes([r0, r1, r2, r3]);
    if sp <= app_ram.start || sp > app_ram.end || !sp.is_multiple_of(8) {
        return Err(JumpError::BadStackPointer);
    }
    let size = u32::try_from(payload_size).map_err(|_| JumpError::BadResetVector)?;
    let end = table.checked_add(size).ok_or(JumpError::BadResetVector)?;
    let target = reset & !1;
    if reset & 1 == 0 || target < table.saturating_add(8) || target >= end {
        return Err(JumpError::BadResetVector);
    }
    Ok((sp, reset))
}

/// The manifest digest that names an image in requests (`sigil_bootloader::ImageDigest`):
/// SHA-256 of the manifest bytes of the bundle at flash offset `base`, read in place, if it
/// parses. The test applications use it to confirm the image they are.
pub fn manifest_digest<F: BootFlash>(
    flash: &F,
    base: u32,
) -> Option<sigil_bootloader::ImageDigest> {
    use sigil_manifests::{BundleHeader, UnverifiedBundle, HEADER_LEN};
    let head: &[u8; HEADER_LEN] = flash.mapped(base, HEADER_LEN as u32)?.try_into().ok()?;
    let end = BundleHeader::parse(head).ok()?.envelope_end().ok()?;
    let bundle = UnverifiedBundle::parse(flash.mapped(base, end)?).ok()?;
    Some(sigil_manifests::manifest_digest(bundle.envelope().manifest))
}

/// [`manifest_digest`] for flash that is read by copy: the bundle's header, then its envelope
/// alone (not the root chain before it), are read into `buf`
/// (`sigil_manifests::MAX_ENVELOPE_LEN` bytes hold any envelope).
pub fn manifest_digest_read<F: embedded_storage::nor_flash::ReadNorFlash>(
    flash: &mut F,
    base: u32,
    buf: &mut [u8],
) -> Option<sigil_bootloader::ImageDigest> {
    use sigil_manifests::{BundleHeader, EnvelopeView, HEADER_LEN};
    let mut head = [0u8; HEADER_LEN];
    flash.read(base, &mut head).ok()?;
    let header = BundleHeader::parse(&head).ok()?;
    let envelope = buf.get_mut(..usize::try_from(header.envelope_len).ok()?)?;
    flash
        .read(base.checked_add(header.envelope_start().ok()?)?, envelope)
        .ok()?;
    let view = EnvelopeView::parse(envelope).ok()?;
    Some(sigil_manifests::manifest_digest(view.manifest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TABLE: u32 = 0x1_4000;
    const RAM: Range<u32> = 0x2000_0000..0x2004_0000;

    fn words(sp: u32, reset: u32) -> [u8; 8] {
        let mut w = [0u8; 8];
        w[..4].copy_from_slice(&sp.to_le_bytes());
        w[4..].copy_from_slice(&reset.to_le_bytes());
        w
    }

    #[test]
    fn a_table_inside_the_payload_and_ram_is_accepted() {
        let got = check_vector_table(TABLE, words(RAM.end, TABLE + 0x101), 0x1000, RAM, 256);
        assert_eq!(got, Ok((RAM.end, TABLE + 0x101)));
    }

    #[test]
    fn every_bad_entry_is_refused_with_its_reason() {
        let ok_reset = TABLE + 0x101;
        for (table, sp, reset, align, want) in [
            (TABLE + 4, RAM.end, ok_reset, 256, JumpError::Misaligned),
            (TABLE, RAM.end, ok_reset, 0, JumpError::Misaligned),
            (TABLE, RAM.start, ok_reset, 256, JumpError::BadStackPointer),
            (
                TABLE,
                RAM.end + 8,
                ok_reset,
                256,
                JumpError::BadStackPointer,
            ),
            (
                TABLE,
                RAM.end - 4,
                ok_reset,
                256,
                JumpError::BadStackPointer,
            ),
            (
                TABLE,
                RAM.end,
                TABLE + 0x100,
                256,
                JumpError::BadResetVector,
            ),
            (TABLE, RAM.end, TABLE + 5, 256, JumpError::BadResetVector),
            (
                TABLE,
                RAM.end,
                TABLE + 0x1001,
                256,
                JumpError::BadResetVector,
            ),
            (TABLE, RAM.end, 0x0000_0101, 256, JumpError::BadResetVector),
        ] {
            assert_eq!(
                check_vector_table(table, words(sp, reset), 0x1000, RAM, align),
                Err(want),
                "table {table:#x} sp {sp:#x} reset {reset:#x} align {align}"
            );
        }
        // A payload size that overflows the address space.
        assert_eq!(
            check_vector_table(TABLE, words(RAM.end, ok_reset), u64::MAX, RAM, 256),
            Err(JumpError::BadResetVector)
        );
    }

    #[test]
    fn jump_errors_map_to_their_exit_codes() {
        assert_eq!(JumpError::NotLocked.exit_code(), exit::LOCK_FAILED);
        assert_eq!(
            JumpError::BadStackPointer.exit_code(),
            exit::BAD_VECTOR_TABLE
        );
    }
}
