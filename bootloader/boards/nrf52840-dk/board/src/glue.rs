//! The only `unsafe` code of the port: the managed flash region handed to the NVMC driver once,
//! the ACL registers, and the jump. Each function checks what it can in safe code first.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::{FLASH_BASE, FLASH_SIZE};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The managed flash region (`FLASH_BASE .. FLASH_BASE + FLASH_SIZE`) as the one mutable slice
/// nrf-hal's `Nvmc` takes; `None` after the first call.
pub(crate) fn flash_region() -> Option<&'static mut [u8]> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the region is on-chip flash, always mapped, page-aligned (board/build.rs), and
    // the generated linker scripts keep every section of this firmware out of it (the
    // bootloader below FLASH_BASE; an application only in the active slot, which it never
    // hands to this driver while running from it). `TAKEN` makes this the only slice of it.
    Some(unsafe { core::slice::from_raw_parts_mut(FLASH_BASE as *mut u8, FLASH_SIZE) })
}

/// Configures ACL region 0 over `range` (page-aligned flash addresses) with write and erase
/// disabled until reset, and returns its PERM register as read back. An ACL region, once
/// written, cannot be changed or cleared until reset.
#[cfg(feature = "bootloader")]
pub(crate) fn acl_lock(range: &core::ops::Range<u32>) -> u32 {
    let size = range.end.saturating_sub(range.start);
    // SAFETY: the ACL registers at their fixed address on every nRF52840 (the PAC's pointer);
    // region 0 is used by nothing else, and the values are page-aligned (checked at build time).
    unsafe {
        let acl = &*nrf52840_pac::ACL::ptr();
        let region = &acl.acl[0];
        region.addr.write(|w| w.bits(range.start));
        region.size.write(|w| w.bits(size));
        region.perm.write(|w| w.write().disable());
        region.perm.read().bits()
    }
}

/// Starts the image: VTOR to its vector table, main stack pointer `sp`, branch to `reset`.
///
/// # Safety
///
/// `table` must be the 256-byte-aligned vector table of an image verified in this boot, `sp`
/// an 8-byte aligned address in RAM and `reset` a Thumb address inside that image, with the
/// lock set. Nothing of the caller's stack is used afterwards.
#[cfg(feature = "bootloader")]
pub(crate) unsafe fn jump(table: u32, sp: u32, reset: u32) -> ! {
    // SAFETY: the caller guarantees the table, the stack pointer and the entry point
    // (`sigil_board_common::check_vector_table`); interrupts were never enabled.
    unsafe {
        let scb = &*cortex_m::peripheral::SCB::PTR;
        scb.vtor.write(table);
        cortex_m::asm::dsb();
        cortex_m::asm::isb();
        cortex_m::asm::bootstrap(sp as *const u32, reset as *const u32)
    }
}
