//! Test application for the microbit port.
//!
//! It prints its version and the boot-control state, confirms itself when it runs on trial
//! (a confirm request, which the bootloader acts on at the next boot; never with the
//! `no-confirm` feature, which makes the bootloader revert it), and ends the QEMU run with its
//! distinctive exit code, so a test knows exactly which image ran. First it takes SysTick
//! interrupts in its own handler, which the bootloader's vector table forwards to (the
//! Cortex-M0 has no VTOR). The Cortex-M0 runs it
//! privileged: it drives the flash with the board's driver, which refuses the locked
//! protected state.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use sigil_board_common::test_app;
use sigil_board_microbit::{exit, println, Flash, LAYOUT};

include!(concat!(env!("OUT_DIR"), "/variant.rs"));

const CONFIRMS: bool = !cfg!(feature = "no-confirm");

/// SysTick interrupts the application waits for before its story.
const TICKS: u32 = 8;
/// Bound of the wait, in polls of the counter: far more than `TICKS` periods of 1000 cycles
/// take, so only a missing interrupt reaches it (then the application says so and fails).
const WAIT_POLLS: u32 = 20_000_000;

/// SysTick interrupts taken so far (only [`SysTick`] writes it: a load and a store suffice on
/// the Cortex-M0, which has no atomic read-modify-write).
static TICKS_TAKEN: AtomicU32 = AtomicU32::new(0);

/// The application's own SysTick handler, in its own vector table: the core vectors through
/// the bootloader's table at 0, whose forwarder branches here.
#[exception]
fn SysTick() {
    let n = TICKS_TAKEN.load(Ordering::Relaxed);
    TICKS_TAKEN.store(n.wrapping_add(1), Ordering::Relaxed);
}

/// Takes [`TICKS`] SysTick interrupts (every 1000 core cycles) and stops the timer; the count
/// taken, which is short of [`TICKS`] only if the interrupts did not reach [`SysTick`].
fn take_interrupts(mut syst: cortex_m::peripheral::SYST) -> u32 {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(999);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    let mut polls = 0u32;
    while TICKS_TAKEN.load(Ordering::Relaxed) < TICKS && polls < WAIT_POLLS {
        polls = polls.wrapping_add(1);
        cortex_m::asm::nop();
    }
    syst.disable_interrupt();
    syst.disable_counter();
    TICKS_TAKEN.load(Ordering::Relaxed)
}

#[entry]
fn main() -> ! {
    let mut print = |args: core::fmt::Arguments<'_>| println!("{}", args);
    // The bootloader forwards exceptions to this image's vector table (the Cortex-M0 has no
    // VTOR): show that an interrupt reaches this image's handler.
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        println!("app: core peripherals already taken");
        exit::exit(exit::PANIC)
    };
    let taken = take_interrupts(peripherals.SYST);
    if taken < TICKS {
        println!("app: only {} of {} SysTick interrupts taken", taken, TICKS);
        exit::exit(exit::PANIC)
    }
    // One more may have arrived before the timer stopped: `TICKS` is what was waited for.
    println!(
        "app: {} SysTick interrupts taken by the application's handler",
        TICKS
    );
    let ok = match Flash::new() {
        Ok(flash) => test_app::run(flash, LAYOUT, VERSION, CONFIRMS, &mut print),
        Err(_) => {
            println!("app: boot-control state unreadable");
            false
        }
    };
    if !ok {
        exit::exit(exit::FLASH_ERROR)
    }
    println!("app: exiting with code {}", EXIT_CODE);
    exit::exit(EXIT_CODE)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("app: panic: {}", info);
    exit::exit(exit::PANIC)
}
