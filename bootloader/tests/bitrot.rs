//! Bit rot in the protected state: every single bit of the protected region flipped, one at a
//! time, in a confirmed device, a device cut mid-swap and a device on trial. After each flip
//! the next boot must decide exactly as it would have without it: the same image, the same
//! floors (never lower), the same trial budget (never an extra boot), the same slot contents
//! (no half-step redone over its own source).
//!
//! `cargo test` flips every bit for one geometry (4-byte writes, 1 KiB sectors: 16,384 bits per
//! state); `SIGIL_POWERFAIL_FULL=1` adds 1-byte writes with 256-byte sectors (multi-sector
//! banks) and 64-byte writes with 4 KiB sectors.

// Test code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::*;
use sigil_bootloader::sim::{Cut, Fault};
use sigil_bootloader::{BootState, Phase};

/// What a boot decided, without the sequence number (a heal may add one record).
fn decision<const W: usize, const E: usize>(dev: &mut Rig<W, E>) -> String {
    let image = dev.boot();
    let mut state: BootState = dev.state();
    state.sequence = 0;
    let slots = {
        let l = dev.layout;
        let from = l.active_offset() as usize;
        let to = l.staging_offset() as usize + (l.max_bundle_len() + l.sector_size()) as usize;
        dev.flash.bytes()[from..to].to_vec()
    };
    format!("{image:?} {state:?} {:x}", md5ish(&slots))
}

/// A cheap fingerprint of the slot bytes (FNV-1a).
fn md5ish(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The three devices each bit is flipped in.
fn states<const W: usize, const E: usize>(slot: u32) -> Vec<(&'static str, Rig<W, E>)> {
    let v = |c: u32, len: usize| {
        bundle(&Spec {
            counter: c,
            version: ["0.0.0", "1.0.0", "2.0.0", "3.0.0"][c as usize],
            payload_len: len,
            payload_seed: c as u8,
            ..Spec::default()
        })
    };
    let len = (slot as usize - 1) * E - 200;
    let mut confirmed: Rig<W, E> = Rig::new(slot, 0xFF);
    confirmed.provision(&v(1, len / 2));
    confirmed.boot().unwrap();
    // One whole update first, so both banks hold records.
    confirmed.stage(&v(2, len)).unwrap();
    confirmed.boot().unwrap();
    confirmed.confirm().unwrap();
    confirmed.boot().unwrap();
    assert_eq!(confirmed.state().min_security_counter, 2);

    let mut pending = confirmed.clone();
    pending.stage(&v(3, len / 3)).unwrap();
    // Cut the update boot in the middle of its swap, right after a progress record.
    let mut probe = pending.clone();
    probe.flash.record_ops();
    probe.boot().unwrap();
    let ops = probe.flash.recorded_ops().len();
    let mut mid_swap = pending.clone();
    mid_swap.flash.arm(Fault {
        at_op: (ops / 2) as u64,
        cut: Cut::Clean,
    });
    assert!(mid_swap.boot().is_err());
    mid_swap.flash.power_on();
    assert_eq!(mid_swap.state().phase, Phase::Swapping);
    assert!(mid_swap.state().swap_progress > 0);

    let mut trial = pending.clone();
    trial.attempts = 3;
    assert!(trial.boot().unwrap().is_trial());
    assert_eq!(trial.state().attempts_left, 2);
    vec![
        ("confirmed", confirmed),
        ("mid-swap", mid_swap),
        ("on trial", trial),
    ]
}

fn sweep<const W: usize, const E: usize>(name: &str, slot: u32) -> usize {
    let started = Instant::now();
    let mut trials = 0;
    for (what, dev) in states::<W, E>(slot) {
        let want = decision(&mut dev.clone());
        let floor = dev.clone().state().floors();
        let region = dev.layout.protected_region();
        for bit in 0..(region.end - region.start) as usize * 8 {
            let mut flipped = dev.clone();
            flipped.flash.bytes_mut()[region.start as usize + bit / 8] ^= 1 << (bit % 8);
            let got = decision(&mut flipped);
            assert_eq!(got, want, "{name}, {what}: bit {bit} changed the boot");
            let after = flipped.state().floors();
            assert!(
                after.security_counter >= floor.security_counter
                    && after.key_set_version >= floor.key_set_version,
                "{name}, {what}: bit {bit} lowered a floor"
            );
            trials += 1;
        }
    }
    println!(
        "bit flips {name}: {trials} trials in {:.1?}",
        started.elapsed()
    );
    trials
}

#[test]
fn every_single_bit_flip_in_the_protected_state() {
    let mut trials = sweep::<4, 1024>("4-byte writes, 1 KiB sectors", 6);
    if std::env::var_os("SIGIL_POWERFAIL_FULL").is_some_and(|v| v != "0") {
        trials += sweep::<1, 256>("1-byte writes, 256 B sectors", 12);
        trials += sweep::<64, 4096>("64-byte writes, 4 KiB sectors", 4);
    }
    println!("bit-flip suite: {trials} trials");
}
