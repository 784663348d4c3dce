#!/usr/bin/env bash
# The nRF52840-DK firmware workspace in CI (no hardware): format check, clippy (-D warnings)
# of every cfg, the release bootloader and test application built, and the bootloader's flash
# footprint (text + rodata + data) gated. Called by scripts/test.
# The bootloader compiles a trust root in: a throwaway one is made with `sigil`.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../../.. && pwd)
# shellcheck source=bootloader/boards/lint-env.sh
source ../lint-env.sh

# The size gate: MCUboot publishes about 40 KB for its ed25519 build on this part; the release
# bootloader with everything in (verification, the ACL lock, the jump) must stay under it.
limit=$((40 * 1000))
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/nrf}
target=thumbv7em-none-eabihf

cargo fmt --all -- --check
cargo clippy --release --locked --target $target --all-targets -- -D warnings
cargo clippy --release --locked --target $target --all-targets \
  --features sigil-boot-nrf52840-dk/log -- -D warnings
cargo build --release --locked --target $target -p sigil-app-nrf52840-dk
# The footprint build alone (no logging; the test application's features are not unified in).
cargo build --release --locked --target $target -p sigil-boot-nrf52840-dk
elf=$CARGO_TARGET_DIR/$target/release/sigil-boot
size=$(arm-none-eabi-size -A "$elf" | awk '
  $1==".vector_table" || $1==".text" || $1==".rodata" || $1==".data" {s+=$2} END {print s}')
echo "nrf52840-dk release bootloader: $size bytes of flash (text + rodata + data; gate $limit)"
if [ "$size" -gt "$limit" ]; then
  echo "nrf52840-dk: the release bootloader is $size bytes, over the $limit-byte gate" >&2
  exit 1
fi
