#!/usr/bin/env bash
# Bootloader firmware figures for BENCHMARKS.md (QEMU mps2-an385, Cortex-M3), as Markdown:
#  - flash footprint (text + rodata) and static RAM of the release bootloader (opt-level "z",
#    fat LTO, panic = "abort", no logging), peak stack of the boot decision (painted stack);
#  - guest instructions from reset to the jump for a 1 MiB image (idle boot, and an update boot
#    that verifies, swaps and verifies again) against the bare SHA-256 over the same 1 MiB plus
#    the ed25519 signature checks alone, measured by the same binary with the same crates,
#    under `qemu-system-arm -icount shift=0` (virtual clock = instruction count).
# Needs qemu-system-arm, binutils-arm-none-eabi (arm-none-eabi-size, -nm) and the
# thumbv7m-none-eabi Rust target, and installs them when missing, as scripts/test does (the
# Debian packages as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
board_dir=bootloader/boards/mps2-an385
board=$board_dir/board.toml
target_dir=$root/target/qemu-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Installs the Debian packages given that are missing (progress on stderr: stdout is the report).
# shellcheck source=bench/lib.sh
source bench/lib.sh
need_apt bench/qemu.sh qemu-system-arm binutils-arm-none-eabi
rustup target list --installed | grep -qx thumbv7m-none-eabi || rustup target add thumbv7m-none-eabi >&2
for tool in qemu-system-arm arm-none-eabi-size arm-none-eabi-nm; do
  command -v "$tool" >/dev/null || { echo "bench/qemu.sh: $tool is missing after installing its package" >&2; exit 1; }
done

cargo build -q --release -p sigil-signer -p sigil-flash >&2
sigil=$root/target/release/sigil
flash=$root/target/release/sigil-flash

# Keys and a trust root made by `sigil`, as a release engineer would.
make_keys "$work"

build() { # build NAME CARGO-FEATURE-ARGS... -> $work/NAME.elf
  local name=$1
  shift
  (cd "$board_dir" && SIGIL_TRUST_ROOT="$work/root.sgl" CARGO_TARGET_DIR="$target_dir" \
    cargo build -q --release --locked --target thumbv7m-none-eabi -p sigil-boot-mps2-an385 "$@") >&2
  cp "$target_dir/thumbv7m-none-eabi/release/sigil-boot" "$work/$name.elf"
}
# compact: the default build (sha2 `force-soft-compact`); unrolled: sha2's default code.
build release-compact
build bench-compact --features bench
build release-unrolled --no-default-features
build bench-unrolled --no-default-features --features bench
# With decryption (feature `encryption`: the device key store, decrypt while installing).
build release-encryption --features encryption
build bench-encryption --features encryption,bench

footprint() { # footprint ELF -> "text rodata data bss"
  arm-none-eabi-size -A "$1" | awk '
    $1==".vector_table" || $1==".text" {t+=$2} $1==".rodata" {r+=$2}
    $1==".data" {d+=$2} $1==".bss" || $1==".uninit" {b+=$2}
    END {print t, r, d, b}'
}

# A 1 MiB payload signed for the board; the bench build stops where it would jump.
vendor=$(sed -n 's/^vendor = "\(.*\)"/\1/p' "$board")
device=$(sed -n 's/^device = "\(.*\)"/\1/p' "$board")
alignment=$(sed -n 's/^payload_alignment = \([0-9]*\).*/\1/p' "$board")
base=$(sed -n 's/^base = \(0x[0-9a-fA-F_]*\).*/\1/p' "$board" | tr -d _)
sign() { # sign NAME VERSION COUNTER
  head -c 1048576 /dev/urandom > "$work/$1.bin"
  "$sigil" sign "$work/$1.bin" --key-set "$work/keyset.sgl" --key "$work/release1.pem" \
    --product "$vendor/$device" --component app --version "$2" --security-counter "$3" \
    --alignment "$alignment" --out "$work/$1.sgl" >/dev/null
}
sign v1 1.0.0 1
sign v2 2.0.0 2
# The device's X25519 key, and v2 encrypted for it (the same 1 MiB image as v2) with its key
# record.
"$sigil" keygen --x25519 --out "$work/device.pem" >/dev/null
"$sigil" sign "$work/v2.bin" --key-set "$work/keyset.sgl" --key "$work/release1.pem" \
  --product "$vendor/$device" --component app --version 2.0.0 --security-counter 2 \
  --alignment "$alignment" --encrypt-to "$work/device.pub.pem" --key-records "$work/records" \
  --content-key "$work/v2.cek" --out "$work/v2-encrypted.sgl" >/dev/null
record=$(ls "$work"/records/*.wkey)

run() { # run BENCH_ELF FLASH_DIR -> the firmware's "bench:" line
  (cd "$2" && timeout 600 qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -nographic \
    -monitor none -serial null -icount shift=0 \
    -semihosting-config enable=on,target=native -kernel "$1" \
    -device "loader,file=flash.bin,addr=$base" 2>&1 || true) | grep '^bench:'
}
field() { sed -n "s/.* $2=\([0-9]*\).*/\1/p" <<<"$1"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a - b) * 100 / b }'; }
kib() { awk -v a="$1" 'BEGIN { printf "%.1f KiB", a / 1024 }'; }
mi() { awk -v a="$1" 'BEGIN { printf "%.2f M", a / 1e6 }'; }
verdict() { if [ "$1" -le "$2" ]; then echo "met"; else echo "**missed**"; fi; }

rows=()
for variant in compact unrolled; do
  # Fresh flash images per run: an update boot changes them.
  mkdir -p "$work/$variant/idle" "$work/$variant/update"
  "$flash" --board "$board" assemble --installed "$work/v1.sgl" \
    --out "$work/$variant/idle/flash.bin" >/dev/null
  "$flash" --board "$board" assemble --installed "$work/v1.sgl" --staged "$work/v2.sgl" --pending \
    --out "$work/$variant/update/flash.bin" >/dev/null
  idle=$(run "$work/bench-$variant.elf" "$work/$variant/idle")
  update=$(run "$work/bench-$variant.elf" "$work/$variant/update")
  [ -n "$idle" ] && [ -n "$update" ] || { echo "bench/qemu.sh: no bench line from QEMU ($variant)" >&2; exit 1; }
  echo "$variant idle:   $idle" >&2
  echo "$variant update: $update" >&2
  read -r text rodata data bss <<<"$(footprint "$work/release-$variant.elf")"
  flash_bytes=$((text + rodata + data))
  boot=$(field "$idle" boot_insns)
  sha=$(field "$idle" sha256_insns)
  sigs=$(field "$idle" sig_insns)
  stack=$(field "$idle" peak_stack)
  ustack=$(field "$update" peak_stack)
  peak=$((stack > ustack ? stack : ustack))
  ram=$((data + bss + peak))
  uboot=$(field "$update" boot_insns)
  [ "$variant" = compact ] && uboot_compact=$uboot
  label="sha2 \`force-soft-compact\` (default)"
  [ "$variant" = unrolled ] && label="sha2 unrolled (\`--no-default-features\`)"
  rows+=("| $label | $(kib "$flash_bytes"): $(verdict "$flash_bytes" 28672) ($text text incl. the vector table, $rodata rodata) | $(kib "$ram"): $(verdict "$ram" 12288) ($((data + bss)) B static + $peak B peak stack) | $(mi "$boot") | $(mi "$sha") + $(mi "$sigs") = $(mi $((sha + sigs))) | $(pct "$boot" $((sha + sigs))): $(verdict $((boot * 100)) $(((sha + sigs) * 105))) | $(mi "$uboot") |")
done

# With decryption: the encryption build on a device with its key provisioned. Idle boot of the
# installed image (every boot: the same verification as without the feature), an update boot
# with a raw v2 (the previous image is still encrypted on its way to staging) and with the
# encrypted v2 (decrypted as it is swapped in).
mkdir -p "$work/enc/idle" "$work/enc/raw" "$work/enc/encrypted"
"$flash" --board "$board" assemble --installed "$work/v1.sgl" --device-key "$work/device.pem" \
  --out "$work/enc/idle/flash.bin" >/dev/null
"$flash" --board "$board" assemble --installed "$work/v1.sgl" --device-key "$work/device.pem" \
  --staged "$work/v2.sgl" --pending --out "$work/enc/raw/flash.bin" >/dev/null
"$flash" --board "$board" assemble --installed "$work/v1.sgl" --device-key "$work/device.pem" \
  --staged "$work/v2-encrypted.sgl" --key-record "$record" --pending \
  --out "$work/enc/encrypted/flash.bin" >/dev/null
e_idle=$(run "$work/bench-encryption.elf" "$work/enc/idle")
e_raw=$(run "$work/bench-encryption.elf" "$work/enc/raw")
e_enc=$(run "$work/bench-encryption.elf" "$work/enc/encrypted")
[ -n "$e_idle" ] && [ -n "$e_raw" ] && [ -n "$e_enc" ] || { echo "bench/qemu.sh: no bench line from QEMU (encryption)" >&2; exit 1; }
echo "encryption idle:      $e_idle" >&2
echo "encryption raw:       $e_raw" >&2
echo "encryption encrypted: $e_enc" >&2
# The update boot must have installed v2 (the bench build reports the image it would start).
for line in "$e_raw" "$e_enc"; do
  [ "$(field "$line" counter)" = 2 ] || { echo "bench/qemu.sh: the update did not install v2: $line" >&2; exit 1; }
done
read -r text rodata data bss <<<"$(footprint "$work/release-encryption.elf")"
e_flash=$((text + rodata + data))
read -r ptext prodata pdata _ <<<"$(footprint "$work/release-compact.elf")"
p_flash=$((ptext + prodata + pdata))
e_peak=0
for line in "$e_idle" "$e_raw" "$e_enc"; do
  s=$(field "$line" peak_stack)
  [ "$s" -gt "$e_peak" ] && e_peak=$s
done
e_ram=$((data + bss + e_peak))
e_boot=$(field "$e_idle" boot_insns)
e_sha=$(field "$e_idle" sha256_insns)
e_sigs=$(field "$e_idle" sig_insns)
e_raw_boot=$(field "$e_raw" boot_insns)
e_enc_boot=$(field "$e_enc" boot_insns)
enc_rows=("| flash (text + rodata + data) | $(kib "$e_flash") ($e_flash B; $((e_flash - p_flash)) B more than without decryption): $(verdict "$e_flash" 32768) (≤ 32 KiB) |"
  "| RAM (static + peak stack) | $(kib "$e_ram") ($((data + bss)) B + $e_peak B): $(verdict "$e_ram" 12288) (≤ 12 KiB) |"
  "| idle boot, 1 MiB (every boot) | $(mi "$e_boot") against $(mi $((e_sha + e_sigs))) bare: $(pct "$e_boot" $((e_sha + e_sigs))): $(verdict $((e_boot * 100)) $(((e_sha + e_sigs) * 105))) (≤ +5%) |"
  "| update boot, raw v2 (the previous image encrypted into staging) | $(mi "$e_raw_boot") |"
  "| update boot, encrypted v2 (decrypted while swapped in) | $(mi "$e_enc_boot"): $(pct "$e_enc_boot" "$e_raw_boot") against the raw update on this build |")

cat <<MD
## qemu: bootloader firmware (mps2-an385, Cortex-M3)

\`bench/qemu.sh\`: the release bootloader (opt-level "z", fat LTO, panic = "abort",
codegen-units = 1, no logging) in $(qemu-system-arm --version | head -1).

- Flash: text (incl. the vector table) + rodata + data of the release build. Targets: ≤ 28 KiB
  flash, ≤ 12 KiB RAM. Reference: MCUboot with ed25519 is about 40 KB on nRF52840.
- RAM: static data + bss, plus the peak stack of the boot decision, measured on the bench build
  by painting the stack (cortex-m-rt \`paint-stack\`) and scanning it at the jump, over an idle
  boot and an update boot (the larger is shown).
- Instructions under \`-icount shift=0\`: SysTick runs on the 25 MHz core clock, so one tick is
  40 guest instructions (±40). "Boot" runs from the start of \`main\` to the jump, for a 1 MiB
  payload. The baseline is measured by the same binary with the same crates (sha2 0.10,
  curve25519-dalek 4.1, the strict ed25519 check of \`sigil_manifests::keys\`): SHA-256 of the
  same 1 MiB read in place from the
  memory-mapped flash, as the boot reads it, plus every signature of the bundle (1 root + 1
  release) checked directly. The update boot verifies the staged 1 MiB bundle, swaps 257
  sectors each way and verifies the installed bundle again.
- The lock is in: the release build is the bootloader that boots applications, with the board's
  \`BoardLock\` (MPU, latch), the flash service the application calls after the jump and the
  fault handler; the instruction counts include the core's \`StateLock::lock\` call.
- The board's flash is memory-mapped, so the bootloader verifies bundles in place
  (\`sigil_bootloader::BootFlash\`) and needs no envelope buffer; a port whose flash is not
  mapped passes a 4369-byte envelope buffer (\`MIN_VERIFY_BUFFER_LEN\`: root chains are walked
  one root update at a time in it) and reads in 256-byte chunks (4.3 KiB more RAM).
- The default build links the board's size-optimised memory routines (feature \`compact-mem\`:
  memcpy and memset word-wise when aligned, memcmp, and a byte-wise memmove, which only shifts
  the protected state's rejected list) instead of compiler-builtins' speed-optimised ones, and
  folds identical functions at link time (\`--icf=all\`): together about 3.3 KiB less flash
  (memmove alone 1.5 KiB), for about 1% more instructions per boot (the baseline uses the same
  routines, so the ratio is unaffected).
- Where the flash goes: ed25519 verification (curve25519-dalek's field and point code,
  SHA-512) is about 7.5 KiB of it at opt-level "z"; see the symbols below. The strict check is
  ed25519-dalek's \`verify_strict\` written out over curve25519-dalek with \`s < l\` as a byte
  comparison, held to ed25519-dalek's answers by a test; the challenge hash is reduced mod l
  in variable time (it is public) by \`manifests/src/scalar.rs\`, held to curve25519-dalek's
  reduction by tests, and the checked scalars are loaded as they are, so no Montgomery
  multiplication is linked (2.5 KiB). \`sigil_manifests::Error\` is kept to 4 bytes so every
  verifier stage returns it in registers (about 1.2 KiB less than with 12 bytes). The boot
  state (250 bytes) is changed in place and written from there, never copied by value.
- Peak stack: the signature check runs out of line (the key decode, the \`R\` check and the
  SHA-512 challenge in their own frames) and the checked envelope is written in place, so
  only the double-base multiplication's 3.7 KiB frame and its lookup table (1.9 KiB) sit under
  the boot's own frames at the deepest point.
- The unrolled row is the faster, larger alternative (about 25% fewer instructions per boot);
  the targets apply to the default build.

| build | flash | RAM | idle boot, 1 MiB (instructions) | bare SHA-256 + signatures | overhead (≤ +5%) | update boot |
|---|---|---|---|---|---|---|
MD
printf '%s\n' "${rows[@]}"
cat <<MD

**With decryption** (\`--features encryption\`, FORMAT.md §9; the device's X25519 key
provisioned with \`sigil-flash assemble --device-key\`; the issue's budget: the whole
bootloader ≤ 32 KiB flash and ≤ 12 KiB RAM, every-boot cost unchanged). The update boots
verify the staged 1 MiB bundle, swap 257 sectors each way (on a device with a key, the
previous image leaving the active slot is encrypted under the device-local keystream either
way) and verify the installed image; the encrypted one also opens the key record (X25519, two
HKDF-SHA512: the key-encryption key, then the content key's commitment and keystream) and decrypts the payload as it is swapped in. Without decryption the same raw
update boot costs $(mi "$uboot_compact") (default build, table above).

The micro:bit and nRF52840-DK ports are not built with decryption: their boot firmware has
no device key store wired yet (no \`encryption\` feature). With one, each would take about
this board's decryption delta ($((e_flash - p_flash)) B) on top of its footprint in the boards
section.

| with decryption | |
|---|---|
MD
printf '%s\n' "${enc_rows[@]}"
echo
echo "Largest symbols of the default release build (bytes):"
echo
echo '```'
arm-none-eabi-nm -C --size-sort -S "$work/release-compact.elf" | tail -8 |
  while read -r _ size _ name; do printf '%6d  %s\n' "$((16#$size))" "$name"; done
echo '```'
