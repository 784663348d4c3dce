//! Every geometry `Layout::new` accepts (over power-of-two write sizes 1–128, read sizes 1–512
//! and sectors of 32 B–4 KiB) runs a full update and confirm and an update and revert on the
//! simulated flash, which refuses unaligned reads and writes like a real driver
//! (`embedded_storage::nor_flash::check_read` / `check_write`); every geometry it refuses is
//! one the code could not drive.

// Test code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use sigil_bootloader::{Geometry, Layout, Outcome, Phase};

fn lifecycle<const W: usize, const E: usize, const R: usize>() {
    let what = format!("write {W}, sector {E}, read {R}");
    let slot = (4096 / E as u32).max(4);
    let max = slot as usize * E;
    let v = |c: u32, len: usize| {
        bundle(&Spec {
            counter: c,
            version: ["0.0.0", "1.0.0", "2.0.0", "3.0.0"][c as usize],
            payload_len: len,
            payload_seed: c as u8,
            ..Spec::default()
        })
    };
    // v2 fills most of the slot (its envelope is under 1 KiB).
    let (v1, v2, v3) = (v(1, max / 3), v(2, max - 1200), v(3, max / 4));
    let mut dev: Rig<W, E, R> = Rig::new(slot, 0xFF);
    dev.provision(&v1);
    assert_eq!(dev.boot().unwrap().security_counter(), 1, "{what}");
    // Update and confirm.
    dev.stage(&v2).unwrap();
    assert!(dev.boot().unwrap().is_trial(), "{what}");
    dev.confirm().unwrap();
    let image = dev.boot().unwrap();
    assert_eq!(
        (image.security_counter(), image.is_trial()),
        (2, false),
        "{what}"
    );
    assert!(dev.active_holds(&v2), "{what}");
    // Update and revert.
    dev.stage(&v3).unwrap();
    while dev.boot().unwrap().is_trial() {}
    let state = dev.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Reverted, 2),
        "{what}"
    );
    assert!(dev.active_holds(&v2), "{what}");
    assert_eq!(dev.flash.violations(), 0, "{what}");
}

macro_rules! geometries {
    ($($w:literal $e:literal $r:literal;)*) => {
        fn run_all() -> BTreeSet<(u32, u32, u32)> {
            let mut ran = BTreeSet::new();
            $(
                lifecycle::<$w, $e, $r>();
                ran.insert(($w, $e, $r));
            )*
            ran
        }
    };
}

// Writes 1–64 × reads up to the sector (at most 256) × sectors 64 B, 128 B, 256 B and 4 KiB:
// the cases where the copy chunk is the sector, is smaller than it, and equals it.
geometries! {
    1 64 1; 1 64 2; 1 64 4; 1 64 8; 1 64 16; 1 64 32; 1 64 64;
    2 64 1; 2 64 2; 2 64 4; 2 64 8; 2 64 16; 2 64 32; 2 64 64;
    4 64 1; 4 64 2; 4 64 4; 4 64 8; 4 64 16; 4 64 32; 4 64 64;
    8 64 1; 8 64 2; 8 64 4; 8 64 8; 8 64 16; 8 64 32; 8 64 64;
    16 64 1; 16 64 2; 16 64 4; 16 64 8; 16 64 16; 16 64 32; 16 64 64;
    32 64 1; 32 64 2; 32 64 4; 32 64 8; 32 64 16; 32 64 32; 32 64 64;
    64 64 1; 64 64 2; 64 64 4; 64 64 8; 64 64 16; 64 64 32; 64 64 64;
    1 128 1; 1 128 2; 1 128 4; 1 128 8; 1 128 16; 1 128 32; 1 128 64; 1 128 128;
    2 128 1; 2 128 2; 2 128 4; 2 128 8; 2 128 16; 2 128 32; 2 128 64; 2 128 128;
    4 128 1; 4 128 2; 4 128 4; 4 128 8; 4 128 16; 4 128 32; 4 128 64; 4 128 128;
    8 128 1; 8 128 2; 8 128 4; 8 128 8; 8 128 16; 8 128 32; 8 128 64; 8 128 128;
    16 128 1; 16 128 2; 16 128 4; 16 128 8; 16 128 16; 16 128 32; 16 128 64; 16 128 128;
    32 128 1; 32 128 2; 32 128 4; 32 128 8; 32 128 16; 32 128 32; 32 128 64; 32 128 128;
    64 128 1; 64 128 2; 64 128 4; 64 128 8; 64 128 16; 64 128 32; 64 128 64; 64 128 128;
    1 256 1; 1 256 2; 1 256 4; 1 256 8; 1 256 16; 1 256 32; 1 256 64; 1 256 128; 1 256 256;
    2 256 1; 2 256 2; 2 256 4; 2 256 8; 2 256 16; 2 256 32; 2 256 64; 2 256 128; 2 256 256;
    4 256 1; 4 256 2; 4 256 4; 4 256 8; 4 256 16; 4 256 32; 4 256 64; 4 256 128; 4 256 256;
    8 256 1; 8 256 2; 8 256 4; 8 256 8; 8 256 16; 8 256 32; 8 256 64; 8 256 128; 8 256 256;
    16 256 1; 16 256 2; 16 256 4; 16 256 8; 16 256 16; 16 256 32; 16 256 64; 16 256 128; 16 256 256;
    32 256 1; 32 256 2; 32 256 4; 32 256 8; 32 256 16; 32 256 32; 32 256 64; 32 256 128; 32 256 256;
    64 256 1; 64 256 2; 64 256 4; 64 256 8; 64 256 16; 64 256 32; 64 256 64; 64 256 128; 64 256 256;
    1 4096 1; 1 4096 2; 1 4096 4; 1 4096 8; 1 4096 16; 1 4096 32; 1 4096 64; 1 4096 128; 1 4096 256;
    2 4096 1; 2 4096 2; 2 4096 4; 2 4096 8; 2 4096 16; 2 4096 32; 2 4096 64; 2 4096 128; 2 4096 256;
    4 4096 1; 4 4096 2; 4 4096 4; 4 4096 8; 4 4096 16; 4 4096 32; 4 4096 64; 4 4096 128; 4 4096 256;
    8 4096 1; 8 4096 2; 8 4096 4; 8 4096 8; 8 4096 16; 8 4096 32; 8 4096 64; 8 4096 128; 8 4096 256;
    16 4096 1; 16 4096 2; 16 4096 4; 16 4096 8; 16 4096 16; 16 4096 32; 16 4096 64; 16 4096 128; 16 4096 256;
    32 4096 1; 32 4096 2; 32 4096 4; 32 4096 8; 32 4096 16; 32 4096 32; 32 4096 64; 32 4096 128; 32 4096 256;
    64 4096 1; 64 4096 2; 64 4096 4; 64 4096 8; 64 4096 16; 64 4096 32; 64 4096 64; 64 4096 128; 64 4096 256;
}

#[test]
fn every_accepted_geometry_updates_and_reverts() {
    let ran = run_all();
    // The grid: every accepted geometry on it ran above, and nothing on it outside the
    // accepted set did.
    let pow2 = |max: u32| (0..).map(|i| 1u32 << i).take_while(move |&v| v <= max);
    for e in [32u32, 64, 128, 256, 4096] {
        for w in pow2(128) {
            for r in pow2(512) {
                let g = Geometry {
                    erase_size: e,
                    write_size: w,
                    read_size: r,
                    erased: 0xFF,
                };
                let p = Layout::protected_len(g);
                let accepted = Layout::new(g, 0, p, p + e, p + e + 4 * e, 4).is_ok();
                assert_eq!(
                    accepted,
                    ran.contains(&(w, e, r)),
                    "write {w}, sector {e}, read {r}: accepted {accepted}"
                );
            }
        }
    }
}
