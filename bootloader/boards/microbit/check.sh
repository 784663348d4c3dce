#!/usr/bin/env bash
# Format check and clippy (-D warnings) of this firmware workspace, which the root workspace's
# `cargo fmt --all` / `cargo clippy --workspace` do not cover. Called by scripts/test.
# The bootloader compiles a trust root in: a throwaway one is made with `sigil` for the lint.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../../.. && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sigil() { cargo run -q --locked --manifest-path "$repo/Cargo.toml" -p sigil-signer --bin sigil -- "$@"; }
sigil keygen --out "$work/root1.pem" >/dev/null
sigil root init --threshold 1 --out "$work/root.sgl" "$work/root1.pub.pem" >/dev/null
export SIGIL_TRUST_ROOT=$work/root.sgl
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/qemu}

cargo fmt --all -- --check
cargo clippy --release --locked --target thumbv6m-none-eabi --all-targets -- -D warnings
cargo clippy --release --locked --target thumbv6m-none-eabi --all-targets --no-default-features \
  --features sigil-boot-microbit/log,sigil-boot-microbit/bench -- -D warnings
