//! Test application for the microbit port.
//!
//! It prints its version and the boot-control state, confirms itself when it runs on trial
//! (a confirm request, which the bootloader acts on at the next boot; never with the
//! `no-confirm` feature, which makes the bootloader revert it), and ends the QEMU run with its
//! distinctive exit code, so a test knows exactly which image ran. The Cortex-M0 runs it
//! privileged: it drives the flash with the board's driver, which refuses the locked
//! protected state.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use cortex_m_rt::entry;
use sigil_board_common::manifest_digest;
use sigil_board_microbit::{exit, println, Flash, LAYOUT};
use sigil_bootloader::{BootControl, Phase};

include!(concat!(env!("OUT_DIR"), "/variant.rs"));

const CONFIRMS: bool = !cfg!(feature = "no-confirm");

#[entry]
fn main() -> ! {
    println!("app: sigil test application {} running", VERSION);
    let control = Flash::new()
        .map_err(|_| ())
        .and_then(|flash| BootControl::new(flash, LAYOUT).map_err(|_| ()));
    let Ok(mut control) = control else {
        println!("app: boot-control state unreadable");
        exit::exit(exit::FLASH_ERROR)
    };
    let state = control.state();
    println!(
        "app: phase {}, trial boots left {}, minimum security counter {}",
        state.phase, state.attempts_left, state.min_security_counter
    );
    if state.phase == Phase::Trial {
        if CONFIRMS {
            let running = manifest_digest(control.flash(), LAYOUT.active_offset());
            match running.map(|d| control.confirm(&d)) {
                Some(Ok(())) => println!("app: confirmed; the floors rise at the next boot"),
                Some(Err(e)) => println!("app: confirm failed: {}", e),
                None => println!("app: confirm failed: the active bundle does not parse"),
            }
        } else {
            println!("app: not confirming (this build never confirms)");
        }
    }
    println!("app: exiting with code {}", EXIT_CODE);
    exit::exit(EXIT_CODE)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("app: panic: {}", info);
    exit::exit(exit::PANIC)
}
