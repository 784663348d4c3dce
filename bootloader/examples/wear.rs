//! Flash wear of one update and one revert, per sector of each slot, on the simulator; prints a
//! Markdown section for BENCHMARKS.md (run by `bench/bootloader.sh`).
//!
//! Geometry: 4 KiB sectors, 8-byte writes, a 16-sector (64 KiB) active slot, and old and new
//! bundles that each fill exactly half the slot (8 sectors).

// Test and benchmark code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use sigil_bootloader::Outcome;

const SECTOR: usize = 4096;
const SLOT: u32 = 16;

type Dev = Rig<8, SECTOR>;

/// A bundle of exactly `len` bytes.
fn bundle_of_len(mut spec: Spec, len: usize) -> Vec<u8> {
    spec.payload_len = 1;
    let prefix = bundle(&spec).len() - 1;
    spec.payload_len = len - prefix;
    let b = bundle(&spec);
    assert_eq!(b.len(), len);
    b
}

struct Wear {
    active: Vec<(u64, u64)>,
    staging: Vec<(u64, u64)>,
    state: (u64, u64),
    requests: (u64, u64),
}

fn wear(dev: &Dev) -> Wear {
    let pair = |i: usize| {
        let s = dev.flash.stats(i);
        (s.erases, s.writes)
    };
    let sectors = dev.protected_sectors();
    let requests = pair(sectors.end);
    let state = sectors
        .map(pair)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    Wear {
        requests,
        active: (0..SLOT).map(|i| pair(dev.active_sector(i))).collect(),
        staging: (0..=SLOT).map(|i| pair(dev.staging_sector(i))).collect(),
        state,
    }
}

/// Prints one row per run of sectors with identical figures.
fn rows(slot: &str, update: &[(u64, u64)], revert: &[(u64, u64)]) {
    let mut start = 0;
    while start < update.len() {
        let key = (update[start], revert[start]);
        let mut end = start;
        while end + 1 < update.len() && (update[end + 1], revert[end + 1]) == key {
            end += 1;
        }
        let name = if start == end {
            format!("{slot} {start}")
        } else {
            format!("{slot} {start}–{end}")
        };
        let (u, r) = key;
        println!("| {name} | {} | {} | {} | {} |", u.0, u.1, r.0, r.1);
        start = end + 1;
    }
}

fn main() {
    let half = SLOT as usize * SECTOR / 2;
    let v1 = bundle_of_len(
        Spec {
            counter: 1,
            payload_seed: 1,
            ..Spec::default()
        },
        half,
    );
    let v2 = bundle_of_len(
        Spec {
            counter: 2,
            version: "2.0.0",
            payload_seed: 2,
            ..Spec::default()
        },
        half,
    );

    let mut dev = Dev::new(SLOT, 0xFF);
    dev.provision(&v1);
    dev.boot().expect("factory image boots");
    dev.stage(&v2).expect("stage");
    dev.flash.reset_stats();
    let ops_before = dev.flash.ops();
    let image = dev.boot().expect("update boot");
    assert!(image.is_trial());
    let update = wear(&dev);
    let update_ops = dev.flash.ops() - ops_before;

    // No confirm: use up the trial boots, then measure the reverting boot.
    while dev.state().attempts_left > 0 {
        dev.boot().expect("trial boot");
    }
    dev.flash.reset_stats();
    let ops_before = dev.flash.ops();
    let image = dev.boot().expect("revert boot");
    assert!(!image.is_trial() && dev.state().outcome == Outcome::Reverted);
    let revert = wear(&dev);
    let revert_ops = dev.flash.ops() - ops_before;
    assert_eq!(dev.flash.violations(), 0);

    let image_sectors = half / SECTOR;
    println!("### Flash wear per update and per revert\n");
    println!(
        "Simulated NOR flash: {} KiB sectors, 8-byte writes; active slot {SLOT} sectors ({} KiB), staging slot \
         {} sectors; old and new bundle {} KiB each (half the slot, {image_sectors} sectors). Writes are program \
         operations of at most 256 bytes; a sector copy is {} of them. `cargo run --release -p sigil-bootloader \
         --example wear`.\n",
        SECTOR / 1024,
        SLOT as usize * SECTOR / 1024,
        SLOT + 1,
        half / 1024,
        SECTOR / 256
    );
    println!("Staging sector 0 is the swap spare; the new bundle is staged in sectors 1–{image_sectors}.\n");
    println!("| sector | update: erases | update: writes | revert: erases | revert: writes |");
    println!("|---|---|---|---|---|");
    rows("active", &update.active, &revert.active);
    rows("staging", &update.staging, &revert.staging);
    println!(
        "| protected state (2 sectors; every record written twice) | {} | {} | {} | {} |",
        update.state.0, update.state.1, revert.state.0, revert.state.1
    );
    println!(
        "| request sector (erased by the boot that acts on the request) | {} | {} | {} | {} |",
        update.requests.0, update.requests.1, revert.requests.0, revert.requests.1
    );
    println!();

    let max = |v: &[(u64, u64)]| v.iter().map(|p| p.0).max().unwrap_or(0);
    let beyond =
        |v: &[(u64, u64)], from: usize| v.iter().skip(from).map(|p| p.0 + p.1).sum::<u64>();
    println!("| scheme | active (primary) erases per image sector | staging (secondary) erases per image sector | sectors beyond the images |");
    println!("|---|---|---|---|");
    println!(
        "| Sigil swap-offset, update (measured) | {} | {} | {} touched |",
        max(&update.active),
        max(&update.staging),
        if beyond(&update.active, image_sectors) + beyond(&update.staging, image_sectors + 1) == 0 {
            "none"
        } else {
            "some"
        }
    );
    println!(
        "| Sigil swap-offset, revert (measured) | {} | {} | {} touched |",
        max(&revert.active),
        max(&revert.staging),
        if beyond(&revert.active, image_sectors) + beyond(&revert.staging, image_sectors + 1) == 0 {
            "none"
        } else {
            "some"
        }
    );
    println!("| MCUboot swap-move (published) | 2 | 1 | untouched |");
    println!("| MCUboot swap-offset (published) | 1 | 1 | untouched |");
    println!();
    println!(
        "Flash operations (writes + erases) in the update boot: {update_ops}; in the revert boot: {revert_ops}. \
         Target: at most one erase per sector of each slot per update, and only the images' sectors."
    );
}
