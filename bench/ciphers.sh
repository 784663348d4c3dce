#!/usr/bin/env bash
# Payload cipher candidates for encrypted bundles (FORMAT.md §9), as Markdown: guest
# instructions per MiB and flash bytes on QEMU mps2-an385 (Cortex-M3, no AES hardware) of
# ChaCha20 (RustCrypto `chacha20`) against AES-128-CTR (RustCrypto `aes`, fixsliced software,
# + `ctr`), and of the key agreement and derivation a decrypting device runs once per release:
# X25519 (curve25519-dalek's `MontgomeryPoint::mul_clamped`) and HKDF-SHA512 (`hkdf` over the
# bootloader's compact sha2). The firmware is bench/ciphers (its own Cargo project); each
# feature builds one primitive alone at the bootloader's release profile, so
# `size(feature) - size(no feature)` is the flash that primitive costs.
# Needs qemu-system-arm, binutils-arm-none-eabi and the thumbv7m-none-eabi target; installs
# them when missing, as bench/qemu.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh
need_apt bench/ciphers.sh qemu-system-arm binutils-arm-none-eabi
rustup target list --installed | grep -qx thumbv7m-none-eabi || rustup target add thumbv7m-none-eabi >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target_dir=$root/target/bench-ciphers

builds=(none chacha20 aes-ctr x25519 hkdf ed25519 decrypt-set)
for b in "${builds[@]}"; do
  features=()
  [ "$b" = none ] || features=(--features "$b")
  (cd bench/ciphers && CARGO_TARGET_DIR="$target_dir" \
    cargo build -q --release --locked "${features[@]}") >&2
  cp "$target_dir/thumbv7m-none-eabi/release/bench-ciphers" "$work/$b.elf"
done

flash_of() { # flash_of BUILD -> text (incl. vector table) + rodata + data bytes
  arm-none-eabi-size -A "$work/$1.elf" | awk '
    $1==".vector_table" || $1==".text" || $1==".rodata" || $1==".data" {n+=$2} END {print n}'
}
run() { # run BUILD -> the firmware's "bench:" line
  timeout 600 qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -nographic -monitor none \
    -serial null -icount shift=0 -semihosting-config enable=on,target=native \
    -kernel "$work/$1.elf" 2>&1 | grep '^bench:'
}
field() { sed -n "s/.* $2=\([0-9]*\).*/\1/p" <<<"$1"; }
mi() { awk -v a="$1" 'BEGIN { printf "%.1f M", a / 1e6 }'; }
per_byte() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }

base=$(flash_of none)
declare -A line
for b in "${builds[@]}"; do
  line[$b]=$(run "$b") || { echo "bench/ciphers.sh: no bench line from QEMU ($b)" >&2; exit 1; }
  echo "$b: ${line[$b]} flash=$(flash_of "$b")" >&2
done
chacha=$(field "${line[chacha20]}" chacha20_mib)
aes=$(field "${line[aes-ctr]}" aes128ctr_mib)
x=$(field "${line[x25519]}" x25519)
h=$(field "${line[hkdf]}" hkdf_sha512)
ed=$(field "${line[ed25519]}" ed25519_verify)
[ -n "$chacha" ] && [ -n "$aes" ] && [ -n "$x" ] && [ -n "$h" ] && [ -n "$ed" ] ||
  { echo "bench/ciphers.sh: a figure is missing" >&2; exit 1; }
added() { echo $(($(flash_of "$1") - base)); }
set_over_ed=$(($(flash_of decrypt-set) - $(flash_of ed25519)))

cat <<MD
## ciphers: payload cipher candidates (mps2-an385, Cortex-M3)

\`bench/ciphers.sh\`: the firmware bench/ciphers at the bootloader's release profile
(opt-level "z", fat LTO, codegen-units = 1, panic = "abort"), one primitive per build, in
$(qemu-system-arm --version | head -1) with \`-icount shift=0\` (SysTick counts guest
instructions, 40 per tick). Flash is text + rodata + data above the empty build
($base bytes: vector table, start-up, semihosting). The Cortex-M3 has no AES instructions, so
both ciphers run in software; the choice (FORMAT.md §9) is ChaCha20.

| primitive | crate | instructions | per byte | flash added |
|---|---|---|---|---|
| ChaCha20, 1 MiB in place | chacha20 0.9 | $(mi "$chacha") | $(per_byte "$chacha") | $(added chacha20) B |
| AES-128-CTR, 1 MiB in place | aes 0.8 (fixslice) + ctr 0.9 | $(mi "$aes") | $(per_byte "$aes") | $(added aes-ctr) B |
| X25519, one \`mul_clamped\` | curve25519-dalek 4.1 | $(mi "$x") | — | $(added x25519) B |
| HKDF-SHA512, extract + 64-byte expand | hkdf 0.12, sha2 0.10 compact | $(awk -v a="$h" 'BEGIN { printf "%.2f M", a / 1e6 }') | — | $(added hkdf) B |
| ed25519 \`verify_strict\` (the bootloader's baseline) | ed25519-dalek 2.2 | $(mi "$ed") | — | $(added ed25519) B |

- ChaCha20 against AES-128-CTR: $(awk -v a="$aes" -v c="$chacha" 'BEGIN { printf "%.2f×", a / c }') the
  instructions for AES, and $(added aes-ctr) against $(added chacha20) bytes of flash.
- Everything decryption adds to a build that already verifies ed25519 (X25519 + HKDF-SHA512 +
  ChaCha20 on top of ed25519 + SHA-512, which share the field arithmetic and the hash):
  **$set_over_ed bytes** of flash. In that combined build ChaCha20 took
  $(mi "$(field "${line[decrypt-set]}" chacha20_mib)") per MiB (code placement under LTO).
- Per release a device runs one X25519 and three HKDF-SHA512 derivations (key-encryption
  key, commitment check, payload key): about $(mi $((x + 3 * h))) instructions, about the cost
  of one more signature check.
MD
