//! The Sigil bootloader for QEMU `mps2-an385`.
//!
//! Every boot: read the boot-control state, let [`sigil_bootloader::Bootloader`] verify (and,
//! if an update is pending or on trial, install, trial or revert), lock the protected state
//! ([`BoardLock`]: MPU + latch), then start the verified image unprivileged through the board
//! glue. Any failure ends in the safe state: no jump, a distinct QEMU exit code
//! ([`sigil_board_mps2_an385::exit`]).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
mod bench;

use cortex_m_rt::entry;
use sigil_board_mps2_an385::{config, exit, log, BoardLock, Flash, JumpError, LAYOUT};
use sigil_bootloader::{BootConfig, Bootloader, Error};
use sigil_manifests::{ProductId, TrustRoot};

/// The trust root file given by `SIGIL_TRUST_ROOT` at build time (validated by build.rs).
static TRUST_ROOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trust_root.bin"));

#[entry]
fn main() -> ! {
    #[cfg(feature = "bench")]
    let timer = bench::Timer::start();
    sigil_board_mps2_an385::logging::init();
    let code = run(
        #[cfg(feature = "bench")]
        timer,
    );
    exit::exit(code)
}

/// Boots, or returns the exit code that says why not.
fn run(#[cfg(feature = "bench")] timer: bench::Timer) -> u8 {
    let Ok(root) = TrustRoot::decode(TRUST_ROOT) else {
        log!("sigil-boot: compiled-in trust root does not decode");
        return exit::BOOT_ERROR;
    };
    let Ok(product) = ProductId::new(config::VENDOR, config::DEVICE) else {
        log!("sigil-boot: invalid product id in board.toml");
        return exit::BOOT_ERROR;
    };
    let flash = match Flash::new() {
        Ok(flash) => flash,
        Err(e) => {
            log!("sigil-boot: flash: {}", e);
            return exit::FLASH_ERROR;
        }
    };
    let boot_config = BootConfig::new(&root, product, config::COMPONENT)
        .with_trial_attempts(config::TRIAL_ATTEMPTS);
    let mut bootloader = match Bootloader::new(flash, LAYOUT, boot_config) {
        Ok(b) => b,
        Err(e) => {
            log!("sigil-boot: {}", e);
            return exit::BOOT_ERROR;
        }
    };
    // The lock, which the core sets on every path that returns an image (feature
    // `dangerous-unlocked`: the hostile-application tests' control build, whose lock protects
    // nothing).
    let mut lock = BoardLock::new();
    // The board's flash is memory-mapped: bundles are verified in place, so no envelope
    // buffer is needed (`sigil_bootloader::BootFlash`).
    let image = match bootloader.boot(&mut [], &mut lock) {
        Ok(image) => image,
        Err(e) => {
            log!("sigil-boot: refusing to boot: {}", e);
            return match e {
                Error::NoBootableImage(_) => exit::NO_BOOTABLE_IMAGE,
                Error::Flash(_) => exit::FLASH_ERROR,
                Error::LockFailed => exit::LOCK_FAILED,
                _ => exit::BOOT_ERROR,
            };
        }
    };
    log!(
        "sigil-boot: verified image: {} bytes at {:#010x}, security counter {}, {}",
        image.payload_size(),
        config::FLASH_BASE.saturating_add(image.payload_offset()),
        image.security_counter(),
        if image.is_trial() {
            "trial boot"
        } else {
            "confirmed"
        },
    );
    #[cfg(feature = "bench")]
    {
        let boot_ticks = timer.elapsed();
        return bench::report(boot_ticks, &image, bootloader.flash());
    }
    #[allow(unreachable_code)] // with `bench` the run ends above
    {
        let e = sigil_board_mps2_an385::start_image(&image, bootloader.into_flash());
        log!("sigil-boot: not starting the image: {}", e);
        if e == JumpError::NotLocked {
            exit::LOCK_FAILED
        } else {
            exit::BAD_VECTOR_TABLE
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // No formatting: a panic is never expected (the core returns errors), so the code alone
    // tells the test or the bench tester.
    exit::exit(exit::PANIC)
}
