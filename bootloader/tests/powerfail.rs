//! The power-fail simulator suite.
//!
//! For every write and every erase of an update boot, a revert boot, a confirm, a mark-pending,
//! a boot that refuses a tampered staged bundle and a first boot, the power is cut in every way the simulator models (clean cut; torn write
//! of 1, 40, 77 and 128 bytes; erase that reset 1 byte, half the sector, or a random half of
//! it), then the device boots again with all RAM state rebuilt from flash. Seeded sequences of
//! several random cuts run whole update lifecycles. After every trial:
//!
//! - the boot succeeds with a verified image, which is exactly the old or the new bundle;
//! - its security counter is at least the stored minimum, and the stored minimum never fell;
//! - the state region holds a valid record; no byte was programmed without an erase;
//! - the update then completes when confirmed, and cleanly reverts (old image, counter not
//!   raised, new image rejected) when not.
//!
//! `cargo test` sweeps six geometries, each with 200 random multi-cut lifecycles;
//! `SIGIL_POWERFAIL_FULL=1` raises that to 3000 lifecycles per geometry.

// Test and benchmark code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::*;
use sigil_bootloader::sim::{Cut, Fault, OpKind};
use sigil_bootloader::{ImageDigest, Outcome, Phase, Request, VerifiedImage};

struct Images {
    v1: Vec<u8>,
    v2: Vec<u8>,
    v2_id: ImageDigest,
}

impl Images {
    fn new(v1_payload: usize, v2_payload: usize) -> Self {
        let v1 = Spec {
            counter: 1,
            version: "1.0.0",
            payload_len: v1_payload,
            payload_seed: 1,
            ..Spec::default()
        };
        let v2 = Spec {
            counter: 2,
            version: "2.0.0",
            payload_len: v2_payload,
            payload_seed: 2,
            ..Spec::default()
        };
        Images {
            v1: bundle(&v1),
            v2: bundle(&v2),
            v2_id: digest(&v2),
        }
    }
}

fn cuts(kind: OpKind, erase_size: usize, op: usize) -> Vec<Cut> {
    match kind {
        OpKind::Write => [1, 40, 77, 128, 200, 255]
            .into_iter()
            .map(|landed| Cut::Torn { landed })
            .chain([Cut::Clean])
            .collect(),
        OpKind::Erase => vec![
            Cut::Clean,
            Cut::PartialErase { erased: 1 },
            Cut::PartialErase {
                erased: erase_size / 2,
            },
            Cut::ScatteredErase {
                seed: op as u64 + 1,
            },
        ],
    }
}

/// One boot with the power on: it must succeed, with the invariants of every trial.
fn check_boot<const W: usize, const E: usize>(
    dev: &mut Rig<W, E>,
    img: &Images,
    floor: &mut u32,
) -> VerifiedImage {
    let image = dev
        .boot()
        .unwrap_or_else(|e| panic!("boot after power restored failed: {e}"));
    check_image(dev, image, img, floor)
}

/// The invariants of a successful boot.
fn check_image<const W: usize, const E: usize>(
    dev: &mut Rig<W, E>,
    image: VerifiedImage,
    img: &Images,
    floor: &mut u32,
) -> VerifiedImage {
    let state = dev.state();
    assert!(state.sequence > 0, "state region holds no valid record");
    assert!(
        state.min_security_counter >= *floor,
        "stored counter fell below {floor}"
    );
    *floor = state.min_security_counter;
    assert!(
        image.security_counter() >= state.min_security_counter,
        "booted below the stored minimum"
    );
    let which = match image.security_counter() {
        1 => &img.v1,
        2 => &img.v2,
        other => panic!("booted an image with counter {other}"),
    };
    assert!(
        dev.active_holds(which),
        "active slot is not exactly the booted bundle"
    );
    assert_eq!(
        dev.flash.violations(),
        0,
        "programmed a byte that was not erased"
    );
    image
}

/// Drives a recovered device to the end of the update both ways.
fn finish_both_ways<const W: usize, const E: usize>(dev: &Rig<W, E>, img: &Images, floor: u32) {
    // Confirm whenever the new image runs on trial.
    let mut a = dev.clone();
    let mut f = floor;
    for _ in 0..=a.attempts {
        if a.state().phase == Phase::Trial {
            a.confirm().unwrap();
        }
        let image = check_boot(&mut a, img, &mut f);
        if !image.is_trial() {
            break;
        }
    }
    assert_eq!(a.state().phase, Phase::Idle);
    expect_final(&mut a, img);

    // Never confirm: the update must revert.
    let mut b = dev.clone();
    let mut f = floor;
    for _ in 0..=b.attempts + 1 {
        if !check_boot(&mut b, img, &mut f).is_trial() {
            break;
        }
    }
    let state = b.state();
    assert_eq!(state.phase, Phase::Idle);
    if state.outcome != Outcome::Confirmed {
        assert!(b.active_holds(&img.v1));
        assert_eq!(
            (state.min_security_counter, state.rejected()),
            (1, &[img.v2_id][..])
        );
    }
}

/// An update that ended: confirmed on the new image, or reverted to the old one.
fn expect_final<const W: usize, const E: usize>(dev: &mut Rig<W, E>, img: &Images) {
    let state = dev.state();
    assert_eq!(state.phase, Phase::Idle);
    if dev.active_holds(&img.v2) {
        assert_eq!(
            (state.outcome, state.min_security_counter),
            (Outcome::Confirmed, 2)
        );
    } else {
        assert!(dev.active_holds(&img.v1));
        assert_eq!(
            state.min_security_counter, 1,
            "a reverted update raised the counter"
        );
        assert_eq!(state.rejected(), &[img.v2_id]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Boot,
    Confirm,
    RequestInstall,
}

/// Cuts the power at every write and erase of `action` on `start`, in every way; `after`
/// checks the recovered device. Returns the number of trials.
fn sweep<const W: usize, const E: usize>(
    start: &Rig<W, E>,
    action: Action,
    after: &dyn Fn(&mut Rig<W, E>),
) -> usize {
    let img_digest = start.staged_digest();
    let run = |dev: &mut Rig<W, E>| match action {
        Action::Boot => dev.boot().map(|_| ()),
        Action::Confirm => dev.confirm(),
        Action::RequestInstall => dev.request_install(&img_digest),
    };
    let mut reference = start.clone();
    reference.flash.record_ops();
    run(&mut reference).unwrap();
    let ops = reference.flash.recorded_ops().to_vec();
    assert!(!ops.is_empty(), "{action:?} writes nothing");
    let mut trials = 0;
    for (op, &kind) in ops.iter().enumerate() {
        for cut in cuts(kind, E, op) {
            let mut dev = start.clone();
            dev.flash.arm(Fault {
                at_op: op as u64,
                cut,
            });
            assert!(
                run(&mut dev).is_err(),
                "{action:?} survived a cut at op {op}"
            );
            assert!(!dev.flash.is_powered());
            dev.flash.power_on();
            after(&mut dev);
            trials += 1;
        }
    }
    trials
}

struct Tally {
    trials: usize,
}

fn geometry<const W: usize, const E: usize>(
    name: &str,
    slot: u32,
    erased: u8,
    img: &Images,
    seeds: u64,
    mapped: bool,
) -> usize {
    let started = Instant::now();
    // A device running the old image, confirmed, with the new one staged and pending.
    let mut fresh: Rig<W, E> = Rig::new(slot, erased);
    fresh.mapped = mapped;
    fresh.provision(&img.v1);
    let mut idle = fresh.clone();
    idle.boot().unwrap();
    let mut staged = idle.clone();
    // Staged but not yet requested, for the install-request sweep.
    staged.write_staged(&img.v2).unwrap();
    let mut pending = staged.clone();
    pending.request_install(&img.v2_id).unwrap();
    // On trial (one boot used), and on trial with no boots left (the next boot reverts).
    let mut trial = pending.clone();
    trial.boot().unwrap();
    let mut exhausted = trial.clone();
    while exhausted.state().attempts_left > 0 {
        exhausted.boot().unwrap();
    }
    let mut t = Tally { trials: 0 };

    // First boot (raises the stored minimum to the factory image's).
    t.trials += sweep(&fresh, Action::Boot, &|dev| {
        let mut floor = 0;
        assert!(!check_boot(dev, img, &mut floor).is_trial());
        assert_eq!(dev.state().min_security_counter, 1);
    });
    // The install request: either lost (nothing happens) or taken (the update runs).
    t.trials += sweep(&staged, Action::RequestInstall, &|dev| {
        let mut floor = 1;
        if check_boot(dev, img, &mut floor).is_trial() {
            finish_both_ways(dev, img, floor);
        } else {
            let state = dev.state();
            assert!(dev.active_holds(&img.v1));
            assert_eq!(
                (state.phase, state.min_security_counter, state.rejected()),
                (Phase::Idle, 1, &[][..])
            );
        }
    });
    // The update boot: verify, swap, enter the trial.
    t.trials += sweep(&pending, Action::Boot, &|dev| {
        let mut floor = 1;
        let image = check_boot(dev, img, &mut floor);
        assert!(
            image.is_trial(),
            "an interrupted update must resume, not give up"
        );
        assert_eq!(
            dev.state().min_security_counter,
            1,
            "counter raised before confirm"
        );
        finish_both_ways(dev, img, floor);
    });
    // The boot that refuses a tampered staged bundle: the active slot is never touched.
    let mut tampered = pending.clone();
    let at = tampered.layout.staged_bundle_offset() as usize + img.v2.len() - 1;
    tampered.flash.bytes_mut()[at] ^= 0x5A;
    t.trials += sweep(&tampered, Action::Boot, &|dev| {
        let mut floor = 1;
        assert!(!check_boot(dev, img, &mut floor).is_trial());
        let state = dev.state();
        assert_eq!(
            (state.phase, state.outcome, state.min_security_counter),
            (Phase::Idle, Outcome::StagedInvalid, 1)
        );
        let active = dev.layout.active_offset() as usize / E
            ..(dev.layout.active_offset() as usize / E) + slot as usize;
        assert!(active
            .clone()
            .all(|i| dev.flash.stats(i).erases == 0 && dev.flash.stats(i).writes == 0));
    });
    // The confirm: either lost (still on trial) or done.
    t.trials += sweep(&trial, Action::Confirm, &|dev| {
        let mut floor = 1;
        check_boot(dev, img, &mut floor);
        finish_both_ways(dev, img, floor);
    });
    // The revert boot.
    t.trials += sweep(&exhausted, Action::Boot, &|dev| {
        let mut floor = 1;
        let image = check_boot(dev, img, &mut floor);
        assert!(!image.is_trial());
        assert_eq!(dev.state().outcome, Outcome::Reverted);
        expect_final(dev, img);
    });
    let exhaustive = t.trials;
    // Seeded sequences of several random cuts across whole lifecycles.
    let mut reference = pending.clone();
    reference.flash.record_ops();
    reference.boot().unwrap();
    let span = reference.flash.recorded_ops().len() as u64 + 8;
    for seed in 0..seeds {
        t.trials += random_lifecycle(&pending, img, seed, span);
    }
    println!(
        "power-fail {name}: {} trials ({exhaustive} at every write/erase, {} in {seeds} random multi-cut lifecycles) in {:.1?}",
        t.trials,
        t.trials - exhaustive,
        started.elapsed()
    );
    t.trials
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// One update lifecycle with 1–4 random power cuts (in boots and confirms); returns the cuts.
fn random_lifecycle<const W: usize, const E: usize>(
    pending: &Rig<W, E>,
    img: &Images,
    seed: u64,
    span: u64,
) -> usize {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut dev = pending.clone();
    let mut cuts_left = 1 + (xorshift(&mut rng) % 4) as usize;
    let mut cuts = 0;
    let wants_confirm = xorshift(&mut rng).is_multiple_of(2);
    let mut floor = 1;
    let random_cut = |rng: &mut u64, span: u64| {
        let cut = match xorshift(rng) % 6 {
            0 => Cut::Clean,
            1 => Cut::Torn {
                landed: (xorshift(rng) % 96) as usize,
            },
            2 => Cut::Torn {
                landed: (xorshift(rng) % 300) as usize,
            },
            3 => Cut::PartialErase {
                erased: (xorshift(rng) % E as u64) as usize,
            },
            4 => Cut::ScatteredErase {
                seed: xorshift(rng),
            },
            _ => Cut::PartialErase { erased: E / 2 },
        };
        Fault {
            at_op: xorshift(rng) % span,
            cut,
        }
    };
    for _ in 0..64 {
        if cuts_left > 0 && !xorshift(&mut rng).is_multiple_of(4) {
            dev.flash.arm(random_cut(&mut rng, span));
        }
        let booted = dev.boot();
        if !dev.flash.is_powered() {
            assert!(booted.is_err(), "seed {seed}");
            dev.flash.power_on();
            cuts_left = cuts_left.saturating_sub(1);
            cuts += 1;
            continue;
        }
        dev.flash.disarm();
        let image =
            booted.unwrap_or_else(|e| panic!("seed {seed}: boot with power on failed: {e}"));
        let image = check_image(&mut dev, image, img, &mut floor);
        let state = dev.state();
        if state.phase == Phase::Idle && !image.is_trial() {
            break;
        }
        if wants_confirm && state.phase == Phase::Trial {
            if cuts_left > 0 && xorshift(&mut rng).is_multiple_of(2) {
                dev.flash.arm(random_cut(&mut rng, 3));
            }
            let confirmed = dev.confirm();
            if !dev.flash.is_powered() {
                assert!(confirmed.is_err());
                dev.flash.power_on();
                cuts_left = cuts_left.saturating_sub(1);
                cuts += 1;
            }
            dev.flash.disarm();
        }
    }
    expect_final(&mut dev, img);
    cuts.max(1)
}

fn full() -> bool {
    std::env::var_os("SIGIL_POWERFAIL_FULL").is_some_and(|v| v != "0")
}

/// Random multi-cut lifecycles per geometry: 200 by default, 3000 in the larger sweep.
fn seeds() -> u64 {
    if full() {
        3000
    } else {
        200
    }
}

#[test]
fn power_cut_at_every_write_and_erase_six_geometries() {
    let started = Instant::now();
    let n = seeds();
    let mut trials = 0;
    // Growing update, byte-writable flash, small sectors (many state-sector alternations).
    trials += geometry::<1, 256>(
        "1-byte writes, 256 B sectors, erased 0xFF",
        10,
        0xFF,
        &Images::new(700, 1200),
        n,
        false,
    );
    // Growing update, erased value 0x00, 8-byte writes.
    trials += geometry::<8, 512>(
        "8-byte writes, 512 B sectors, erased 0x00",
        6,
        0x00,
        &Images::new(900, 1900),
        n,
        false,
    );
    // Shrinking update, 16-byte writes, 1 KiB sectors.
    trials += geometry::<16, 1024>(
        "16-byte writes, 1 KiB sectors, erased 0xFF",
        4,
        0xFF,
        &Images::new(1900, 900),
        n,
        false,
    );
    // Typical internal flash: 4 KiB sectors, 16 chunk writes per sector copy.
    trials += geometry::<4, 4096>(
        "4-byte writes, 4 KiB sectors, erased 0xFF",
        4,
        0xFF,
        &Images::new(6000, 9000),
        n,
        false,
    );
    // Strongly shrinking update, 32-byte writes (3 records per state sector).
    trials += geometry::<32, 256>(
        "32-byte writes, 256 B sectors, erased 0xFF",
        16,
        0xFF,
        &Images::new(3000, 600),
        n,
        false,
    );
    // 64-byte writes (records padded to 128 bytes), erased 0x00.
    trials += geometry::<64, 2048>(
        "64-byte writes, 2 KiB sectors, erased 0x00",
        6,
        0x00,
        &Images::new(2500, 7000),
        n,
        false,
    );
    println!(
        "power-fail suite: {trials} trials in {:.1?}",
        started.elapsed()
    );
}

/// The same sweeps on flash the bootloader reads in place (memory-mapped, no envelope buffer):
/// the two typical internal-flash geometries.
#[test]
fn power_cut_at_every_write_and_erase_mapped_flash() {
    let started = Instant::now();
    let n = seeds();
    let mut trials = geometry::<4, 4096>(
        "mapped: 4-byte writes, 4 KiB sectors, erased 0xFF",
        4,
        0xFF,
        &Images::new(6000, 9000),
        n,
        true,
    );
    trials += geometry::<8, 512>(
        "mapped: 8-byte writes, 512 B sectors, erased 0x00",
        6,
        0x00,
        &Images::new(900, 1900),
        n,
        true,
    );
    println!(
        "power-fail suite, mapped flash: {trials} trials in {:.1?}",
        started.elapsed()
    );
}

/// `torn-request-write`: every prefix of an install request leaves no request or the whole
/// one; the boot then installs or does nothing, and the protected state is never touched.
#[test]
fn torn_request_write() {
    let img = Images::new(700, 1200);
    let mut idle: Rig<1, 256> = Rig::new(10, 0xFF);
    idle.provision(&img.v1);
    idle.boot().unwrap();
    idle.write_staged(&img.v2).unwrap();
    let before = idle.state();
    let stride = idle.layout.request_stride() as usize;
    let (mut seen_none, mut seen_request) = (false, false);
    for landed in 0..=stride {
        let mut dev = idle.clone();
        dev.flash.arm(Fault {
            at_op: 0,
            cut: Cut::Torn { landed },
        });
        let _ = dev.request_install(&img.v2_id);
        dev.flash.power_on();
        dev.flash.disarm();
        assert_eq!(
            dev.state(),
            before,
            "a request write changed the protected state"
        );
        match dev.control().request() {
            None => seen_none = true,
            Some(Request::Install(d)) if d == img.v2_id => seen_request = true,
            other => panic!("torn write of {landed} bytes left request {other:?}"),
        }
        let mut floor = 1;
        check_boot(&mut dev, &img, &mut floor);
    }
    assert!(seen_none && seen_request);
}

/// `torn-protected-write`: every prefix of either copy of a protected record (here the boot
/// that starts an install) leaves the old state or the new one, never none, and the boot that
/// follows completes the update.
#[test]
fn torn_protected_write() {
    let img = Images::new(700, 1200);
    let mut pending: Rig<1, 256> = Rig::new(10, 0xFF);
    pending.provision(&img.v1);
    pending.boot().unwrap();
    pending.stage(&img.v2).unwrap();
    let stride = pending.layout.record_stride() as usize;
    // Ops 0 and 1 of the update boot: the two copies of the Swapping record.
    for copy in 0..2u64 {
        for landed in 0..=stride {
            let mut dev = pending.clone();
            dev.flash.arm(Fault {
                at_op: copy,
                cut: Cut::Torn { landed },
            });
            assert!(dev.boot().is_err());
            dev.flash.power_on();
            let phase = dev.state().phase;
            assert!(
                phase == Phase::Idle || phase == Phase::Swapping,
                "copy {copy}, {landed} bytes: phase {phase}"
            );
            let mut floor = 1;
            assert!(check_boot(&mut dev, &img, &mut floor).is_trial());
            finish_both_ways(&dev, &img, floor);
        }
    }
}

/// `half-erased-protected-bank`: when the current bank is full and the other one is being
/// erased, a cut leaves it half erased; the state survives and the next write succeeds.
#[test]
fn half_erased_protected_bank() {
    let img = Images::new(700, 1200);
    let mut dev: Rig<1, 256> = Rig::new(10, 0xFF);
    dev.provision(&img.v1);
    dev.boot().unwrap();
    // A request naming another image is refused with one protected write per boot: repeat
    // until a boot has to erase the other bank.
    dev.write_staged(&img.v2).unwrap();
    let mut trials = 0;
    for _ in 0..8 {
        dev.request_install(&[7; 32]).unwrap();
        let mut probe = dev.clone();
        probe.flash.record_ops();
        probe.boot().unwrap();
        if probe.flash.recorded_ops().first() == Some(&OpKind::Erase) {
            for erased in [1, 64, 128, 255] {
                let mut cut = dev.clone();
                let before = cut.state();
                cut.flash.arm(Fault {
                    at_op: 0,
                    cut: Cut::PartialErase { erased },
                });
                assert!(cut.boot().is_err());
                cut.flash.power_on();
                assert_eq!(
                    cut.state(),
                    before,
                    "state lost after a half erase of {erased} bytes"
                );
                let mut floor = 1;
                check_boot(&mut cut, &img, &mut floor);
                assert_eq!(cut.state().outcome, Outcome::StagedMismatch);
                trials += 1;
            }
        }
        dev.boot().unwrap();
        assert_eq!(dev.state().outcome, Outcome::StagedMismatch);
    }
    assert!(trials > 0);
}
