//! The bootloader firmware on QEMU `microbit` (nRF51822, Cortex-M0, 16 KiB RAM): the shared
//! boot stories (`sigil_tests::scenarios`) over the NVMC flash controller QEMU models.
//!
//! One QEMU run is one power-on: the flash persists between runs in `flash.bin`, which the
//! board's driver writes through to (QEMU itself reloads its images over the flash at every
//! system reset, so a reset inside one run would not keep what was written; see
//! bootloader/boards/microbit/README.md). The hostile-application stories do not run here:
//! QEMU does not model the nRF51 MPU's flash protection, the lock's hardware half.

use sigil_tests::qemu::{firmware_for, Firmware, MICROBIT};
use sigil_tests::scenarios;

fn fw() -> &'static Firmware {
    firmware_for(&MICROBIT)
}

#[test]
fn valid_image_boots() {
    scenarios::valid_image_boots(fw());
}

/// The Cortex-M0 has no VTOR: the bootloader's vector table forwards every exception to the
/// started image's table. Fails if forwarding is broken.
#[test]
fn application_interrupts_reach_its_own_handlers() {
    scenarios::application_interrupts_reach_its_own_handlers(fw());
}

#[test]
fn tampered_image_is_refused_and_not_started() {
    scenarios::tampered_image_is_refused_and_not_started(fw());
}

#[test]
fn image_for_another_product_is_refused() {
    scenarios::image_for_another_product_is_refused(fw());
}

#[test]
fn downgraded_security_counter_is_refused() {
    scenarios::downgraded_security_counter_is_refused(fw());
}

#[test]
fn staged_update_swaps_trial_boots_confirms_and_stays() {
    scenarios::staged_update_swaps_trial_boots_confirms_and_stays(fw());
}

#[test]
fn update_that_never_confirms_is_reverted() {
    scenarios::update_that_never_confirms_is_reverted(fw());
}

#[test]
fn tampered_staged_update_is_rejected_without_touching_the_active_image() {
    scenarios::tampered_staged_update_is_rejected_without_touching_the_active_image(fw());
}

#[test]
fn signed_image_whose_vector_table_leaves_the_image_is_not_started() {
    scenarios::signed_image_whose_vector_table_leaves_the_image_is_not_started(fw());
}

#[test]
fn power_cuts_during_the_swap_resume_to_a_verified_image() {
    scenarios::power_cuts_during_the_swap_resume_to_a_verified_image(fw());
}

#[test]
fn power_cuts_during_the_revert_end_on_the_old_image() {
    scenarios::power_cuts_during_the_revert_end_on_the_old_image(fw());
}
