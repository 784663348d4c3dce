//! Benchmark build only: instruction counts of the boot decision against the bare work it
//! must do (SHA-256 of the payload, the ed25519 checks), and the peak stack.
//!
//! Run under `qemu-system-arm -icount shift=0`: the virtual clock then advances 1 ns per guest
//! instruction, and SysTick (core clock, 25 MHz on mps2-an385) ticks once per 40 instructions.

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use sigil_board_mps2_an385::{exit, peak_stack, stack_size, Flash};
use sigil_bootloader::BootFlash;
use sigil_bootloader::VerifiedImage;
use sigil_manifests::{bundle::HEADER_LEN, BundleHeader, KeySet, TrustRoot, UnverifiedBundle};

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
    let sha = instructions(|| {
        let size = u32::try_from(image.payload_size()).unwrap_or(0);
        if let Some(payload) = flash.mapped(image.payload_offset(), size) {
            core::hint::black_box(Sha256::digest(payload));
        }
    });
    // The signature checks alone: every signature of the active bundle, verify_strict.
    let sigs = instructions(|| {
        let _ = signature_checks(flash);
    });
    semihosting::println!(
        "bench: boot_insns={} sha256_insns={} sig_insns={} payload_bytes={} peak_stack={} stack_reserved={}",
        boot,
        sha,
        sigs,
        image.payload_size(),
        peak,
        stack_size(),
    );
    exit::BENCH_DONE
}

/// Verifies the root signatures over the key set and the release signatures over the manifest
/// of the active bundle, with ed25519-dalek directly. Returns how many verified.
#[inline(never)]
fn signature_checks(flash: &Flash) -> Option<u32> {
    let root = TrustRoot::decode(crate::TRUST_ROOT).ok()?;
    let base = sigil_board_mps2_an385::LAYOUT.active_offset();
    let head: &[u8; HEADER_LEN] = flash.mapped(base, HEADER_LEN as u32)?.try_into().ok()?;
    let header = BundleHeader::parse(head).ok()?;
    let prefix = flash.mapped(base, header.envelope_end().ok()?)?;
    let bundle = UnverifiedBundle::parse(prefix).ok()?;
    let env = bundle.envelope();
    let key_set = KeySet::decode(env.signed_key_set.key_set).ok()?;
    let mut ok = 0u32;
    for (message, sigs, keys) in [
        (
            env.signed_key_set.key_set,
            &env.signed_key_set.signatures,
            &root.keys[..],
        ),
        (env.manifest, &env.manifest_signatures, key_set.keys),
    ] {
        for entry in sigs.iter() {
            for key in keys.iter() {
                if sigil_manifests::key_id(key) != entry.key_id {
                    continue;
                }
                let vk = VerifyingKey::from_bytes(key).ok()?;
                let sig = Signature::from_bytes(&entry.signature);
                if vk.verify_strict(message, &sig).is_ok() {
                    ok = ok.saturating_add(1);
                }
            }
        }
    }
    Some(ok)
}
