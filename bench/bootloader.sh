#!/usr/bin/env bash
# Bootloader benchmark: flash wear of one update and one revert per sector of each slot (on the
# flash simulator, an image filling half the slot), compared with MCUboot's published figures,
# and the size and duration of the default power-fail suite.
#
#   bench/bootloader.sh        prints a Markdown section on stdout (bench/run collects it)
#
# Target (DESIGN.md): at most one erase per sector of each slot per update, and only the
# images' sectors touched.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

cargo build --release -q -p sigil-bootloader --example wear >&2
# Build the suite first so its timing below is the run only (debug profile, as `cargo test`).
cargo test -q -p sigil-bootloader --test powerfail --test bitrot --no-run >&2

echo "## bootloader"
echo
"$CARGO_TARGET_DIR/release/examples/wear"
echo
echo "### Power-fail suite"
echo
start=$(date +%s.%N)
log=$(cargo test -q -p sigil-bootloader --test powerfail -- --nocapture 2>&1)
end=$(date +%s.%N)
total=$(grep -o 'power-fail suite: [0-9]* trials' <<<"$log" | grep -o '[0-9]*' | head -n1)
echo "The default suite (\`cargo test -p sigil-bootloader --test powerfail\`, debug profile, all its"
echo "tests) ran ${total:-?} power-fail trials of the six-geometry sweep in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
echo "wall-clock on this machine. Each trial cuts the power once (or several times, in the random"
echo "lifecycles), boots again from flash alone and checks the invariants; \`SIGIL_POWERFAIL_FULL=1\`"
echo "runs 3000 random lifecycles per geometry instead of 200."
echo
echo '```'
grep -o 'power-fail [0-9a-z].*' <<<"$log"
echo '```'
echo
echo "### Bit-flip suite"
echo
start=$(date +%s.%N)
log=$(cargo test -q -p sigil-bootloader --test bitrot -- --nocapture 2>&1)
end=$(date +%s.%N)
flips=$(grep -o 'bit-flip suite: [0-9]* trials' <<<"$log" | grep -o '[0-9]*' | head -n1)
echo "The default bit-flip suite (\`cargo test -p sigil-bootloader --test bitrot\`) flipped every bit"
echo "of the protected state, one at a time, in a confirmed device, one cut mid-swap and one on trial:"
echo "${flips:-?} trials in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s wall-clock, each booting"
echo "exactly as without the flip. \`SIGIL_POWERFAIL_FULL=1\` adds two geometries."
echo
echo '```'
grep -o 'bit flips .*' <<<"$log"
echo '```'
