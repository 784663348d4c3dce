//! The Sigil bootloader for QEMU `microbit` (nRF51822, Cortex-M0, 16 KiB RAM).
//!
//! Every boot: the shared boot sequence ([`sigil_board_common::boot`]) verifies (and, if an
//! update is pending or on trial, installs, trials or reverts) over the NVMC flash, locks the
//! protected state ([`BoardLock`]), then the board glue starts the verified image. Any failure
//! ends in the safe state: no jump, a distinct QEMU exit code ([`sigil_board_microbit::exit`]).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
mod bench;

use cortex_m_rt::entry;
use sigil_board_common::Policy;
use sigil_board_microbit::{config, exit, log, BoardLock, Flash, LAYOUT};

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
    sigil_board_microbit::own_exceptions();
    #[cfg(feature = "bench")]
    sigil_board_microbit::timer_start();
    sigil_board_microbit::log_init();
    exit::exit(run())
}

/// Boots, or returns the exit code that says why not.
fn run() -> u8 {
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
    let mut lock = BoardLock::new();
    // The flash is memory-mapped: bundles are verified in place, no envelope buffer.
    let (image, bootloader) =
        match sigil_board_common::boot(&root, &POLICY, flash, LAYOUT, &mut lock, &mut []) {
            Ok(booted) => booted,
            Err(code) => return code,
        };
    log!(
        "sigil-boot: lock: PROTENSET0/1 read back {:#010x} {:#010x}",
        lock.protenset[0],
        lock.protenset[1]
    );
    #[cfg(feature = "bench")]
    {
        let ticks = sigil_board_microbit::timer_now();
        let flash = bootloader.into_flash();
        return bench::report(ticks, &image, &flash);
    }
    #[allow(unreachable_code)] // with `bench` the run ends above
    {
        let e = sigil_board_microbit::start_image(&image, bootloader.into_flash());
        log!("sigil-boot: not starting the image: {}", e);
        e.exit_code()
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit::exit(exit::PANIC)
}
