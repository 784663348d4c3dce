//! Root rotation on the device: three root generations, one rotation at a time, with the power
//! cut at every write and erase of each rotation (the install swap, the confirm request, the
//! confirm boot that adopts the new root), then the device booted again from flash alone.
//!
//! After every cut the device boots a verified image, the old generation's or the new one's;
//! its root floor is the old root or the new one, never lower than before; and the update then
//! finishes when confirmed. A device that adopted root 3 refuses bundles signed under roots 1
//! and 2.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sigil_bootloader::sim::{Cut, Fault, OpKind};
use sigil_bootloader::{Outcome, Phase};
use sigil_manifests::{UnverifiedBundle, MAX_ROOT_LEN, MIN_VERIFY_BUFFER_LEN, VERIFY_BUFFER_LEN};
use sigil_test_support::{floor_of, payload, spec_under_root};

type Dev = Rig<4, 256>;

/// The release of generation `g`: security counter `g`, signed under root `g`, carrying the
/// chain from root 1.
fn generation(g: u32) -> Vec<u8> {
    let versions = ["0.0.0", "1.0.0", "2.0.0", "3.0.0", "4.0.0"];
    sigil_test_support::bundle(&sigil_test_support::Spec {
        counter: g,
        version: versions[g as usize],
        payload: payload(700, g as u8),
        ..spec_under_root(g)
    })
}

fn root_version(dev: &mut Dev) -> u32 {
    dev.state().root_floor.map_or(1, |f| f.version)
}

/// Install, trial boot, confirm request, confirm boot: the whole rotation to `g`.
fn rotate(dev: &mut Dev, g: u32) -> Result<(), sigil_bootloader::Error> {
    let image = dev.boot()?;
    assert!(image.is_trial(), "generation {g} must run on trial first");
    dev.confirm()?;
    let image = dev.boot()?;
    assert!(!image.is_trial());
    Ok(())
}

/// After a cut during the rotation from `g - 1` to `g`: boots succeed on one of the two
/// generations, the root floor stays between them and never falls, and confirming every trial
/// ends on generation `g` with root `g` adopted (or, if the trial budget ran out, back on `g - 1`).
fn recover(dev: &mut Dev, g: u32, bundles: &[Vec<u8>]) {
    let mut floor = root_version(dev);
    assert!(
        floor == g - 1 || floor == g,
        "root floor {floor} after a cut in rotation to {g}"
    );
    for _ in 0..=dev.attempts + 1 {
        let image = dev
            .boot()
            .unwrap_or_else(|e| panic!("rotation to root {g}: boot after power restored: {e}"));
        let counter = image.security_counter();
        assert!(
            counter == g - 1 || counter == g,
            "booted generation {counter}"
        );
        assert!(dev.active_holds(&bundles[counter as usize]));
        let now = root_version(dev);
        assert!(now >= floor, "root floor fell from {floor} to {now}");
        floor = now;
        assert_eq!(dev.flash.violations(), 0);
        if image.is_trial() {
            dev.confirm().unwrap();
        } else if dev.state().phase == Phase::Idle {
            break;
        }
    }
    let state = dev.state();
    assert_eq!(state.phase, Phase::Idle);
    if dev.active_holds(&bundles[g as usize]) {
        assert_eq!(state.root_floor, Some(floor_of(g)));
        assert_eq!(state.min_security_counter, g);
    } else {
        assert!(dev.active_holds(&bundles[g as usize - 1]));
        assert_eq!(state.outcome, Outcome::Reverted);
        assert_eq!(
            root_version(dev),
            g - 1,
            "a reverted rotation adopted the new root"
        );
    }
}

fn cuts(kind: OpKind) -> Vec<Cut> {
    match kind {
        OpKind::Write => vec![
            Cut::Clean,
            Cut::Torn { landed: 1 },
            Cut::Torn { landed: 77 },
        ],
        OpKind::Erase => vec![Cut::Clean, Cut::PartialErase { erased: 128 }],
    }
}

/// How the device reads its flash for verification.
#[derive(Clone, Copy, Debug)]
enum Reads {
    /// Memory-mapped: bundles verified in place (mps2-an385, microbit).
    Mapped,
    /// By copy, through an envelope buffer of this many bytes (nRF52840-DK:
    /// `MIN_VERIFY_BUFFER_LEN`, where the chain is walked one root update at a time).
    Buffered(usize),
}

fn device(reads: Reads) -> Dev {
    let mut dev = Dev::new(16, 0xFF);
    match reads {
        Reads::Mapped => dev.mapped = true,
        Reads::Buffered(len) => dev.buffer = len,
    }
    dev
}

#[test]
fn three_root_generations_with_a_power_cut_at_every_write_of_each_rotation() {
    three_root_generations_with_power_cuts(Reads::Buffered(VERIFY_BUFFER_LEN));
}

#[test]
fn three_root_generations_with_power_cuts_in_an_envelope_buffer_smaller_than_the_chain() {
    // Room for one root document and one root update or the envelope, not for the chain
    // 1 -> 2 -> 3 and the envelope together: the chain can only be walked one update at a time,
    // as in a port's `MIN_VERIFY_BUFFER_LEN` buffer (the nRF52840-DK's) with a longer chain.
    let g3 = generation(3);
    let header = *UnverifiedBundle::parse(&g3).unwrap().header();
    let update = sigil_test_support::root_update(3).len();
    let len = MAX_ROOT_LEN + (header.envelope_len as usize).max(update + 5);
    assert!(
        len < (header.chain_len + header.envelope_len) as usize && len < MIN_VERIFY_BUFFER_LEN,
        "buffer {len}, chain {} + envelope {}",
        header.chain_len,
        header.envelope_len
    );
    three_root_generations_with_power_cuts(Reads::Buffered(len));
}

#[test]
fn three_root_generations_with_power_cuts_on_mapped_flash() {
    three_root_generations_with_power_cuts(Reads::Mapped);
}

fn three_root_generations_with_power_cuts(reads: Reads) {
    let bundles: Vec<Vec<u8>> = (0..=3)
        .map(|g| if g == 0 { vec![] } else { generation(g) })
        .collect();
    let mut dev = device(reads);
    dev.provision(&bundles[1]);
    assert!(!dev.boot().unwrap().is_trial());
    assert_eq!(
        dev.state().root_floor,
        None,
        "root 1 is the provisioned root"
    );
    let mut trials = 0;
    for g in 2..=3u32 {
        dev.stage(&bundles[g as usize]).unwrap();
        let mut reference = dev.clone();
        reference.flash.record_ops();
        rotate(&mut reference, g).unwrap();
        let ops = reference.flash.recorded_ops().to_vec();
        assert!(ops.len() > 10, "{} ops", ops.len());
        for (op, &kind) in ops.iter().enumerate() {
            for cut in cuts(kind) {
                let mut cut_dev = dev.clone();
                cut_dev.flash.arm(Fault {
                    at_op: op as u64,
                    cut,
                });
                assert!(
                    rotate(&mut cut_dev, g).is_err(),
                    "rotation survived a cut at op {op}"
                );
                cut_dev.flash.power_on();
                recover(&mut cut_dev, g, &bundles);
                trials += 1;
            }
        }
        // Without a cut: root g adopted exactly at the confirm.
        assert_eq!(reference.state().root_floor, Some(floor_of(g)));
        dev = reference;
    }
    assert!(trials > 100, "{trials} trials");

    // Root 3 adopted: releases under roots 1 and 2 are refused, even with higher counters.
    for old in [1, 2] {
        let stale = sigil_test_support::bundle(&sigil_test_support::Spec {
            counter: 9,
            version: "9.0.0",
            payload: payload(700, 9),
            ..spec_under_root(old)
        });
        let mut d = dev.clone();
        d.stage(&stale).unwrap();
        let image = d.boot().unwrap();
        assert_eq!(image.security_counter(), 3);
        assert_eq!(
            d.state().outcome,
            Outcome::StagedInvalid,
            "root {old} bundle"
        );
        assert!(d.active_holds(&bundles[3]));
    }
}

#[test]
fn a_rotation_skipping_a_generation_is_one_update_and_mapped_flash_agrees() {
    // Root 1 straight to a release under root 3 (the chain carries 2 and 3), on a port that
    // verifies in place.
    let mut dev = Dev::new(16, 0xFF);
    dev.mapped = true;
    dev.provision(&generation(1));
    dev.boot().unwrap();
    let g3 = generation(3);
    dev.stage(&g3).unwrap();
    rotate(&mut dev, 3).unwrap();
    assert_eq!(dev.state().root_floor, Some(floor_of(3)));
    // A revert before the confirm keeps root 1: the old image still boots.
    let mut fresh = Dev::new(16, 0xFF);
    fresh.provision(&generation(1));
    fresh.boot().unwrap();
    fresh.stage(&g3).unwrap();
    assert!(fresh.boot().unwrap().is_trial());
    while fresh.boot().unwrap().is_trial() {}
    let state = fresh.state();
    assert_eq!((state.outcome, state.root_floor), (Outcome::Reverted, None));
    assert!(fresh.active_holds(&generation(1)));
}
