#!/usr/bin/env bash
# Cost of the key check (FORMAT.md §3: canonical encoding, small order, prime-order subgroup)
# that trust roots, key sets and device enrolments pass, against the verify_strict it
# accompanies: instructions counted by callgrind, on the host, with curve25519-dalek's portable
# 32-bit backend (the one the Cortex-M bootloader runs) instead of the host's 64-bit or AVX2
# code. Prints a Markdown section on stdout.
#
#   bench/keys.sh          N=20 repetitions per operation
#
# Needs valgrind (apt-get install valgrind; installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20}
if ! command -v valgrind >/dev/null; then
  sudo=$(command -v sudo || true)
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
fi

# Its own target directory: the backend cfg changes every curve25519-dalek build.
export CARGO_TARGET_DIR=$PWD/target/bench-u32
export RUSTFLAGS='--cfg curve25519_dalek_backend="serial" --cfg curve25519_dalek_bits="32"'
cargo build -q --release --locked -p sigil-manifests --example key_check_cost >&2
bin=$CARGO_TARGET_DIR/release/examples/key_check_cost

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count() { # count OPERATION REPS -> instructions of the whole run
  valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_op() { # per_op OPERATION -> instructions of one operation
  local one many
  one=$(count "$1" 1)
  many=$(count "$1" $((N + 1)))
  echo $(((many - one) / N))
}

verify=$(per_op verify-strict)
check=$(per_op key-check)
decompress=$(per_op decompress)
ct=$(per_op ct-torsion)
boot=$(per_op boot)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cat <<MD
## keys: the key check of trust roots, key sets and enrolments

\`bench/keys.sh\`: instructions per operation counted by callgrind ($(valgrind --version)), host
build (release) with curve25519-dalek's portable 32-bit backend, as on the Cortex-M bootloader;
the difference of runs with $((N + 1)) and 1 repetitions, divided by $N. Every key of a decoded trust
root (step 0) or key set (step 5b) passes the check, so a boot pays it once per listed key.

| operation | instructions | ÷ verify_strict |
|---|---:|---:|
| \`verify_strict\`, 300-byte message (the peer) | $verify | 1.00 |
| key check (\`keys::check_public_key\`: canonical, decompress, small order, subgroup) | $check | $(ratio "$check" "$verify") |
| before: decompress + small order only | $decompress | $(ratio "$decompress" "$verify") |
| not taken: constant-time \`is_torsion_free\` + decompress | $((ct + decompress)) | $(ratio "$((ct + decompress))" "$verify") |
| a boot's verification, 1-key root and 1-key key set, 1000-byte payload | $boot | $(ratio "$boot" "$verify") |
MD
