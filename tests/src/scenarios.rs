//! Boot stories every board port runs in QEMU (tests/tests/qemu_boot.rs on mps2-an385,
//! tests/tests/qemu_microbit.rs on microbit): the same checks on each board's firmware, so a
//! port is held to exactly the reference port's behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sigil_bootloader::{Outcome, Phase};

use crate::qemu::{
    Device, Firmware, SignSpec, APP_V1, APP_V2, APP_V2_NO_CONFIRM, EXIT_NO_BOOTABLE_IMAGE,
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
