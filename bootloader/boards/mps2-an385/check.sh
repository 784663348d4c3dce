#!/usr/bin/env bash
# Format check and clippy (-D warnings) of this firmware workspace, which the root workspace's
# `cargo fmt --all` / `cargo clippy --workspace` do not cover. Called by scripts/test.
# The bootloader compiles a trust root in: a throwaway one is made with `sigil` for the lint.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../../.. && pwd)
# shellcheck source=bootloader/boards/lint-env.sh
source ../lint-env.sh
# The QEMU tests build this workspace into target/qemu: sharing it builds the host-side build
# scripts and proc macros once (about 300 MB less on disk).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/qemu}

cargo fmt --all -- --check
# Every cfg: the default build, and logging + benchmark without the compact SHA.
cargo clippy --release --locked --target thumbv7m-none-eabi --all-targets -- -D warnings
cargo clippy --release --locked --target thumbv7m-none-eabi --all-targets --no-default-features \
  --features sigil-boot-mps2-an385/log,sigil-boot-mps2-an385/bench -- -D warnings
# Encrypted releases (the device key store, decryption while installing), with and without logs.
cargo clippy --release --locked --target thumbv7m-none-eabi --all-targets \
  --features sigil-boot-mps2-an385/encryption -- -D warnings
cargo clippy --release --locked --target thumbv7m-none-eabi --all-targets --no-default-features \
  --features sigil-boot-mps2-an385/encryption,sigil-boot-mps2-an385/log,sigil-boot-mps2-an385/bench -- -D warnings
# The hostile-application tests' control build (its lock protects nothing).
cargo clippy --release --locked --target thumbv7m-none-eabi --all-targets \
  --features sigil-boot-mps2-an385/dangerous-unlocked -- -D warnings
