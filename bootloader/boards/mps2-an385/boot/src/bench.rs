//! Benchmark build only: instruction counts of the boot decision against the bare work it
//! must do (SHA-256 of the payload, the ed25519 checks), and the peak stack.
//!
//! Run under `qemu-system-arm -icount shift=0`: the virtual clock then advances 1 ns per guest
//! instruction, and SysTick (core clock, 25 MHz on mps2-an385) ticks once per 40 instructions.

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use ed25519_dalek::{Signature, VerifyingKey};
use embedded_storage::nor_flash::ReadNorFlash;
use sha2::{Digest, Sha256};
use sigil_board_mps2_an385::{exit, peak_stack, stack_size, Flash};
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
pub fn report(boot: u64, image: &VerifiedImage, flash: &mut Flash, buf: &mut [u8]) -> u8 {
    // The high-water mark of the boot decision, before the baselines below use the stack.
    let peak = peak_stack();
    // The bare SHA-256 of the payload, read through the same driver in the same 256-byte chunks.
    let sha = instructions(|| {
        let mut hasher = Sha256::new();
        let mut chunk = [0u8; 256];
        let mut at = image.payload_offset();
        let mut left = image.payload_size();
        while left > 0 {
            let n = left.min(256) as usize;
            let Some(part) = chunk.get_mut(..n) else {
                break;
            };
            if flash.read(at, part).is_err() {
                break;
            }
            hasher.update(&*part);
            at = at.saturating_add(n as u32);
            left = left.saturating_sub(n as u64);
        }
        core::hint::black_box(hasher.finalize());
    });
    // The signature checks alone: every signature of the active bundle, verify_strict.
    let sigs = instructions(|| {
        let _ = signature_checks(flash, buf);
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
fn signature_checks(flash: &mut Flash, buf: &mut [u8]) -> Option<u32> {
    let root = TrustRoot::decode(crate::TRUST_ROOT).ok()?;
    let base = sigil_board_mps2_an385::LAYOUT.active_offset();
    let mut head = [0u8; HEADER_LEN];
    flash.read(base, &mut head).ok()?;
    let header = BundleHeader::parse(&head).ok()?;
    let prefix = buf.get_mut(..header.envelope_end().ok()? as usize)?;
    flash.read(base, prefix).ok()?;
    let bundle = UnverifiedBundle::parse(prefix).ok()?;
    let env = bundle.envelope();
    let key_set = KeySet::decode(env.signed_key_set.key_set).ok()?;
    let mut ok = 0u32;
    for (message, sigs, keys) in [
        (
            env.signed_key_set.key_set,
            &env.signed_key_set.signatures,
            &root.keys,
        ),
        (env.manifest, &env.manifest_signatures, &key_set.keys),
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
