//! Cipher benchmark firmware for QEMU mps2-an385 (bench/ciphers.sh).
//!
//! Under `qemu-system-arm -icount shift=0` the virtual clock advances one nanosecond per guest
//! instruction and SysTick (core clock, 25 MHz) ticks once per 40 instructions, so SysTick
//! counts instructions. Each build runs the primitives its features select and prints one
//! `bench:` line of `name=instructions` pairs, then exits through semihosting.
//!
//! - stream ciphers: the keystream applied in place over 1 MiB (64 passes over a 16 KiB
//!   buffer, each pass timed on its own so the 24-bit SysTick never wraps);
//! - X25519: one `MontgomeryPoint::mul_clamped` (what a device does once per release);
//! - HKDF-SHA512: one extract and a 64-byte expand (a device does two extracts per release);
//! - ed25519: one `verify_strict` (the bootloader's baseline).
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::entry;

/// Guest instructions per SysTick tick under `-icount shift=0` (1 GHz virtual / 25 MHz).
const INSNS_PER_TICK: u64 = 40;
/// The buffer one pass transforms.
const CHUNK: usize = 16 * 1024;
/// Passes: 64 × 16 KiB = 1 MiB.
const PASSES: usize = 64;

fn instructions(f: impl FnOnce()) -> u64 {
    let start = SYST::get_current();
    f();
    let end = SYST::get_current();
    u64::from(start.wrapping_sub(end) & 0x00FF_FFFF) * INSNS_PER_TICK
}

/// The instructions of `apply` over 1 MiB, in place, one 16 KiB pass at a time.
#[allow(dead_code)] // only builds with a stream cipher call it
fn per_mib(buf: &mut [u8; CHUNK], mut apply: impl FnMut(&mut [u8])) -> u64 {
    let mut total = 0;
    for _ in 0..PASSES {
        total += instructions(|| apply(black_box(&mut buf[..])));
    }
    black_box(&buf[..]);
    total
}

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        semihosting::process::exit(2)
    };
    let mut syst = p.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();

    #[allow(unused_mut, unused_variables)]
    let mut buf = [0x5au8; CHUNK];
    let key = black_box([0x42u8; 32]);
    let nonce = black_box([0x24u8; 16]);
    // The empty build (no feature) prints the line without figures: its size is the baseline.
    let _ = (&key, &nonce);
    semihosting::print!("bench:");

    #[cfg(feature = "chacha20")]
    {
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        let mut c = chacha20::ChaCha20::new((&key).into(), (&nonce[..12]).into());
        let n = per_mib(&mut buf, |b| c.apply_keystream(b));
        semihosting::print!(" chacha20_mib={n}");
    }

    #[cfg(feature = "aes-ctr")]
    {
        use ctr::cipher::{KeyIvInit, StreamCipher};
        let mut c = ctr::Ctr128BE::<aes::Aes128>::new((&key[..16]).into(), (&nonce).into());
        let n = per_mib(&mut buf, |b| c.apply_keystream(b));
        semihosting::print!(" aes128ctr_mib={n}");
    }

    #[cfg(feature = "x25519")]
    {
        let point = curve25519_dalek::montgomery::MontgomeryPoint(black_box([9u8; 32]));
        let mut shared = [0u8; 32];
        let n = instructions(|| shared = black_box(point).mul_clamped(key).to_bytes());
        black_box(shared);
        semihosting::print!(" x25519={n}");
    }

    #[cfg(feature = "hkdf")]
    {
        let mut okm = [0u8; 64];
        let n = instructions(|| {
            let h = hkdf::Hkdf::<sha2::Sha512>::new(Some(black_box(&nonce[..])), &key);
            if h.expand(b"bench", &mut okm).is_err() {
                semihosting::process::exit(3);
            }
        });
        black_box(okm);
        semihosting::print!(" hkdf_sha512={n}");
    }

    #[cfg(feature = "ed25519")]
    {
        // RFC 8032 §7.1 test 1 (empty message): a valid signature, so verify_strict does all
        // of its work.
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&black_box(RFC8032_KEY));
        let signature = ed25519_dalek::Signature::from_bytes(&black_box(RFC8032_SIGNATURE));
        let mut ok = false;
        let n = instructions(|| {
            if let Ok(k) = &verifying {
                ok = k.verify_strict(black_box(b""), &signature).is_ok();
            }
        });
        if !ok {
            semihosting::process::exit(4);
        }
        semihosting::print!(" ed25519_verify={n}");
    }

    semihosting::println!();
    semihosting::process::exit(0)
}

/// RFC 8032 §7.1 test 1: public key and signature of the empty message.
#[cfg(feature = "ed25519")]
const RFC8032_KEY: [u8; 32] = hex32(*b"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
#[cfg(feature = "ed25519")]
const RFC8032_SIGNATURE: [u8; 64] = {
    let lo = hex32(*b"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155");
    let hi = hex32(*b"5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
    let mut out = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        out[i] = lo[i];
        out[i + 32] = hi[i];
        i += 1;
    }
    out
};

/// 64 hex digits to 32 bytes, at compile time.
#[cfg(feature = "ed25519")]
const fn hex32(text: [u8; 64]) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a hex digit"),
        }
    }
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    semihosting::process::exit(101)
}
