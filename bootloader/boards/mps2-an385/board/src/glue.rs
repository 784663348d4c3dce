//! The only `unsafe` code of the port: byte copies to and from the flash window (a memory
//! region that the linker scripts keep free), the MPU set-up and the unprivileged jump into a
//! verified image, the flash service's exception entry and its call, the fault handlers, the
//! hostile test application's raw store and semihosting call, the bootloader's size-optimised
//! memory routines (feature `compact-mem`) and, for the benchmark build, the stack high-water
//! scan. Each function checks everything it can in safe code before its single `unsafe` block.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::{FLASH_BASE, FLASH_SIZE};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Proof that the caller owns the flash window (one owner per boot).
#[derive(Debug)]
pub(crate) struct Window(());

impl Window {
    pub(crate) fn take() -> Option<Window> {
        (!TAKEN.swap(true, Ordering::AcqRel)).then_some(Window(()))
    }
}

/// The window address of `offset..offset + len`, if it lies inside the flash device.
fn window_addr(offset: u32, len: usize) -> Option<usize> {
    let start = usize::try_from(offset).ok()?;
    if start.checked_add(len)? > FLASH_SIZE {
        return None;
    }
    usize::try_from(FLASH_BASE).ok()?.checked_add(start)
}

/// Copies flash bytes at `offset` into `dst`; `None` if the range leaves the device.
pub(crate) fn read_window(_window: &Window, offset: u32, dst: &mut [u8]) -> Option<()> {
    let src = window_addr(offset, dst.len())?;
    // SAFETY: `src..src + dst.len()` lies inside FLASH_BASE..FLASH_BASE + FLASH_SIZE (checked
    // above), SSRAM that is always mapped on mps2-an385 and that the generated linker scripts
    // keep free of every section of this firmware (board/build.rs refuses overlapping maps),
    // so it aliases no Rust object; `dst` is a distinct, exclusive buffer.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
    Some(())
}

/// The flash bytes at `offset..offset + len`, read in place; `None` if the range leaves the
/// device. The bytes borrow the window token, which the flash driver owns.
pub(crate) fn window_slice(_window: &Window, offset: u32, len: usize) -> Option<&[u8]> {
    let addr = window_addr(offset, len)?;
    // SAFETY: `addr..addr + len` lies inside the flash window (checked above): SSRAM that is
    // always mapped and that holds no Rust object (see `read_window`). The slice borrows the
    // one `Window` (shared) for its whole life; the only writer of the window is the flash
    // driver, through `&mut Flash` (`write_window` needs the token mutably) or, in the
    // application, the bootloader's flash service, called only from `&mut AppFlash`; neither can
    // exist while that borrow does, so the bytes do not change under the slice.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// Copies `src` into the flash window at `offset`; `None` if the range leaves the device.
/// Writing takes the window token mutably, so no slice from [`window_slice`] can be alive.
pub(crate) fn write_window(_window: &mut Window, offset: u32, src: &[u8]) -> Option<()> {
    let dst = window_addr(offset, src.len())?;
    // SAFETY: as in `read_window`: the destination is inside the reserved window, which no
    // Rust object occupies. The application image executes from the active slot, but the only
    // writers (the bootloader core's swap, the application's boot-control calls) never write
    // the bytes of the code that is running.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
    Some(())
}

/// Programs the MPU with `regions` (region `i` from `regions[i]`) and enables it, with the
/// default memory map kept for privileged code (`PRIVDEFENA`) and the MPU off in HardFault and
/// NMI (`HFNMIENA` = 0), so the fault handlers can always report.
#[cfg(feature = "bootloader")]
pub(crate) fn mpu_enable(regions: &[crate::lock::Region; crate::lock::MPU_REGIONS]) {
    const ENABLE: u32 = 1;
    const PRIVDEFENA: u32 = 1 << 2;
    let mpu = cortex_m::peripheral::MPU::PTR;
    // SAFETY: the MPU registers are core registers at a fixed address on every ARMv7-M with an
    // MPU (QEMU's Cortex-M3 has 8 regions); this runs privileged, in Thread mode, before the
    // jump, with no exception handler using the MPU. Every address the bootloader still uses
    // stays accessible to privileged code: its image (read, execute), its RAM (read/write), the
    // flash window (read/write outside the protected state), and the system space (not subject
    // to the MPU); `lock::regions` builds only such maps.
    unsafe {
        (*mpu).ctrl.write(0);
        for (number, region) in (0u32..).zip(regions.iter()) {
            (*mpu).rnr.write(number);
            (*mpu).rbar.write(region.base);
            (*mpu).rasr.write(region.attrs);
        }
        (*mpu).ctrl.write(ENABLE | PRIVDEFENA);
    }
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
}

/// Starts the application in unprivileged Thread mode on the process stack at `sp`, at `reset`,
/// through the SVCall handler (`svc_entry`, launch): code running unprivileged must not be
/// fetched from the bootloader's image (the MPU keeps it privileged), so the switch is an
/// exception return straight into the application. The main stack is reset to the top of the
/// bootloader's RAM for the exception handlers (the flash service, the fault handlers), which
/// stay the bootloader's: VTOR keeps pointing at the bootloader's vector table.
///
/// # Safety
///
/// `sp` must be an 8-byte aligned address in the application's RAM and `reset` a Thumb address
/// inside an image verified in this boot, and the lock must be set (the MPU on, the latch
/// latched). Nothing of the caller's stack is used afterwards.
#[cfg(feature = "bootloader")]
pub(crate) unsafe fn enter_unprivileged(sp: u32, reset: u32) -> ! {
    // SAFETY: the caller guarantees the stack pointer and the entry point, which `svc_entry`
    // checks again before it builds the application's first exception frame; the `svc` does
    // not return (the handler's exception return enters the application).
    unsafe {
        core::arch::asm!(
            "svc 0",
            "udf #0",
            in("r0") sp,
            in("r1") reset,
            options(noreturn),
        )
    }
}

/// The application's RAM: `RAM_ORIGIN .. RAM_ORIGIN + APP_RAM_SIZE`.
#[cfg(feature = "bootloader")]
fn in_app_ram(addr: u32, len: usize) -> bool {
    let Ok(len) = u32::try_from(len) else {
        return false;
    };
    let end = crate::config::RAM_ORIGIN.saturating_add(crate::config::APP_RAM_SIZE);
    addr >= crate::config::RAM_ORIGIN && addr.checked_add(len).is_some_and(|e| e <= end)
}

/// Copies `dst.len()` bytes of the application's RAM at `addr` into `dst` (for the flash
/// service); `None` if the range is not entirely the application's RAM.
#[cfg(feature = "bootloader")]
pub(crate) fn copy_from_app(addr: u32, dst: &mut [u8]) -> Option<()> {
    if !in_app_ram(addr, dst.len()) {
        return None;
    }
    // SAFETY: `addr .. addr + dst.len()` is the application's RAM (checked above): mapped RAM
    // that the bootloader's linker script leaves out of its own RAM, so it aliases no object of
    // the bootloader, and the application is stopped in the `svc` while it is read; `dst` is
    // the bootloader's own buffer.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) };
    Some(())
}

#[cfg(feature = "bootloader")]
core::arch::global_asm!(
    // The SVCall exception. `svc_entry(frame, EXC_RETURN)` serves the call and returns 0, and the
    // handler returns to the caller; or, for the bootloader's one launch call, it returns the
    // application's first exception frame, and the handler resets the main stack, sets
    // CONTROL.nPRIV and returns into the application: Thread mode, process stack, unprivileged.
    ".section .text.SVCall,\"ax\",%progbits",
    ".global SVCall",
    ".type SVCall,%function",
    ".thumb_func",
    "SVCall:",
    "mov r1, lr",
    "tst r1, #4",
    "ite eq",
    "mrseq r0, msp",
    "mrsne r0, psp",
    "push {{r4, lr}}",
    "bl {entry}",
    "pop {{r4, lr}}",
    "cbnz r0, 1f",
    "bx lr",
    "1:",
    "msr psp, r0",
    "ldr r1, ={stack_top}",
    "msr msp, r1",
    "movs r1, #1",
    "msr control, r1",
    "isb",
    "mvn lr, #2", // EXC_RETURN 0xFFFF_FFFD: Thread mode, process stack
    "bx lr",
    ".size SVCall, . - SVCall",
    entry = sym svc_entry,
    stack_top = sym _stack_start,
);

/// Whether the application was started (the launch is served once per reset).
#[cfg(feature = "bootloader")]
static LAUNCHED: AtomicBool = AtomicBool::new(false);

/// The SVCall handler's body: `frame` is the caller's stacked `r0..r3, r12, lr, pc, xPSR`.
/// Returns 0 to return to the caller, or the process stack pointer to launch the application
/// with.
#[cfg(feature = "bootloader")]
extern "C" fn svc_entry(frame: u32, exc_return: u32) -> u32 {
    // EXC_RETURN bit 2: the caller ran on the process stack (the application); the bootloader
    // runs on the main stack and calls only to launch.
    if exc_return & 0b100 == 0 {
        return launch(frame);
    }
    if !LAUNCHED.load(Ordering::Acquire) || !frame.is_multiple_of(4) || !in_app_ram(frame, 16) {
        crate::fault::stopped();
    }
    let word = |i: u32| frame.saturating_add(i.saturating_mul(4)) as *mut u32;
    // SAFETY: `frame .. frame + 16` is word-aligned application RAM (checked above) that the
    // core has just written the caller's r0..r3 to; the application is stopped while its
    // frame is read and its r0 replaced with the status, which is how the call returns it.
    unsafe {
        let status = crate::service::handle(
            core::ptr::read_volatile(word(0)),
            core::ptr::read_volatile(word(1)),
            core::ptr::read_volatile(word(2)),
            core::ptr::read_volatile(word(3)),
        );
        core::ptr::write_volatile(word(0), status as u32);
    }
    0
}

/// The bootloader's launch call (`enter_unprivileged`): builds the application's first
/// exception frame (all registers 0, `pc` = its reset vector, Thumb state) below its initial
/// stack pointer and returns where it starts. Served once, and only with the lock set.
#[cfg(feature = "bootloader")]
fn launch(main_frame: u32) -> u32 {
    // SAFETY: `main_frame` is the main stack pointer at the `svc` of `enter_unprivileged`, in
    // the bootloader's own RAM, where the core has just stacked the caller's r0 (the stack
    // pointer) and r1 (the entry point).
    let (sp, reset) = unsafe {
        (
            core::ptr::read_volatile(main_frame as *const u32),
            core::ptr::read_volatile((main_frame as *const u32).wrapping_add(1)),
        )
    };
    let frame = sp.wrapping_sub(32);
    if crate::lock::latched().is_none()
        || LAUNCHED.swap(true, Ordering::AcqRel)
        || !sp.is_multiple_of(8)
        || !in_app_ram(frame, 32)
    {
        crate::fault::stopped();
    }
    let words: [u32; 8] = [0, 0, 0, 0, 0, 0xFFFF_FFFF, reset & !1, 1 << 24];
    for (i, word) in (0u32..).zip(words) {
        let at = frame.saturating_add(i.saturating_mul(4));
        // SAFETY: `frame .. frame + 32` is word-aligned application RAM (checked above), which
        // no object of the bootloader occupies and which nothing runs from yet.
        unsafe { core::ptr::write_volatile(at as *mut u32, word) };
    }
    frame
}

/// The fault status registers: CFSR, HFSR, MMFAR, BFAR.
#[cfg(feature = "bootloader")]
pub(crate) fn fault_registers() -> [u32; 4] {
    let scb = cortex_m::peripheral::SCB::PTR;
    // SAFETY: reads of core registers at fixed addresses, from a (privileged) fault handler;
    // reading them has no side effect.
    unsafe {
        [
            (*scb).cfsr.read(),
            (*scb).hfsr.read(),
            (*scb).mmfar.read(),
            (*scb).bfar.read(),
        ]
    }
}

/// Every fault the application can cause ends here (the configurable faults are not enabled, so
/// they escalate to HardFault; HardFault runs with the MPU off).
#[cfg(feature = "bootloader")]
#[cortex_m_rt::exception(trampoline = false)]
unsafe fn HardFault() -> ! {
    crate::fault::stopped()
}

/// Any other exception: none is enabled, so this is never expected.
#[cfg(feature = "bootloader")]
#[cortex_m_rt::exception]
unsafe fn DefaultHandler(_irqn: i16) -> ! {
    crate::fault::stopped()
}

/// Calls the bootloader's flash service (`svc 0`, see [`crate::service`]) and returns its status
/// word.
pub(crate) fn service_call(op: u32, a: u32, b: u32, c: u32) -> u32 {
    let status: u32;
    // SAFETY: the SVCall handler is the bootloader's (VTOR stays on its table); it reads only
    // the buffer the arguments describe (checked to be this application's RAM or the flash
    // window) and writes only the flash window and this call's stacked r0. The application
    // holds no reference into the flash window across the call: `AppFlash` makes every call
    // from a `&mut self` method, so no slice from `window_slice` is alive.
    unsafe {
        core::arch::asm!(
            "svc 0",
            inout("r0") op => status,
            in("r1") a,
            in("r2") b,
            in("r3") c,
        );
    }
    status
}

/// A word of SSRAM1 past the flash device that a QEMU test run may set
/// (`-device loader,addr=0x3ff000,data=N,data-len=4`) to tell a test application what to do,
/// like a strap pin on a bench board; 0 unless set. No flash image covers it.
pub const TEST_STRAP: u32 = 0x003F_F000;

const _: () = {
    assert!(TEST_STRAP as usize >= FLASH_BASE as usize + FLASH_SIZE);
    assert!(TEST_STRAP < crate::config::CODE_REGION_SIZE && TEST_STRAP.is_multiple_of(4));
};

/// The word at [`TEST_STRAP`].
pub fn test_strap() -> u32 {
    // SAFETY: `TEST_STRAP` is a word-aligned address of SSRAM1 (always mapped on mps2-an385)
    // past the flash device and every section of either firmware (the linker scripts place
    // nothing there, checked above against the flash map), inside the MPU's code region, which
    // unprivileged code may read. A volatile read of it aliases no Rust object.
    unsafe { core::ptr::read_volatile(TEST_STRAP as *const u32) }
}

/// **Hostile test application only.** Stores `value` at `addr` and, if the store did not fault,
/// ends the run through the flash service with `code`. No Rust code runs after the store, so
/// whatever it overwrote is never observed by this program; the point is whether the MPU lets
/// it through.
pub fn dangerous_store_then_exit(addr: u32, value: u32, code: u8) -> ! {
    // SAFETY: see above: the asm never returns, and between the store and the `svc` exit it
    // touches only registers. The exit is served before any other check (service.rs).
    unsafe {
        core::arch::asm!(
            "str r3, [r2]",
            "dsb",
            "movs r0, #4",
            "svc 0",
            "udf #0",
            in("r1") u32::from(code),
            in("r2") addr,
            in("r3") value,
            options(noreturn),
        )
    }
}

/// **Hostile test application only.** Loads the word at `addr` (4-byte aligned), as code that
/// tries to read memory the lock hides would. Where the MPU denies the read it faults and
/// never returns.
pub fn dangerous_load(addr: u32) -> u32 {
    let value: u32;
    // SAFETY: a single aligned word load; the caller is the hostile test application, which
    // expects the load to fault. If it does not, it reads a word of SSRAM (no side effects).
    unsafe {
        core::arch::asm!(
            "ldr {v}, [{a}]",
            a = in(reg) addr,
            v = lateout(reg) value,
            options(nostack, readonly),
        )
    }
    value
}

/// **Hostile test application only.** A semihosting call (`bkpt 0xab`, operation `op`,
/// parameter block `param`) made directly, not through the flash service. QEMU serves
/// semihosting to privileged code only, so from the application this faults; the return
/// value (`r0`) exists only if it did not.
pub fn dangerous_semihosting(op: u32, param: &[u32]) -> u32 {
    let result: u32;
    // SAFETY: `param` is a valid parameter block the caller built; the semihosting operations
    // the hostile application issues (open, seek, write) read the block and the buffers it
    // names and write nothing into this program's memory.
    unsafe {
        core::arch::asm!(
            "bkpt 0xab",
            inout("r0") op => result,
            in("r1") param.as_ptr(),
        );
    }
    result
}

/// The bootloader's interrupt vectors: a single entry, the fewest cortex-m-rt's linker script
/// accepts (it requires a table longer than the 16 system exceptions). The bootloader never
/// enables an interrupt (the NVIC comes out of reset with all of them disabled) and the
/// application cannot enable one (the NVIC is privileged), so the default 240 entries would be
/// 960 bytes of flash that serve nothing.
#[cfg(feature = "bootloader")]
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [default_handler];

#[cfg(feature = "bootloader")]
extern "C" {
    /// `DefaultHandler` above, by its exported name.
    #[link_name = "DefaultHandler"]
    fn default_handler();
}

extern "C" {
    /// Top of the bootloader's stack (cortex-m-rt's linker script).
    static _stack_start: u32;
}

#[cfg(feature = "bench")]
extern "C" {
    static _stack_end: u32;
}

/// Bytes of stack reserved (`_stack_end.._stack_start`, from cortex-m-rt's linker script).
#[cfg(feature = "bench")]
pub fn stack_size() -> usize {
    let (start, end) = stack_bounds();
    start.saturating_sub(end)
}

#[cfg(feature = "bench")]
fn stack_bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken (safe), never their contents.
    (
        core::ptr::addr_of!(_stack_start) as usize,
        core::ptr::addr_of!(_stack_end) as usize,
    )
}

/// Peak stack use so far: cortex-m-rt's `paint-stack` fills `_stack_end.._stack_start` with
/// `0xCCCC_CCCC` before `main`; the lowest word that no longer holds it is the high-water mark.
#[cfg(feature = "bench")]
pub fn peak_stack() -> usize {
    let (start, end) = stack_bounds();
    let here = cortex_m::register::msp::read() as usize;
    let mut addr = end;
    // Stop below the live part of the stack: only words below the current SP are scanned.
    while addr < here.saturating_sub(64) {
        // SAFETY: `addr` is word-aligned (cortex-m-rt aligns `_stack_end` to 4) and lies in the
        // stack region below the current stack pointer: mapped RAM that holds no live Rust
        // object, read with a volatile load.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != 0xCCCC_CCCC {
            break;
        }
        addr = addr.saturating_add(4);
    }
    start.saturating_sub(addr)
}

/// The memory routines the compiler calls for copies, moves and fills (ARM EABI names, plus
/// `memmove` and `memcmp`),
/// written for size: compiler-builtins' versions, prebuilt for speed, take about 1.5 KiB of
/// flash; these take about 150 bytes. Word-aligned copies and fills move a word at a time, so
/// the bulk copies of the bootloader (256-byte flash chunks between aligned buffers) lose
/// little; unaligned ones go byte by byte.
///
/// The loops use volatile accesses so that the compiler cannot recognise them as a copy and
/// call the routine being defined. They override compiler-builtins' definitions at link time
/// (the linker takes a symbol from the library only while it is undefined).
#[cfg(feature = "compact-mem")]
mod mem {
    // `i <= n` throughout, so the index arithmetic never wraps.
    use core::ptr::{read_volatile, write_volatile};

    /// Copies `n` bytes.
    ///
    /// # Safety
    ///
    /// The compiler's contract for `memcpy`: `src..src + n` is readable, `dst..dst + n` is
    /// writable, and the two do not overlap.
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memcpy(dst: *mut u8, src: *const u8, n: usize) {
        let mut i = 0;
        if (dst as usize | src as usize).is_multiple_of(4) {
            // Four words per turn: the hash's 64-byte block copies are most of the calls.
            while n.wrapping_sub(i) >= 16 {
                let (d, s) = (
                    dst.wrapping_add(i).cast::<u32>(),
                    src.wrapping_add(i).cast::<u32>(),
                );
                // SAFETY: both addresses are word-aligned (checked above, and `i` steps by
                // words) and `i + 16 <= n`, inside the regions the caller vouches for.
                unsafe {
                    write_volatile(d, read_volatile(s));
                    write_volatile(d.add(1), read_volatile(s.add(1)));
                    write_volatile(d.add(2), read_volatile(s.add(2)));
                    write_volatile(d.add(3), read_volatile(s.add(3)));
                }
                i = i.wrapping_add(16);
            }
            while n.wrapping_sub(i) >= 4 {
                // SAFETY: as above, with `i + 4 <= n`.
                unsafe {
                    write_volatile(
                        dst.add(i).cast::<u32>(),
                        read_volatile(src.add(i).cast::<u32>()),
                    );
                }
                i = i.wrapping_add(4);
            }
        }
        while i < n {
            // SAFETY: `i < n`, inside the regions the caller vouches for.
            unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
            i = i.wrapping_add(1);
        }
    }

    /// Copies `n` bytes between 4-byte aligned regions.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memcpy`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memcpy4(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memcpy(dst, src, n) }
    }

    /// Copies `n` bytes between 8-byte aligned regions.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memcpy`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memcpy8(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memcpy(dst, src, n) }
    }

    /// Copies `n` bytes between regions that may overlap, byte by byte: forwards when `dst` is
    /// below `src`, backwards otherwise. Rare and short here (the protected state's rejected
    /// list shifting by one entry), so it is not worth compiler-builtins' 1.5 KiB version.
    ///
    /// # Safety
    ///
    /// The compiler's contract for `memmove`: `src..src + n` is readable and `dst..dst + n`
    /// writable.
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memmove(dst: *mut u8, src: *const u8, n: usize) {
        if (dst as usize) < (src as usize) {
            let mut i = 0;
            while i < n {
                // SAFETY: `i < n`, inside the regions the caller vouches for; every byte is
                // read before the overlapping destination byte at a lower address is written.
                unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
                i = i.wrapping_add(1);
            }
        } else {
            let mut i = n;
            while i > 0 {
                i = i.wrapping_sub(1);
                // SAFETY: `i < n`; copying from the top down reads every source byte before
                // the overlapping destination byte at a higher address is written.
                unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
            }
        }
    }

    /// Copies `n` bytes between 4-byte aligned regions that may overlap.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memmove`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memmove4(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memmove(dst, src, n) }
    }

    /// Copies `n` bytes between 8-byte aligned regions that may overlap.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memmove`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memmove8(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memmove(dst, src, n) }
    }

    /// `memmove` by its C name, for callers that do not use the EABI names.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memmove`].
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memmove(dst, src, n) };
        dst
    }

    /// Sets `n` bytes to `value` (EABI argument order: length before value).
    ///
    /// # Safety
    ///
    /// The compiler's contract for `memset`: `dst..dst + n` is writable.
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memset(dst: *mut u8, n: usize, value: i32) {
        let byte = value as u8;
        let mut i = 0;
        if (dst as usize).is_multiple_of(4) {
            let word = u32::from_ne_bytes([byte; 4]);
            // Four words per turn: SHA-256 clears its 192-byte message schedule every block.
            while n.wrapping_sub(i) >= 16 {
                let d = dst.wrapping_add(i).cast::<u32>();
                // SAFETY: `dst + i` is word-aligned and `i + 16 <= n`.
                unsafe {
                    write_volatile(d, word);
                    write_volatile(d.add(1), word);
                    write_volatile(d.add(2), word);
                    write_volatile(d.add(3), word);
                }
                i = i.wrapping_add(16);
            }
            while n.wrapping_sub(i) >= 4 {
                // SAFETY: `dst + i` is word-aligned and `i + 4 <= n`.
                unsafe { write_volatile(dst.add(i).cast::<u32>(), word) };
                i = i.wrapping_add(4);
            }
        }
        while i < n {
            // SAFETY: `i < n`.
            unsafe { write_volatile(dst.add(i), byte) };
            i = i.wrapping_add(1);
        }
    }

    /// Sets `n` bytes of a 4-byte aligned region.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memset`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memset4(dst: *mut u8, n: usize, value: i32) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memset(dst, n, value) }
    }

    /// Sets `n` bytes of an 8-byte aligned region.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memset`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memset8(dst: *mut u8, n: usize, value: i32) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memset(dst, n, value) }
    }

    /// Zeroes `n` bytes.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memset`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memclr(dst: *mut u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memset(dst, n, 0) }
    }

    /// Zeroes `n` bytes of a 4-byte aligned region.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memset`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memclr4(dst: *mut u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memset(dst, n, 0) }
    }

    /// Zeroes `n` bytes of an 8-byte aligned region.
    ///
    /// # Safety
    ///
    /// As [`__aeabi_memset`].
    #[no_mangle]
    pub unsafe extern "C" fn __aeabi_memclr8(dst: *mut u8, n: usize) {
        // SAFETY: the caller's contract is the same.
        unsafe { __aeabi_memset(dst, n, 0) }
    }

    /// Compares `n` bytes: negative, zero or positive as `a` sorts before, equal to or after
    /// `b`, bytes taken as unsigned.
    ///
    /// # Safety
    ///
    /// The compiler's contract for `memcmp`: both regions are readable for `n` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n`, inside the regions the caller vouches for.
            let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
            if x != y {
                return i32::from(x).wrapping_sub(i32::from(y));
            }
            i = i.wrapping_add(1);
        }
        0
    }
}
