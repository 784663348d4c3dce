//! The lock: what makes the protected state unwritable for the application until reset.
//!
//! QEMU's mps2-an385 has no flash controller to lock (its "flash" is SSRAM persisted through
//! semihosting), so the port builds the lock from what an ARMv7-M core does have:
//!
//! | piece | what it stops | where |
//! |---|---|---|
//! | unprivileged Thread mode for the application | the application reprogramming the MPU, VTOR or any other system register (a bus fault), and semihosting (QEMU refuses it to unprivileged code: a hard fault), i.e. the only path to the host file that persists the flash | [`crate::start_image`] |
//! | the MPU (PMSAv7), set by [`BoardLock::lock`] | stores into the bootloader's code and RAM (where the latch lives) and into the flash window (read-only; the protected state read-only even for privileged code) | below |
//! | the latch, a word in the bootloader's RAM | the flash service writing or erasing anything that touches the protected range; set once by [`BoardLock::lock`], never cleared (there is no function that clears it) until reset re-initialises RAM | [`crate::service`] |
//!
//! After the jump the application reaches the flash only through the bootloader's flash
//! service (`svc`): those touching the protected range are refused with
//! [`crate::service::Status::Locked`], and the service writes only the request sector and, when
//! the image runs confirmed, the staged bundle (the rules in [`crate::service`]). Every exception, and so every handler
//! that runs privileged, stays the bootloader's (VTOR is not moved to the application's table).
//!
//! # MPU regions (higher numbers win where regions overlap)
//!
//! | region | addresses | privileged | unprivileged |
//! |---|---|---|---|
//! | 0 code | `0 .. CODE_REGION_SIZE`: bootloader, flash window | read/write | read, execute |
//! | 1 bootloader | the bootloader's image | read, execute | none |
//! | 2 RAM | all RAM | read/write | read/write, no execute |
//! | 3 bootloader RAM | the top `bootloader_ram` bytes: stack, latch, service | read/write | none |
//! | 4..=6 protected | the protected state in the flash window, in up to three aligned blocks | read | read |
//! | 7 device key | the device key store sector (board.toml `device_key`): the device's X25519 private key | read | none |
//!
//! Addresses no region covers (the peripherals, the SSRAM mirrors at `0x0040_0000` and
//! `0x2040_0000`) are privileged-only (`PRIVDEFENA`): an unprivileged access faults.

use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sigil_bootloader::{LockFailed, StateLock};

use crate::config;
use crate::glue;

/// The latch: the protected flash range, set once per reset.
struct Latch {
    set: AtomicBool,
    start: AtomicU32,
    end: AtomicU32,
}

static LATCH: Latch = Latch {
    set: AtomicBool::new(false),
    start: AtomicU32::new(0),
    end: AtomicU32::new(0),
};

/// The latched protected range (flash offsets), once [`BoardLock::lock`] has run.
pub(crate) fn latched() -> Option<Range<u32>> {
    LATCH
        .set
        .load(Ordering::Acquire)
        .then(|| LATCH.start.load(Ordering::Relaxed)..LATCH.end.load(Ordering::Relaxed))
}

/// Sets the latch to `range`. A latch already set keeps its range: setting it again to the same
/// range succeeds, to another one fails.
fn latch(range: &Range<u32>) -> Result<(), LockFailed> {
    if let Some(held) = latched() {
        return if held == *range {
            Ok(())
        } else {
            Err(LockFailed)
        };
    }
    LATCH.start.store(range.start, Ordering::Relaxed);
    LATCH.end.store(range.end, Ordering::Relaxed);
    LATCH.set.store(true, Ordering::Release);
    Ok(())
}

/// One MPU region: `RBAR` (base address; region number and VALID are added when programmed)
/// and `RASR` (size, access permissions, attributes, enable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) base: u32,
    pub(crate) attrs: u32,
}

/// Access permissions (`RASR.AP`).
#[derive(Clone, Copy)]
enum Access {
    /// Privileged read/write, unprivileged none.
    Privileged = 0b001,
    /// Privileged read/write, unprivileged read-only.
    UserRead = 0b010,
    /// Read/write for both.
    Full = 0b011,
    /// Privileged read-only, unprivileged none.
    PrivilegedRead = 0b101,
    /// Read-only for both.
    ReadOnly = 0b110,
}

/// Regions the MPU of this core has (QEMU's Cortex-M3: `MPU_TYPE.DREGION` = 8).
pub(crate) const MPU_REGIONS: usize = 8;

/// Regions 4..=6 cover the protected range.
const PROTECTED_REGIONS: usize = 3;

/// Region 7 hides the device key store.
const KEY_REGION: usize = 7;

/// The device key store sector (flash offsets), if board.toml has one.
pub(crate) const KEY_STORE: Option<Range<u32>> = match config::DEVICE_KEY {
    Some(at) => Some(at..at.saturating_add(config::ERASE_SIZE as u32)),
    None => None,
};

/// `RASR` for a region of `size` bytes (a power of two, at least 32): normal memory,
/// write-through (TEX 0, C 1, B 0), not shared.
const fn attrs(size: u32, access: Access, execute: bool) -> u32 {
    // SIZE field: the region is 2^(SIZE + 1) bytes.
    let size_field = size.trailing_zeros().saturating_sub(1);
    let xn = if execute { 0 } else { 1 << 28 };
    xn | ((access as u32) << 24) | (1 << 17) | (size_field << 1) | 1
}

/// Whether `base .. base + size` is one MPU region (power of two, at least 32, aligned).
const fn is_region(base: u32, size: u32) -> bool {
    size >= 32 && size.is_power_of_two() && base.is_multiple_of(size)
}

// The fixed regions are checked when the board is built (build.rs) and again here.
const _: () = {
    assert!(is_region(0, config::CODE_REGION_SIZE));
    assert!(is_region(
        config::BOOTLOADER_ORIGIN,
        config::BOOTLOADER_SIZE
    ));
    assert!(is_region(config::RAM_ORIGIN, config::RAM_SIZE));
    assert!(is_region(
        config::BOOTLOADER_RAM,
        config::BOOTLOADER_RAM_SIZE
    ));
    // The key store is one MPU region: a sector is a power of two, aligned to itself.
    if let Some(at) = config::DEVICE_KEY {
        assert!(is_region(
            config::FLASH_BASE + at,
            config::ERASE_SIZE as u32
        ));
    }
};

/// The MPU regions that lock `protected` (flash offsets), or `None` if the range cannot be
/// covered by [`PROTECTED_REGIONS`] aligned power-of-two blocks inside the flash window.
pub(crate) fn regions(protected: &Range<u32>) -> Option<[Region; MPU_REGIONS]> {
    let off = Region { base: 0, attrs: 0 };
    let mut out = [
        Region {
            base: 0,
            attrs: attrs(config::CODE_REGION_SIZE, Access::UserRead, true),
        },
        Region {
            base: config::BOOTLOADER_ORIGIN,
            attrs: attrs(config::BOOTLOADER_SIZE, Access::PrivilegedRead, true),
        },
        Region {
            base: config::RAM_ORIGIN,
            attrs: attrs(config::RAM_SIZE, Access::Full, false),
        },
        Region {
            base: config::BOOTLOADER_RAM,
            attrs: attrs(config::BOOTLOADER_RAM_SIZE, Access::Privileged, false),
        },
        off,
        off,
        off,
        off,
    ];
    if protected.start >= protected.end || usize::try_from(protected.end).ok()? > config::FLASH_SIZE
    {
        return None;
    }
    if let Some(store) = &KEY_STORE {
        // Privileged code (the bootloader, which read the key before the lock) may only read
        // it; the application may not touch it at all.
        let size = store.end.checked_sub(store.start)?;
        *out.get_mut(KEY_REGION)? = Region {
            base: config::FLASH_BASE.checked_add(store.start)?,
            attrs: attrs(size, Access::PrivilegedRead, false),
        };
    }
    let mut at = config::FLASH_BASE.checked_add(protected.start)?;
    let end = config::FLASH_BASE.checked_add(protected.end)?;
    let mut slots = out
        .iter_mut()
        .take(KEY_REGION)
        .skip(KEY_REGION - PROTECTED_REGIONS);
    while at < end {
        // The largest block aligned at `at` that does not pass `end`.
        let mut size = 1u32 << at.trailing_zeros().min(31);
        while size > end.saturating_sub(at) {
            size >>= 1;
        }
        if size < 32 {
            return None;
        }
        *slots.next()? = Region {
            base: at,
            attrs: attrs(size, Access::ReadOnly, false),
        };
        at = at.checked_add(size)?;
    }
    Some(out)
}

/// The board's [`StateLock`]: latches the protected range for the flash service and turns the
/// MPU on (see the module documentation). The application is dropped to unprivileged mode by
/// [`crate::start_image`], which refuses to jump unless the latch is set.
///
/// With the board feature `dangerous-unlocked` (**test builds only**) it locks nothing: the
/// latch is set to an empty range, no MPU region covers the protected state, and the flash
/// service writes wherever the application asks. The QEMU tests run the hostile application
/// against that build to show that its attacks are real ones, which only the lock stops.
#[derive(Debug, Default)]
pub struct BoardLock(());

impl BoardLock {
    /// The lock.
    pub const fn new() -> Self {
        BoardLock(())
    }
}

/// Whether this is the `dangerous-unlocked` test build.
pub(crate) const DANGEROUS_UNLOCKED: bool = cfg!(feature = "dangerous-unlocked");

impl StateLock for BoardLock {
    fn lock(&mut self, protected: Range<u32>) -> Result<(), LockFailed> {
        let mut map = regions(&protected).ok_or(LockFailed)?;
        let latched = if DANGEROUS_UNLOCKED {
            for region in map.iter_mut().skip(KEY_REGION - PROTECTED_REGIONS) {
                region.attrs = 0;
            }
            protected.start..protected.start
        } else {
            protected
        };
        latch(&latched)?;
        glue::mpu_enable(&map);
        Ok(())
    }
}
