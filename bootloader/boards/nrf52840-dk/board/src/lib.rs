//! Board glue for the nRF52840-DK (nRF52840: Cortex-M4F, 1 MiB flash, 256 KiB RAM):
//! everything the portable [`sigil_bootloader`] needs from this part, and nothing else.
//!
//! | piece | what it does |
//! |---|---|
//! | [`config`], [`LAYOUT`] | the flash map from `board.toml`, checked at compile time |
//! | [`Flash`] | the NOR flash driver: nrf-hal's `Nvmc` over the managed region, refusing the locked protected state |
//! | [`BoardLock`] | the lock: ACL region 0 over the protected state, write and erase disabled until reset ([`lock`]) |
//! | [`start_image`] | checks a verified image's vector table, sets VTOR and starts it |
//! | [`log!`] | RTT log lines (probe-rs prints them) that compile to nothing without the `log` feature |
//!
//! Only `glue.rs` holds `unsafe` code.
#![no_std]
#![deny(missing_docs)]

pub mod config {
    //! Constants generated from `board.toml`.
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}

mod flash;
#[allow(unsafe_code)] // the board glue: see the module documentation
mod glue;
pub mod lock;

pub use flash::{Flash, FlashError};
pub use lock::BoardLock;
pub use sigil_board_common::{exit, JumpError};

#[doc(hidden)]
#[cfg(feature = "log")]
pub use rtt_target as __rtt;

use sigil_bootloader::Layout;

/// The checked flash layout. A layout that does not fit the geometry fails the build.
pub const LAYOUT: Layout = sigil_board_common::board_layout!(Flash);

/// The envelope buffer the bootloader core verifies bundles through: the NVMC driver reads
/// flash by copy, not in place. `sigil_manifests::MIN_VERIFY_BUFFER_LEN` (4 KiB and one root
/// document, 4369 bytes) accepts every bundle, root chains included: the verifier walks a chain
/// one root update at a time in it.
pub const ENVELOPE_BUF: usize = sigil_manifests::MIN_VERIFY_BUFFER_LEN;

/// Logs one line (`format!` syntax) over RTT. Nothing is emitted without the `log` feature,
/// but the arguments are still type-checked.
#[cfg(feature = "log")]
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::__rtt::rprintln!($($arg)*)
    };
}

/// Logs one line (`format!` syntax). Nothing is emitted without the `log` feature, but the
/// arguments are still type-checked.
#[cfg(not(feature = "log"))]
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        if false {
            let _ = format_args!($($arg)*);
        }
    }};
}

/// Sets up the RTT channel and routes the `log` crate (the core's and the boot sequence's
/// records) to it; no-op without the `log` feature.
pub fn log_init() {
    #[cfg(feature = "log")]
    rtt_target::rtt_init_log!(log::LevelFilter::Info);
}

/// The device's safe state: no verified image to start (or a failed check). Logs `code` and
/// parks the core with interrupts off until reset; a bench tester reads the code in the RTT log.
pub fn park(code: u8) -> ! {
    log!("sigil-boot: stopped, exit code {:#04x}", code);
    let _ = code;
    cortex_m::interrupt::disable();
    loop {
        cortex_m::asm::wfi();
    }
}

/// Starts the image the bootloader core just verified (and locked the protected state for):
/// checks that its vector table keeps execution inside the verified bytes and in RAM, that the
/// lock is set, sets VTOR and jumps. Returns only if a check fails.
#[cfg(feature = "bootloader")]
pub fn start_image(image: &sigil_bootloader::VerifiedImage, mut flash: Flash) -> JumpError {
    use embedded_storage::nor_flash::ReadNorFlash;
    let table = config::FLASH_BASE.saturating_add(image.payload_offset());
    let mut words = [0u8; 8];
    if flash.read(image.payload_offset(), &mut words).is_err() {
        return JumpError::Flash;
    }
    let ram = config::RAM_ORIGIN..config::RAM_ORIGIN.saturating_add(config::RAM_SIZE);
    let (sp, reset) = match sigil_board_common::check_vector_table(
        table,
        words,
        image.payload_size(),
        ram,
        256,
    ) {
        Ok(t) => t,
        Err(e) => return e,
    };
    if lock::latched().is_none() {
        return JumpError::NotLocked;
    }
    let _ = flash;
    #[allow(unsafe_code)] // the one call into the jump
    // SAFETY: `image` comes from `Bootloader::boot`, which verified the whole payload in this
    // boot and locked the protected state (checked above); the table is 256-byte aligned, the
    // stack pointer 8-byte aligned in RAM and the reset vector a Thumb address inside the
    // payload (checked above).
    unsafe {
        glue::jump(table, sp, reset)
    }
}
