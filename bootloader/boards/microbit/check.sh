#!/usr/bin/env bash
# Format check and clippy (-D warnings) of this firmware workspace, which the root workspace's
# `cargo fmt --all` / `cargo clippy --workspace` do not cover. Called by scripts/test.
# The bootloader compiles a trust root in: a throwaway one is made with `sigil` for the lint.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../../.. && pwd)
# shellcheck source=bootloader/boards/lint-env.sh
source ../lint-env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/qemu}

cargo fmt --all -- --check
cargo clippy --release --locked --target thumbv6m-none-eabi --all-targets -- -D warnings
cargo clippy --release --locked --target thumbv6m-none-eabi --all-targets --no-default-features \
  --features sigil-boot-microbit/log,sigil-boot-microbit/bench -- -D warnings
