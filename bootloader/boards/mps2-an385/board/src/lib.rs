//! Board glue for QEMU's `mps2-an385` (Cortex-M3): everything the portable
//! [`sigil_bootloader`] needs from a board, and nothing else.
//!
//! | piece | what it does |
//! |---|---|
//! | [`config`], [`LAYOUT`] | the flash map from `board.toml`, checked at compile time |
//! | [`Flash`] | the bootloader's NOR flash driver over SSRAM, mirrored to the host file `flash.bin` |
//! | [`BoardLock`] | the lock: the MPU and the latch that the flash service obeys ([`lock`]) |
//! | [`start_image`] | checks a verified image's vector table, hands the flash to the service and starts the image unprivileged |
//! | [`service`] | the bootloader's flash service (`svc`), the application's only way to the persistent flash |
//! | [`AppFlash`], [`app`] | the application's side: flash through the service, console, exit |
//! | [`log!`] | semihosting log lines that compile to nothing without the `log` feature |
//! | [`exit`] | the QEMU exit codes the tests read |
//!
//! # Flash map (default `board.toml`)
//!
//! | address | size | region |
//! |---|---|---|
//! | `0x0000_0000` | 128 KiB | bootloader (`-kernel`) |
//! | `0x0002_0000` | 8 KiB | protected state (flash offset 0, two sectors): the bootloader's alone, locked before the jump |
//! | `0x0002_2000` | 4 KiB | request sector: the application's install / confirm / cancel requests |
//! | `0x0002_3000` | 1.25 MiB | active slot: the installed bundle; its payload (the application) at `0x0002_4000` |
//! | `0x0016_3000` | 1.25 MiB + 4 KiB | staging slot: swap spare sector, then the staged bundle at `0x0016_4000` |
//! | `0x002A_4000` | 4 KiB | device key store ([`device_key`]): the bootloader's alone, hidden from the application |
//! | `0x2000_0000` | 48 KiB | RAM: the application's |
//! | `0x2000_C000` | 16 KiB | RAM: the bootloader's, kept after the jump (stack, latch, flash service) |
//!
//! Only `glue.rs` holds `unsafe` code: copying bytes to and from the flash window, the MPU, the
//! unprivileged jump, the service call and its exception entry, the fault handlers, and
//! (benchmarks only) the stack high-water scan.
#![no_std]
#![deny(missing_docs)]

pub mod config {
    //! Constants generated from `board.toml`.
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}

pub mod app;
#[cfg(feature = "bootloader")]
mod fault;
mod flash;
#[allow(unsafe_code)] // the board glue: see the module documentation
mod glue;
#[cfg(feature = "bootloader")]
pub mod lock;
#[doc(hidden)]
pub mod logging;
pub mod service;

pub use flash::{AppFlash, Flash, FlashError};
pub use glue::{
    dangerous_load, dangerous_semihosting, dangerous_store_then_exit, test_strap, TEST_STRAP,
};
#[cfg(feature = "bench")]
pub use glue::{peak_stack, stack_size};
#[cfg(feature = "bootloader")]
pub use lock::BoardLock;
#[doc(hidden)]
pub use semihosting as __semihosting;
/// Logs one line over semihosting (`format!` syntax); nothing without the `log` feature.
pub use sigil_board_common::semihosting_log as log;

use sigil_bootloader::Layout;
#[cfg(feature = "bootloader")]
use sigil_bootloader::VerifiedImage;

/// The checked flash layout. A layout that does not fit the geometry fails the build.
pub const LAYOUT: Layout = sigil_board_common::board_layout!(Flash);

// The application is linked where the payload of an installed bundle lands.
const _: () =
    assert!(config::APP_ORIGIN == config::FLASH_BASE + config::ACTIVE + config::PAYLOAD_ALIGNMENT);

/// Exit codes of the QEMU firmware (semihosting extended exit), read by the boot tests: the
/// codes every port shares, and the exit itself.
pub mod exit {
    pub use sigil_board_common::exit::*;

    /// Ends the QEMU run with `code` (semihosting `SYS_EXIT_EXTENDED`). On a real board this is
    /// where the device would park in its safe state. Privileged code only (the bootloader):
    /// an application exits with [`crate::app::exit`].
    pub fn exit(code: u8) -> ! {
        semihosting::process::exit(i32::from(code))
    }
}

pub use sigil_board_common::JumpError;

/// The device's X25519 key pair from the key store sector (board.toml `device_key`; written
/// by `sigil-flash assemble --device-key`). `Ok(None)` if the board has no key store or the
/// device was not provisioned (the sector is erased): it then boots raw releases only. Read it
/// before [`BoardLock`] is set: the lock hides the sector from everything but a privileged read,
/// and from the application entirely.
#[cfg(feature = "encryption")]
pub fn device_key(
    flash: &Flash,
) -> Result<Option<sigil_bootloader::DeviceSecret>, sigil_bootloader::KeyStoreError> {
    use sigil_bootloader::{BootFlash, DeviceSecret, KeyStoreError, DEVICE_KEY_RECORD_LEN};
    let Some(at) = config::DEVICE_KEY else {
        return Ok(None);
    };
    let len = DEVICE_KEY_RECORD_LEN as u32;
    let record = flash
        .mapped(at, len)
        .and_then(|bytes| <&[u8; DEVICE_KEY_RECORD_LEN]>::try_from(bytes).ok())
        .ok_or(KeyStoreError::NotAKeyRecord)?;
    DeviceSecret::decode(record, config::ERASED)
}

/// Vector table alignment of this core (VTOR): 16 system + 32 external vectors (mps2-an385) =
/// 192 bytes, rounded up to a power of two. The application's table is not installed (every
/// exception stays the bootloader's), but an image for this board is linked with one.
#[cfg(feature = "bootloader")]
const VTOR_ALIGN: u32 = 256;

/// Starts the image the bootloader core just verified (and locked the protected state for):
/// checks that its vector table keeps execution inside the verified bytes, that the lock is
/// set, hands the flash driver to the flash service, and enters the image's reset vector in
/// unprivileged Thread mode on its own stack. Returns only if a check fails.
#[cfg(feature = "bootloader")]
pub fn start_image(image: &VerifiedImage, mut flash: Flash) -> JumpError {
    let (sp, reset) = match checked_vector_table(image, &mut flash) {
        Ok(table) => table,
        Err(e) => return e,
    };
    if lock::latched().is_none() {
        return JumpError::NotLocked;
    }
    // On trial the staging slot holds the image to revert to: the application may then write
    // requests only.
    service::install(flash, !image.is_trial());
    #[allow(unsafe_code)] // the one call into the jump
    // SAFETY: `image` comes from `Bootloader::boot`, which verified the whole payload in this
    // boot (signature chain, policy, digest) and locked the protected state (the latch is set,
    // checked above, and the MPU is on); `checked_vector_table` checked that the stack pointer
    // is 8-byte aligned in the application's RAM and the reset vector a Thumb address inside
    // the payload. The flash driver now belongs to the service; nothing else of this boot runs.
    unsafe {
        glue::enter_unprivileged(sp, reset)
    }
}

/// The image's initial stack pointer and reset vector, checked.
#[cfg(feature = "bootloader")]
fn checked_vector_table(image: &VerifiedImage, flash: &mut Flash) -> Result<(u32, u32), JumpError> {
    use embedded_storage::nor_flash::ReadNorFlash;
    let offset = image.payload_offset();
    let table = config::FLASH_BASE
        .checked_add(offset)
        .ok_or(JumpError::Misaligned)?;
    let mut words = [0u8; 8];
    flash
        .read(offset, &mut words)
        .map_err(|_| JumpError::Flash)?;
    let app_ram = config::RAM_ORIGIN..config::RAM_ORIGIN.saturating_add(config::APP_RAM_SIZE);
    sigil_board_common::check_vector_table(table, words, image.payload_size(), app_ram, VTOR_ALIGN)
}
