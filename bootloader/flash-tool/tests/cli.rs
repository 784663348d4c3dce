//! The `sigil-flash` binary, run in a temporary directory.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::str::contains;

mod common;

fn board() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../boards/mps2-an385/board.toml")
}

// Test helper: the binary under test must exist, or every test here is meaningless.
#[allow(clippy::unwrap_used)]
fn sigil_flash() -> Command {
    let mut cmd = Command::cargo_bin("sigil-flash").unwrap();
    cmd.arg("--board").arg(board());
    cmd
}

#[test]
fn assemble_stage_and_read_back_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.sgl"), common::bundle(1, 3000)).unwrap();
    std::fs::write(d.join("b.sgl"), common::bundle(2, 5000)).unwrap();
    sigil_flash()
        .current_dir(d)
        .args([
            "assemble",
            "--installed",
            "a.sgl",
            "--min-security-counter",
            "1",
            "--out",
            "flash.bin",
        ])
        .assert()
        .success()
        .stdout(contains("load at 0x00020000"));
    let out = sigil_flash()
        .current_dir(d)
        .args(["state", "--flash", "flash.bin", "--json"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["phase"], "idle");
    assert_eq!(state["min_security_counter"], 1, "provisioned at assembly");
    assert_eq!(state["request"], "none");

    sigil_flash()
        .current_dir(d)
        .args(["stage", "--flash", "flash.bin", "b.sgl", "--pending"])
        .assert()
        .success()
        .stdout(contains("pending request: install "));
    sigil_flash()
        .current_dir(d)
        .args(["state", "--flash", "flash.bin"])
        .assert()
        .success()
        .stdout(contains("pending request:      install "));
    // Provisioning is refused on an image whose protected state is already written.
    sigil_flash()
        .current_dir(d)
        .args([
            "assemble",
            "--installed",
            "a.sgl",
            "--min-security-counter",
            "1",
            "--staged",
            "not-there.sgl",
            "--out",
            "other.bin",
        ])
        .assert()
        .code(1)
        .stderr(contains("not-there.sgl"));
    assert!(!d.join("other.bin").exists(), "nothing written on error");
}

#[test]
fn errors_name_the_file_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    sigil_flash()
        .current_dir(dir.path())
        .args(["state", "--flash", "missing.bin"])
        .assert()
        .code(1)
        .stderr(contains("missing.bin"));
    sigil_flash()
        .current_dir(dir.path())
        .args(["assemble", "--pending", "--out", "x.bin"])
        .assert()
        .code(2);
}

#[test]
fn assemble_provisions_the_device_key_and_state_shows_its_recipient_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.sgl"), common::bundle(1, 3000)).unwrap();
    // RFC 8410 §10.3's X25519 private key.
    std::fs::write(
        d.join("device.pem"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(d.join("release.pem"), "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n").unwrap();
    sigil_flash()
        .current_dir(d)
        .args([
            "assemble",
            "--installed",
            "a.sgl",
            "--device-key",
            "release.pem",
            "--out",
            "flash.bin",
        ])
        .assert()
        .code(1)
        .stderr(contains("release.pem is not an X25519 private key"));
    assert!(
        !d.join("flash.bin").exists(),
        "nothing written for a refused key"
    );
    sigil_flash()
        .current_dir(d)
        .args(["assemble", "--installed", "a.sgl", "--out", "flash.bin"])
        .assert()
        .success();
    sigil_flash()
        .current_dir(d)
        .args(["state", "--flash", "flash.bin"])
        .assert()
        .success()
        .stdout(contains("device key:           none"));
    sigil_flash()
        .current_dir(d)
        .args([
            "assemble",
            "--installed",
            "a.sgl",
            "--device-key",
            "device.pem",
            "--out",
            "flash.bin",
        ])
        .assert()
        .success();
    let secret: [u8; 32] =
        hex::decode("d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842")
            .unwrap()
            .try_into()
            .unwrap();
    let key = sigil_manifests::encryption::DeviceKey::from_secret(secret);
    let out = sigil_flash()
        .current_dir(d)
        .args(["state", "--flash", "flash.bin", "--json"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["device_key"], hex::encode(key.id()));
}
