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
