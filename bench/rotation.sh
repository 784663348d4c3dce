#!/usr/bin/env bash
# Root rotation figures for BENCHMARKS.md (QEMU mps2-an385, Cortex-M3), as Markdown: guest
# instructions (`-icount shift=0`) from the start of `main` to the jump, on the bench build of
# the bootloader, for a 1 MiB payload:
#  - a boot with no root update (root 1 bundle, no chain: what every boot costs without rotation);
#  - the boot that applies one root update (the installed bundle is signed under root 2 and
#    carries the update 1 -> 2; the device is on root 1 and adopts root 2 in this boot);
#  - the next boot of that device (root 2 adopted, nothing pending: the chain's update 2 is
#    matched by digest, not checked again);
# and the flash of the release build. Trust roots of one key, threshold 1, as bench/qemu.sh.
# Usage: bench/rotation.sh [BASELINE] prints the Markdown section; BASELINE (a checkout or
# export of the commit before rotation, e.g. `git worktree add /tmp/base main`) is measured the
# same way as the peer row. `bench/rotation.sh --row REPO` prints one table row for REPO.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" != --row ]; then
  rows=$("$0" --row "$here")
  base_row=""
  [ -n "${1:-}" ] && base_row=$("$0" --row "$1")
  cat <<MD
## rotation: root rotation in the bootloader (mps2-an385, Cortex-M3)

\`bench/rotation.sh${1:+ $1}\`: the bench build of the bootloader in QEMU (\`-icount shift=0\`,
guest instructions from the start of \`main\` to the jump, 1 MiB payload, roots and key sets of
one key, threshold 1) and the flash of the release build (text incl. the vector table + rodata +
data). "No rotation": a root 1 bundle without a chain. "Applying one root update": the device is
on root 1 and its bundle, signed under root 2, carries the update 1 -> 2 (two signature checks,
the key check of root 2's key, the root floor written). "Next boot": the same device with root 2
adopted; the chain's update 2 is matched against the stored digest and not checked again.

| build | flash | boot, no rotation | boot applying one root update | next boot, root 2 adopted |
|---|---|---|---|---|
MD
  [ -n "$base_row" ] && echo "${base_row%|}| — | — |" | sed 's/^| \([^|]*\)|/| \1(baseline) |/'
  echo "$rows"
  exit 0
fi
root=$(cd "$2" && pwd)
cd "$root"
board_dir=bootloader/boards/mps2-an385
board=$board_dir/board.toml
target_dir=$root/target/qemu-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for tool in qemu-system-arm arm-none-eabi-size; do
  command -v "$tool" >/dev/null || { echo "bench/rotation.sh: $tool is missing (apt-get install qemu-system-arm binutils-arm-none-eabi)" >&2; exit 1; }
done
cargo build -q --release -p sigil-signer -p sigil-flash >&2
sigil=$root/target/release/sigil
flash=$root/target/release/sigil-flash
vendor=$(sed -n 's/^vendor = "\(.*\)"/\1/p' "$board")
device=$(sed -n 's/^device = "\(.*\)"/\1/p' "$board")
alignment=$(sed -n 's/^payload_alignment = \([0-9]*\).*/\1/p' "$board")
base=$(sed -n 's/^base = \(0x[0-9a-fA-F_]*\).*/\1/p' "$board" | tr -d _)
rotation=no
"$sigil" root rotate --help >/dev/null 2>&1 && rotation=yes
(
  cd "$work"
  "$sigil" keygen --out root1.pem >/dev/null
  "$sigil" keygen --out release1.pem >/dev/null
  "$sigil" root init --threshold 1 --out root.sgl root1.pub.pem >/dev/null
  "$sigil" keyset create --threshold 1 --key-set-version 1 --out keyset.sgl release1.pub.pem >/dev/null
  "$sigil" keyset sign keyset.sgl --key root1.pem --root root.sgl >/dev/null
  head -c 1048576 /dev/urandom > app.bin
  "$sigil" sign app.bin --key-set keyset.sgl --key release1.pem --product "$vendor/$device" \
    --component app --version 1.0.0 --security-counter 1 --alignment "$alignment" --out v1.sgl >/dev/null
  if [ "$rotation" = yes ]; then
    "$sigil" keygen --out root2.pem >/dev/null
    "$sigil" root rotate --from root.sgl -m 1 --out update2.sgl --root-out root2.sgl root2.pub.pem >/dev/null
    "$sigil" root sign update2.sgl --previous root.sgl --key root1.pem --key root2.pem >/dev/null
    "$sigil" root chain --root root.sgl --out chain.sgl update2.sgl >/dev/null
    "$sigil" keyset create --threshold 1 --key-set-version 1 --root-version 2 --out keyset2.sgl release1.pub.pem >/dev/null
    "$sigil" keyset sign keyset2.sgl --key root2.pem --root root2.sgl >/dev/null
    "$sigil" sign app.bin --key-set keyset2.sgl --key release1.pem --root root.sgl --root-chain chain.sgl \
      --product "$vendor/$device" --component app --version 1.0.0 --security-counter 1 \
      --alignment "$alignment" --out v1-root2.sgl >/dev/null
  fi
)
build() { # build NAME CARGO-ARGS... -> $work/NAME.elf
  local name=$1
  shift
  (cd "$board_dir" && SIGIL_TRUST_ROOT="$work/root.sgl" CARGO_TARGET_DIR="$target_dir" \
    cargo build -q --release --locked --target thumbv7m-none-eabi -p sigil-boot-mps2-an385 "$@") >&2
  cp "$target_dir/thumbv7m-none-eabi/release/sigil-boot" "$work/$name.elf"
}
build release
build bench --features bench
run() { # run FLASH_DIR -> boot_insns of the firmware's "bench:" line
  (cd "$1" && timeout 600 qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -nographic \
    -monitor none -serial null -icount shift=0 \
    -semihosting-config enable=on,target=native -kernel "$work/bench.elf" \
    -device "loader,file=flash.bin,addr=$base" 2>&1 || true) | sed -n 's/^bench: boot_insns=\([0-9]*\).*/\1/p'
}
mi() { awk -v a="$1" 'BEGIN { printf "%.2f M", a / 1e6 }'; }
mkdir -p "$work/plain" "$work/rotated"
"$flash" --board "$board" assemble --installed "$work/v1.sgl" --out "$work/plain/flash.bin" >/dev/null
plain=$(run "$work/plain")
flash_bytes=$(arm-none-eabi-size -A "$work/release.elf" | awk '$1==".vector_table" || $1==".text" || $1==".rodata" || $1==".data" {s+=$2} END {print s}')
echo "flash $flash_bytes bytes; boot, no rotation: $plain" >&2
echo "| $(git -C "$root" rev-parse --short HEAD 2>/dev/null || basename "$root") | $flash_bytes B ($(awk -v a="$flash_bytes" 'BEGIN { printf "%.1f KiB", a / 1024 }')) | $(mi "$plain") |" > "$work/row"
if [ "$rotation" = yes ]; then
  "$flash" --board "$board" assemble --installed "$work/v1-root2.sgl" --out "$work/rotated/flash.bin" >/dev/null
  apply=$(run "$work/rotated")
  after=$(run "$work/rotated")
  echo "applying one update: $apply; after: $after" >&2
  echo "| $(git -C "$root" rev-parse --short HEAD 2>/dev/null || basename "$root") | $flash_bytes B ($(awk -v a="$flash_bytes" 'BEGIN { printf "%.1f KiB", a / 1024 }')) | $(mi "$plain") | $(mi "$apply") | $(mi "$after") |" > "$work/row"
fi
cat "$work/row"
