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
use sigil_board_common::Policy;
use sigil_board_mps2_an385::{config, exit, log, BoardLock, Flash, LAYOUT};

/// The trust root file given by `SIGIL_TRUST_ROOT` at build time (validated by build.rs).
static TRUST_ROOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trust_root.bin"));

/// What this bootloader accepts (board.toml `[device]`).
static POLICY: Policy = Policy {
    vendor: config::VENDOR,
    device: config::DEVICE,
    component: config::COMPONENT,
    trial_attempts: config::TRIAL_ATTEMPTS,
};

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
    let root = match sigil_board_common::trust_root(TRUST_ROOT) {
        Ok(root) => root,
        Err(code) => return code,
    };
    let flash = match Flash::new() {
        Ok(flash) => flash,
        Err(e) => {
            log!("sigil-boot: flash: {}", e);
            return exit::FLASH_ERROR;
        }
    };
    // The lock, which the core sets on every path that returns an image (feature
    // `dangerous-unlocked`: the hostile-application tests' control build, whose lock protects
    // nothing).
    let mut lock = BoardLock::new();
    let config = match sigil_board_common::config(&root, &POLICY) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Feature `encryption`: the device key pair from the key store, read before the lock hides
    // it. Without one (not provisioned, or a damaged store) the device boots raw releases and
    // refuses encrypted ones (step 7k: the staged bundle is refused, outcome `StagedInvalid`).
    #[cfg(feature = "encryption")]
    let device_key = match sigil_board_mps2_an385::device_key(&flash) {
        Ok(key) => key,
        Err(_e) => {
            log!(
                "sigil-boot: device key store: {}: encrypted releases are refused",
                _e
            );
            None
        }
    };
    #[cfg(feature = "encryption")]
    let config = match &device_key {
        Some(key) => config.with_device_key(key),
        None => {
            log!("sigil-boot: no device key provisioned: encrypted releases are refused");
            config
        }
    };
    // The board's flash is memory-mapped: bundles are verified in place, so no envelope
    // buffer is needed (`sigil_bootloader::BootFlash`).
    let booted = sigil_board_common::boot_with(config, flash, LAYOUT, &mut lock, &mut []);
    let (image, bootloader) = match booted {
        Ok(booted) => booted,
        Err(code) => return code,
    };
    let flash = bootloader.into_flash();
    // The key is wiped (`DeviceSecret` zeroizes on drop) before the application runs.
    #[cfg(feature = "encryption")]
    drop(device_key);
    #[cfg(feature = "bench")]
    {
        let boot_ticks = timer.elapsed();
        return bench::report(boot_ticks, &image, &flash);
    }
    #[allow(unreachable_code)] // with `bench` the run ends above
    {
        let e = sigil_board_mps2_an385::start_image(&image, flash);
        log!("sigil-boot: not starting the image: {}", e);
        e.exit_code()
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // No formatting: a panic is never expected (the core returns errors), so the code alone
    // tells the test or the bench tester.
    exit::exit(exit::PANIC)
}
