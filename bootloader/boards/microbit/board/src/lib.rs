//! Board glue for QEMU's `microbit` (nRF51822: Cortex-M0, 256 KiB flash, 16 KiB RAM):
//! everything the portable [`sigil_bootloader`] needs from this part, and nothing else.
//!
//! | piece | what it does |
//! |---|---|
//! | [`config`], [`LAYOUT`] | the flash map from `board.toml`, checked at compile time |
//! | [`Flash`] | the NOR flash driver over the NVMC, persisted to the host file `flash.bin` |
//! | [`BoardLock`] | the lock: the nRF51 MPU's flash protection and the driver's latch ([`lock`]) |
//! | [`start_image`] | checks a verified image's vector table and starts it |
//! | [`log!`] | semihosting log lines that compile to nothing without the `log` feature |
//! | [`exit`] | the QEMU exit codes the tests read |
//!
//! The Cortex-M0 has no privilege separation and no VTOR: the application runs privileged and
//! uses [`Flash`] itself (requests, staged bundles), and the vector table at 0 stays the
//! bootloader's, whose every exception entry forwards to the started image's handler of the
//! same number (see README.md, "Interrupts").
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
#[cfg(feature = "bench")]
pub use glue::{peak_stack, stack_size, timer_now, timer_start};
pub use lock::BoardLock;
#[doc(hidden)]
pub use semihosting as __semihosting;
pub use sigil_board_common::JumpError;

use sigil_bootloader::Layout;

/// The checked flash layout. A layout that does not fit the geometry fails the build.
pub const LAYOUT: Layout = sigil_board_common::board_layout!(Flash);

/// Exit codes of the QEMU firmware (semihosting extended exit), read by the boot tests.
pub mod exit {
    pub use sigil_board_common::exit::*;

    /// Ends the QEMU run with `code` (semihosting `SYS_EXIT_EXTENDED`). On the part this is
    /// where the device would park in its safe state.
    pub fn exit(code: u8) -> ! {
        semihosting::process::exit(i32::from(code))
    }
}

/// Logs one line over semihosting (`format!` syntax); nothing without the `log` feature.
pub use sigil_board_common::semihosting_log as log;

/// `println!` for the application: semihosting output (the application runs privileged).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::__semihosting::println!($($arg)*)
    };
}

/// Makes every exception the bootloader's own until it starts an image (clears the exception
/// forwarding record that RAM may hold at random after power-on; see README.md, "Interrupts").
/// The first call of the bootloader's `main`.
#[cfg(feature = "bootloader")]
pub fn own_exceptions() {
    glue::own_exceptions();
}

/// Routes the bootloader core's log records to semihosting (no-op without the `log` feature).
pub fn log_init() {
    #[cfg(feature = "log")]
    {
        glue::set_logger(&sigil_board_common::semihosting_log::LOGGER);
    }
}

/// Starts the image the bootloader core just verified (and locked the protected state for):
/// checks that its vector table keeps execution inside the verified bytes and in RAM, that
/// the lock is set, and jumps. Returns only if a check fails.
#[cfg(feature = "bootloader")]
pub fn start_image(image: &sigil_bootloader::VerifiedImage, flash: Flash) -> JumpError {
    use sigil_bootloader::BootFlash;
    let table = config::FLASH_BASE.saturating_add(image.payload_offset());
    let Some(head) = flash.mapped(image.payload_offset(), 8) else {
        return JumpError::Flash;
    };
    let Ok(words) = <[u8; 8]>::try_from(head) else {
        return JumpError::Flash;
    };
    let ram = config::RAM_ORIGIN..config::RAM_ORIGIN.saturating_add(config::RAM_SIZE);
    // No VTOR: the table needs only the word alignment of its entries.
    let (sp, reset) =
        match sigil_board_common::check_vector_table(table, words, image.payload_size(), ram, 4) {
            Ok(t) => t,
            Err(e) => return e,
        };
    if lock::latched().is_none() {
        return JumpError::NotLocked;
    }
    let _ = flash;
    #[allow(unsafe_code)] // the one call into the jump
    // SAFETY: `image` comes from `Bootloader::boot`, which verified the whole payload in this
    // boot and locked the protected state (checked above); the stack pointer is 8-byte aligned
    // in RAM and the reset vector a Thumb address inside the payload (checked above), and
    // `table` is where that vector table is.
    unsafe {
        glue::jump(table, sp, reset)
    }
}
