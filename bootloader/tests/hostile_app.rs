//! A compromised application: it can write everything the device lets it write (the request
//! sector, the staging slot, and any flash outside the locked protected state) and tries to
//! roll the device back, forge a confirm or a rejection, and exhaust the protected state. The
//! device keeps its floors and boots its current verified image, or a verified newer one.

// Test code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use embedded_storage::nor_flash::NorFlash;
use sigil_bootloader::request::REQUEST_LEN;
use sigil_bootloader::{Error, Outcome, Phase, Request};

type Dev = Rig<4, 256>;

const SLOT_SECTORS: u32 = 12;

fn spec(counter: u32, seed: u8) -> Spec {
    Spec {
        counter,
        version: ["0.0.0", "1.0.0", "2.0.0", "3.0.0", "4.0.0"][counter as usize],
        payload_len: 600 + 300 * counter as usize,
        payload_seed: seed,
        ..Spec::default()
    }
}

/// A device that installed and confirmed v2 over v1: floor 2, v1 still validly signed.
fn device_on_v2() -> Dev {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&spec(1, 1)));
    dev.boot().unwrap();
    dev.stage(&bundle(&spec(2, 2))).unwrap();
    assert!(dev.boot().unwrap().is_trial());
    dev.confirm().unwrap();
    let image = dev.boot().unwrap();
    assert_eq!((image.security_counter(), image.is_trial()), (2, false));
    assert_eq!(dev.state().min_security_counter, 2);
    dev
}

fn protected_bytes(dev: &Dev) -> Vec<u8> {
    let r = dev.layout.protected_region();
    dev.flash.bytes()[r.start as usize..r.end as usize].to_vec()
}

/// The application writes `bytes` at `offset` through the flash driver (what its code can do).
fn app_write(dev: &mut Dev, offset: u32, bytes: &[u8]) -> bool {
    dev.flash.write(offset, bytes).is_ok()
}

#[test]
fn rollback_through_an_install_request_is_refused() {
    let mut dev = device_on_v2();
    let old = bundle(&spec(1, 1));
    dev.stage(&old).unwrap();
    let image = dev.boot().unwrap();
    assert_eq!((image.security_counter(), image.is_trial()), (2, false));
    let state = dev.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::StagedInvalid, 2)
    );
    // Replayed at every boot, it changes nothing.
    for _ in 0..5 {
        dev.request_install(&digest_of(&old)).unwrap();
        assert_eq!(dev.boot().unwrap().security_counter(), 2);
        assert_eq!(dev.state().min_security_counter, 2);
    }
}

#[test]
fn the_protected_state_is_locked_before_the_application_runs() {
    let mut dev = device_on_v2();
    let region = dev.layout.protected_region();
    let before = protected_bytes(&dev);
    // A forged record: floor 0, on trial of the old image. Written over erased slots and over
    // the current records, and an erase of the whole region: every one refused.
    let forged = vec![0u8; 256];
    for at in (region.start..region.end).step_by(256) {
        assert!(
            !app_write(&mut dev, at, &forged),
            "write at {at:#x} accepted"
        );
    }
    assert!(dev.flash.erase(region.start, region.end).is_err());
    assert!(dev.flash.lock_refusals() > 0);
    assert_eq!(protected_bytes(&dev), before, "the protected state changed");
    // The request sector and the staging slot stay writable for the application.
    let requests = dev.layout.request_region().start;
    assert!(app_write(&mut dev, requests, &[0u8; 4]));
    let image = dev.boot().unwrap();
    assert_eq!((image.security_counter(), image.is_trial()), (2, false));
}

#[test]
fn a_failed_lock_means_no_jump() {
    let mut dev = device_on_v2();
    dev.lock.fail = true;
    assert_eq!(dev.boot(), Err(Error::LockFailed));
    dev.lock.fail = false;
    assert_eq!(dev.boot().unwrap().security_counter(), 2);
}

/// Without any lock (a board whose hardware has none), the application-side API still never
/// writes the protected state: every call it offers, many times over.
#[test]
fn boot_control_never_writes_the_protected_state() {
    let mut dev = device_on_v2();
    dev.flash.reset(); // no lock
    let before = protected_bytes(&dev);
    let v3 = bundle(&spec(3, 3));
    for i in 0..300u32 {
        let mut ctl = dev.control();
        let digest = [i as u8; 32];
        let _ = ctl.request_install(&digest);
        let _ = ctl.cancel();
        let _ = ctl.confirm(&digest);
        let _ = ctl.reload();
    }
    dev.write_staged(&v3).unwrap();
    assert_eq!(protected_bytes(&dev), before);
}

#[test]
fn forged_confirms_count_only_for_the_image_on_trial() {
    let mut dev = device_on_v2();
    let v3 = bundle(&spec(3, 3));
    dev.stage(&v3).unwrap();
    assert!(dev.boot().unwrap().is_trial());
    let trial = dev.state();
    // The application names other images: the old one, a random one.
    let old = digest_of(&bundle(&spec(1, 1)));
    for forged in [old, [0x42; 32]] {
        assert_eq!(dev.control().confirm(&forged), Err(Error::WrongImage));
    }
    // Bypassing the API: the raw request record, through the request sector.
    write_raw_request(&mut dev, Request::Confirm(old));
    let image = dev.boot().unwrap();
    assert!(
        image.is_trial(),
        "a confirm for another image confirmed the trial"
    );
    let state = dev.state();
    assert_eq!(state.attempts_left, trial.attempts_left - 1);
    assert_eq!(state.min_security_counter, 2);
    // Not confirmed: it reverts, and the floor never moved.
    while dev.boot().unwrap().is_trial() {}
    let state = dev.state();
    assert_eq!(
        (state.outcome, state.min_security_counter),
        (Outcome::Reverted, 2)
    );
    assert!(dev.active_holds(&bundle(&spec(2, 2))));
}

/// Writes a request record the way a hostile application would: straight into the request
/// sector, bypassing `BootControl`'s phase checks.
fn write_raw_request(dev: &mut Dev, request: Request) {
    let r = dev.layout.request_region();
    let mut record = vec![0xFF; dev.layout.request_stride() as usize];
    record[..REQUEST_LEN].copy_from_slice(&request.encode());
    dev.flash.erase(r.start, r.end).unwrap();
    dev.flash.write(r.start, &record).unwrap();
}

#[test]
fn requests_cannot_mark_an_image_rejected_or_block_the_next_fix() {
    let mut dev = device_on_v2();
    let fix = bundle(&spec(3, 3));
    let fix_digest = digest_of(&fix);
    dev.write_staged(&fix).unwrap();
    // Install and cancel the fix, name it in a confirm, stage garbage under its name: none of
    // this may put it on the rejected list.
    for request in [
        Request::Install(fix_digest),
        Request::Cancel,
        Request::Confirm(fix_digest),
    ] {
        write_raw_request(&mut dev, request);
        dev.boot().unwrap();
        assert!(!dev.state().is_rejected(&fix_digest));
    }
    let garbage = vec![0x5Au8; fix.len()];
    dev.write_staged(&garbage).unwrap();
    dev.request_install(&fix_digest).unwrap();
    dev.boot().unwrap();
    assert_eq!(dev.state().outcome, Outcome::StagedInvalid);
    assert!(!dev.state().is_rejected(&fix_digest));
    // The real fix, requested properly, installs.
    dev.stage(&fix).unwrap();
    let image = dev.boot().unwrap();
    assert!(image.is_trial());
    assert_eq!(image.digest(), fix_digest);
}

#[test]
fn requests_cannot_exhaust_the_protected_state() {
    let mut dev = device_on_v2();
    let start = dev.state().sequence;
    // Ten thousand requests through the API (the request sector fills and is erased again),
    // then raw records with every byte pattern a forged sequence number could take.
    for i in 0..10_000u32 {
        dev.request_install(&[(i % 251) as u8; 32]).unwrap();
    }
    let r = dev.layout.request_region();
    dev.flash.erase(r.start, r.end).unwrap();
    dev.flash.write(r.start, &[0u8; 256]).unwrap();
    for _ in 0..20 {
        let image = dev.boot().unwrap();
        assert_eq!(image.security_counter(), 2);
    }
    let used = dev.state().sequence - start;
    assert!(used <= 20, "20 boots used {used} sequence numbers");
}

/// Random hostile request sectors and staging contents, over many boots: the device always
/// boots a verified image at or above its floor, the floor never falls, and only images that
/// ran on trial ever become rejected.
#[test]
fn random_hostile_requests_never_lower_the_floor() {
    let images: Vec<Vec<u8>> = (1..=4).map(|c| bundle(&spec(c, c as u8))).collect();
    let digests: Vec<_> = images.iter().map(|b| digest_of(b)).collect();
    let mut dev = device_on_v2();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut floor = 2;
    let mut ran_on_trial = vec![];
    for round in 0..400 {
        let idle = dev.state().phase == Phase::Idle;
        if idle && next() % 2 == 0 {
            let which = (next() % 5) as usize;
            let staged = if which < 4 {
                images[which].clone()
            } else {
                vec![(next() & 0xFF) as u8; 900]
            };
            dev.write_staged(&staged).unwrap();
        }
        let digest = match next() % 4 {
            0 => digests[(next() % 4) as usize],
            1 => [(next() & 0xFF) as u8; 32],
            _ => dev.staged_digest(),
        };
        let request = match next() % 3 {
            0 => Request::Install(digest),
            1 => Request::Confirm(digest),
            _ => Request::Cancel,
        };
        write_raw_request(&mut dev, request);
        if next() % 5 == 0 {
            // Random bytes appended after the record.
            let at = dev.layout.request_region().start + 64;
            let junk: Vec<u8> = (0..64).map(|_| (next() & 0xFF) as u8).collect();
            let _ = app_write(&mut dev, at, &junk);
        }
        let image = dev
            .boot()
            .unwrap_or_else(|e| panic!("round {round}: no boot: {e}"));
        let state = dev.state();
        assert!(
            state.min_security_counter >= floor,
            "round {round}: floor fell"
        );
        floor = state.min_security_counter;
        assert!(image.security_counter() >= floor, "round {round}");
        assert!(
            digests.contains(&image.digest()),
            "round {round}: unknown image"
        );
        if image.is_trial() {
            ran_on_trial.push(image.digest());
        }
        for r in state.rejected() {
            assert!(
                ran_on_trial.contains(r),
                "round {round}: rejected without a trial"
            );
        }
    }
}
