//! Test application for the mps2-an385 port.
//!
//! It prints its version and the boot-control state, confirms itself when it runs on trial
//! (unless built with `no-confirm`, which makes the bootloader revert it), and ends the QEMU
//! run with its distinctive exit code, so a test knows exactly which image ran.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use cortex_m_rt::entry;
use semihosting::println;
use sigil_board_mps2_an385::{exit, Flash, LAYOUT};
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
            match control.confirm() {
                Ok(()) => println!(
                    "app: confirmed; minimum security counter now {}",
                    control.state().min_security_counter
                ),
                Err(e) => println!("app: confirm failed: {}", e),
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
