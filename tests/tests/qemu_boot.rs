//! The bootloader firmware booting signed images in QEMU `mps2-an385`.
//!
//! Every test assembles a flash image with `sigil-flash`, powers the emulated board on one or
//! more times (one `qemu-system-arm` run per boot; the flash persists in `flash.bin`), and
//! checks what a bench tester would: which application ran (its banner and its distinctive
//! exit code), what the bootloader said, and the boot-control state it left.
//!
//! The `hostile_app_*` tests install compromised, validly signed application firmware
//! (`APP_HOSTILE`) and let it attack the protected state from inside, one attack per boot:
//! the lock must refuse or fault every attempt, keep the floor, and the device must go on
//! booting its current verified image. The `*_device_key` ones attack the key store of a
//! key-provisioned device booted by the decrypting bootloader: no byte of the key may reach the
//! application, and the store must stay intact. `without_the_lock_*` runs the same attacks on
//! the control bootloader whose lock protects nothing, to show they are real ones.

use std::path::PathBuf;

use sigil_bootloader::{Outcome, Phase};
use sigil_tests::qemu::{
    firmware, manifest_digest, Attack, Boot, Device, SignSpec, APP_HOSTILE, APP_V1, APP_V2,
    EXIT_APP_FAULT, EXIT_LOCK_BREACHED, EXIT_NO_BOOTABLE_IMAGE,
};
use sigil_tests::scenarios;

#[test]
fn valid_image_boots() {
    scenarios::valid_image_boots(firmware());
}

#[test]
fn tampered_image_is_refused_and_not_started() {
    scenarios::tampered_image_is_refused_and_not_started(firmware());
}

#[test]
fn image_for_another_product_is_refused() {
    scenarios::image_for_another_product_is_refused(firmware());
}

#[test]
fn downgraded_security_counter_is_refused() {
    scenarios::downgraded_security_counter_is_refused(firmware());
}

#[test]
fn staged_update_swaps_trial_boots_confirms_and_stays() {
    scenarios::staged_update_swaps_trial_boots_confirms_and_stays(firmware());
}

#[test]
fn update_that_never_confirms_is_reverted() {
    scenarios::update_that_never_confirms_is_reverted(firmware());
}

#[test]
fn tampered_staged_update_is_rejected_without_touching_the_active_image() {
    scenarios::tampered_staged_update_is_rejected_without_touching_the_active_image(firmware());
}

#[test]
fn signed_image_whose_vector_table_leaves_the_image_is_not_started() {
    scenarios::signed_image_whose_vector_table_leaves_the_image_is_not_started(firmware());
}

/// A device running the hostile application (6.6.6, security counter 2, so the floor is 2),
/// with `staged` in the staging slot and no install request, after one boot that settled the
/// floor.
fn hostile_device(staged: Option<&PathBuf>) -> Device {
    let fw = firmware();
    let device = Device::assemble(&fw.bundle(APP_HOSTILE, SignSpec::counter(2)), None, false);
    if let Some(staged) = staged {
        device.stage_unrequested(staged);
    }
    let boot = device.boot();
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert_eq!(device.state().min_security_counter, 2);
    device
}

/// The attack ran, the lock refused it, and the application went on to exit normally.
fn assert_refused(boot: &Boot, line: &str) {
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(
        boot.output.contains(&format!(
            "{line}: refused: the protected state is locked until reset"
        )),
        "{boot:#?}"
    );
    assert!(!boot.output.contains("WRITTEN"), "{boot:#?}");
}

/// The next boot: the current verified image (the hostile one) boots, the floor is 2, nothing
/// was installed.
fn assert_still_boots_current_image(device: &Device) {
    let boot = device.boot();
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 2, confirmed"),
        "{boot:#?}"
    );
    assert!(!boot.output.contains("installing"), "{boot:#?}");
    let state = device.state();
    assert_eq!((state.phase, state.min_security_counter), (Phase::Idle, 2));
}

#[test]
fn hostile_app_cannot_forge_a_protected_record_to_roll_back() {
    let fw = firmware();
    let old = fw.bundle(APP_V1, SignSpec::counter(1));
    let device = hostile_device(Some(&old));
    let protected = device.protected_region();

    let boot = device.boot_attacked(Attack::ForgedFloor, false);
    assert_refused(&boot, "hostile: forged-floor");
    assert_eq!(device.protected_region(), protected);

    assert_still_boots_current_image(&device);
}

#[test]
fn hostile_app_cannot_erase_the_protected_state() {
    let device = hostile_device(None);
    let protected = device.protected_region();

    let boot = device.boot_attacked(Attack::EraseProtected, false);
    assert_refused(&boot, "hostile: erase-protected");
    assert_eq!(device.protected_region(), protected);

    assert_still_boots_current_image(&device);
}

#[test]
fn hostile_app_cannot_forge_a_rejection_to_block_the_next_fix() {
    let fw = firmware();
    let fix = fw.bundle(APP_V2, SignSpec::counter(3));
    let device = hostile_device(Some(&fix));

    let boot = device.boot_attacked(Attack::ForgedRejection, false);
    assert_refused(&boot, "hostile: forged-rejection");

    // The operator's fix arrives (the agent requests its install): it installs and runs.
    device.stage(&fix);
    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 3, trial boot"),
        "{boot:#?}"
    );
    assert!(!device.state().is_rejected(&manifest_digest(&fix)));
}

#[test]
fn hostile_app_cannot_exhaust_the_state() {
    let fw = firmware();
    let device = hostile_device(None);
    let sequence = device.state().sequence;

    let boot = device.boot_attacked(Attack::ExhaustSequence, false);
    assert!(
        boot.output.contains(
            "hostile: exhaust-sequence: refused: the protected state is locked until reset"
        ),
        "{boot:#?}"
    );
    // The request sector is the application's: zeroing it is allowed, and harmless.
    assert!(
        boot.output.contains("hostile: flood-requests: WRITTEN"),
        "{boot:#?}"
    );
    assert_still_boots_current_image(&device);
    assert!(
        device.state().sequence < sequence + 8,
        "{:?}",
        device.state()
    );

    // A full update still goes through: the state log has room.
    device.stage(&fw.bundle(APP_V2, SignSpec::counter(3)));
    assert!(device.boot().ran(APP_V2));
    let boot = device.boot();
    assert!(
        boot.output.contains("security counter 3, confirmed"),
        "{boot:#?}"
    );
    assert_eq!(device.state().min_security_counter, 3);
}

#[test]
fn hostile_app_request_for_an_old_signed_image_is_refused() {
    let fw = firmware();
    let old = fw.bundle(APP_V1, SignSpec::counter(1));
    let device = hostile_device(Some(&old));
    let active = device.active_slot();

    let boot = device.boot_attacked(Attack::OldImageRequest, false);
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(
        boot.output
            .contains("hostile: old-image-request: install requested"),
        "{boot:#?}"
    );
    assert!(device.install_requested());

    // The bootloader checks the request against the floor and refuses the image.
    let boot = device.boot();
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(boot.output.contains("staged bundle refused"), "{boot:#?}");
    assert!(boot.output.contains("rollback"), "{boot:#?}");
    let state = device.state();
    assert_eq!(state.outcome, Outcome::StagedInvalid);
    assert_eq!(state.min_security_counter, 2);
    assert_eq!(device.active_slot(), active, "the active slot was modified");
}

#[test]
fn hostile_app_stores_into_protected_memory_fault() {
    let fw = firmware();
    let board = fw.board();
    let protected = board.flash.base + board.layout.protected;
    let bootloader_ram = board.memory.ram + board.memory.ram_size - board.memory.bootloader_ram;
    let device = hostile_device(None);
    let flash = device.flash_bytes();
    for (attack, fault) in [
        (
            Attack::StoreProtected,
            format!("memory protection fault: data access at {protected:#010x}"),
        ),
        (
            // QEMU mirrors SSRAM1 at 0x0040_0000: the MPU covers no mirror for the application.
            Attack::StoreMirror,
            format!(
                "memory protection fault: data access at {:#010x}",
                protected + 0x40_0000
            ),
        ),
        (
            Attack::StoreLatch,
            format!("memory protection fault: data access at {bootloader_ram:#010x}"),
        ),
        (Attack::MpuOff, "bus fault at 0xe000ed94".to_owned()),
    ] {
        let boot = device.boot_attacked(attack, false);
        assert_eq!(boot.code, Some(EXIT_APP_FAULT), "{attack:?}: {boot:#?}");
        assert!(
            boot.output
                .contains(&format!("sigil-boot: lock: application stopped: {fault}")),
            "{attack:?}: {boot:#?}"
        );
        assert_ne!(boot.code, Some(EXIT_LOCK_BREACHED));
    }
    assert_eq!(
        device.flash_bytes(),
        flash,
        "a faulted store reached the flash"
    );
    assert_still_boots_current_image(&device);
}

#[test]
fn hostile_app_cannot_reach_the_flash_file_by_semihosting() {
    let device = hostile_device(None);
    let flash = device.flash_bytes();

    let boot = device.boot_attacked(Attack::Semihosting, false);
    assert_eq!(boot.code, Some(EXIT_APP_FAULT), "{boot:#?}");
    assert!(
        boot.output.contains(
            "lock: application stopped: debug event (a BKPT: QEMU refuses semihosting to unprivileged code)"
        ),
        "{boot:#?}"
    );
    assert!(!boot.output.contains("ANSWERED"), "{boot:#?}");
    assert_eq!(device.flash_bytes(), flash);

    assert_still_boots_current_image(&device);
}

#[test]
fn hostile_app_cannot_use_the_flash_service_to_read_the_bootloader() {
    let device = hostile_device(None);
    let flash = device.flash_bytes();

    let boot = device.boot_attacked(Attack::ServiceDeputy, false);
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    for what in ["copy bootloader RAM", "print bootloader image"] {
        assert!(
            boot.output.contains(&format!(
                "hostile: service-deputy: {what}: refused: the buffer is not the application's memory"
            )),
            "{boot:#?}"
        );
    }
    assert_eq!(device.flash_bytes(), flash);
}

const NOT_WRITABLE: &str =
    "refused: the application writes only requests and, when idle, the staged bundle";

#[test]
fn hostile_app_cannot_erase_the_running_image() {
    let device = hostile_device(None);
    let active = device.active_slot();

    let boot = device.boot_attacked(Attack::EraseActive, false);
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(
        boot.output
            .contains(&format!("hostile: erase-active: {NOT_WRITABLE}")),
        "{boot:#?}"
    );
    assert_eq!(device.active_slot(), active, "the active slot was modified");
    assert_still_boots_current_image(&device);
}

/// On trial, the staging slot holds the only copy of the image to revert to: a hostile trial
/// image cannot erase it, so when it never confirms, the device reverts to that image.
#[test]
fn hostile_app_on_trial_cannot_destroy_the_image_to_revert_to() {
    let fw = firmware();
    let device = Device::assemble(
        &fw.bundle(APP_V1, SignSpec::counter(1)),
        Some(&fw.bundle(APP_HOSTILE, SignSpec::counter(2))),
        true,
    );
    for boot_no in 1..=fw.board().device.trial_attempts {
        let boot = device.boot_attacked(Attack::EraseRevertImage, false);
        assert!(boot.ran(APP_HOSTILE), "trial boot {boot_no}: {boot:#?}");
        assert!(
            boot.output.contains("security counter 2, trial boot"),
            "{boot:#?}"
        );
        assert!(
            boot.output
                .contains(&format!("hostile: erase-revert-image: {NOT_WRITABLE}")),
            "{boot:#?}"
        );
    }
    let boot = device.boot();
    assert!(boot.ran(APP_V1), "not reverted to 1.0.0: {boot:#?}");
    let state = device.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Reverted, 1)
    );
}

/// A device running the hostile application (as [`hostile_device`]) with its X25519 key pair
/// provisioned into the key store (`sigil keygen --x25519`, then what `sigil-flash assemble
/// --device-key` writes), booted once on the decrypting bootloader, which reads the store at
/// every boot before the lock closes it. Returns the device and the key store sector as
/// provisioned.
fn hostile_device_with_key() -> (Device, Vec<u8>) {
    let fw = firmware();
    let device = Device::assemble(&fw.bundle(APP_HOSTILE, SignSpec::counter(2)), None, false);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let key = dir.path().join("device.x25519.pem");
    sigil_tests::sigil::sigil([
        "keygen".into(),
        "--x25519".into(),
        "--out".into(),
        key.clone().into_os_string(),
    ])
    .unwrap_or_else(|e| panic!("sigil keygen --x25519: {e}"));
    device.provision_device_key(&key);
    let store = device.key_store();
    assert_eq!(
        &store[..8],
        b"SGL-DKEY",
        "the key store holds no key record"
    );
    let boot = device.boot_on(fw.decrypting_bootloader());
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(!boot.output.contains("device key"), "{boot:#?}");
    assert_eq!(device.state().min_security_counter, 2);
    (device, store)
}

/// The ways `boot`'s output would show bytes of the key store's record (`record`: the magic,
/// the private key, the public key, the CRC) that were found in it: the hostile application's
/// `READ` line, any four of its bytes as it prints a read (`[53, 47, 4c, 2d]`, or a
/// little-endian word `0x2d4c4753`), the record printed raw by the service's console, the
/// private key in hex.
fn key_bytes_shown(boot: &Boot, record: &[u8]) -> Vec<String> {
    let secret: String = record[8..40].iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec!["READ".to_owned(), "SGL-DKEY".to_owned(), secret];
    for window in record.windows(4) {
        let &[a, b, c, d] = window else { continue };
        let word = [a, b, c, d];
        forms.push(format!("{word:02x?}"));
        forms.push(format!("{:#010x}", u32::from_le_bytes(word)));
    }
    forms
        .into_iter()
        .filter(|form| boot.output.contains(form.as_str()))
        .collect()
}

/// The key store's record: its first [`sigil_bootloader::DEVICE_KEY_RECORD_LEN`] bytes.
fn key_record(store: &[u8]) -> &[u8] {
    &store[..sigil_bootloader::DEVICE_KEY_RECORD_LEN]
}

/// After an attack on the key store: none of its bytes reached the application's output, the
/// flash (key store included) is as it was, and the next boot reads the key without complaint
/// and runs the current image.
fn assert_key_kept(device: &Device, boot: &Boot, store: &[u8], flash: &[u8]) {
    let shown = key_bytes_shown(boot, key_record(store));
    assert!(shown.is_empty(), "key bytes shown as {shown:?}: {boot:#?}");
    assert_eq!(device.key_store(), store, "the key store was modified");
    assert_eq!(device.flash_bytes(), flash, "the flash was modified");
    let boot = device.boot_on(firmware().decrypting_bootloader());
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(!boot.output.contains("device key"), "{boot:#?}");
}

#[test]
fn hostile_app_reads_of_the_device_key_through_the_flash_window_and_its_mirror_fault() {
    let fw = firmware();
    let key = fw.board().flash.base
        + fw.board()
            .layout
            .device_key
            .expect("the board has a device key store");
    let (device, store) = hostile_device_with_key();
    let flash = device.flash_bytes();
    // QEMU mirrors SSRAM1 at 0x0040_0000: no MPU region covers the mirror, so it is
    // privileged only.
    for (attack, at) in [
        (Attack::ReadKey, key),
        (Attack::ReadKeyMirror, key + 0x40_0000),
    ] {
        let boot = device.boot_attacked_on(attack, fw.decrypting_bootloader());
        assert_eq!(boot.code, Some(EXIT_APP_FAULT), "{attack:?}: {boot:#?}");
        assert!(
            boot.output.contains(&format!(
                "sigil-boot: lock: application stopped: memory protection fault: data access at {at:#010x}"
            )),
            "{attack:?}: {boot:#?}"
        );
        assert_key_kept(&device, &boot, &store, &flash);
    }
}

#[test]
fn hostile_app_cannot_use_the_flash_service_to_copy_print_or_erase_the_device_key() {
    let fw = firmware();
    let (device, store) = hostile_device_with_key();
    let flash = device.flash_bytes();
    const BAD_BUFFER: &str = "refused: the buffer is not the application's memory";
    for (attack, refusals) in [
        (
            Attack::ServiceKey,
            vec![
                format!("hostile: service-key: copy key store: {BAD_BUFFER}"),
                format!("hostile: service-key: print key store: {BAD_BUFFER}"),
            ],
        ),
        (
            Attack::EraseKey,
            vec![format!("hostile: erase-key: {NOT_WRITABLE}")],
        ),
    ] {
        let boot = device.boot_attacked_on(attack, fw.decrypting_bootloader());
        assert!(boot.ran(APP_HOSTILE), "{attack:?}: {boot:#?}");
        for refusal in refusals {
            assert!(boot.output.contains(&refusal), "{attack:?}: {boot:#?}");
        }
        assert_key_kept(&device, &boot, &store, &flash);
    }
}

/// The control for the key store: on the bootloader whose lock protects nothing, a read
/// through the flash window shows the store's first bytes to the application, and an erase
/// through the service destroys the key (the decrypting bootloader then finds none). So the
/// tests above fail if the lock stops covering the key store.
#[test]
fn without_the_lock_the_hostile_app_reads_and_erases_the_device_key() {
    let fw = firmware();
    let (device, store) = hostile_device_with_key();

    let boot = device.boot_attacked(Attack::ReadKey, true);
    assert_eq!(boot.code, Some(EXIT_LOCK_BREACHED), "{boot:#?}");
    // The first four bytes of the record: its magic, `SGL-`.
    assert!(
        boot.output
            .contains("hostile: read-key: READ [53, 47, 4c, 2d]"),
        "{boot:#?}"
    );
    assert!(
        !key_bytes_shown(&boot, key_record(&store)).is_empty(),
        "{boot:#?}"
    );

    let boot = device.boot_attacked(Attack::EraseKey, true);
    assert!(
        boot.output.contains("hostile: erase-key: WRITTEN"),
        "{boot:#?}"
    );
    let erased = fw.board().flash.erased;
    assert!(
        device.key_store().iter().all(|&b| b == erased),
        "the key store was not erased"
    );
    let boot = device.boot_on(fw.decrypting_bootloader());
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(
        boot.output
            .contains("no device key provisioned: encrypted releases are refused"),
        "{boot:#?}"
    );
}

/// The control: on the bootloader whose lock protects nothing, the hostile application's
/// attacks work — a forged record rolls the device back to the old image with floor 0, a
/// forged rejection blocks the fix, and a trial image that erases the image to revert to leaves
/// the device with nothing to boot. So the tests above fail if the lock stops holding.
#[test]
fn without_the_lock_the_hostile_apps_attacks_roll_back_block_fixes_and_brick() {
    let fw = firmware();
    let old = fw.bundle(APP_V1, SignSpec::counter(1));
    let device = hostile_device(Some(&old));
    let boot = device.boot_attacked(Attack::ForgedFloor, true);
    assert!(
        boot.output.contains("hostile: forged-floor: WRITTEN"),
        "{boot:#?}"
    );
    let boot = device.boot();
    assert!(
        boot.ran(APP_V1),
        "the forged install did not run: {boot:#?}"
    );
    assert!(
        boot.output.contains("security counter 1, trial boot"),
        "{boot:#?}"
    );
    assert_eq!(device.state().min_security_counter, 0);

    let fix = fw.bundle(APP_V2, SignSpec::counter(3));
    let device = hostile_device(Some(&fix));
    let boot = device.boot_attacked(Attack::ForgedRejection, true);
    assert!(
        boot.output.contains("hostile: forged-rejection: WRITTEN"),
        "{boot:#?}"
    );
    device.stage(&fix);
    let boot = device.boot();
    assert!(boot.ran(APP_HOSTILE), "{boot:#?}");
    assert!(boot.output.contains("rejected before"), "{boot:#?}");

    let device = Device::assemble(
        &fw.bundle(APP_V1, SignSpec::counter(1)),
        Some(&fw.bundle(APP_HOSTILE, SignSpec::counter(2))),
        true,
    );
    for _ in 0..fw.board().device.trial_attempts {
        let boot = device.boot_attacked(Attack::EraseRevertImage, true);
        assert!(
            boot.output.contains("hostile: erase-revert-image: WRITTEN"),
            "{boot:#?}"
        );
    }
    let boot = device.boot_attacked(Attack::EraseRevertImage, true);
    assert!(!boot.ran(APP_V1), "reverted to an erased image: {boot:#?}");
    assert_eq!(boot.code, Some(EXIT_NO_BOOTABLE_IMAGE), "{boot:#?}");
}

/// Rotates the firmware's trust root (root 1: `root1.pem`) to root 3 in `dir`: two root
/// updates, each signed by the retiring root's key and the new root's key, chained; a key set
/// under root 3 for release key 1. Returns (chain, key set).
fn rotate_to_root_3(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let fw = firmware();
    let keys = fw.keys();
    let p = |name: &str| dir.join(name).into_os_string();
    let run = |args: Vec<std::ffi::OsString>| {
        sigil_tests::sigil::sigil(args.clone()).unwrap_or_else(|e| panic!("sigil {args:?}: {e}"))
    };
    let mut previous_root = keys.join("root.sgl").into_os_string();
    let mut previous_key = keys.join("root1.pem").into_os_string();
    for n in [2, 3] {
        run(vec![
            "keygen".into(),
            "--out".into(),
            p(&format!("root{n}key.pem")),
        ]);
        run(vec![
            "root".into(),
            "rotate".into(),
            "--from".into(),
            previous_root.clone(),
            "-m".into(),
            "1".into(),
            "--out".into(),
            p(&format!("update{n}.sgl")),
            "--root-out".into(),
            p(&format!("root{n}.sgl")),
            p(&format!("root{n}key.pub.pem")),
        ]);
        for key in [previous_key.clone(), p(&format!("root{n}key.pem"))] {
            run(vec![
                "root".into(),
                "sign".into(),
                p(&format!("update{n}.sgl")),
                "--previous".into(),
                previous_root.clone(),
                "--key".into(),
                key,
            ]);
        }
        previous_root = p(&format!("root{n}.sgl"));
        previous_key = p(&format!("root{n}key.pem"));
    }
    run(vec![
        "root".into(),
        "chain".into(),
        "--root".into(),
        keys.join("root.sgl").into_os_string(),
        "--out".into(),
        p("chain.sgl"),
        p("update2.sgl"),
        p("update3.sgl"),
    ]);
    run(vec![
        "keyset".into(),
        "create".into(),
        "-m".into(),
        "1".into(),
        "--key-set-version".into(),
        "2".into(),
        "--root-version".into(),
        "3".into(),
        "--out".into(),
        p("keyset3.sgl"),
        keys.join("release1.pub.pem").into_os_string(),
    ]);
    run(vec![
        "keyset".into(),
        "sign".into(),
        p("keyset3.sgl"),
        "--key".into(),
        p("root3key.pem"),
        "--root".into(),
        p("root3.sgl"),
    ]);
    (dir.join("chain.sgl"), dir.join("keyset3.sgl"))
}

#[test]
fn a_board_on_root_1_takes_a_release_under_root_3_with_its_chain_then_refuses_root_1() {
    let fw = firmware();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (chain, key_set) = rotate_to_root_3(dir.path());
    // 2.0.0 signed under root 3, the chain 1 -> 2 -> 3 in the bundle.
    let v2 = dir.path().join("v2-root3.sgl");
    sigil_tests::sigil::sigil([
        "sign".into(),
        fw.payload(APP_V2).into_os_string(),
        "--key-set".into(),
        key_set.clone().into_os_string(),
        "--key".into(),
        fw.keys().join("release1.pem").into_os_string(),
        "--root".into(),
        fw.keys().join("root.sgl").into_os_string(),
        "--root-chain".into(),
        chain.into_os_string(),
        "--product".into(),
        fw.product().into(),
        "--component".into(),
        "app".into(),
        "--version".into(),
        "2.0.0".into(),
        "--security-counter".into(),
        "2".into(),
        "--alignment".into(),
        fw.board().device.payload_alignment.to_string().into(),
        "--out".into(),
        v2.clone().into_os_string(),
    ])
    .unwrap_or_else(|e| panic!("signing under root 3: {e}"));
    // The board, built with root 1, runs 1.0.0 signed under root 1.
    let device = Device::assemble(&fw.bundle(APP_V1, SignSpec::counter(1)), Some(&v2), true);
    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("trial boot"), "{boot:#?}");
    assert_eq!(
        device.state().root_floor,
        None,
        "root 3 adopted before the confirm"
    );
    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("confirmed"), "{boot:#?}");
    let state = device.state();
    assert_eq!(state.outcome, Outcome::Confirmed);
    assert_eq!(state.root_floor.map(|f| f.version), Some(3));
    // It keeps booting 2.0.0 under root 3 (the chain's root 3 matches the stored digest).
    assert!(device.boot().ran(APP_V2));

    // A release signed under root 1's keys, even with a higher counter, is refused now.
    let old_keys = fw.bundle(APP_V1, SignSpec::counter(3));
    device.stage(&old_keys);
    let boot = device.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("staged bundle refused"), "{boot:#?}");
    assert_eq!(device.state().outcome, Outcome::StagedInvalid);
}
