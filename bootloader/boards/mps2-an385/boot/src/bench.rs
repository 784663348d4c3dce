//! Benchmark build only: instruction counts of the boot decision against the bare work it
//! must do (SHA-256 of the payload, the ed25519 checks), and the peak stack.
//!
//! Run under `qemu-system-arm -icount shift=0`: the virtual clock then advances 1 ns per guest
//! instruction, and SysTick (core clock, 25 MHz on mps2-an385) ticks once per 40 instructions.

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use sigil_board_common::bench;
use sigil_board_mps2_an385::{exit, peak_stack, stack_size, Flash};
use sigil_bootloader::VerifiedImage;

/// Guest instructions per SysTick tick under `-icount shift=0` (1 GHz virtual / 25 MHz).
const INSNS_PER_TICK: u64 = 40;

/// A free-running 24-bit SysTick down-counter (wraps after 671 M instructions; a boot of a
/// 1 MiB image takes about 55 M).
pub struct Timer {
    syst: SYST,
}

impl Timer {
    pub fn start() -> Timer {
        let Some(p) = cortex_m::Peripherals::take() else {
            exit::exit(exit::BOOT_ERROR)
        };
        let mut syst = p.SYST;
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00FF_FFFF);
        syst.clear_current();
        syst.enable_counter();
        Timer { syst }
    }

    fn now(&self) -> u32 {
        let _ = &self.syst;
        SYST::get_current()
    }

    /// Instructions since `start`.
    pub fn elapsed(&self) -> u64 {
        u64::from(0x00FF_FFFF_u32.wrapping_sub(self.now()) & 0x00FF_FFFF) * INSNS_PER_TICK
    }
}

fn instructions(f: impl FnOnce()) -> u64 {
    let start = SYST::get_current();
    f();
    let end = SYST::get_current();
    u64::from(start.wrapping_sub(end) & 0x00FF_FFFF) * INSNS_PER_TICK
}

/// Prints one `bench:` line and ends the run. Not inlined, so its buffers do not enlarge the
/// boot decision's stack frame that the peak-stack figure measures.
#[inline(never)]
pub fn report(boot: u64, image: &VerifiedImage, flash: &Flash) -> u8 {
    // The high-water mark of the boot decision, before the baselines below use the stack.
    let peak = peak_stack();
    // The bare SHA-256 of the payload, read in place from the flash window as the boot does.
    let sha = instructions(|| bench::payload_sha256(flash, image));
    // The signature checks alone: every signature of the active bundle, strictly checked.
    let sigs = instructions(|| {
        let _ = bench::signature_checks(
            flash,
            crate::TRUST_ROOT,
            sigil_board_mps2_an385::LAYOUT.active_offset(),
        );
    });
    semihosting::println!(
        "bench: boot_insns={} sha256_insns={} sig_insns={} payload_bytes={} counter={} peak_stack={} stack_reserved={}",
        boot,
        sha,
        sigs,
        image.payload_size(),
        image.security_counter(),
        peak,
        stack_size(),
    );
    exit::BENCH_DONE
}
