# Sourced by each firmware workspace's check.sh: a throwaway trust root for the bootloader to
# compile in (SIGIL_TRUST_ROOT, made with `sigil` from this repository), removed on exit.
# Expects `repo` (the repository root) to be set.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sigil() { cargo run -q --locked --manifest-path "$repo/Cargo.toml" -p sigil-signer --bin sigil -- "$@"; }
sigil keygen --out "$work/root1.pem" >/dev/null
sigil root init --threshold 1 --out "$work/root.sgl" "$work/root1.pub.pem" >/dev/null
export SIGIL_TRUST_ROOT=$work/root.sgl
