//! Benchmark build only: instructions of the boot decision against the bare work it must do
//! (SHA-256 of the payload, the ed25519 checks), measured by the same binary, and the peak
//! stack.
//!
//! Run under `qemu-system-arm -icount shift=0`: the virtual clock advances 1 ns per guest
//! instruction, and TIMER0 (16 MHz, prescaler 0) ticks once per 62.5 instructions.

use sigil_board_common::bench;
use sigil_board_microbit::{exit, peak_stack, stack_size, timer_now, Flash, LAYOUT};
use sigil_bootloader::VerifiedImage;

/// Guest instructions per 1000 TIMER0 ticks under `-icount shift=0` (1 GHz / 16 MHz).
const INSNS_PER_KTICK: u64 = 62_500;

fn instructions(ticks: u32) -> u64 {
    u64::from(ticks).saturating_mul(INSNS_PER_KTICK) / 1000
}

fn measure(f: impl FnOnce()) -> u64 {
    let start = timer_now();
    f();
    instructions(timer_now().wrapping_sub(start))
}

/// Prints one `bench:` line and ends the run. Not inlined, so its frame does not enlarge the
/// boot decision's stack that the peak-stack figure measures.
#[inline(never)]
pub fn report(boot_ticks: u32, image: &VerifiedImage, flash: &Flash) -> u8 {
    let peak = peak_stack();
    let sha = measure(|| bench::payload_sha256(flash, image));
    let sigs = measure(|| {
        let _ = bench::signature_checks(flash, crate::TRUST_ROOT, LAYOUT.active_offset());
    });
    semihosting::println!(
        "bench: boot_insns={} sha256_insns={} sig_insns={} payload_bytes={} peak_stack={} stack_reserved={}",
        instructions(boot_ticks),
        sha,
        sigs,
        image.payload_size(),
        peak,
        stack_size(),
    );
    exit::BENCH_DONE
}
