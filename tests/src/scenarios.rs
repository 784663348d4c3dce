//! Boot stories every board port runs in QEMU (tests/tests/qemu_boot.rs on mps2-an385,
//! tests/tests/qemu_microbit.rs on microbit): the same checks on each board's firmware, so a
//! port is held to exactly the reference port's behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sigil_bootloader::{Outcome, Phase};

use crate::qemu::{
    Device, Firmware, SignSpec, APP_V1, APP_V2, APP_V2_NO_CONFIRM, EXIT_BAD_VECTOR_TABLE,
    EXIT_BOOTLOADER_EXCEPTION, EXIT_NO_BOOTABLE_IMAGE,
};

/// The story `valid image boots` on the board of `fw`.
pub fn valid_image_boots(fw: &'static Firmware) {
    let device = Device::assemble_on(fw, &fw.bundle(APP_V1, SignSpec::counter(1)), None, false);
    let boot = device.boot();
    assert!(boot.ran(APP_V1), "{boot:#?}");
    assert!(
        boot.output.contains("sigil-boot: verified image"),
        "{boot:#?}"
    );
    assert!(boot.output.contains("app: phase idle"), "{boot:#?}");
    // The first boot of a confirmed image records its counter as the device minimum.
    assert_eq!(device.state().min_security_counter, 1);
}

/// The story `the application's interrupts reach its own handlers` on the board of `fw`: the
/// test application enables SysTick and waits for 8 interrupts in its own handler (on the
/// Cortex-M0, which has no VTOR, through the bootloader's forwarding vector table). If they do
/// not arrive it says so and exits with the panic code; if the bootloader's table does not
/// forward them the bootloader's own handler ends the run with its exception code.
pub fn application_interrupts_reach_its_own_handlers(fw: &'static Firmware) {
    let device = Device::assemble_on(fw, &fw.bundle(APP_V1, SignSpec::counter(1)), None, false);
    let boot = device.boot();
    assert_ne!(
        boot.code,
        Some(EXIT_BOOTLOADER_EXCEPTION),
        "an exception of the application reached the bootloader's own handler: {boot:#?}"
    );
    assert!(
        boot.output
            .contains("app: 8 SysTick interrupts taken by the application's handler"),
        "{boot:#?}"
    );
    assert!(boot.ran(APP_V1), "{boot:#?}");
}

/// The story `tampered image is refused and not started` on the board of `fw`.
pub fn tampered_image_is_refused_and_not_started(fw: &'static Firmware) {
    let tampered = fw.tampered(&fw.bundle(APP_V1, SignSpec::counter(1)));
    let device = Device::assemble_on(fw, &tampered, None, false);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_NO_BOOTABLE_IMAGE), "{boot:#?}");
    assert!(
        !boot.app_started(),
        "jumped into a tampered image: {boot:#?}"
    );
    assert!(boot.output.contains("refusing to boot"), "{boot:#?}");
    assert!(boot.output.contains("digest"), "{boot:#?}");
}

/// The story `image for another product is refused` on the board of `fw`.
pub fn image_for_another_product_is_refused(fw: &'static Firmware) {
    let foreign = fw.bundle(
        APP_V1,
        SignSpec {
            product: Some("sigil-test/other-device"),
            counter: 1,
        },
    );
    let device = Device::assemble_on(fw, &foreign, None, false);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_NO_BOOTABLE_IMAGE), "{boot:#?}");
    assert!(!boot.app_started(), "{boot:#?}");
    assert!(boot.output.contains("product"), "{boot:#?}");
}

/// The story `downgraded security counter is refused` on the board of `fw`.
pub fn downgraded_security_counter_is_refused(fw: &'static Firmware) {
    let device = Device::assemble_on(fw, &fw.bundle(APP_V2, SignSpec::counter(2)), None, false);
    assert!(device.boot().ran(APP_V2));
    assert_eq!(device.state().min_security_counter, 2);

    // Offered as an update, the old image is refused and 2.0.0 keeps running.
    let old = fw.bundle(APP_V1, SignSpec::counter(1));
    device.stage(&old);
    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("staged bundle refused"), "{boot:#?}");
    assert_eq!(device.state().outcome, Outcome::StagedInvalid);

    // Written straight into the active slot, it is refused and not started.
    device.dangerous_overwrite_active(&old);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_NO_BOOTABLE_IMAGE), "{boot:#?}");
    assert!(!boot.app_started(), "{boot:#?}");
    assert!(boot.output.contains("counter"), "{boot:#?}");
}

/// The story `staged update swaps trial boots confirms and stays` on the board of `fw`.
pub fn staged_update_swaps_trial_boots_confirms_and_stays(fw: &'static Firmware) {
    let device = Device::assemble_on(
        fw,
        &fw.bundle(APP_V1, SignSpec::counter(1)),
        Some(&fw.bundle(APP_V2, SignSpec::counter(2))),
        true,
    );
    assert!(device.install_requested());

    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 2, trial boot"),
        "{boot:#?}"
    );
    assert!(boot.output.contains("app: confirmed"), "{boot:#?}");
    // The confirm is a request: the bootloader makes the update final at the next boot.
    let state = device.state();
    assert_eq!(state.phase, Phase::Trial);
    assert!(
        state.min_security_counter < 2,
        "the floor rose before the confirm took effect: {state:?}"
    );

    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 2, confirmed"),
        "{boot:#?}"
    );
    assert!(boot.output.contains("app: phase idle"), "{boot:#?}");
    let state = device.state();
    assert_eq!(state.phase, Phase::Idle);
    assert_eq!(state.outcome, Outcome::Confirmed);
    assert_eq!(state.min_security_counter, 2);
}

/// The story `update that never confirms is reverted` on the board of `fw`.
pub fn update_that_never_confirms_is_reverted(fw: &'static Firmware) {
    let device = Device::assemble_on(
        fw,
        &fw.bundle(APP_V1, SignSpec::counter(1)),
        Some(&fw.bundle(APP_V2_NO_CONFIRM, SignSpec::counter(2))),
        true,
    );
    let attempts = fw.board().device.trial_attempts;
    for boot_no in 1..=attempts {
        let boot = device.boot();
        assert!(
            boot.ran(APP_V2_NO_CONFIRM),
            "trial boot {boot_no}: {boot:#?}"
        );
        assert!(boot.output.contains("not confirming"), "{boot:#?}");
        assert_eq!(device.state().phase, Phase::Trial);
    }

    // Out of trial boots: the bootloader swaps 1.0.0 back and runs it.
    let boot = device.boot();
    assert!(boot.ran(APP_V1), "{boot:#?}");
    assert!(boot.output.contains("not confirmed in time"), "{boot:#?}");
    let state = device.state();
    assert_eq!(state.phase, Phase::Idle);
    assert_eq!(state.outcome, Outcome::Reverted);
    // The counter was never raised: 1.0.0 is still allowed.
    assert_eq!(state.min_security_counter, 1);

    let boot = device.boot();
    assert!(boot.ran(APP_V1), "{boot:#?}");
}

/// A tampered staged update is refused by its digest; the active slot is not touched.
pub fn tampered_staged_update_is_rejected_without_touching_the_active_image(fw: &'static Firmware) {
    let tampered = fw.tampered(&fw.bundle(APP_V2, SignSpec::counter(2)));
    let device = Device::assemble_on(
        fw,
        &fw.bundle(APP_V1, SignSpec::counter(1)),
        Some(&tampered),
        true,
    );
    let active_before = device.active_slot();

    let boot = device.boot();
    assert!(boot.ran(APP_V1), "{boot:#?}");
    assert!(boot.output.contains("staged bundle refused"), "{boot:#?}");
    assert!(boot.output.contains("digest"), "{boot:#?}");
    assert_eq!(device.state().outcome, Outcome::StagedInvalid);
    assert_eq!(
        device.active_slot(),
        active_before,
        "the active slot was modified"
    );
}

/// A validly signed image whose reset vector leaves the verified bytes is not started.
pub fn signed_image_whose_vector_table_leaves_the_image_is_not_started(fw: &'static Firmware) {
    // Validly signed, but not an application for this board: its reset vector points outside
    // the verified bytes, so jumping would run unverified flash.
    let board = fw.board();
    let mut payload = vec![0u8; 1024];
    let sp = board.memory.ram + 0x1000;
    let staging = board.flash.base + board.layout.staging;
    payload[..4].copy_from_slice(&sp.to_le_bytes());
    payload[4..8].copy_from_slice(&(staging | 1).to_le_bytes()); // the staging slot
    let bundle = fw.bundle_of("reset-vector-outside-image", &payload, SignSpec::counter(1));
    let device = Device::assemble_on(fw, &bundle, None, false);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_BAD_VECTOR_TABLE), "{boot:#?}");
    assert!(
        boot.output
            .contains("reset vector outside the verified image"),
        "{boot:#?}"
    );
}

/// Power cuts (QEMU killed under the debugger, just before a chosen flash write) across the
/// whole swap, and again in the boot that resumes it: every next boot resumes from the recorded
/// progress and the device ends on a verified image — 2.0.0 confirmed, or, if the cuts used up
/// its trial boots, 1.0.0 cleanly reverted — never on a half-swapped or unverified one.
pub fn power_cuts_during_the_swap_resume_to_a_verified_image(fw: &'static Firmware) {
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    let v2 = fw.bundle(APP_V2, SignSpec::counter(2));
    let (boot, writes) = Device::assemble_on(fw, &v1, Some(&v2), true).boot_counting_writes();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    let mut cut_mid_swap = 0;
    for cut in cut_points(writes) {
        let device = Device::assemble_on(fw, &v1, Some(&v2), true);
        // Cut once in the swap, then cut the boot that resumes it as well, at the same write.
        for _ in 0..2 {
            let boot = device.boot_and_cut(cut);
            if boot.code.is_some() {
                assert!(boot.ran(APP_V2), "finished before the cut: {boot:#?}");
                break;
            }
            assert!(
                !boot.output.contains("application 1.0.0 running"),
                "cut at write {cut} of {writes}: {boot:#?}"
            );
            let state = device.state();
            match state.phase {
                Phase::Swapping => cut_mid_swap += 1,
                Phase::Trial | Phase::Idle => {}
                other => panic!("cut at write {cut} of {writes} left phase {other}: {state:?}"),
            }
        }
        let mut boot = device.boot();
        if boot.ran(APP_V2) && device.confirm_requested() {
            // The app confirmed on this boot: the next one makes it final.
            boot = device.boot();
        }
        let state = device.state();
        if boot.ran(APP_V2) {
            assert_eq!(
                (state.phase, state.outcome, state.min_security_counter),
                (Phase::Idle, Outcome::Confirmed, 2),
                "after cuts at write {cut} of {writes}"
            );
            let again = device.boot();
            assert!(
                again.output.contains("security counter 2, confirmed"),
                "{again:#?}"
            );
        } else {
            // The cuts fell into both trial boots: the bootloader reverted, as it must.
            assert!(
                boot.ran(APP_V1),
                "after cuts at write {cut} of {writes}: {boot:#?}"
            );
            assert_eq!(
                (state.phase, state.outcome, state.min_security_counter),
                (Phase::Idle, Outcome::Reverted, 1),
                "after cuts at write {cut} of {writes}"
            );
        }
    }
    // The cut points are fixed writes, so this does not depend on the host's load.
    assert!(
        cut_mid_swap >= 4,
        "only {cut_mid_swap} power cuts landed in the middle of a swap of {writes} writes"
    );
}

/// Power cuts (as above) across the revert of an update that never confirmed, and again in the
/// boot that resumes it: every next boot resumes the revert, and the device ends on the old,
/// verified 1.0.0 with its counter unchanged; the rejected image never runs again.
pub fn power_cuts_during_the_revert_end_on_the_old_image(fw: &'static Firmware) {
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    let v3 = fw.bundle(APP_V2_NO_CONFIRM, SignSpec::counter(2));
    let trial_boots = |device: &Device| {
        for _ in 0..fw.board().device.trial_attempts {
            assert!(device.boot().ran(APP_V2_NO_CONFIRM));
        }
    };
    let probe = Device::assemble_on(fw, &v1, Some(&v3), true);
    trial_boots(&probe);
    let (boot, writes) = probe.boot_counting_writes();
    assert!(boot.ran(APP_V1), "{boot:#?}");
    assert!(boot.output.contains("reverting"), "{boot:#?}");
    let mut cut_mid_revert = 0;
    for cut in cut_points(writes) {
        let device = Device::assemble_on(fw, &v1, Some(&v3), true);
        trial_boots(&device);
        for _ in 0..2 {
            let boot = device.boot_and_cut(cut);
            if boot.code.is_some() {
                assert!(boot.ran(APP_V1), "finished before the cut: {boot:#?}");
                break;
            }
            assert!(
                !boot.output.contains("application 2.0.1 running"),
                "the rejected image ran again: {boot:#?}"
            );
            let state = device.state();
            match state.phase {
                Phase::Reverting => cut_mid_revert += 1,
                Phase::Trial | Phase::Idle => {}
                other => panic!("cut at write {cut} of {writes} left phase {other}: {state:?}"),
            }
        }
        let boot = device.boot();
        assert!(
            boot.ran(APP_V1),
            "after cuts at write {cut} of {writes}: {boot:#?}"
        );
        let state = device.state();
        assert_eq!(
            (state.phase, state.outcome, state.min_security_counter),
            (Phase::Idle, Outcome::Reverted, 1),
            "after cuts at write {cut} of {writes}"
        );
    }
    assert!(
        cut_mid_revert >= 4,
        "only {cut_mid_revert} power cuts landed in the middle of a revert of {writes} writes"
    );
}

/// Where the power-cut tests cut a boot that makes `writes` flash writes: its first and last
/// write and points spread between them, or, with `SIGIL_POWERCUT_EVERY_WRITE=1`, before every
/// one of its writes (about 600 QEMU boots per test; the bootloader's own power-fail suite,
/// `bootloader/tests/powerfail.rs`, also tears writes and erases).
fn cut_points(writes: usize) -> Vec<usize> {
    if std::env::var_os("SIGIL_POWERCUT_EVERY_WRITE").is_some_and(|v| v == "1") {
        return (1..=writes).collect();
    }
    let mut points: Vec<usize> = [0, 1, 2, 4, 6, 7, 8]
        .iter()
        .map(|eighths| (writes * eighths / 8).max(1))
        .collect();
    points.dedup();
    points
}
