//! Test application for the mps2-an385 port.
//!
//! It prints its version and the boot-control state, confirms itself when it runs on trial
//! (a confirm request, which the bootloader acts on at the next boot; never with the
//! `no-confirm` feature, which makes the bootloader revert it), and ends the QEMU run with its
//! distinctive exit code, so a test knows exactly which image ran.
//!
//! It runs unprivileged: console, exit and flash writes go through the bootloader's service
//! (`sigil_board_mps2_an385::{app, AppFlash}`).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use cortex_m_rt::entry;
use sigil_board_common::test_app;
use sigil_board_mps2_an385::{app, app_println as println, exit, AppFlash, LAYOUT};

include!(concat!(env!("OUT_DIR"), "/variant.rs"));

const CONFIRMS: bool = !cfg!(feature = "no-confirm");

#[entry]
fn main() -> ! {
    let mut print = |args: core::fmt::Arguments<'_>| println!("{}", args);
    let ok = match AppFlash::new() {
        Ok(flash) => test_app::run(flash, LAYOUT, VERSION, CONFIRMS, &mut print),
        Err(_) => {
            println!("app: boot-control state unreadable");
            false
        }
    };
    if !ok {
        app::exit(exit::FLASH_ERROR)
    }
    println!("app: exiting with code {}", EXIT_CODE);
    app::exit(EXIT_CODE)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("app: panic: {}", info);
    app::exit(exit::PANIC)
}
