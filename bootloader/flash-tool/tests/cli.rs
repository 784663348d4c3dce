//! The `sigil-flash` binary, run in a temporary directory.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::str::contains;

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
    std::fs::write(d.join("a.sgl"), vec![0x5A; 3000]).unwrap();
    std::fs::write(d.join("b.sgl"), vec![0xA5; 5000]).unwrap();
    sigil_flash()
        .current_dir(d)
        .args(["assemble", "--installed", "a.sgl", "--out", "flash.bin"])
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

    sigil_flash()
        .current_dir(d)
        .args(["stage", "--flash", "flash.bin", "b.sgl", "--pending"])
        .assert()
        .success()
        .stdout(contains("update pending"));
    sigil_flash()
        .current_dir(d)
        .args(["state", "--flash", "flash.bin"])
        .assert()
        .success()
        .stdout(contains("update pending"));
    // A second request while one is pending is refused, and the image is left as it was.
    let before = std::fs::read(d.join("flash.bin")).unwrap();
    sigil_flash()
        .current_dir(d)
        .args(["stage", "--flash", "flash.bin", "a.sgl", "--pending"])
        .assert()
        .code(1)
        .stderr(contains(
            "not allowed while the device is in phase: update pending",
        ));
    assert_eq!(std::fs::read(d.join("flash.bin")).unwrap(), before);
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
