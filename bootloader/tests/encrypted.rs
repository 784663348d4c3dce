//! Encrypted releases (FORMAT.md §9): decrypt while installing, power-fail safe.
//!
//! For every geometry of the power-fail suite, an encrypted install and its revert are cut at
//! every write and every erase (a clean cut and a torn write / partial erase), and after every
//! cut and every later boot:
//!
//! - the staging slot holds no 32-byte block of either image's plaintext payload;
//! - a completed or resumed install leaves the active slot holding header, envelope and
//!   plaintext payload, and it verifies (the bootloader boots it, on every later boot too);
//! - the revert puts the previous image back byte for byte.
//!
//! A wrong device key, a record for another device, a missing record and a device without a key
//! are refused before either slot is written; raw releases install and revert as before.
#![cfg(feature = "encryption")]
// Test code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use sigil_bootloader::sim::{Cut, Fault, OpKind};
use sigil_bootloader::{BootControl, DeviceSecret, Outcome, Phase};
use sigil_test_support::encrypted;

/// This device's key seed, and another device's.
const DEVICE: u8 = 7;
const OTHER: u8 = 8;

fn secret(seed: u8) -> &'static DeviceSecret {
    let key = encrypted::device(seed);
    Box::leak(Box::new(DeviceSecret::new([seed; 32], key.public_key())))
}

/// One release: its plaintext, the bundle as staged and the bundle as installed.
#[derive(Clone)]
struct Release {
    plain: Vec<u8>,
    staged: Vec<u8>,
    installed: Vec<u8>,
    record: Vec<u8>,
}

fn spec(counter: u32, len: usize) -> sigil_test_support::Spec {
    sigil_test_support::Spec {
        product: product(),
        alignment: 64,
        payload: sigil_test_support::noise(len, counter as u8),
        ..sigil_test_support::Spec::release(["0.0.0", "1.0.0", "2.0.0"][counter as usize], counter)
    }
}

fn encrypted_release(counter: u32, len: usize, device: u8) -> Release {
    let spec = spec(counter, len);
    let key = encrypted::content_key(counter as u8);
    let staged = encrypted::bundle(&spec, &key);
    Release {
        installed: encrypted::installed(&staged, &spec.payload),
        record: encrypted::record(&staged, &key, device, 0x20 + counter as u8),
        plain: spec.payload,
        staged,
    }
}

/// As [`encrypted_release`], with its own payload `salt` (two releases of one counter).
fn encrypted_release_salted(counter: u32, len: usize, salt: u8) -> Release {
    let spec = sigil_test_support::Spec {
        payload: sigil_test_support::noise(len, salt),
        ..spec(counter, len)
    };
    let key = encrypted::content_key(salt);
    let staged = encrypted::bundle(&spec, &key);
    Release {
        installed: encrypted::installed(&staged, &spec.payload),
        record: encrypted::record(&staged, &key, DEVICE, salt),
        plain: spec.payload,
        staged,
    }
}

fn raw_release(counter: u32, len: usize) -> Release {
    let spec = spec(counter, len);
    let staged = sigil_test_support::bundle(&spec);
    Release {
        installed: staged.clone(),
        record: Vec::new(),
        plain: spec.payload,
        staged,
    }
}

/// Writes `r` into the staging slot with its key record beside it, as the agent does.
fn write_staged<const W: usize, const E: usize>(dev: &mut Rig<W, E>, r: &Release) {
    let layout = dev.layout;
    let mut ctl = BootControl::new(&mut dev.flash, layout).unwrap();
    let len = r.staged.len() as u64;
    let end = layout.key_record_offset(len).unwrap() + sigil_bootloader::KEY_RECORD_UNIT;
    ctl.erase_staging(end).unwrap();
    let mut padded = r.staged.clone();
    padded.resize(r.staged.len().div_ceil(W) * W, layout.geometry().erased);
    for (i, chunk) in padded.chunks(256.max(W)).enumerate() {
        ctl.write_staging((i * 256.max(W)) as u32, chunk).unwrap();
    }
    if !r.record.is_empty() {
        ctl.write_key_record(len, &r.record).unwrap();
    }
}

fn stage<const W: usize, const E: usize>(dev: &mut Rig<W, E>, r: &Release) {
    write_staged(dev, r);
    dev.request_install(&digest_of(&r.staged)).unwrap();
}

/// The 32-byte blocks of the plaintexts a staging slot must never hold.
fn blocks(releases: &[&Release]) -> HashSet<Vec<u8>> {
    releases
        .iter()
        .flat_map(|r| r.plain.chunks_exact(32).map(<[u8]>::to_vec))
        .collect()
}

/// Panics if the staging slot holds a plaintext block (payloads are 64-byte aligned in their
/// bundles and sectors are multiples of 32 bytes, so a copy would be 32-byte aligned).
fn scan<const W: usize, const E: usize>(dev: &Rig<W, E>, secret: &HashSet<Vec<u8>>, when: &str) {
    if secret.is_empty() {
        return;
    }
    let at = dev.layout.staging_offset() as usize;
    let len = (dev.layout.slot_sectors() as usize + 1) * E;
    let staging = &dev.flash.bytes()[at..at + len];
    for (i, block) in staging.chunks_exact(32).enumerate() {
        assert!(
            !secret.contains(block),
            "{when}: plaintext block in the staging slot at {}",
            i * 32
        );
    }
}

fn cuts(kind: OpKind, erase_size: usize) -> [Cut; 2] {
    match kind {
        OpKind::Write => [Cut::Clean, Cut::Torn { landed: 77 }],
        OpKind::Erase => [
            Cut::Clean,
            Cut::PartialErase {
                erased: erase_size / 2,
            },
        ],
    }
}

/// Boots until the device is Idle, confirming the trial image if `confirm`; scans the staging
/// slot after every boot and checks the booted image each time.
fn settle<const W: usize, const E: usize>(
    dev: &mut Rig<W, E>,
    old: &Release,
    new: &Release,
    confirm: bool,
    secret: &HashSet<Vec<u8>>,
) {
    for _ in 0..8 {
        if confirm && dev.state().phase == Phase::Trial {
            dev.confirm().unwrap();
        }
        let image = dev.boot().unwrap_or_else(|e| panic!("boot failed: {e}"));
        scan(dev, secret, "after a boot");
        assert_eq!(dev.flash.violations(), 0, "programmed over unerased bytes");
        let expect = if image.security_counter() == 2 {
            new
        } else {
            old
        };
        assert!(
            dev.active_holds(&expect.installed),
            "active slot is not the installed image of counter {}",
            image.security_counter()
        );
        if dev.state().phase == Phase::Idle {
            let state = dev.state();
            if confirm {
                assert_eq!(state.outcome, Outcome::Confirmed);
                assert!(dev.active_holds(&new.installed));
            } else {
                assert!(dev.active_holds(&old.installed), "revert is not exact");
                assert_eq!(state.rejected(), &[digest_of(&new.staged)]);
            }
            return;
        }
    }
    panic!("the update did not settle");
}

/// Cuts `start`'s next boot at every write and erase, then settles both ways (`revert`: the
/// boot reverts, so only the unconfirmed way).
fn sweep<const W: usize, const E: usize>(
    start: &Rig<W, E>,
    old: &Release,
    new: &Release,
    secret: &HashSet<Vec<u8>>,
    revert: bool,
) -> usize {
    let mut reference = start.clone();
    reference.flash.record_ops();
    reference.boot().unwrap();
    let ops = reference.flash.recorded_ops().to_vec();
    assert!(!ops.is_empty());
    let mut trials = 0;
    for (op, &kind) in ops.iter().enumerate() {
        for cut in cuts(kind, E) {
            let mut dev = start.clone();
            dev.flash.arm(Fault {
                at_op: op as u64,
                cut,
            });
            assert!(dev.boot().is_err(), "boot survived a cut at op {op}");
            dev.flash.power_on();
            scan(&dev, secret, "after a cut");
            let ways: &[bool] = if revert { &[false] } else { &[true, false] };
            for &confirm in ways {
                let mut d = dev.clone();
                settle(&mut d, old, new, confirm, secret);
            }
            trials += 1;
        }
    }
    trials
}

fn geometry<const W: usize, const E: usize>(slot: u32, erased: u8, lens: (usize, usize)) -> usize {
    geometry_with::<W, E>(slot, erased, lens, false)
}

/// As [`geometry`]; `mapped`: the bootloader reads the flash in place with no envelope buffer,
/// as the board ports do.
fn geometry_with<const W: usize, const E: usize>(
    slot: u32,
    erased: u8,
    lens: (usize, usize),
    mapped: bool,
) -> usize {
    let old = encrypted_release(1, lens.0, DEVICE);
    let new = encrypted_release(2, lens.1, DEVICE);
    let secret = blocks(&[&old, &new]);
    let mut dev: Rig<W, E> = Rig::new(slot, erased);
    dev.mapped = mapped;
    dev.device = Some(secret_key());
    dev.provision(&old.installed);
    dev.boot().unwrap();
    stage(&mut dev, &new);
    scan(&dev, &secret, "staged");
    // The install boot, cut everywhere.
    let mut trials = sweep(&dev, &old, &new, &secret, false);
    // Uninterrupted: installed, decrypted, booted on trial; every later boot verifies it.
    let mut trial = dev.clone();
    let image = trial.boot().unwrap();
    assert!(image.is_trial());
    assert!(trial.active_holds(&new.installed));
    scan(&trial, &secret, "installed");
    // The revert boot, cut everywhere.
    let mut exhausted = trial.clone();
    while exhausted.state().attempts_left > 0 {
        exhausted.boot().unwrap();
        assert!(exhausted.active_holds(&new.installed));
    }
    trials += sweep(&exhausted, &old, &new, &secret, true);
    trials
}

fn secret_key() -> &'static DeviceSecret {
    secret(DEVICE)
}

#[test]
fn encrypted_install_and_revert_cut_at_every_write_and_erase_six_geometries() {
    let mut trials = 0;
    trials += geometry::<1, 256>(10, 0xFF, (700, 1200));
    trials += geometry::<8, 512>(6, 0x00, (900, 1900));
    trials += geometry::<16, 1024>(4, 0xFF, (1900, 900));
    trials += geometry::<4, 4096>(4, 0xFF, (6000, 9000));
    trials += geometry::<32, 256>(16, 0xFF, (3000, 600));
    trials += geometry::<64, 2048>(6, 0x00, (2500, 7000));
    println!("encrypted power-fail suite: {trials} trials");
}

/// The board ports' way: flash read in place and no envelope buffer. Every resumed boot
/// re-reads the new bundle's manifest where the swap has moved its first sector.
#[test]
fn encrypted_install_and_revert_on_mapped_flash_cut_at_every_write_and_erase() {
    let mut trials = 0;
    trials += geometry_with::<4, 4096>(4, 0xFF, (6000, 9000), true);
    trials += geometry_with::<64, 2048>(6, 0x00, (2500, 7000), true);
    assert!(trials > 0);
    println!("encrypted power-fail suite, mapped flash: {trials} trials");
}

#[test]
fn the_device_key_store_record_round_trips_and_a_damaged_one_is_refused() {
    use sigil_bootloader::{KeyStoreError, DEVICE_KEY_RECORD_LEN};
    let key = secret_key();
    let record = key.encode();
    assert_eq!(&record[..8], b"SGL-DKEY");
    let back = DeviceSecret::decode(&record, 0xFF).unwrap().unwrap();
    assert_eq!(back.public_key(), key.public_key());
    assert_eq!(back.encode(), record, "the private half round-trips too");
    // Not provisioned: the store reads as erased, whatever the erased value.
    for erased in [0xFF, 0x00] {
        let blank = [erased; DEVICE_KEY_RECORD_LEN];
        assert!(DeviceSecret::decode(&blank, erased).unwrap().is_none());
    }
    // Every flipped bit is caught: by the magic or by the checksum.
    for bit in 0..DEVICE_KEY_RECORD_LEN * 8 {
        let mut damaged = record;
        damaged[bit / 8] ^= 1 << (bit % 8);
        let err = DeviceSecret::decode(&damaged, 0xFF).unwrap_err();
        let expected = if bit < 64 {
            KeyStoreError::NotAKeyRecord
        } else {
            KeyStoreError::BadChecksum
        };
        assert_eq!(err, expected, "bit {bit}");
    }
    // A torn provisioning write: the tail still erased.
    let mut torn = [0xFF; DEVICE_KEY_RECORD_LEN];
    torn[..40].copy_from_slice(&record[..40]);
    assert_eq!(
        DeviceSecret::decode(&torn, 0xFF).unwrap_err(),
        KeyStoreError::BadChecksum
    );
}

/// Installs `r` and confirms it; returns the active slot before the install and the staging
/// slot right after its swap (what an attacker reading the external flash would take).
fn install_and_confirm(dev: &mut Rig<4, 4096>, r: &Release) -> (Vec<u8>, Vec<u8>) {
    let before = dev.active().to_vec();
    stage(dev, r);
    assert!(dev.boot().unwrap().is_trial());
    let at = dev.layout.staging_offset() as usize;
    let staging = dev.flash.bytes()[at..at + before.len()].to_vec();
    dev.confirm().unwrap();
    assert!(!dev.boot().unwrap().is_trial());
    assert!(dev.active_holds(&r.installed));
    (before, staging)
}

/// One device installs release B twice, over image A and later over image C. The images that
/// left the active slot are in the staging slot, encrypted under the device's swap keystream;
/// if both installs used one keystream, the XOR of the two staging ciphertexts would be the XOR
/// of A and C. It must be unrelated to it.
#[test]
fn two_installs_of_one_release_over_different_images_use_unrelated_keystreams() {
    let a = encrypted_release(1, 6000, DEVICE);
    let b = encrypted_release(2, 9000, DEVICE);
    let c = encrypted_release_salted(2, 7000, 0x5C);
    let mut dev: Rig<4, 4096> = Rig::new(4, 0xFF);
    dev.device = Some(secret_key());
    dev.provision(&a.installed);
    dev.boot().unwrap();
    let (plain_a, over_a) = install_and_confirm(&mut dev, &b);
    install_and_confirm(&mut dev, &c);
    let (plain_c, over_c) = install_and_confirm(&mut dev, &b);
    assert!(plain_a.starts_with(&a.installed) && plain_c.starts_with(&c.installed));

    // Bytes where both previous images were written (erased chunks are copied as erased).
    let erased = |chunk: &[u8]| chunk.iter().all(|&x| x == 0xFF);
    let (mut compared, mut leaked) = (0usize, 0usize);
    for (i, (pa, pc)) in plain_a.chunks(256).zip(plain_c.chunks(256)).enumerate() {
        if erased(pa) || erased(pc) {
            continue;
        }
        let (sa, sc) = (&over_a[i * 256..][..256], &over_c[i * 256..][..256]);
        for j in 0..256 {
            compared += 1;
            if sa[j] ^ sc[j] == pa[j] ^ pc[j] {
                leaked += 1;
            }
        }
    }
    assert!(compared >= 6000, "compared only {compared} bytes");
    // Unrelated keystreams agree by chance on about 1 byte in 256; one keystream on all.
    assert!(
        leaked * 64 < compared,
        "{leaked} of {compared} bytes of A XOR C readable from the staging ciphertexts"
    );
}

/// A device with the old image installed and `new` staged (with `record` beside it).
fn staged_device(new: &Release, device: Option<&'static DeviceSecret>) -> Rig<4, 4096> {
    // A device without a key runs a raw image (it could not have installed an encrypted one).
    let old = match device {
        Some(_) => encrypted_release(1, 6000, DEVICE),
        None => raw_release(1, 6000),
    };
    let mut dev: Rig<4, 4096> = Rig::new(4, 0xFF);
    dev.device = device.map(|_| secret_key());
    dev.provision(&old.installed);
    dev.boot().unwrap();
    dev.device = device;
    stage(&mut dev, new);
    dev
}

fn slots(dev: &Rig<4, 4096>) -> Vec<u8> {
    let from = dev.layout.active_offset() as usize;
    let to = dev.layout.staging_offset() as usize + 5 * 4096;
    dev.flash.bytes()[from..to].to_vec()
}

fn expect_refused(mut dev: Rig<4, 4096>, outcome: Outcome) {
    let before = slots(&dev);
    let image = dev.boot().unwrap();
    assert!(!image.is_trial());
    assert_eq!(image.security_counter(), 1);
    let state = dev.state();
    assert_eq!((state.phase, state.outcome), (Phase::Idle, outcome));
    assert_eq!(slots(&dev), before, "a slot was written");
}

#[test]
fn wrong_device_key_is_refused_before_any_slot_write() {
    let new = encrypted_release(2, 9000, DEVICE);
    // The record is for this device, but the board gives another key.
    expect_refused(
        staged_device(&new, Some(secret(OTHER))),
        Outcome::KeyRefused,
    );
    // A key pair whose public half does not belong to the private one.
    let mismatched = Box::leak(Box::new(DeviceSecret::new(
        [OTHER; 32],
        encrypted::device(DEVICE).public_key(),
    )));
    expect_refused(staged_device(&new, Some(mismatched)), Outcome::KeyRefused);
}

#[test]
fn record_for_another_device_or_release_or_none_is_refused() {
    let mut new = encrypted_release(2, 9000, OTHER);
    expect_refused(staged_device(&new, Some(secret_key())), Outcome::KeyRefused);
    // The record of another release (same device).
    new.record = encrypted_release(1, 6000, DEVICE).record;
    expect_refused(staged_device(&new, Some(secret_key())), Outcome::KeyRefused);
    // No record beside the bundle.
    new.record = Vec::new();
    expect_refused(staged_device(&new, Some(secret_key())), Outcome::KeyRefused);
}

#[test]
fn a_device_without_a_key_refuses_encrypted_releases() {
    let new = encrypted_release(2, 9000, DEVICE);
    expect_refused(staged_device(&new, None), Outcome::StagedInvalid);
}

#[test]
fn raw_releases_install_and_revert_byte_for_byte_with_and_without_a_key() {
    for key in [None, Some(secret_key())] {
        let old = raw_release(1, 6000);
        let new = raw_release(2, 9000);
        let mut dev: Rig<4, 4096> = Rig::new(4, 0xFF);
        dev.device = key;
        dev.provision(&old.staged);
        dev.boot().unwrap();
        stage(&mut dev, &new);
        let mut confirmed = dev.clone();
        settle(&mut confirmed, &old, &new, true, &HashSet::new());
        settle(&mut dev, &old, &new, false, &HashSet::new());
    }
}

#[test]
fn raw_to_encrypted_and_back_keeps_the_raw_image_exact() {
    let old = raw_release(1, 6000);
    let new = encrypted_release(2, 9000, DEVICE);
    let secret = blocks(&[&new]);
    let mut dev: Rig<4, 4096> = Rig::new(4, 0xFF);
    dev.device = Some(secret_key());
    dev.provision(&old.staged);
    dev.boot().unwrap();
    stage(&mut dev, &new);
    let mut confirmed = dev.clone();
    settle(&mut confirmed, &old, &new, true, &secret);
    settle(&mut dev, &old, &new, false, &secret);
}
