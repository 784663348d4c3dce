//! End to end: `sigil` signs, `sigil-server` (real, on loopback) distributes and rolls out,
//! `sigil-agent` stages into the flash file of an emulated mps2-an385 board, and the real
//! bootloader firmware in QEMU verifies, swaps, trial-boots, confirms or reverts.
//!
//! Each story asserts at every step what an operator or a bench tester would check: the
//! server's API (device version and state, deployment counts, reports), the boot-control state
//! on the flash (read with `sigil-flash`'s code), and the QEMU run (which application ran, what
//! the bootloader said, the exit code).

use sigil_agent::CycleOutcome;
use sigil_bootloader::{Outcome, Phase};
use sigil_tests::e2e::{E2eDevice, Hooks, Stack};
use sigil_tests::qemu::{firmware, Device, SignSpec, APP_V1, APP_V2, APP_V2_NO_CONFIRM};
use sigil_tests::scenarios;
use sigil_tests::sigil::sigil;

fn states(reports: &[(String, String)]) -> Vec<&str> {
    reports.iter().map(|(s, _)| s.as_str()).collect()
}

/// The demo's story: a staged rollout of 2.0.0 over a fleet of four, whose canary is the
/// emulated board running 1.0.0.
#[test]
fn signed_update_rolls_out_through_server_agent_and_bootloader() {
    let fw = firmware();
    let keys = fw.keys();
    let root = keys.join("root.sgl");

    // 1–2. Keys, trust root and key set (made with `sigil`); 1.0.0 and 2.0.0 signed.
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    let v2 = fw.bundle(APP_V2, SignSpec::counter(2));
    for b in [&v1, &v2] {
        sigil([
            "verify".into(),
            b.clone().into_os_string(),
            "--root".into(),
            root.clone().into_os_string(),
            "--product".into(),
            fw.product().into(),
        ])
        .unwrap_or_else(|e| panic!("{} does not verify: {e}", b.display()));
    }

    // 3. The server: both releases, four devices, a staged rollout of 2.0.0 (25 %, then all).
    let stack = Stack::start(None);
    let r1 = stack.release_id(&v1);
    let r2 = stack.release_id(&v2);
    let shown = stack.get(&format!("/api/v1/releases/{r2}"));
    assert_eq!(shown["version"], "2.0.0", "{shown}");
    let keydir = tempfile::tempdir().unwrap();
    let fleet = stack.enrol(keydir.path(), "pump", 4, "demo");
    let dep = stack.deploy(&r2, "demo", &[25, 100], 10);
    let d = stack.deployment(dep);
    assert_eq!(
        (d["state"].as_str(), d["phase"].as_u64()),
        (Some("active"), Some(0)),
        "{d}"
    );
    let admitted = stack.admitted(dep);
    assert_eq!(admitted.len(), 1, "phase 1 admits one device of four: {d}");
    let canary = fleet.iter().find(|i| i.id == admitted[0]).unwrap();

    // 4. The canary's flash: 1.0.0 installed; it boots in QEMU.
    let qemu = Device::assemble(&v1, None, false);
    let boot = qemu.boot();
    assert!(boot.ran(APP_V1), "{boot:#?}");
    assert!(boot.output.contains("verified image: "), "{boot:#?}");
    let state = qemu.state();
    assert_eq!((state.phase, state.min_security_counter), (Phase::Idle, 1));
    let device = E2eDevice::new(qemu, canary, &stack.url, &Hooks::default());

    // 5. The agent: check-in, download, verify, stage, permission hook, reboot hook.
    assert_eq!(device.run_agent(&stack), CycleOutcome::RebootRequested);
    assert_eq!(
        device.permission_asked(),
        ["2.0.0"],
        "permission asked once"
    );
    assert!(device.take_reboot_request(), "the reboot hook ran");
    let state = device.qemu.state();
    assert!(device.qemu.install_requested(), "{state:?}");
    assert_eq!(
        state.min_security_counter, 1,
        "nothing raised before the swap"
    );
    assert_eq!(stack.member_status(dep, &device.id), "staged");
    assert!(stack.device(&device.id)["version"] == "1.0.0");

    // 6. The reboot: the bootloader verifies, swaps, trial-boots 2.0.0; the app confirms.
    let boot = device.qemu.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("installing:"), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 2, trial boot"),
        "{boot:#?}"
    );
    assert!(boot.output.contains("app: confirmed"), "{boot:#?}");
    // The confirm is a request: the floor is still 1 until the bootloader acts on it.
    assert!(device.qemu.confirm_requested());
    assert_eq!(device.qemu.state().min_security_counter, 1);

    // The agent finds the trial image confirmed already: final at the next boot.
    assert_eq!(device.run_agent(&stack), CycleOutcome::AwaitingReboot);
    // The next boot makes it final: the floors rise, by the bootloader.
    let boot = device.qemu.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    let state = device.qemu.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Confirmed, 2)
    );

    // 7. The agent reports "confirmed"; the server has the device on 2.0.0, the rollout moves on.
    assert_eq!(device.run_agent(&stack), CycleOutcome::Confirmed);
    let d = stack.device(&device.id);
    assert_eq!(
        (d["version"].as_str(), d["state"].as_str()),
        (Some("2.0.0"), Some("confirmed")),
        "{d}"
    );
    assert_eq!(stack.member_status(dep, &device.id), "confirmed");
    let d = stack.deployment(dep);
    assert_eq!(
        d["phase"], 1,
        "the canary's success advanced the rollout: {d}"
    );
    assert_eq!(d["state"], "active", "{d}");
    assert_eq!(d["counts"]["confirmed"], 1, "{d}");
    assert_eq!(stack.admitted(dep).len(), 4, "{d}");
    let reports = stack.reports(&device.id);
    let seen = states(&reports);
    for expected in ["downloading", "staged", "installing", "confirmed"] {
        assert!(seen.contains(&expected), "{expected} missing from {seen:?}");
    }
    assert_eq!(device.run_agent(&stack), CycleOutcome::UpToDate);
    assert_ne!(r1, r2);

    // The next power-on: 2.0.0, confirmed, no trial.
    let boot = device.qemu.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(
        boot.output.contains("security counter 2, confirmed"),
        "{boot:#?}"
    );
}

/// An update whose health check fails is never confirmed: the bootloader reverts it, the agent
/// reports "reverted", and the rollout halts at its failure threshold.
#[test]
fn unhealthy_update_is_reverted_and_halts_the_rollout() {
    let fw = firmware();
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    // 2.0.1 does not confirm itself: its health is the agent's health check to decide.
    let v3 = fw.bundle(APP_V2_NO_CONFIRM, SignSpec::counter(2));
    let stack = Stack::start(None);
    stack.release_id(&v1);
    let r3 = stack.release_id(&v3);
    let keydir = tempfile::tempdir().unwrap();
    let fleet = stack.enrol(keydir.path(), "pump", 4, "beta");
    let dep = stack.deploy(&r3, "beta", &[25, 100], 10);
    let admitted = stack.admitted(dep);
    let canary = fleet.iter().find(|i| i.id == admitted[0]).unwrap();

    let qemu = Device::assemble(&v1, None, false);
    assert!(qemu.boot().ran(APP_V1));
    let hooks = Hooks {
        health_check: Some("test \"$SIGIL_RUNNING_VERSION\" != 2.0.1".to_owned()),
        ..Hooks::default()
    };
    let device = E2eDevice::new(qemu, canary, &stack.url, &hooks);

    assert_eq!(device.run_agent(&stack), CycleOutcome::RebootRequested);
    assert!(device.take_reboot_request());
    assert!(device.qemu.install_requested());

    // Trial boots: 2.0.1 runs but does not confirm; the agent's health check fails each time,
    // so it does not confirm either and asks for a reboot.
    let attempts = fw.board().device.trial_attempts;
    for n in 1..=attempts {
        let boot = device.qemu.boot();
        assert!(boot.ran(APP_V2_NO_CONFIRM), "trial boot {n}: {boot:#?}");
        assert!(boot.output.contains("trial boot"), "{boot:#?}");
        assert_eq!(device.qemu.state().phase, Phase::Trial);
        let outcome = device.run_agent(&stack);
        assert!(
            matches!(&outcome, CycleOutcome::HealthCheckFailed(why) if why.contains("health check")),
            "trial boot {n}: {outcome:?}"
        );
        assert!(device.take_reboot_request(), "reboot for the revert");
        let state = device.qemu.state();
        assert_eq!(state.phase, Phase::Trial, "not confirmed");
        assert_eq!(state.min_security_counter, 1, "counter not raised");
    }

    // Out of trial boots: the bootloader swaps 1.0.0 back and runs it.
    let boot = device.qemu.boot();
    assert!(boot.ran(APP_V1), "{boot:#?}");
    assert!(boot.output.contains("not confirmed in time"), "{boot:#?}");
    let state = device.qemu.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Reverted, 1)
    );

    // The agent reports "reverted"; the server counts the failure and halts the rollout.
    assert_eq!(device.run_agent(&stack), CycleOutcome::Reverted);
    assert_eq!(stack.member_status(dep, &device.id), "reverted");
    let d = stack.deployment(dep);
    assert_eq!(d["state"], "halted", "{d}");
    assert_eq!(d["phase"], 0, "{d}");
    assert_eq!(d["counts"]["reverted"], 1, "{d}");
    assert_eq!(
        stack.admitted(dep).len(),
        1,
        "no further devices admitted: {d}"
    );
    let dev = stack.device(&device.id);
    assert_eq!(dev["version"], "1.0.0", "{dev}");
    let reports = stack.reports(&device.id);
    assert_eq!(states(&reports).last(), Some(&"reverted"), "{reports:?}");
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "installed" && d.contains("health check")),
        "{reports:?}"
    );

    // Nothing more is offered; 1.0.0 keeps booting.
    let again = device.run_agent(&stack);
    assert!(
        matches!(
            again,
            CycleOutcome::UpToDate | CycleOutcome::AlreadyRefused(_)
        ),
        "{again:?}"
    );
    assert!(device.qemu.boot().ran(APP_V1));
}

/// What a hostile mirror serves instead of the bundle the server offered.
#[derive(Debug, Clone)]
enum Attack {
    /// These bytes (a tampered, replayed or foreign bundle).
    Bytes(Vec<u8>),
    /// These bytes, then bytes that never end.
    Endless(Vec<u8>),
}

/// A mirror that serves `attack` for every bundle path, whatever was asked for.
// Test fixture outside a #[test]: a mirror that cannot start must fail the test loudly.
#[allow(clippy::unwrap_used)]
fn hostile_mirror(
    stack: &Stack,
    listener: std::net::TcpListener,
    attack: std::sync::Arc<std::sync::Mutex<Attack>>,
) {
    use axum::body::Body;
    use axum::response::Response;
    use futures_util::{stream, StreamExt};

    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::get(move || {
            let attack = attack.lock().unwrap().clone();
            async move {
                match attack {
                    Attack::Bytes(b) => Response::new(Body::from(b)),
                    Attack::Endless(head) => {
                        let chunk = bytes::Bytes::from(vec![0x5Au8; 64 * 1024]);
                        let s = stream::once(async move {
                            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(head))
                        })
                        .chain(stream::repeat_with(move || Ok(chunk.clone())));
                        Response::new(Body::from_stream(s))
                    }
                }
            }
        }),
    );
    listener.set_nonblocking(true).unwrap();
    stack.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// A server whose mirror is hostile: check-ins go to the real server (which offers 2.0.0), the
/// bundle comes from a mirror that tampers, replays, swaps in another product's image or
/// streams without end. Each time the device installs nothing, reports why as a download
/// failure, marks nothing pending, and QEMU proves it still boots its verified 1.0.0. None of
/// these bytes is the offered release (they do not hash to its id, or their signed manifest is
/// not the one offered), so the release itself is not refused: the device tries again.
#[test]
fn hostile_mirror_cannot_install_anything() {
    let fw = firmware();
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    let v2 = fw.bundle(APP_V2, SignSpec::counter(2));
    let foreign = fw.bundle(
        APP_V2,
        SignSpec {
            product: Some("sigil-test/other-device"),
            counter: 2,
        },
    );
    let alignment = fw.board().device.payload_alignment as usize;
    let endless_head = std::fs::read(&v2).unwrap()[..alignment].to_vec();
    let attacks = [
        (
            "tampered-payload",
            Attack::Bytes(std::fs::read(fw.tampered(&v2)).unwrap()),
            "digest",
        ),
        (
            "replayed-old-release",
            Attack::Bytes(std::fs::read(&v1).unwrap()),
            "newer",
        ),
        (
            "other-product",
            Attack::Bytes(std::fs::read(&foreign).unwrap()),
            "product",
        ),
        // The real header and signed envelope of 2.0.0, then an endless payload: the agent
        // reads no further than the signed length, whose digest then does not match.
        ("endless-payload", Attack::Endless(endless_head), "digest"),
    ];

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://{}/cdn", listener.local_addr().unwrap());
    let stack = Stack::start(Some(&mirror));
    let attack = std::sync::Arc::new(std::sync::Mutex::new(Attack::Bytes(Vec::new())));
    hostile_mirror(&stack, listener, std::sync::Arc::clone(&attack));
    let r2 = stack.release_id(&v2);
    let keydir = tempfile::tempdir().unwrap();
    let fleet = stack.enrol(keydir.path(), "target", attacks.len(), "hostile");
    // No halt: every device must get the offer, whatever the others reported.
    let dep = stack.deploy(&r2, "hostile", &[100], 100);

    for ((name, bytes, reason), identity) in attacks.into_iter().zip(&fleet) {
        *attack.lock().unwrap() = bytes;
        let qemu = Device::assemble(&v1, None, false);
        assert!(qemu.boot().ran(APP_V1), "{name}");
        let device = E2eDevice::new(qemu, identity, &stack.url, &Hooks::default());

        let outcome = device.run_agent(&stack);
        let CycleOutcome::DownloadFailed(why) = &outcome else {
            panic!("{name}: {outcome:?}");
        };
        assert!(why.contains(reason), "{name}: {why}");
        assert!(!device.take_reboot_request(), "{name}: reboot requested");
        assert!(
            device.permission_asked().is_empty(),
            "{name}: install asked"
        );
        let state = device.qemu.state();
        assert_eq!(
            state.phase,
            Phase::Idle,
            "{name}: marked pending: {state:?}"
        );
        assert_eq!(
            stack.member_status(dep, &device.id),
            "download_failed",
            "{name}"
        );
        let reports = stack.reports(&device.id);
        assert!(
            reports
                .iter()
                .any(|(s, d)| s == "download_failed" && d.contains(reason)),
            "{name}: {reports:?}"
        );
        assert!(
            !reports.iter().any(|(s, _)| s == "failed"),
            "{name}: {reports:?}"
        );

        // The device keeps booting its verified image; the bootloader saw no request.
        let boot = device.qemu.boot();
        assert!(boot.ran(APP_V1), "{name}: {boot:#?}");
        assert!(!boot.output.contains("staged"), "{name}: {boot:#?}");
        assert_eq!(device.qemu.state().min_security_counter, 1, "{name}");
        // The release is not refused for what a mirror did: the next cycle tries again, and
        // again installs nothing.
        assert!(
            matches!(device.run_agent(&stack), CycleOutcome::DownloadFailed(_)),
            "{name}"
        );
        assert_eq!(device.qemu.state().phase, Phase::Idle, "{name}");
    }
}

/// A key set of version 2 revokes release key 1. Once the device confirmed an image signed
/// under it, a bundle signed by the revoked key (under key set 1) is refused by the agent and,
/// staged directly into flash, by the bootloader.
#[test]
fn revoked_release_key_is_refused_after_rotation() {
    let fw = firmware();
    let keys = fw.keys();
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    let p = |path: std::path::PathBuf| path.into_os_string();
    sigil(["keygen".into(), "--out".into(), p(w("release2.pem"))]).unwrap();
    sigil([
        "keyset".into(),
        "create".into(),
        "--threshold".into(),
        "1".into(),
        "--key-set-version".into(),
        "2".into(),
        "--out".into(),
        p(w("keyset2.sgl")),
        p(w("release2.pub.pem")),
    ])
    .unwrap();
    sigil([
        "keyset".into(),
        "sign".into(),
        p(w("keyset2.sgl")),
        "--key".into(),
        p(keys.join("root1.pem")),
        "--root".into(),
        p(keys.join("root.sgl")),
    ])
    .unwrap();
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    let v2 = fw.sign_as(
        APP_V2,
        "2.0.0",
        2,
        &w("keyset2.sgl"),
        &w("release2.pem"),
        &w("v2-keyset2.sgl"),
    );
    // Signed by the revoked key under key set 1, with a higher version and counter.
    let revoked = fw.sign_as(
        APP_V1,
        "3.0.0",
        3,
        &keys.join("keyset.sgl"),
        &keys.join("release1.pem"),
        &w("v3-revoked-key.sgl"),
    );

    let stack = Stack::start(None);
    let r2 = stack.release_id(&v2);
    let keydir = tempfile::tempdir().unwrap();
    let fleet = stack.enrol(keydir.path(), "rotating", 1, "rotation");
    stack.deploy(&r2, "rotation", &[100], 10);

    let qemu = Device::assemble(&v1, None, false);
    assert!(qemu.boot().ran(APP_V1));
    assert_eq!(qemu.state().min_key_set_version, 1);
    let device = E2eDevice::new(qemu, &fleet[0], &stack.url, &Hooks::default());
    assert_eq!(device.run_agent(&stack), CycleOutcome::RebootRequested);
    assert!(device.take_reboot_request());
    let boot = device.qemu.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("app: confirmed"), "{boot:#?}");
    assert_eq!(device.run_agent(&stack), CycleOutcome::AwaitingReboot);
    assert!(device.qemu.boot().ran(APP_V2));
    assert_eq!(device.run_agent(&stack), CycleOutcome::Confirmed);
    let state = device.qemu.state();
    assert_eq!(
        (state.outcome, state.min_key_set_version),
        (Outcome::Confirmed, 2),
        "the confirm raised the key-set version at the next boot"
    );

    // The server accepts the revoked key's bundle (the root still vouches for key set 1), but
    // the device, which has confirmed key set 2, refuses it.
    let r3 = stack.release_id(&revoked);
    let dep3 = stack.deploy(&r3, "rotation", &[100], 100);
    let outcome = device.run_agent(&stack);
    let CycleOutcome::Failed(why) = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(why.contains("key set"), "{why}");
    assert_eq!(
        device.qemu.state().phase,
        Phase::Idle,
        "nothing marked pending"
    );
    assert!(!device.take_reboot_request());
    assert_eq!(stack.member_status(dep3, &device.id), "failed");
    assert_eq!(stack.device(&device.id)["version"], "2.0.0");

    // Staged straight into flash with a pending request, the bootloader refuses it too.
    device.qemu.stage(&revoked);
    assert!(device.qemu.install_requested());
    let boot = device.qemu.boot();
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("staged bundle refused"), "{boot:#?}");
    assert!(boot.output.contains("key set"), "{boot:#?}");
    let state = device.qemu.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::StagedInvalid, 2)
    );
}

/// Power cuts (QEMU killed under the debugger, just before a chosen flash write) across the
/// whole swap, and again in the boot that resumes it: every next boot resumes from the recorded
/// progress and the device ends on a verified image — 2.0.0 confirmed, or, if the cuts used up
/// its trial boots, 1.0.0 cleanly reverted — never on a half-swapped or unverified one.
#[test]
fn power_cuts_during_the_swap_resume_to_a_verified_image() {
    scenarios::power_cuts_during_the_swap_resume_to_a_verified_image(firmware());
}

/// Power cuts (as above) across the revert of an update that never confirmed, and again in the
/// boot that resumes it: every next boot resumes the revert, and the device ends on the old,
/// verified 1.0.0 with its counter unchanged; the rejected image never runs again.
#[test]
fn power_cuts_during_the_revert_end_on_the_old_image() {
    scenarios::power_cuts_during_the_revert_end_on_the_old_image(firmware());
}

/// The 32-byte blocks of `payload` a copy of it in flash would show (4096-aligned in its
/// bundle, so 32-aligned in the slot), without the uniform ones (erased or zeroed areas).
fn plaintext_blocks(payload: &[u8]) -> std::collections::HashSet<&[u8]> {
    payload
        .chunks_exact(32)
        .filter(|b| b.iter().any(|&x| x != b[0]))
        .collect()
}

/// Panics if the staging slot of `device` holds a plaintext block of `secret`.
fn assert_no_plaintext(device: &Device, secret: &std::collections::HashSet<&[u8]>, when: &str) {
    let slot = device.staging_slot();
    let hits = slot
        .chunks_exact(32)
        .filter(|b| secret.contains(*b))
        .count();
    assert_eq!(
        hits, 0,
        "{when}: {hits} plaintext blocks in the staging slot"
    );
}

/// Issue 16 end to end on the reference board: 2.0.0 is signed encrypted for one device
/// (`sigil sign --encrypt-to` its X25519 public key); the server holds only ciphertext and the
/// key records; that device's agent stages the bundle and its record into the emulated
/// board's flash, the decrypting bootloader installs it (decrypting as it swaps), the
/// application confirms, the server shows the device confirmed on 2.0.0. A second device,
/// not among the recipients, is withheld the release: the server lists it as withheld, its
/// agent reports the server's reason, nothing is staged and it keeps running 1.0.0. The
/// staging slots never hold a plaintext block of either image.
#[test]
fn encrypted_release_is_decrypted_on_the_board_and_withheld_from_a_device_not_among_its_recipients()
{
    let fw = firmware();
    let bootloader = fw.decrypting_bootloader().to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);

    // Device X25519 keys (made with `sigil keygen --x25519`), 2.0.0 encrypted for enc-1 only.
    for name in ["enc-1", "enc-2"] {
        sigil([
            "keygen".into(),
            "--x25519".into(),
            "--out".into(),
            w(&format!("{name}.x25519.pem")).into_os_string(),
        ])
        .unwrap();
    }
    let v1 = fw.bundle(APP_V1, SignSpec::counter(1));
    let v2 = fw.sign_encrypted(
        APP_V2,
        2,
        &[&w("enc-1.x25519.pub.pem")],
        &w("app-2.0.0-encrypted.sgl"),
    );
    let records: Vec<std::path::PathBuf> = std::fs::read_dir(w("app-2.0.0-encrypted.sgl.wkeys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "one key record, for enc-1");
    let v1_plain = std::fs::read(fw.payload(APP_V1)).unwrap();
    let v2_plain = std::fs::read(fw.payload(APP_V2)).unwrap();
    let secret: std::collections::HashSet<&[u8]> = plaintext_blocks(&v1_plain)
        .union(&plaintext_blocks(&v2_plain))
        .copied()
        .collect();
    let bundle = std::fs::read(&v2).unwrap();
    assert!(
        bundle
            .chunks_exact(32)
            .all(|b| !plaintext_blocks(&v2_plain).contains(b)),
        "the bundle holds ciphertext only"
    );

    // The server: both releases, two devices with their encryption keys, enc-1's record.
    let stack = Stack::start(None);
    stack.release_id(&v1);
    let r2 = stack.release_id(&v2);
    let fleet = stack.enrol(work.path(), "enc", 2, "secure");
    let mut devices = Vec::new();
    for identity in &fleet {
        // The factory: 1.0.0 installed, the device's key in the bootloader's key store.
        let qemu = Device::assemble(&v1, None, false);
        let public = qemu.provision_device_key(&w(&format!("{}.x25519.pem", identity.id)));
        let boot = qemu.boot_on(&bootloader);
        assert!(boot.ran(APP_V1), "{boot:#?}");
        stack.set_encryption_key(&identity.id, &public);
        let hooks = Hooks {
            encryption_key: Some(public),
            ..Hooks::default()
        };
        devices.push(E2eDevice::new(qemu, identity, &stack.url, &hooks));
    }
    let named = stack.upload_key_records(&r2, &records);
    assert_eq!(named["devices"], serde_json::json!(["enc-1"]), "{named}");
    let dep = stack.deploy(&r2, "secure", &[100], 50);
    // enc-2 is admitted but has no record: the operator sees it withheld, and why.
    let d = stack.deployment(dep);
    assert_eq!(d["withheld"], 1, "{d}");
    let withheld = stack.get(&format!("/api/v1/deployments/{dep}/withheld"));
    assert_eq!(withheld[0]["device_id"], "enc-2", "{withheld}");
    assert_eq!(withheld[0]["reason"], "no_key_record", "{withheld}");
    let [recipient, outsider] = &devices[..] else {
        unreachable!("two devices")
    };

    // enc-1: the agent downloads, verifies the ciphertext, stages bundle and key record.
    assert_eq!(recipient.run_agent(&stack), CycleOutcome::RebootRequested);
    assert!(recipient.take_reboot_request());
    assert!(recipient.qemu.install_requested());
    assert_eq!(stack.member_status(dep, &recipient.id), "staged");
    assert_no_plaintext(&recipient.qemu, &secret, "staged");

    // The reboot: the bootloader opens the record with the device key, decrypts while it
    // swaps, trial-boots 2.0.0; the application confirms.
    let boot = recipient.qemu.boot_on(&bootloader);
    assert!(boot.ran(APP_V2), "{boot:#?}");
    assert!(boot.output.contains("installing:"), "{boot:#?}");
    assert!(boot.output.contains("app: confirmed"), "{boot:#?}");
    assert_no_plaintext(
        &recipient.qemu,
        &secret,
        "installed (1.0.0 kept for a revert)",
    );
    assert_eq!(recipient.run_agent(&stack), CycleOutcome::AwaitingReboot);
    let boot = recipient.qemu.boot_on(&bootloader);
    assert!(boot.ran(APP_V2), "{boot:#?}");
    let state = recipient.qemu.state();
    assert_eq!(
        (state.phase, state.outcome, state.min_security_counter),
        (Phase::Idle, Outcome::Confirmed, 2)
    );
    assert_eq!(recipient.run_agent(&stack), CycleOutcome::Confirmed);
    let shown = stack.device(&recipient.id);
    assert_eq!(
        (shown["version"].as_str(), shown["state"].as_str()),
        (Some("2.0.0"), Some("confirmed")),
        "{shown}"
    );
    assert_eq!(stack.member_status(dep, &recipient.id), "confirmed");
    assert_no_plaintext(&recipient.qemu, &secret, "confirmed");

    // enc-2: not offered the release; its agent tells the server why; nothing is staged.
    assert_eq!(outsider.run_agent(&stack), CycleOutcome::UpToDate);
    assert!(!outsider.qemu.install_requested());
    assert!(!outsider.take_reboot_request());
    let reports = stack.reports(&outsider.id);
    assert!(
        reports
            .iter()
            .any(|(_, d)| d.contains("withheld by the server")
                && d.contains("no key record for device enc-2")),
        "{reports:?}"
    );
    assert_eq!(stack.member_status(dep, &outsider.id), "pending");
    let boot = outsider.qemu.boot_on(&bootloader);
    assert!(
        boot.ran(APP_V1),
        "the outsider keeps running 1.0.0: {boot:#?}"
    );
    assert!(!boot.output.contains("installing:"), "{boot:#?}");
    assert_eq!(stack.device(&outsider.id)["version"], "1.0.0");
    assert_no_plaintext(&outsider.qemu, &secret, "outsider");
}
