//! The Sigil bootloader for the nRF52840-DK.
//!
//! Every boot: the shared boot sequence ([`sigil_board_common::boot`]) verifies (and, if an
//! update is pending or on trial, installs, trials or reverts) over the NVMC, locks the
//! protected state with an ACL region ([`BoardLock`]), then the board glue starts the verified
//! image. Any failure ends in the safe state: no jump, the core parked, the exit code in the
//! RTT log ([`sigil_board_nrf52840_dk::exit`]).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use cortex_m_rt::entry;
use sigil_board_common::Policy;
use sigil_board_nrf52840_dk::{config, exit, log, park, BoardLock, Flash, ENVELOPE_BUF, LAYOUT};

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
    sigil_board_nrf52840_dk::log_init();
    park(run())
}

/// Boots, or returns the exit code that says why not.
fn run() -> u8 {
    let Some(p) = nrf52840_pac::Peripherals::take() else {
        return exit::BOOT_ERROR;
    };
    let root = match sigil_board_common::trust_root(TRUST_ROOT) {
        Ok(root) => root,
        Err(code) => return code,
    };
    let flash = match Flash::new(p.NVMC) {
        Ok(flash) => flash,
        Err(e) => {
            log!("sigil-boot: flash: {}", e);
            return exit::FLASH_ERROR;
        }
    };
    let mut lock = BoardLock::new();
    // The NVMC driver reads by copy: bundles are verified through this envelope buffer.
    let mut envelope = [0u8; ENVELOPE_BUF];
    let (image, bootloader) =
        match sigil_board_common::boot(&root, &POLICY, flash, LAYOUT, &mut lock, &mut envelope) {
            Ok(booted) => booted,
            Err(code) => return code,
        };
    log!("sigil-boot: lock: ACL region 0 PERM {:#010x}", lock.perm);
    let e = sigil_board_nrf52840_dk::start_image(&image, bootloader.into_flash());
    log!("sigil-boot: not starting the image: {}", e);
    e.exit_code()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    park(exit::PANIC)
}
