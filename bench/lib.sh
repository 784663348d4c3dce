# Shared by the bench scripts that need Debian packages (sourced, not run).

# need_apt NAME PKG...: installs the Debian packages given that are missing (apt-get; sudo when
# not root), or exits saying which could not be installed. NAME prefixes the messages.
need_apt() {
  local name=$1 missing=() p
  shift
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  echo "$name: installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } >&2 ||
    { echo "$name: could not install ${missing[*]} (apt-get install -y ${missing[*]})" >&2; exit 1; }
}

# make_keys DIR: a throwaway root (root.sgl, root1.pem) and release key set (keyset.sgl,
# release1.pem, key-set version 1) in DIR, made with $sigil.
make_keys() {
  (
    cd "$1"
    "$sigil" keygen --out root1.pem >/dev/null
    "$sigil" keygen --out release1.pem >/dev/null
    "$sigil" root init --threshold 1 --out root.sgl root1.pub.pem >/dev/null
    "$sigil" keyset create --threshold 1 --key-set-version 1 --out keyset.sgl release1.pub.pem >/dev/null
    "$sigil" keyset sign keyset.sgl --key root1.pem --root root.sgl >/dev/null
  )
}
