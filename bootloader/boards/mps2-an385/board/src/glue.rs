//! The only `unsafe` code of the port: byte copies to and from the flash window (a memory
//! region that the linker scripts keep free), the jump into a verified image, and, for the
//! benchmark build, the stack high-water scan. Each function checks everything it can in safe
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
