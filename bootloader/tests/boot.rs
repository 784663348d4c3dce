//! Boot decisions, update, confirm and revert on a fault-free simulated flash; fixtures are
//! named after the attack or fault they represent.

// Test and benchmark code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sigil_bootloader::{Error, Outcome, Phase};

type Dev = Rig<4, 256>;

const SLOT_SECTORS: u32 = 10;

fn v1() -> Spec {
    Spec {
        counter: 1,
        version: "1.0.0",
        payload_len: 700,
        payload_seed: 1,
        ..Spec::default()
    }
}

fn v2() -> Spec {
    Spec {
        counter: 2,
        version: "2.0.0",
        payload_len: 1200,
        payload_seed: 2,
        ..Spec::default()
    }
}

/// A device running v1 (confirmed), with v2 staged and pending.
fn pending_update() -> Dev {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&v1()));
    dev.boot().unwrap();
    dev.stage(&bundle(&v2())).unwrap();
    dev
}

fn active_untouched(dev: &Dev) -> bool {
    (0..SLOT_SECTORS).all(|i| {
        let s = dev.flash.stats(dev.active_sector(i));
        s.writes == 0 && s.erases == 0
    })
}

#[test]
fn valid_image_boots() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    let b = bundle(&v1());
    dev.provision(&b);
    let image = dev.boot().unwrap();
    assert!(!image.is_trial());
    assert_eq!(image.security_counter(), 1);
    let header = sigil_manifests::UnverifiedBundle::parse(&b).unwrap();
    assert_eq!(
        image.payload_offset(),
        dev.layout.active_offset() + header.header().payload_offset
    );
    assert_eq!(image.payload_size(), 700);
    // The factory image is confirmed by definition: its counter becomes the floor.
    let state = dev.state();
    assert_eq!(
        (
            state.phase,
            state.min_security_counter,
            state.min_key_set_version
        ),
        (Phase::Idle, 1, 1)
    );
    // Booting again writes nothing.
    let ops = dev.flash.ops();
    dev.boot().unwrap();
    assert_eq!(dev.flash.ops(), ops);
}

#[test]
fn blank_device_stays_in_safe_state() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    assert!(matches!(dev.boot(), Err(Error::NoBootableImage(_))));
}

#[test]
fn tampered_active_image_is_refused() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    let mut b = bundle(&v1());
    let last = b.len() - 1;
    b[last] ^= 1;
    dev.provision(&b);
    assert_eq!(
        dev.boot(),
        Err(Error::NoBootableImage(
            sigil_manifests::Error::DigestMismatch
        ))
    );
}

#[test]
fn tampered_active_signature_is_refused() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    let mut b = bundle(&v1());
    b[100] ^= 0x10;
    dev.provision(&b);
    assert!(matches!(dev.boot(), Err(Error::NoBootableImage(_))));
}

#[test]
fn wrong_product_is_refused() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    let other = sigil_manifests::ProductId::new("acme", "monitor-m1").unwrap();
    dev.provision(&bundle(&Spec {
        product: other,
        ..v1()
    }));
    assert_eq!(
        dev.boot(),
        Err(Error::NoBootableImage(sigil_manifests::Error::WrongProduct))
    );
}

#[test]
fn wrong_product_update_is_refused_without_touching_the_active_slot() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&v1()));
    dev.boot().unwrap();
    let other = sigil_manifests::ProductId::new("acme", "monitor-m1").unwrap();
    dev.stage(&bundle(&Spec {
        product: other,
        ..v2()
    }))
    .unwrap();
    dev.flash.reset_stats();
    let image = dev.boot().unwrap();
    assert_eq!(image.security_counter(), 1);
    assert!(active_untouched(&dev));
    assert_eq!(dev.state().outcome, Outcome::StagedInvalid);
}

#[test]
fn tampered_staged_update_is_refused_without_touching_the_active_slot() {
    let mut dev = pending_update();
    let at = dev.layout.staged_bundle_offset() as usize + bundle(&v2()).len() - 10;
    dev.flash.bytes_mut()[at] ^= 0x55;
    dev.flash.reset_stats();
    let image = dev.boot().unwrap();
    assert_eq!(image.security_counter(), 1);
    assert!(!image.is_trial());
    assert!(active_untouched(&dev));
    assert!(dev.active_holds(&bundle(&v1())));
    let state = dev.state();
    assert_eq!(
        (state.phase, state.outcome),
        (Phase::Idle, Outcome::StagedInvalid)
    );
}

#[test]
fn rolled_back_counter_update_is_refused() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&Spec { counter: 3, ..v1() }));
    dev.boot().unwrap();
    dev.stage(&bundle(&v2())).unwrap(); // counter 2 < 3
    dev.flash.reset_stats();
    let image = dev.boot().unwrap();
    assert_eq!(image.security_counter(), 3);
    assert!(active_untouched(&dev));
    assert_eq!(dev.state().outcome, Outcome::StagedInvalid);
}

#[test]
fn rolled_back_counter_active_image_is_refused() {
    // A device whose stored minimum is 2 (v2 confirmed) must not boot v1, even if v1 is put
    // back into the active slot by hand.
    let mut dev = pending_update();
    dev.boot().unwrap();
    dev.confirm().unwrap();
    dev.boot().unwrap();
    let b = bundle(&v1());
    let at = dev.layout.active_offset() as usize;
    dev.flash.bytes_mut()[at..at + dev.layout.max_bundle_len() as usize].fill(0xFF);
    dev.provision(&b);
    assert_eq!(
        dev.boot(),
        Err(Error::NoBootableImage(
            sigil_manifests::Error::CounterRolledBack
        ))
    );
}

#[test]
fn rolled_back_key_set_update_is_refused() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&Spec {
        key_set_version: 2,
        ..v1()
    }));
    dev.boot().unwrap();
    dev.stage(&bundle(&Spec {
        key_set_version: 1,
        ..v2()
    }))
    .unwrap();
    dev.boot().unwrap();
    let state = dev.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_key_set_version),
        (Phase::Idle, Outcome::StagedInvalid, 2)
    );
}

#[test]
fn update_is_confirmed_and_counters_rise_only_on_confirm() {
    let mut dev = pending_update();
    let image = dev.boot().unwrap();
    assert!(image.is_trial());
    assert_eq!(image.security_counter(), 2);
    assert!(dev.active_holds(&bundle(&v2())));
    let state = dev.state();
    assert_eq!(state.phase, Phase::Trial);
    assert_eq!(
        state.min_security_counter, 1,
        "installing must not raise the counter"
    );
    assert_eq!(state.trial_security_counter, 2);
    // The application confirms: a request, which the next boot acts on.
    dev.confirm().unwrap();
    let ctl = dev.control();
    assert!(ctl.confirm_requested());
    assert_eq!(
        (ctl.state().phase, ctl.state().min_security_counter),
        (Phase::Trial, 1)
    );
    let image = dev.boot().unwrap();
    assert!(!image.is_trial());
    assert_eq!(image.security_counter(), 2);
    let state = dev.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Confirmed, 2)
    );
    assert_eq!(dev.control().request(), None, "the request was consumed");
    // Confirming again is a no-op.
    dev.confirm().unwrap();
}

#[test]
fn unconfirmed_update_reverts_and_is_not_retried() {
    let mut dev = pending_update();
    for left in (0..dev.attempts).rev() {
        let image = dev.boot().unwrap();
        assert!(image.is_trial());
        assert_eq!(image.attempts_left(), left);
    }
    let image = dev.boot().unwrap();
    assert!(!image.is_trial());
    assert_eq!(image.security_counter(), 1);
    assert!(dev.active_holds(&bundle(&v1())));
    let state = dev.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Reverted, 1)
    );
    assert_eq!(state.rejected(), &[digest(&v2())]);
    // The revert restored the staged bundle where it was: requesting it again is refused.
    dev.request_install(&digest(&v2())).unwrap();
    dev.flash.reset_stats();
    let image = dev.boot().unwrap();
    assert_eq!(image.security_counter(), 1);
    assert!(active_untouched(&dev));
    assert_eq!(dev.state().outcome, Outcome::AlreadyRejected);
}

#[test]
fn equal_counter_update_is_allowed() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&Spec { counter: 5, ..v1() }));
    dev.boot().unwrap();
    dev.stage(&bundle(&Spec { counter: 5, ..v2() })).unwrap();
    assert!(dev.boot().unwrap().is_trial());
    dev.confirm().unwrap();
    let image = dev.boot().unwrap();
    assert_eq!((image.security_counter(), image.is_trial()), (5, false));
    assert!(dev.active_holds(&bundle(&Spec { counter: 5, ..v2() })));
}

#[test]
fn tampered_trial_image_is_reverted() {
    let mut dev = pending_update();
    dev.boot().unwrap();
    let at = dev.layout.active_offset() as usize + bundle(&v2()).len() - 1;
    dev.flash.bytes_mut()[at] ^= 0x55;
    let image = dev.boot().unwrap();
    assert_eq!(image.security_counter(), 1);
    assert_eq!(dev.state().outcome, Outcome::TrialInvalid);
}

#[test]
fn staging_is_refused_outside_idle() {
    let mut dev = pending_update();
    dev.boot().unwrap();
    let mut ctl = dev.control();
    assert_eq!(ctl.erase_staging(256), Err(Error::WrongPhase(Phase::Trial)));
    assert_eq!(
        ctl.write_staging(0, &[0; 4]),
        Err(Error::WrongPhase(Phase::Trial))
    );
    assert_eq!(
        ctl.request_install(&digest(&v2())),
        Err(Error::WrongPhase(Phase::Trial))
    );
    assert_eq!(ctl.confirm(&digest(&v1())), Err(Error::WrongImage));
}

#[test]
fn cancelled_pending_request_installs_nothing() {
    let mut dev = pending_update();
    dev.control().cancel().unwrap();
    dev.flash.reset_stats();
    assert!(!dev.boot().unwrap().is_trial());
    assert!(active_untouched(&dev));
}

#[test]
fn agent_can_verify_the_staged_bundle_and_read_the_running_version() {
    let mut dev = pending_update();
    let config = dev.config();
    let layout = dev.layout;
    let mut ctl = dev.control();
    let state = ctl.state();
    let mut buf = [0u8; sigil_manifests::MAX_ENVELOPE_LEN];
    let staged = ctl
        .verify_staged(root(), config.policy(&layout, &state), &mut buf)
        .unwrap();
    assert_eq!(staged.manifest().version.to_string(), "2.0.0");
    let mut buf = [0u8; sigil_manifests::MAX_ENVELOPE_LEN];
    let active = ctl
        .verify_active(root(), config.policy(&layout, &state), &mut buf)
        .unwrap();
    assert_eq!(
        (
            active.manifest().version.to_string(),
            active.security_counter()
        ),
        ("1.0.0".into(), 1)
    );
}

#[test]
fn first_install_onto_a_blank_active_slot() {
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    assert!(dev.boot().is_err());
    dev.stage(&bundle(&v2())).unwrap();
    assert!(dev.boot().unwrap().is_trial());
    dev.confirm().unwrap();
    assert_eq!(dev.boot().unwrap().security_counter(), 2);
}

#[test]
fn one_erase_per_image_sector_per_update_and_per_revert() {
    let mut dev = pending_update();
    let s = dev.layout.sector_size() as usize;
    let k = bundle(&v1()).len().max(bundle(&v2()).len()).div_ceil(s) as u32;
    dev.flash.reset_stats();
    dev.boot().unwrap();
    for i in 0..SLOT_SECTORS {
        let want = u64::from(i < k);
        assert_eq!(
            dev.flash.stats(dev.active_sector(i)).erases,
            want,
            "update: active sector {i}"
        );
        assert_eq!(
            dev.flash.stats(dev.staging_sector(i)).erases,
            want,
            "update: staging sector {i}"
        );
    }
    assert_eq!(dev.flash.stats(dev.staging_sector(SLOT_SECTORS)).erases, 0);
    for _ in 1..dev.attempts {
        dev.boot().unwrap();
    }
    dev.flash.reset_stats();
    dev.boot().unwrap();
    assert_eq!(dev.state().outcome, Outcome::Reverted);
    for i in 0..SLOT_SECTORS {
        assert_eq!(
            dev.flash.stats(dev.active_sector(i)).erases,
            u64::from(i < k),
            "revert: active {i}"
        );
        let staged_sector = u64::from((1..=k).contains(&i));
        assert_eq!(
            dev.flash.stats(dev.staging_sector(i)).erases,
            staged_sector,
            "revert: staging {i}"
        );
    }
    assert_eq!(dev.flash.violations(), 0);
}

#[test]
fn bit_flip_in_the_newest_record_keeps_the_state_and_is_healed() {
    // `corrupt-state-record`: one flipped bit in the newest record no longer loses a step.
    let mut dev = Dev::new(SLOT_SECTORS, 0xFF);
    dev.provision(&bundle(&v1()));
    dev.boot().unwrap();
    let before = dev.state();
    let stride = dev.layout.record_stride() as usize;
    let region = dev.layout.protected_region();
    let copies: Vec<usize> = (region.start as usize..region.end as usize)
        .step_by(stride)
        .filter(|&at| {
            let b = dev.flash.bytes();
            b[at..at + 4] == *b"SGPS" && b[at + 4..at + 8] == before.sequence.to_le_bytes()
        })
        .collect();
    assert_eq!(copies.len(), 2, "every record is written twice");
    dev.flash.bytes_mut()[copies[0] + 20] ^= 0x01;
    assert_eq!(dev.state(), before, "the other copy stands");
    assert!(!dev.boot().unwrap().is_trial());
    let healed = dev.state();
    assert_eq!(
        healed.sequence,
        before.sequence + 1,
        "the lone copy was rewritten"
    );
    assert_eq!(healed.floors(), before.floors());
}

#[test]
fn erased_value_zero_flash_works() {
    let mut dev: Rig<8, 512> = Rig::new(6, 0x00);
    dev.provision(&bundle(&v1()));
    dev.boot().unwrap();
    dev.stage(&bundle(&v2())).unwrap();
    assert!(dev.boot().unwrap().is_trial());
    dev.confirm().unwrap();
    assert_eq!(dev.boot().unwrap().security_counter(), 2);
    assert_eq!(dev.flash.violations(), 0);
}

#[test]
fn layout_for_another_geometry_is_refused() {
    use sigil_bootloader::sim::SimFlash;
    use sigil_bootloader::{BootControl, Bootloader, Geometry, Layout, LayoutError};
    let other = Geometry::of::<SimFlash<8, 256>>(0xFF);
    let layout = Layout::new(other, 0, 2048, 2304, 2304 + 4 * 256, 4).unwrap();
    let mut flash: SimFlash<4, 256> = SimFlash::new(32, 0xFF);
    let config = Dev::new(4, 0xFF).config();
    assert!(matches!(
        Bootloader::new(&mut flash, layout, config),
        Err(Error::Layout(LayoutError::GeometryMismatch))
    ));
    // Right geometry, but the staging slot ends beyond an 8-sector device.
    let mine = Geometry::of::<SimFlash<4, 256>>(0xFF);
    let layout = Layout::new(mine, 0, 2048, 2304, 2304 + 4 * 256, 4).unwrap();
    let mut small: SimFlash<4, 256> = SimFlash::new(8, 0xFF);
    assert!(matches!(
        BootControl::new(&mut small, layout),
        Err(Error::Layout(LayoutError::OutOfFlash))
    ));
}

/// A port that reads its flash in place (memory-mapped, no envelope buffer) decides exactly as
/// one that reads through `NorFlash` in chunks: the same result and the same flash bytes after
/// every step of install, update, confirm, refused updates, revert and a tampered active slot.
#[test]
fn mapped_flash_decides_like_buffered_flash() {
    let mut buffered = Dev::new(SLOT_SECTORS, 0xFF);
    let mut mapped = buffered.clone();
    mapped.mapped = true;
    let mut both = |what: &str, op: &dyn Fn(&mut Dev) -> String| {
        let (a, b) = (op(&mut buffered), op(&mut mapped));
        assert_eq!(a, b, "{what}: buffered vs mapped");
        assert!(
            buffered.flash.bytes() == mapped.flash.bytes(),
            "{what}: flash differs"
        );
        a
    };
    let boot = |d: &mut Dev| format!("{:?} {:?}", d.boot(), d.state());
    let v3 = Spec {
        counter: 3,
        version: "3.0.0",
        payload_seed: 3,
        ..v2()
    };
    both("install", &|d| {
        d.provision(&bundle(&v1()));
        String::new()
    });
    assert!(both("first boot", &boot).starts_with("Ok("));
    both("stage v2", &|d| format!("{:?}", d.stage(&bundle(&v2()))));
    assert!(both("trial boot", &boot).contains("trial: true"));
    both("confirm", &|d| format!("{:?}", d.confirm()));
    assert!(both("confirmed boot", &boot).contains("security_counter: 2"));
    both("stage tampered v3", &|d| {
        d.stage(&bundle(&v3)).unwrap();
        let at = d.layout.staged_bundle_offset() as usize + bundle(&v3).len() - 10;
        d.flash.bytes_mut()[at] ^= 0x55;
        String::new()
    });
    assert!(both("tampered staged", &boot).contains("StagedInvalid"));
    both("stage v3", &|d| format!("{:?}", d.stage(&bundle(&v3))));
    for i in 0..=2 {
        both(&format!("unconfirmed boot {i}"), &boot);
    }
    assert!(both("after revert", &boot).contains("Reverted"));
    both("tamper active", &|d| {
        let at = d.layout.active_offset() as usize + bundle(&v2()).len() - 1;
        d.flash.bytes_mut()[at] ^= 1;
        String::new()
    });
    assert!(both("tampered active", &boot).starts_with("Err("));
}
