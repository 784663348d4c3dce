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
use sigil_board_common::test_app;
use sigil_board_nrf52840_dk::{log, park, Flash, LAYOUT};

include!(concat!(env!("OUT_DIR"), "/variant.rs"));

const CONFIRMS: bool = !cfg!(feature = "no-confirm");

#[entry]
fn main() -> ! {
    sigil_board_nrf52840_dk::log_init();
    let mut print = |args: core::fmt::Arguments<'_>| log!("{}", args);
    let flash = nrf52840_pac::Peripherals::take().map(|p| Flash::new(p.NVMC));
    let ok = match flash {
        Some(Ok(flash)) => test_app::run(flash, LAYOUT, VERSION, CONFIRMS, &mut print),
        _ => {
            log!("app: boot-control state unreadable");
            false
        }
    };
    if !ok {
        park(sigil_board_nrf52840_dk::exit::FLASH_ERROR)
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
