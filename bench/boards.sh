#!/usr/bin/env bash
# Footprint and boot cost of the board ports beside each other: the microbit (nRF51822,
# Cortex-M0, 16 KiB RAM) under QEMU against the bare crypto of the same binary and against the
# Cortex-M3 build (mps2-an385) on the same 128 KiB image; flash and RAM of every port's release
# bootloader beside MCUboot's published ed25519 figure for nRF52840. Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=$root/target/qemu-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh
need_apt bench/boards.sh qemu-system-arm binutils-arm-none-eabi
for t in thumbv7m-none-eabi thumbv6m-none-eabi thumbv7em-none-eabihf; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done
for tool in qemu-system-arm arm-none-eabi-size; do
  command -v "$tool" >/dev/null || { echo "bench/boards.sh: $tool is missing after installing its package" >&2; exit 1; }
done

cargo build -q --release -p sigil-signer -p sigil-flash >&2
sigil=$root/target/release/sigil
flash=$root/target/release/sigil-flash
make_keys "$work"

build() { # build BOARD TARGET NAME CARGO-ARGS... -> $work/NAME.elf
  local board=$1 target=$2 name=$3
  shift 3
  (cd "bootloader/boards/$board" && SIGIL_TRUST_ROOT="$work/root.sgl" CARGO_TARGET_DIR="$target_dir" \
    cargo build -q --release --locked --target "$target" -p "sigil-boot-$board" "$@") >&2
  cp "$target_dir/$target/release/sigil-boot" "$work/$name.elf"
}
build microbit thumbv6m-none-eabi microbit-release
SIGIL_BOARD_TOML=$root/bootloader/boards/microbit/bench.board.toml \
  build microbit thumbv6m-none-eabi microbit-bench --features bench
build mps2-an385 thumbv7m-none-eabi mps2-bench --features bench
build nrf52840-dk thumbv7em-none-eabihf nrf52840-release

footprint() { # footprint ELF -> "text rodata data bss"
  arm-none-eabi-size -A "$1" | awk '
    $1==".vector_table" || $1==".text" {t+=$2} $1==".rodata" {r+=$2}
    $1==".data" {d+=$2} $1==".bss" || $1==".uninit" {b+=$2}
    END {print t, r, d, b}'
}
get() { sed -n "s/^$2 = \"*\([^\" ]*\)\"*.*/\1/p" "$1" | tr -d _ | head -1; }

head -c 131072 /dev/urandom > "$work/image.bin"
sign() { # sign BOARD_TOML NAME VERSION COUNTER
  "$sigil" sign "$work/image.bin" --key-set "$work/keyset.sgl" --key "$work/release1.pem" \
    --product "$(get "$1" vendor)/$(get "$1" device)" --component app --version "$3" \
    --security-counter "$4" --alignment "$(get "$1" payload_alignment)" --out "$work/$2.sgl" >/dev/null
}
run() { # run BOARD_TOML ELF DIR QEMU-MACHINE-ARGS... -> the firmware's "bench:" line
  local board=$1 elf=$2 dir=$3
  shift 3
  (cd "$dir" && timeout 900 qemu-system-arm "$@" -nographic -monitor none -serial null -icount shift=0 \
    -semihosting-config enable=on,target=native -kernel "$elf" \
    -device "loader,file=flash.bin,addr=$(get "$board" base)" 2>&1 || true) | grep '^bench:'
}
field() { sed -n "s/.* $2=\([0-9]*\).*/\1/p" <<<"$1"; }
mi() { awk -v a="$1" 'BEGIN { printf "%.2f M", a / 1e6 }'; }
kib() { awk -v a="$1" 'BEGIN { printf "%.1f KiB", a / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

declare -A line
for b in microbit mps2; do
  if [ $b = microbit ]; then
    toml=$root/bootloader/boards/microbit/bench.board.toml
    machine=(-machine microbit -global nrf51-soc.flash-size=0x80000)
  else
    toml=$root/bootloader/boards/mps2-an385/board.toml
    machine=(-machine mps2-an385 -cpu cortex-m3)
  fi
  sign "$toml" "$b-v1" 1.0.0 1
  sign "$toml" "$b-v2" 2.0.0 2
  mkdir -p "$work/$b/idle" "$work/$b/update"
  "$flash" --board "$toml" assemble --installed "$work/$b-v1.sgl" --out "$work/$b/idle/flash.bin" >/dev/null
  "$flash" --board "$toml" assemble --installed "$work/$b-v1.sgl" --staged "$work/$b-v2.sgl" --pending \
    --out "$work/$b/update/flash.bin" >/dev/null
  for kind in idle update; do
    line[$b-$kind]=$(run "$toml" "$work/$b-bench.elf" "$work/$b/$kind" "${machine[@]}")
    [ -n "${line[$b-$kind]}" ] || { echo "bench/boards.sh: no bench line from QEMU ($b $kind)" >&2; exit 1; }
    echo "$b $kind: ${line[$b-$kind]}" >&2
  done
done

read -r ntext nrodata ndata nbss <<<"$(footprint "$work/nrf52840-release.elf")"
read -r text rodata data bss <<<"$(footprint "$work/microbit-release.elf")"
mb_flash=$((text + rodata + data))
mb_static=$((data + bss))
mi_idle=${line[microbit-idle]}
stack_idle=$(field "$mi_idle" peak_stack)
stack_update=$(field "${line[microbit-update]}" peak_stack)
peak=$((stack_idle > stack_update ? stack_idle : stack_update))
reserved=$(field "$mi_idle" stack_reserved)
boot=$(field "$mi_idle" boot_insns)
sha=$(field "$mi_idle" sha256_insns)
sigs=$(field "$mi_idle" sig_insns)
m3=$(field "${line[mps2-idle]}" boot_insns)
m3_sha=$(field "${line[mps2-idle]}" sha256_insns)
m3_sigs=$(field "${line[mps2-idle]}" sig_insns)

cat <<MD
## boards: the bootloader on the board ports (microbit Cortex-M0, beside mps2-an385 Cortex-M3)

\`bench/boards.sh\`: release bootloaders (opt-level "z", fat LTO, panic = "abort",
codegen-units = 1, no logging), $(qemu-system-arm --version | head -1).

Footprint of the release bootloader with everything in (boot logic, ed25519 verification, the
lock, the jump):

| port | flash (text + rodata + data) | RAM: static | RAM: peak stack (idle / update boot) | RAM kept after the jump |
|---|---|---|---|---|
| microbit (nRF51822, \`thumbv6m-none-eabi\`) | $(kib "$mb_flash") ($text text incl. the vector table, $rodata rodata, $data data) | $mb_static B | $peak B ($stack_idle / $stack_update) of $reserved B reserved | 8 B: the exception forwarding record; the application is linked with the rest of the 16 KiB |
| nRF52840-DK (\`thumbv7em-none-eabihf\`) | $(kib $((ntext + nrodata + ndata))) = $((ntext + nrodata + ndata)) B ($ntext text incl. the vector table, $nrodata rodata, $ndata data) | $((ndata + nbss)) B | not measured: no emulator runs this part (the README's bring-up checklist measures it on a board); expect the microbit's plus the 4369-byte envelope buffer | 0 B: the application is linked with all 256 KiB |
| MCUboot, ed25519, nRF52840 (published) | about 40 KB | | | |

- The nRF52840 build reads flash through nrf-hal's \`Nvmc\` (by copy), so the core verifies
  through a 4369-byte envelope buffer (\`MIN_VERIFY_BUFFER_LEN\`, which holds every bundle:
  a root chain is walked one root update at a time in it) and the buffered verification path
  is compiled in; the QEMU ports verify in place and link none of it. scripts/test gates the nRF52840 figure under 40,000 bytes
  (\`bootloader/boards/nrf52840-dk/check.sh\`).
- Peak stack: cortex-m-rt \`paint-stack\` fills the stack at reset, the bench build scans it at
  the end of the boot decision (before the baselines run). The stack is the top
  \`bootloader_ram\` = 15 KiB of RAM while the bootloader runs; the Cortex-M0 port keeps only
  its 8-byte exception forwarding record after the jump (the lock is the flash controller's;
  there is no privileged service), so the application then has the rest of the 16 KiB. The deepest path is the ed25519 check: curve25519-dalek's
  \`vartime_double_scalar_mul_basepoint\` (3.7 KiB frame: two 8-point lookup tables of 1.25 KiB
  each and two 256-entry NAFs) over \`NafLookupTable5::from\` (1.9 KiB), under the strict
  check's own frame (\`sigil_manifests::keys\`, 0.7 KiB: the key decode, the \`R\` check and the
  SHA-512 challenge run in frames of their own) and the boot's.
- Guest instructions under \`-icount shift=0\` (TIMER0 at 16 MHz: one tick per 62.5
  instructions). A verified idle boot of a 128 KiB random payload (the microbit bench board,
  \`bootloader/boards/microbit/bench.board.toml\`: 200-page slots in QEMU's 512 KiB
  \`nrf51-soc.flash-size\`), against the bare crypto measured by the same binary with the same
  crates: SHA-256 of the payload read in place, plus the signature checks (decoding the root and
  the key set, with their key checks, and both strict signature checks through
  \`sigil_manifests::keys::verify_threshold\`).

| build | idle boot, 128 KiB | bare SHA-256 + signatures | boot ÷ bare | update boot (verify staged, swap, verify) |
|---|---|---|---|---|
| microbit, Cortex-M0 | $(mi "$boot") | $(mi "$sha") + $(mi "$sigs") = $(mi $((sha + sigs))) | $(ratio "$boot" $((sha + sigs))) | $(mi "$(field "${line[microbit-update]}" boot_insns)") |
| mps2-an385, Cortex-M3, same image | $(mi "$m3") | $(mi "$m3_sha") + $(mi "$m3_sigs") = $(mi $((m3_sha + m3_sigs))) | $(ratio "$m3" $((m3_sha + m3_sigs))) | $(mi "$(field "${line[mps2-update]}" boot_insns)") |
| microbit ÷ Cortex-M3 | $(ratio "$boot" "$m3") | $(ratio $((sha + sigs)) $((m3_sha + m3_sigs))) | | |

The Cortex-M0 has no 32×32→64 multiply (\`umull\`) and no hardware divide: curve25519-dalek's
32-bit field arithmetic calls \`__aeabi_lmul\`-style helpers for each limb product, which is
where most of the extra instructions go.
MD
