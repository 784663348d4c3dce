//! The bootloader's fault handler: where the application ends when it breaks the lock's rules
//! (a store into memory the MPU protects, a system register, a semihosting call).

use crate::{exit, glue, lock, log};

/// Reports the fault (with the `log` feature) and ends the run: [`exit::APP_FAULT`] once the
/// lock is set (the application was running), [`exit::PANIC`] before (never expected).
pub(crate) fn stopped() -> ! {
    let [cfsr, hfsr, mmfar, bfar] = glue::fault_registers();
    let (mmfsr, bfsr, ufsr) = (cfsr & 0xFF, (cfsr >> 8) & 0xFF, cfsr >> 16);
    if mmfsr & 0x80 != 0 {
        log!("sigil-boot: lock: application stopped: memory protection fault: data access at {mmfar:#010x}");
    } else if mmfsr != 0 {
        log!("sigil-boot: lock: application stopped: memory protection fault (MMFSR {mmfsr:#04x})");
    } else if bfsr & 0x80 != 0 {
        log!("sigil-boot: lock: application stopped: bus fault at {bfar:#010x}");
    } else if bfsr != 0 {
        log!("sigil-boot: lock: application stopped: bus fault (BFSR {bfsr:#04x})");
    } else if ufsr != 0 {
        log!("sigil-boot: lock: application stopped: usage fault (UFSR {ufsr:#06x})");
    } else if hfsr & (1 << 31) != 0 || (hfsr & (1 << 30) != 0 && cfsr == 0) {
        // DEBUGEVT, or (QEMU) a debug monitor exception escalated with no configurable fault.
        log!("sigil-boot: lock: application stopped: debug event (a BKPT: QEMU refuses semihosting to unprivileged code)");
    } else {
        log!("sigil-boot: lock: application stopped: hard fault (HFSR {hfsr:#010x})");
    }
    let code = if lock::latched().is_some() {
        exit::APP_FAULT
    } else {
        exit::PANIC
    };
    exit::exit(code)
}
