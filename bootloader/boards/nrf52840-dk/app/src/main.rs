//! Test application for the nRF52840-DK port.
//!
//! It logs its version and the boot-control state over RTT, confirms itself when it runs on
//! trial (a confirm request, which the bootloader acts on at the next reset; never with the
//! `no-confirm` feature, which makes the bootloader revert it), and parks. The bench tester
//! resets the board (`probe-rs reset`) to take the next boot.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use cortex_m_rt::entry;
use sigil_board_common::manifest_digest_read;
use sigil_board_nrf52840_dk::{log, park, Flash, LAYOUT};
use sigil_bootloader::{BootControl, Phase};

include!(concat!(env!("OUT_DIR"), "/variant.rs"));

const CONFIRMS: bool = !cfg!(feature = "no-confirm");

#[entry]
fn main() -> ! {
    sigil_board_nrf52840_dk::log_init();
    log!("app: sigil test application {} running", VERSION);
    let Some(p) = nrf52840_pac::Peripherals::take() else {
        park(EXIT_CODE)
    };
    let control = Flash::new(p.NVMC)
        .map_err(|_| ())
        .and_then(|flash| BootControl::new(flash, LAYOUT).map_err(|_| ()));
    let Ok(mut control) = control else {
        log!("app: boot-control state unreadable");
        park(sigil_board_nrf52840_dk::exit::FLASH_ERROR)
    };
    let state = control.state();
    log!(
        "app: phase {}, trial boots left {}, minimum security counter {}",
        state.phase,
        state.attempts_left,
        state.min_security_counter
    );
    if state.phase == Phase::Trial {
        if CONFIRMS {
            let mut buf = [0u8; sigil_manifests::MAX_ENVELOPE_LEN];
            let running = manifest_digest_read(control.flash(), LAYOUT.active_offset(), &mut buf);
            match running.map(|d| control.confirm(&d)) {
                Some(Ok(())) => log!("app: confirmed; the floors rise at the next boot"),
                Some(Err(e)) => log!("app: confirm failed: {}", e),
                None => log!("app: confirm failed: the active bundle does not parse"),
            }
        } else {
            log!("app: not confirming (this build never confirms)");
        }
    }
    log!(
        "app: done (exit code {}); reset the board for the next boot",
        EXIT_CODE
    );
    park(EXIT_CODE)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    park(sigil_board_nrf52840_dk::exit::PANIC)
}
