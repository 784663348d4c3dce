//! The bootloader's flash service: after the jump, the only way the application reaches the
//! persistent flash (and the console and the exit, which are semihosting calls too).
//!
//! The application executes `svc 0` with the operation in `r0` and its arguments in `r1..r3`;
//! the status comes back in `r0`:
//!
//! | `r0` | operation | `r1` | `r2` | `r3` |
//! |---|---|---|---|---|
//! | 1 | write `len` bytes from the application's RAM to flash `offset` | offset | source address | len |
//! | 2 | erase flash `from .. to` | from | to | — |
//! | 3 | console: write `len` bytes of text from the application's RAM | source address | len | — |
//! | 4 | exit (ends the QEMU run) with code `r1 & 0xFF` | code | — | — |
//!
//! The rules, each checked before anything is written:
//!
//! | rule | refused with |
//! |---|---|
//! | nothing is served before the lock latched the protected range | [`Status::Unavailable`] |
//! | a write or erase that touches the latched protected range | [`Status::Locked`] |
//! | a write or erase outside the request sector and, when the image runs confirmed (Idle), the staged-bundle area: the active slot holds the running verified image, and during a trial the staging slot holds the only copy of the image to revert to | [`Status::NotWritable`] |
//! | a source that is not the application's RAM: the service is never a way to read the bootloader's memory | [`Status::BadBuffer`] |
//! | NOR rules (alignment, bounds) | [`Status::NotAligned`], [`Status::OutOfBounds`] |
//!
//! What is served — requests, and a staged bundle — the bootloader checks and verifies at the
//! next boot, so nothing the application writes can lower a floor, and nothing it may write
//! can stop the current verified image (or, on trial, the previous one) from booting.

/// A service operation (`r0` of the `svc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Program flash: `offset`, source address, length.
    Write = 1,
    /// Erase flash sectors: `from`, `to`.
    Erase = 2,
    /// Console output: source address, length.
    Console = 3,
    /// End the run with an exit code.
    Exit = 4,
}

/// What the service answered (`r0` after the `svc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum Status {
    /// Done.
    Ok = 0,
    /// Refused: the range touches the protected state, locked until reset.
    Locked = 1,
    /// Offset or length not aligned to the write or erase size.
    NotAligned = 2,
    /// The range leaves the flash device.
    OutOfBounds = 3,
    /// The buffer is not in the application's memory.
    BadBuffer = 4,
    /// The host file failed.
    Flash = 5,
    /// The service is not available (the lock is not set, or a call is in progress).
    Unavailable = 6,
    /// No such operation.
    UnknownOp = 7,
    /// Refused: the application writes only the request sector and, when idle, the staged
    /// bundle.
    NotWritable = 8,
}

impl Status {
    /// The status a service call returned in `r0`.
    pub fn from_word(word: u32) -> Status {
        match word {
            0 => Status::Ok,
            1 => Status::Locked,
            2 => Status::NotAligned,
            3 => Status::OutOfBounds,
            4 => Status::BadBuffer,
            5 => Status::Flash,
            6 => Status::Unavailable,
            8 => Status::NotWritable,
            _ => Status::UnknownOp,
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Status::Ok => "done",
            Status::Locked => "refused: the protected state is locked until reset",
            Status::NotAligned => "refused: not aligned",
            Status::OutOfBounds => "refused: outside the flash device",
            Status::BadBuffer => "refused: the buffer is not the application's memory",
            Status::Flash => "flash (host file) error",
            Status::Unavailable => "refused: the flash service is not available",
            Status::UnknownOp => "refused: no such operation",
            Status::NotWritable => {
                "refused: the application writes only requests and, when idle, the staged bundle"
            }
        })
    }
}

#[cfg(feature = "bootloader")]
pub(crate) use server::{handle, install};

#[cfg(feature = "bootloader")]
mod server {
    use core::cell::RefCell;
    use core::ops::Range;

    use core::sync::atomic::{AtomicBool, Ordering};

    use cortex_m::interrupt::Mutex;
    use embedded_storage::nor_flash::NorFlash;

    use super::{Op, Status};
    use crate::flash::{Flash, FlashError};
    use crate::{glue, lock, LAYOUT};

    /// The flash driver, handed over by [`crate::start_image`] at the jump.
    static FLASH: Mutex<RefCell<Option<Flash>>> = Mutex::new(RefCell::new(None));

    /// Whether the staged-bundle area is the application's to write (the image runs
    /// confirmed); set once, at the jump.
    static STAGING_WRITABLE: AtomicBool = AtomicBool::new(false);

    /// Bytes moved per step.
    const CHUNK: usize = 256;

    /// Keeps `flash` for the service (called once, just before the jump); `staging` says
    /// whether the application may write the staged-bundle area (not while an image is on
    /// trial: the staging slot then holds the image to revert to).
    pub(crate) fn install(flash: Flash, staging: bool) {
        STAGING_WRITABLE.store(staging, Ordering::Release);
        cortex_m::interrupt::free(|cs| {
            if let Ok(mut slot) = FLASH.borrow(cs).try_borrow_mut() {
                *slot = Some(flash);
            }
        });
    }

    /// Whether `start .. start + len` lies in what the application may write.
    fn writable(start: u32, len: u32) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        if lock::DANGEROUS_UNLOCKED {
            return true;
        }
        let inside = |r: Range<u32>| r.start <= start && end <= r.end;
        let staged = LAYOUT.staged_bundle_offset();
        inside(LAYOUT.request_region())
            || (STAGING_WRITABLE.load(Ordering::Acquire)
                && inside(staged..staged.saturating_add(LAYOUT.max_bundle_len())))
    }

    /// Serves one `svc` (called by the glue's SVCall handler with the caller's `r0..r3`).
    pub(crate) fn handle(op: u32, a: u32, b: u32, c: u32) -> Status {
        if op == Op::Exit as u32 {
            crate::exit::exit(a.to_le_bytes()[0]);
        }
        let Some(protected) = lock::latched() else {
            return Status::Unavailable;
        };
        if op == Op::Console as u32 {
            return console(a, b);
        }
        cortex_m::interrupt::free(|cs| {
            let Ok(mut slot) = FLASH.borrow(cs).try_borrow_mut() else {
                return Status::Unavailable;
            };
            let Some(flash) = slot.as_mut() else {
                return Status::Unavailable;
            };
            match op {
                x if x == Op::Write as u32 => write(flash, &protected, a, b, c),
                x if x == Op::Erase as u32 => erase(flash, &protected, a, b),
                _ => Status::UnknownOp,
            }
        })
    }

    fn status(e: FlashError) -> Status {
        match e {
            FlashError::NotAligned => Status::NotAligned,
            FlashError::OutOfBounds => Status::OutOfBounds,
            _ => Status::Flash,
        }
    }

    /// Whether `start .. start + len` touches `protected` (an overflowing range does).
    fn touches(protected: &Range<u32>, start: u32, len: u32) -> bool {
        match start.checked_add(len) {
            Some(end) => len != 0 && start < protected.end && protected.start < end,
            None => true,
        }
    }

    fn write(flash: &mut Flash, protected: &Range<u32>, offset: u32, src: u32, len: u32) -> Status {
        if touches(protected, offset, len) {
            return Status::Locked;
        }
        if !writable(offset, len) {
            return Status::NotWritable;
        }
        let (Ok(total), Some(_)) = (usize::try_from(len), src.checked_add(len)) else {
            return Status::OutOfBounds;
        };
        let mut done = 0usize;
        while done < total {
            let n = CHUNK.min(total.saturating_sub(done));
            let mut buf = [0u8; CHUNK];
            let Some(chunk) = buf.get_mut(..n) else {
                return Status::OutOfBounds;
            };
            // `done < total <= u32::MAX` and `src + len` does not overflow (checked above).
            let step = u32::try_from(done).unwrap_or(u32::MAX);
            if glue::copy_from_app(src.saturating_add(step), chunk).is_none() {
                return Status::BadBuffer;
            }
            if let Err(e) = flash.write(offset.saturating_add(step), chunk) {
                return status(e);
            }
            done = done.saturating_add(n);
        }
        Status::Ok
    }

    fn erase(flash: &mut Flash, protected: &Range<u32>, from: u32, to: u32) -> Status {
        let len = to.saturating_sub(from);
        if touches(protected, from, len) {
            return Status::Locked;
        }
        if !writable(from, len) {
            return Status::NotWritable;
        }
        flash.erase(from, to).map_or_else(status, |()| Status::Ok)
    }

    /// Text from the application's RAM, in 64-byte pieces, a character at a time
    /// (`SYS_WRITEC`: the smallest code; the console carries test output only).
    fn console(src: u32, len: u32) -> Status {
        let mut done = 0u32;
        while done < len {
            let n = 64u32.min(len.saturating_sub(done));
            let mut buf = [0u8; 64];
            let Some(chunk) = buf.get_mut(..n as usize) else {
                return Status::BadBuffer;
            };
            if glue::copy_from_app(src.saturating_add(done), chunk).is_none() {
                return Status::BadBuffer;
            }
            for &c in chunk.iter() {
                semihosting::sys::arm_compat::sys_writec(c);
            }
            done = done.saturating_add(n);
        }
        Status::Ok
    }
}
