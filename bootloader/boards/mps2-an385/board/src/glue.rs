//! The only `unsafe` code of the port: byte copies to and from the flash window (a memory
//! region that the linker scripts keep free), the jump into a verified image, the bootloader's
//! size-optimised memory routines (feature `compact-mem`) and, for the benchmark build, the
//! stack high-water scan. Each function checks everything it can in safe
//! code before its single `unsafe` block.

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
    // driver, through `&mut Flash`, which cannot exist while that borrow does, so the bytes do
    // not change under the slice (`write_window` needs the token mutably).
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

/// Relocates the vector table to `vector_table`, loads the main stack pointer from its first
/// word and branches to its reset vector.
///
/// # Safety
///
/// `vector_table` must be the 256-byte aligned start of an image that was verified in this
/// boot, whose first word is a valid initial stack pointer in RAM and whose second word is a
/// Thumb reset vector inside that image. Nothing owned by the caller is used afterwards: the
/// stack is abandoned and the image re-initialises RAM.
pub(crate) unsafe fn jump(vector_table: u32) -> ! {
    // SAFETY: VTOR is a core register at a fixed address on every ARMv7-M; writing it only
    // changes where exceptions are vectored, and the caller guarantees a valid, aligned table.
    // Interrupts are not enabled by this bootloader, so no exception can arrive in between.
    unsafe {
        (*cortex_m::peripheral::SCB::PTR).vtor.write(vector_table);
    }
    // SAFETY: the caller guarantees a valid stack pointer and reset vector in the table.
    unsafe { cortex_m::asm::bootload(vector_table as *const u32) }
}

/// The bootloader's interrupt vectors: a single entry, the fewest cortex-m-rt's linker script
/// accepts (it requires a table longer than the 16 system exceptions). The bootloader never
/// enables an interrupt (the NVIC comes out of reset with all of them disabled) and the image
/// it starts installs its own table, so the default 240 entries would be 960 bytes of flash
/// that serve nothing.
#[cfg(feature = "bootloader-vectors")]
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [DefaultHandler];

#[cfg(feature = "bootloader-vectors")]
extern "C" {
    /// cortex-m-rt's default handler (it ends in a loop).
    fn DefaultHandler();
}

#[cfg(feature = "bench")]
extern "C" {
    static _stack_start: u32;
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

/// The memory routines the compiler calls for copies and fills (ARM EABI names, plus `memcmp`),
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
