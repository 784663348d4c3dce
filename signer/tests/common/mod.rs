//! The harness both signer suites share: a temporary directory with the real `sigil` binary run
//! inside it, and the arguments of a release signature.

// Each suite uses its own part of the harness.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use tempfile::TempDir;

/// A release workspace: a temporary directory and the `sigil` binary run inside it, with
/// environment settings every run gets.
pub struct Workspace {
    pub dir: TempDir,
    /// Set (`Some`) or removed (`None`) for every run.
    env: Vec<(String, Option<String>)>,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            env: vec![("SOURCE_DATE_EPOCH".into(), None)],
        }
    }

    /// Sets `key` to `value` (or removes it, with `None`) for every run from now on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.map(str::to_owned)));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.path(name), bytes).unwrap();
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).unwrap()
    }

    /// `sigil` in this directory with this workspace's environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::cargo_bin("sigil").unwrap();
        cmd.current_dir(self.dir.path());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Runs `sigil` with `env` on top of the workspace's (an empty value removes a variable).
    pub fn sigil_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.command();
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.args(args).output().unwrap()
    }

    pub fn sigil(&self, args: &[&str]) -> Output {
        self.sigil_env(&[], args)
    }

    /// Runs `sigil` and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.sigil(args);
        assert!(
            out.status.success(),
            "sigil {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `sigil` with `env`, requires exit code `code`; returns stderr.
    pub fn fails_env(&self, code: i32, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.sigil_env(env, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "sigil {args:?}: expected exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Runs `sigil`, requires exit code `code`; returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        self.fails_env(code, &[], args)
    }
}

/// `sigil sign app.bin` under `key_set` for product acme/pump, component app, at `version` and
/// security counter `counter`, followed by `rest` (keys, `--out`, options).
pub fn sign_args<'a>(
    key_set: &'a str,
    version: &'a str,
    counter: &'a str,
    rest: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "sign",
        "app.bin",
        "--key-set",
        key_set,
        "--product",
        "acme/pump",
        "--component",
        "app",
        "--version",
        version,
        "--security-counter",
        counter,
    ];
    args.extend(rest);
    args
}
