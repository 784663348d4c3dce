//! The bootloader firmware booting signed images in QEMU `mps2-an385`.
//!
//! Every test assembles a flash image with `sigil-flash`, powers the emulated board on one or
//! more times (one `qemu-system-arm` run per boot; the flash persists in `flash.bin`), and
//! checks what a bench tester would: which application ran (its banner and its distinctive
//! exit code), what the bootloader said, and the boot-control state it left.

use sigil_bootloader::{Outcome, Phase};
use sigil_tests::qemu::{
    firmware, Device, SignSpec, APP_V1, APP_V2, APP_V2_NO_CONFIRM, EXIT_BAD_VECTOR_TABLE,
    EXIT_NO_BOOTABLE_IMAGE,
};

#[test]
fn valid_image_boots() {
    let fw = firmware();
    let device = Device::assemble(&fw.bundle(APP_V1, SignSpec::counter(1)), None, false);
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

#[test]
fn tampered_image_is_refused_and_not_started() {
    let fw = firmware();
    let tampered = fw.tampered(&fw.bundle(APP_V1, SignSpec::counter(1)));
    let device = Device::assemble(&tampered, None, false);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_NO_BOOTABLE_IMAGE), "{boot:#?}");
    assert!(
        !boot.app_started(),
        "jumped into a tampered image: {boot:#?}"
    );
    assert!(boot.output.contains("refusing to boot"), "{boot:#?}");
    assert!(boot.output.contains("digest"), "{boot:#?}");
}

#[test]
fn image_for_another_product_is_refused() {
    let fw = firmware();
    let foreign = fw.bundle(
        APP_V1,
        SignSpec {
            product: Some("sigil-test/other-device"),
            counter: 1,
        },
    );
    let device = Device::assemble(&foreign, None, false);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_NO_BOOTABLE_IMAGE), "{boot:#?}");
    assert!(!boot.app_started(), "{boot:#?}");
    assert!(boot.output.contains("product"), "{boot:#?}");
}

#[test]
fn downgraded_security_counter_is_refused() {
    let fw = firmware();
    let device = Device::assemble(&fw.bundle(APP_V2, SignSpec::counter(2)), None, false);
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

#[test]
fn staged_update_swaps_trial_boots_confirms_and_stays() {
    let fw = firmware();
    let device = Device::assemble(
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
    let state = device.state();
    assert_eq!(state.phase, Phase::Idle);
    assert_eq!(state.outcome, Outcome::Confirmed);
    assert_eq!(state.min_security_counter, 2);

    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 2, confirmed"),
        "{boot:#?}"
    );
    assert!(boot.output.contains("app: phase idle"), "{boot:#?}");
}

#[test]
fn update_that_never_confirms_is_reverted() {
    let fw = firmware();
    let device = Device::assemble(
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

#[test]
fn tampered_staged_update_is_rejected_without_touching_the_active_image() {
    let fw = firmware();
    let tampered = fw.tampered(&fw.bundle(APP_V2, SignSpec::counter(2)));
    let device = Device::assemble(
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

#[test]
fn signed_image_whose_vector_table_leaves_the_image_is_not_started() {
    // Validly signed, but not an application for this board: its reset vector points outside
    // the verified bytes, so jumping would run unverified flash.
    let fw = firmware();
    let mut payload = vec![0u8; 1024];
    payload[..4].copy_from_slice(&0x2000_8000u32.to_le_bytes());
    payload[4..8].copy_from_slice(&0x0016_3001u32.to_le_bytes()); // the staging slot
    let bundle = fw.bundle_of("reset-vector-outside-image", &payload, SignSpec::counter(1));
    let device = Device::assemble(&bundle, None, false);
    let boot = device.boot();
    assert_eq!(boot.code, Some(EXIT_BAD_VECTOR_TABLE), "{boot:#?}");
    assert!(
        boot.output
            .contains("reset vector outside the verified image"),
        "{boot:#?}"
    );
}
