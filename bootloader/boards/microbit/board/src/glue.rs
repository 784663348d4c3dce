//! The only `unsafe` code of the port: the flash window (reads in place), the NVMC's
//! registers (program and erase), the nRF51 MPU's protection registers (the lock), the jump,
//! and for the benchmark build the stack high-water scan and TIMER0. Each function checks what
//! it can in safe code before its single `unsafe` block.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::{FLASH_BASE, FLASH_SIZE};

/// NVMC: READY (1 when the last program or erase has finished).
const NVMC_READY: usize = 0x4001_E400;
/// NVMC: CONFIG (0 read only, 1 write enabled, 2 erase enabled).
const NVMC_CONFIG: usize = 0x4001_E504;
/// NVMC: ERASEPAGE (write the address of a page to erase it).
const NVMC_ERASEPAGE: usize = 0x4001_E508;
/// nRF51 MPU: PROTENSET0/1 (bit `n`: 4 KiB block `n` protected from erase and write until
/// reset; writing 0 bits has no effect, so nothing clears it).
const MPU_PROTENSET: [usize; 2] = [0x4000_0600, 0x4000_0604];
/// nRF51 MPU: DISABLEINDEBUG (1 at reset: protection off while a debugger is attached).
const MPU_DISABLEINDEBUG: usize = 0x4000_0608;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Proof that the caller owns the flash window (one owner per boot).
#[derive(Debug)]
pub(crate) struct Window(());

impl Window {
    pub(crate) fn take() -> Option<Window> {
        // The Cortex-M0 has no atomic read-modify-write; the bootloader is single-threaded and
        // takes no interrupts, so a load and a store are enough (an application whose
        // interrupt handlers take the flash must not also take it in thread mode).
        if TAKEN.load(Ordering::Acquire) {
            return None;
        }
        TAKEN.store(true, Ordering::Release);
        Some(Window(()))
    }
}

/// The address of `offset..offset + len`, if it lies inside the managed flash.
fn window_addr(offset: u32, len: usize) -> Option<usize> {
    let start = usize::try_from(offset).ok()?;
    if start.checked_add(len)? > FLASH_SIZE {
        return None;
    }
    usize::try_from(FLASH_BASE).ok()?.checked_add(start)
}

/// The flash bytes at `offset..offset + len`, read in place (the NVMC maps the flash).
pub(crate) fn window_slice(_window: &Window, offset: u32, len: usize) -> Option<&[u8]> {
    let addr = window_addr(offset, len)?;
    // SAFETY: `addr..addr + len` lies inside FLASH_BASE..FLASH_BASE + FLASH_SIZE (checked),
    // code flash that is always mapped and that the generated linker scripts keep free of
    // every section of this firmware (the bootloader below FLASH_BASE, the application in the
    // active slot, read-only). The slice borrows the one `Window` for its life; the only writer
    // is the NVMC, driven through `&mut Window` (`program`, `erase_page`), which cannot run
    // while this borrow lives.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

fn nvmc_wait() {
    // SAFETY: READY is a read-only NVMC register at a fixed address on every nRF51.
    while unsafe { core::ptr::read_volatile(NVMC_READY as *const u32) } & 1 == 0 {}
}

fn nvmc_config(mode: u32) {
    nvmc_wait();
    // SAFETY: CONFIG is the NVMC's mode register (0, 1 or 2 are its defined values, and only
    // those are written here).
    unsafe { core::ptr::write_volatile(NVMC_CONFIG as *mut u32, mode) };
    nvmc_wait();
}

/// Programs the word `value` at flash `offset` (word-aligned, inside the device): the cells
/// become `old & value`, as NOR programming only clears bits.
pub(crate) fn program(_window: &mut Window, offset: u32, value: u32) -> Option<()> {
    if !offset.is_multiple_of(4) {
        return None;
    }
    let addr = window_addr(offset, 4)?;
    nvmc_config(1);
    // SAFETY: `addr` is a word-aligned flash address inside the managed region (checked), with
    // the NVMC in write mode; no slice of the window is alive (`&mut Window`).
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
    nvmc_config(0);
    Some(())
}

/// Erases the page at flash `offset` (page-aligned, inside the device).
pub(crate) fn erase_page(_window: &mut Window, offset: u32) -> Option<()> {
    if !(offset as usize).is_multiple_of(crate::config::ERASE_SIZE) {
        return None;
    }
    let addr = window_addr(offset, crate::config::ERASE_SIZE)?;
    nvmc_config(2);
    // SAFETY: ERASEPAGE takes the address of a page; this one is page-aligned inside the
    // managed region (checked), with the NVMC in erase mode.
    unsafe { core::ptr::write_volatile(NVMC_ERASEPAGE as *mut u32, addr as u32) };
    nvmc_config(0);
    Some(())
}

/// Sets the protection of the 4 KiB blocks covering `range` (flash addresses, block-aligned)
/// until reset, with the debugger exception off, and returns PROTENSET0/1 as read back.
pub(crate) fn protect(range: &core::ops::Range<u32>) -> [u32; 2] {
    let mut bits = [0u32; 2];
    let mut block = range.start / 4096;
    while block < range.end.div_ceil(4096) && block < 64 {
        if let Some(word) = bits.get_mut((block / 32) as usize) {
            *word |= 1 << (block % 32);
        }
        block = block.saturating_add(1);
    }
    // SAFETY: the nRF51 MPU's PROTENSET registers set protection bits (writing 0 bits changes
    // nothing) and DISABLEINDEBUG keeps the protection with a debugger; no other state.
    unsafe {
        core::ptr::write_volatile(MPU_DISABLEINDEBUG as *mut u32, 0);
        for (reg, value) in MPU_PROTENSET.iter().zip(bits) {
            core::ptr::write_volatile(*reg as *mut u32, value);
        }
        [
            core::ptr::read_volatile(MPU_PROTENSET[0] as *const u32),
            core::ptr::read_volatile(MPU_PROTENSET[1] as *const u32),
        ]
    }
}

/// Starts the image whose vector table is at `table`: records `table` for the exception
/// forwarder, then main stack pointer `sp`, branch to `reset`. The Cortex-M0 has no VTOR: the
/// vector table at 0 stays the bootloader's, and its forwarder sends every exception from now
/// until reset to the image's handler of the same number.
///
/// # Safety
///
/// `sp` must be an 8-byte aligned address in RAM and `reset` a Thumb address inside an image
/// verified in this boot whose vector table is at `table`, with the lock set. Nothing of the
/// caller's stack is used afterwards.
#[cfg(feature = "bootloader")]
pub(crate) unsafe fn jump(table: u32, sp: u32, reset: u32) -> ! {
    // From here on, every exception goes to the image's handler of its number.
    set_vector_record(table, !table);
    // SAFETY: guaranteed by the caller (checked by `sigil_board_common::check_vector_table`).
    unsafe { cortex_m::asm::bootstrap(sp as *const u32, reset as *const u32) }
}

/// The bootloader's exception forwarding record: two words in the first 8 bytes of RAM, which
/// neither firmware's linker script gives to anything else (board/build.rs). Word 0 is the
/// vector table of the image the bootloader started, word 1 its complement; the forwarder
/// below uses word 0 only when word 1 matches, and the bootloader clears both at its start, so
/// before the jump (or with RAM left at random by a power-on) every exception is the
/// bootloader's own.
#[cfg(feature = "bootloader")]
fn set_vector_record(table: u32, check: u32) {
    let record = crate::config::VECTOR_RECORD as *mut u32;
    // SAFETY: VECTOR_RECORD..+8 is word-aligned RAM reserved for this record in both firmware
    // images' linker scripts (board/build.rs): no Rust object lives there.
    unsafe {
        core::ptr::write_volatile(record, table);
        core::ptr::write_volatile(record.add(1), check);
    }
}

/// Makes every exception the bootloader's own (clears the forwarding record). The first thing
/// the bootloader does.
#[cfg(feature = "bootloader")]
pub(crate) fn own_exceptions() {
    set_vector_record(0, 0);
}

/// An exception the bootloader took for itself (no image started yet): never expected. It
/// ends the run with [`sigil_board_common::exit::EXCEPTION`] and the exception number in the log.
#[cfg(feature = "bootloader")]
#[no_mangle]
extern "C" fn sigil_own_exception() -> ! {
    crate::log!(
        "sigil-boot: exception {:?} in the bootloader",
        cortex_m::peripheral::SCB::vect_active()
    );
    crate::exit::exit(sigil_board_common::exit::EXCEPTION)
}

// The forwarder: cortex-m-rt puts `DefaultHandler` in every vector table entry from NMI on
// (SVCall, PendSV, SysTick, the 32 IRQs) and `HardFault` in entry 3; both are this code. It
// reads the forwarding record; if it is valid, it loads the image's handler for the active
// exception number (IPSR) from the image's vector table and branches to it with `bx`: LR
// still holds EXC_RETURN and the hardware-stacked frame is untouched (only r0-r2 are used, and
// the hardware saved them), so the image's handler runs and returns exactly as if the core
// had vectored to it. Cost: 9 instructions (about 17 cycles on the Cortex-M0) per exception.
// Otherwise (the record cleared: the bootloader is running) it goes to `sigil_own_exception`.
#[cfg(feature = "bootloader")]
core::arch::global_asm!(
    ".section .text.sigil_forward_exception,\"ax\",%progbits",
    ".global DefaultHandler",
    ".global HardFault",
    ".type DefaultHandler,%function",
    ".type HardFault,%function",
    ".thumb_func",
    "DefaultHandler:",
    ".thumb_func",
    "HardFault:",
    "    ldr r0, ={record}",
    "    ldm r0!, {{r1, r2}}",  // r1 = the image's vector table, r2 = its complement
    "    mvns r2, r2",
    "    cmp r1, r2",
    "    bne 1f",
    "    mrs r0, IPSR",         // the active exception number (0..47 on ARMv6-M)
    "    lsls r0, r0, #2",
    "    ldr r0, [r1, r0]",     // the image's handler for it (a Thumb address)
    "    bx r0",
    "1:",
    "    ldr r0, =sigil_own_exception",
    "    bx r0",
    ".ltorg",
    ".size DefaultHandler, . - DefaultHandler",
    ".size HardFault, . - HardFault",
    record = const crate::config::VECTOR_RECORD,
);

#[cfg(feature = "bench")]
extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

#[cfg(feature = "bench")]
fn stack_bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken (safe), never their contents.
    (
        core::ptr::addr_of!(_stack_start) as usize,
        core::ptr::addr_of!(_stack_end) as usize,
    )
}

/// Bytes of stack reserved (`_stack_end.._stack_start`, from cortex-m-rt's linker script).
#[cfg(feature = "bench")]
pub fn stack_size() -> usize {
    let (start, end) = stack_bounds();
    start.saturating_sub(end)
}

/// Peak stack use so far: cortex-m-rt's `paint-stack` fills `_stack_end.._stack_start` with
/// `0xCCCC_CCCC` before `main`; the lowest word that no longer holds it is the high-water mark.
#[cfg(feature = "bench")]
pub fn peak_stack() -> usize {
    let (start, end) = stack_bounds();
    let here = cortex_m::register::msp::read() as usize;
    let mut addr = end;
    while addr < here.saturating_sub(64) {
        // SAFETY: `addr` is word-aligned and lies in the stack region below the current stack
        // pointer: mapped RAM holding no live Rust object, read with a volatile load.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != 0xCCCC_CCCC {
            break;
        }
        addr = addr.saturating_add(4);
    }
    start.saturating_sub(addr)
}

/// TIMER0 as a free-running 32-bit counter at 16 MHz (prescaler 0), for the benchmark.
#[cfg(feature = "bench")]
pub fn timer_start() {
    const TIMER0: usize = 0x4000_8000;
    // SAFETY: TIMER0's MODE (timer), BITMODE (32 bit), PRESCALER (0), TASKS_CLEAR and
    // TASKS_START registers; the bootloader uses TIMER0 for nothing else.
    unsafe {
        core::ptr::write_volatile((TIMER0 + 0x504) as *mut u32, 0);
        core::ptr::write_volatile((TIMER0 + 0x508) as *mut u32, 3);
        core::ptr::write_volatile((TIMER0 + 0x510) as *mut u32, 0);
        core::ptr::write_volatile((TIMER0 + 0x00C) as *mut u32, 1);
        core::ptr::write_volatile(TIMER0 as *mut u32, 1);
    }
}

/// TIMER0's count now (16 MHz ticks since [`timer_start`]).
#[cfg(feature = "bench")]
pub fn timer_now() -> u32 {
    const TIMER0: usize = 0x4000_8000;
    // SAFETY: TASKS_CAPTURE[0] copies the counter into CC[0], which is then read.
    unsafe {
        core::ptr::write_volatile((TIMER0 + 0x040) as *mut u32, 1);
        core::ptr::read_volatile((TIMER0 + 0x540) as *const u32)
    }
}

/// Installs `logger` for the `log` crate (the Cortex-M0 has no atomic compare-and-swap, so
/// the racy variants).
#[cfg(feature = "log")]
pub(crate) fn set_logger(logger: &'static dyn log::Log) {
    // SAFETY: called once at the start of `main`, before anything logs; the firmware is
    // single-threaded and enables no interrupts, so nothing races.
    unsafe {
        if log::set_logger_racy(logger).is_ok() {
            log::set_max_level_racy(log::LevelFilter::Info);
        }
    }
}
