//! The `sigil-agent` binary: configuration errors, exit codes, `--check-config`.

// The helper panics on a broken fixture, as the tests do.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

fn agent(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_a_provisioned_device() {
    let device = Device::provision(&DeviceOptions::new("http://127.0.0.1:9"));
    let out = agent(&["--check-config"], &device.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
}

#[test]
fn invalid_configuration_exits_3_with_the_key_named() {
    let device = Device::provision(&DeviceOptions::new("http://127.0.0.1:9"));
    let text = std::fs::read_to_string(&device.config_path).unwrap();
    let cases = [
        (
            text.replace("staging_offset", "staging_ofset"),
            "staging_ofset",
        ),
        (
            text.replace("write_size = 8", "write_size = 16\nerased = 7"),
            "flash.erased",
        ),
        (
            text.replace("http://127.0.0.1:9", "http://updates.example.com"),
            "https",
        ),
        (text.replace("device.pem", "missing.pem"), "missing.pem"),
    ];
    for (bad, needle) in cases {
        std::fs::write(&device.config_path, bad).unwrap();
        let out = agent(&["--check-config"], &device.config_path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{needle}: {err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn a_flash_that_does_not_match_the_layout_is_refused() {
    let device = Device::provision(&DeviceOptions::new("http://127.0.0.1:9"));
    std::fs::write(&device.flash_path, vec![0xFFu8; 4096 * 4]).unwrap();
    let out = agent(&["--check-config"], &device.config_path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("beyond the flash"), "{err}");
}

#[test]
fn once_with_no_server_fails_with_exit_1_and_keeps_state() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let device = Device::provision(&DeviceOptions::new("http://127.0.0.1:9"));
    let out = agent(&["--once"], &device.config_path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("update cycle failed"), "{err}");
    assert!(device.path("state").is_dir());
}

#[test]
fn a_second_agent_on_the_same_state_directory_is_refused() {
    let device = Device::provision(&DeviceOptions::new("http://127.0.0.1:9"));
    // The running agent (this process) holds the state directory.
    let running = device.agent();
    let out = agent(&["--once"], &device.config_path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another sigil-agent"), "{err}");
    // Checking the configuration beside a running agent still works.
    let out = agent(&["--check-config"], &device.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("in use by the running agent"));
    drop(running);
    let out = agent(&["--check-config"], &device.config_path);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in use"));
}
