#!/usr/bin/env bash
# Peers benchmark: Sigil against the tools a user would otherwise pick, on this machine in this run.
#   1. Sign and verify a 1 MiB and a 256 MiB image: `sigil sign` / `sigil verify` against
#      `sha256sum` (the hashing limit), MCUboot's `imgtool` (PyPI), RAUC's `rauc bundle` /
#      `rauc info` and `mender-artifact write` / `validate` (Debian packages). hyperfine, medians.
#   2. Device check-ins: `sigil-server` (session-token check-ins, as bench/server.sh drives them)
#      against gooseBit (PyPI; a Python hawkBit-compatible server, SQLite, DDI polls with target
#      tokens), the same wrk load on both: same threads, connections and duration.
# A peer that cannot be installed or run is reported with the reason, never dropped.
#
#   bench/peers.sh            prints the Markdown section "peers" on stdout (bench/run collects it)
#   QUICK=1 bench/peers.sh    a 32 MiB large image, 5 s load runs, 50 devices
#
# Installs what is missing when root: hyperfine, wrk, rauc, squashfs-tools, mender-artifact (apt);
# imgtool and goosebit go into Python venvs in the temporary directory (IMGTOOL_SPEC,
# GOOSEBIT_SPEC choose the versions). Everything binds 127.0.0.1 on free ports and is stopped on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -n "${QUICK:-}" ]; then
  BIG_MIB=${BIG_MIB:-32} DURATION=${DURATION:-5} DEVICES=${DEVICES:-50}
fi
BIG_MIB=${BIG_MIB:-256}
RUNS_SMALL=${RUNS_SMALL:-10}
RUNS_BIG=${RUNS_BIG:-3}
DEVICES=${DEVICES:-200}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
IMGTOOL_SPEC=${IMGTOOL_SPEC:-imgtool==2.5.0}
GOOSEBIT_SPEC=${GOOSEBIT_SPEC:-goosebit==0.2.12}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

log() { echo "peers: $*" >&2; }

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools and peers. why[peer] holds the reason a peer is not measured.
declare -A why=()
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq && apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
# need PEER COMMAND APT-PACKAGE...: installs the packages if COMMAND is missing.
need() {
  local peer=$1 cmd=$2 out
  shift 2
  command -v "$cmd" >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    why[$peer]="\`$cmd\` is not installed and this is not root (apt-get install $*)"
    return 1
  fi
  log "installing $*"
  if ! out=$(apt_install "$@" 2>&1); then
    echo "$out" >&2
    why[$peer]="\`apt-get install $*\` failed: $(grep -m1 '^E:' <<<"$out" || tail -n1 <<<"$out")"
    return 1
  fi
  command -v "$cmd" >/dev/null && return 0
  why[$peer]="\`apt-get install $*\` did not provide \`$cmd\`"
  return 1
}
need hyperfine hyperfine hyperfine || { echo "${why[hyperfine]}" >&2; exit 1; }
need wrk wrk wrk || { echo "${why[wrk]}" >&2; exit 1; }
if need rauc rauc rauc squashfs-tools; then need rauc mksquashfs squashfs-tools || true; fi
need mender mender-artifact mender-artifact || true
if [ -n "${why[mender]:-}" ] && command -v apt-cache >/dev/null; then
  cand=$(apt-cache policy mender-artifact 2>/dev/null | sed -n 's/^ *Candidate: //p')
  why[mender]+=" (apt-cache policy mender-artifact: candidate ${cand:-none})"
fi

# pyvenv NAME SPEC: a venv in the temporary directory with SPEC installed.
pyvenv() {
  local peer=$1 spec=$2 out
  if ! command -v python3 >/dev/null; then why[$peer]="python3 is not installed"; return 1; fi
  log "pip install $spec (venv)"
  if ! out=$(python3 -m venv "$work/venv-$peer" 2>&1 &&
    "$work/venv-$peer/bin/pip" install -q --disable-pip-version-check "$spec" 2>&1); then
    echo "$out" >&2
    why[$peer]="\`pip install $spec\` into a venv failed: $(grep -m1 -E '^ERROR|Error' <<<"$out" || tail -n1 <<<"$out")"
    return 1
  fi
}
pyvenv imgtool "$IMGTOOL_SPEC" || true
pyvenv goosebit "$GOOSEBIT_SPEC" || true
imgtool=$work/venv-imgtool/bin/imgtool

log "building sigil and sigil-server"
cargo build --release --locked -q -p sigil-signer -p sigil-server --bins >&2
cargo build --release --locked -q -p sigil-server --example bench_fleet >&2
sigil=$CARGO_TARGET_DIR/release/sigil
server=$CARGO_TARGET_DIR/release/sigil-server
fleet=$CARGO_TARGET_DIR/release/examples/bench_fleet

# Versions, as the tools state them.
declare -A ver=()
ver[sigil]=$("$sigil" --version)
ver[sha256sum]="coreutils $(sha256sum --version | head -1 | awk '{print $NF}')"
[ -z "${why[imgtool]:-}" ] && ver[imgtool]="imgtool $("$imgtool" version)"
[ -z "${why[rauc]:-}" ] && ver[rauc]=$(rauc --version)
[ -z "${why[mender]:-}" ] && ver[mender]=$(mender-artifact --version)

# Shows a command as run, without the temporary directory and build paths.
show() { sed -e "s|$work/venv-[a-z]*/bin/||g" -e "s|$CARGO_TARGET_DIR/release/||g" -e "s|$work/||g" <<<"$1"; }
median() { python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "—" }'; }

# ---------------------------------------------------------------------------------------------
# 1. Signing and verifying.
mkdir -p "$work/sign" "$work/sign/rauc-dir"
cd "$work/sign"
"$sigil" keygen --out root.pem >/dev/null
"$sigil" keygen --out release.pem >/dev/null
"$sigil" root init --threshold 1 --out root.sgl root.pub.pem >/dev/null
"$sigil" keyset create --threshold 1 --key-set-version 1 --out keyset.sgl release.pub.pem >/dev/null
"$sigil" keyset sign keyset.sgl --key root.pem --root root.sgl >/dev/null
if [ -z "${why[imgtool]:-}" ] && ! out=$("$imgtool" keygen -k imgtool.pem -t ed25519 2>&1); then
  why[imgtool]="\`imgtool keygen -t ed25519\` failed: $(tail -n1 <<<"$out")"
fi
if [ -z "${why[rauc]:-}" ]; then
  # RAUC signs CMS with an X.509 certificate; the self-signed certificate is also the keyring.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=sigil-bench \
    -keyout rauc-key.pem -out rauc-cert.pem 2>/dev/null
  printf '[update]\ncompatible=acme-pump\nversion=1.0.0\n\n[image.rootfs]\nfilename=rootfs.img\n' > rauc-dir/manifest.raucm
fi
if [ -z "${why[mender]:-}" ]; then
  # mender-artifact signs with RSA or ECDSA P-256 (it refuses ed25519 keys).
  openssl ecparam -genkey -name prime256v1 -noout -out mender-key.pem 2>/dev/null
  openssl ec -in mender-key.pem -pubout -out mender-pub.pem 2>/dev/null
fi

peers=(sigil sha256sum imgtool rauc mender)
declare -A sign_cmd=() verify_cmd=() sign_prep=() artifact=()
sign_cmd[sigil]="$sigil sign image.bin --key-set keyset.sgl --key release.pem --product acme/pump --component app --version 1.0.0 --security-counter 1 --out image.sgl --force"
verify_cmd[sigil]="$sigil verify image.sgl --root root.sgl --product acme/pump"
artifact[sigil]=image.sgl
verify_cmd[sha256sum]="sha256sum image.bin"
verify_cmd[imgtool]="$imgtool verify -k imgtool.pem image-signed.bin"
artifact[imgtool]=image-signed.bin
sign_cmd[rauc]="rauc bundle --cert=rauc-cert.pem --key=rauc-key.pem '--mksquashfs-args=-noI -noD -noF -noX' rauc-dir image.raucb"
sign_prep[rauc]="rm -f image.raucb"
verify_cmd[rauc]="rauc info --keyring=rauc-cert.pem image.raucb"
artifact[rauc]=image.raucb
sign_cmd[mender]="mender-artifact --compression none write rootfs-image -t dev -n rel -f image.bin -o image.mender -k mender-key.pem"
verify_cmd[mender]="mender-artifact validate -k mender-pub.pem image.mender"
artifact[mender]=image.mender

# time KEY COMMAND [PREPARE]: one checked run, then hyperfine; t[KEY] = median seconds or why not.
declare -A t=() rss=()
time_cmd() {
  local key=$1 cmd=$2 prep=${3:-} err
  [ -n "$prep" ] && bash -c "$prep"
  if ! err=$(bash -c "$cmd" 2>&1 >/dev/null); then
    t[$key]="failed: $(tail -n1 <<<"$err" | tr '|' '/')"
    return 1
  fi
  if ! hyperfine -N --style none --warmup "$warmup" --runs "$runs" --export-json h.json \
    ${prep:+--prepare "$prep"} "$cmd" >&2; then
    t[$key]="failed under hyperfine"
    return 1
  fi
  t[$key]=$(median h.json)
  if [ "$size" = big ] && [ -x /usr/bin/time ]; then
    [ -n "$prep" ] && bash -c "$prep"
    /usr/bin/time -f %M -o rss.txt bash -c "$cmd" >/dev/null 2>&1 &&
      rss[$key]=$(awk '{ printf "%.0f MiB", $1 / 1024 }' rss.txt)
  fi
}
# Flips one byte in the middle of a copy of the artifact: the verifier must reject it.
declare -A tamper=()
tamper_check() {
  local p=$1 a=${artifact[$1]}
  cp "$a" "tampered-$a"
  python3 - "tampered-$a" <<'PY'
import os, sys
p = sys.argv[1]
o = os.path.getsize(p) // 2
with open(p, "r+b") as f:
    f.seek(o); b = f.read(1); f.seek(o); f.write(bytes([b[0] ^ 1]))
PY
  if bash -c "${verify_cmd[$p]//$a/tampered-$a}" >/dev/null 2>&1; then tamper[$p]="NO"; else tamper[$p]="yes"; fi
  rm -f "tampered-$a"
}

rows_for_size() {
  local size=$1 mib=$2 p
  local runs=$RUNS_SMALL warmup=2
  [ "$size" = big ] && runs=$RUNS_BIG warmup=1
  log "signing: ${mib} MiB image"
  head -c "$((mib << 20))" /dev/urandom > image.bin
  ln -f image.bin rauc-dir/rootfs.img
  local bytes=$((mib << 20)) slot
  slot=$(printf '0x%x' $((bytes + (1 << 20))))
  sign_cmd[imgtool]="$imgtool sign --key imgtool.pem --header-size 0x200 --align 8 --version 1.0.0 --slot-size $slot --pad-header image.bin image-signed.bin"
  cat image.bin > /dev/null
  for p in "${peers[@]}"; do
    [ -n "${why[$p]:-}" ] && continue
    if [ -n "${sign_cmd[$p]:-}" ]; then
      time_cmd "$p:sign:$size" "${sign_cmd[$p]}" "${sign_prep[$p]:-}" || {
        t[$p:verify:$size]="not run: signing failed"
        continue
      }
    fi
    time_cmd "$p:verify:$size" "${verify_cmd[$p]}" || continue
    [ "$size" = small ] && [ -n "${artifact[$p]:-}" ] && tamper_check "$p"
    [ -n "${artifact[$p]:-}" ] && t[$p:bytes:$size]=$(stat -c %s "${artifact[$p]}")
  done
  # The 256 MiB files are not needed once measured.
  rm -f image.bin rauc-dir/rootfs.img image.sgl image-signed.bin image.raucb image.mender
}
rows_for_size small 1
rows_for_size big "$BIG_MIB"

# ---------------------------------------------------------------------------------------------
# 2. Check-ins: sigil-server against gooseBit.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url: until it answers at all (any status), at most 30 s
  for _ in $(seq 150); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.2
  done
  return 1
}
run_wrk() { # script url -> "rps p50 p99 requests errors", after 3 s of the same load to warm up
  wrk -t 2 -c "$CONNECTIONS" -d 3s --timeout 10s -s "$1" "$2" > /dev/null
  wrk -t 2 -c "$CONNECTIONS" -d "${DURATION}s" --timeout 10s -s "$1" "$2" | sed -n 's/^RESULT //p'
}

log "check-ins: sigil-server"
cd "$work"
"$fleet" root root.sgl
sport=$(free_port)
RUST_LOG=warn SIGIL_TRUST_ROOT="$work/root.sgl" SIGIL_RATE_PER_SECOND=10000000 SIGIL_RATE_BURST=10000000 \
  "$server" --listen "127.0.0.1:$sport" --data-dir "$work/sigil-data" > sigil-server.out 2> sigil-server.log &
sigil_pid=$!
pids+=("$sigil_pid")
for _ in $(seq 100); do grep -q "admin token" sigil-server.out 2>/dev/null && break; sleep 0.1; done
admin=$(sed -n 's/^first admin token.*: //p' sigil-server.out)
mkdir -p fleet
"$fleet" setup "127.0.0.1:$sport" "$admin" "$DEVICES" 65536 "$work/fleet" > /dev/null
cat "$root"/bench/wrk/{fleet,checkin,report}.lua > sigil.lua
sigil_answer=$(curl -s -X POST -H "Authorization: Bearer $(head -1 fleet/sessions.txt)" -H 'Content-Type: application/json' \
  -d '{"version":"1.0.0","security_counter":1,"state":"idle"}' "http://127.0.0.1:$sport/api/v1/device/checkin")
read -r s_rps s_p50 s_p99 _ s_n s_bad _ < <(SESSIONS="$work/fleet/sessions.txt" run_wrk sigil.lua "http://127.0.0.1:$sport/")
kill "$sigil_pid" 2>/dev/null || true
wait "$sigil_pid" 2>/dev/null || true

gb_rps="" gb_note=""
goosebit_run() {
  local venv=$work/venv-goosebit gb=$work/goosebit out
  mkdir -p "$gb/artifacts"
  cd "$gb"
  ver[goosebit]="goosebit $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("goosebit"))'), uvicorn $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("uvicorn"))'), $("$venv/bin/python" --version)"
  # gooseBit's documented set-up: `aerich upgrade` creates the SQLite schema from its migrations.
  cat > pyproject.toml <<EOF
[tool.aerich]
tortoise_orm = "goosebit.db.config.TORTOISE_CONF"
location = "$("$venv/bin/python" -c 'import goosebit, os; print(os.path.dirname(goosebit.__file__))')/db/migrations"
src_folder = "./."
EOF
  export GOOSEBIT_DB_URI="sqlite:///$gb/db.sqlite3" GOOSEBIT_ARTIFACTS_DIR="$gb/artifacts"
  export GOOSEBIT_LOGGING='{"version": 1, "root": {"level": "WARNING"}}'
  if ! out=$("$venv/bin/aerich" upgrade 2>&1); then
    echo "$out" >&2
    gb_note="\`aerich upgrade\` (database set-up) failed: $(tail -n1 <<<"$out")"
    return 1
  fi
  gport=$(free_port)
  start_goosebit() { # device auth mode
    GOOSEBIT_DEVICE_AUTH="{\"enable\": true, \"mode\": \"$1\"}" "$venv/bin/uvicorn" goosebit:app \
      --host 127.0.0.1 --port "$gport" --workers "$GB_WORKERS" --log-level warning --no-access-log \
      >> "$gb/goosebit.log" 2>&1 &
    gb_pid=$!
    pids+=("$gb_pid")
    wait_http "http://127.0.0.1:$gport/login"
  }
  stop_goosebit() { kill "$gb_pid" 2>/dev/null || true; wait "$gb_pid" 2>/dev/null || true; }
  # Enrol: in "setup" mode a device's first poll with a target token registers the token; its
  # config data (board, revision, version) completes the registration, as SWUpdate or the RAUC
  # hawkBit updater would send them.
  GB_WORKERS=1
  if ! start_goosebit setup; then
    gb_note="gooseBit did not answer on 127.0.0.1:$gport within 30 s: $(tail -n1 "$gb/goosebit.log")"
    return 1
  fi
  if ! out=$("$venv/bin/python" - "$gport" "$DEVICES" "$gb/devices.txt" 2>&1 <<'PY'
import http.client, json, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
def call(method, url, tok, body=None):
    h = {"Authorization": "TargetToken " + tok}
    if body is not None:
        body = json.dumps(body); h["Content-Type"] = "application/json"
    c.request(method, url, body=body, headers=h)
    r = c.getresponse(); data = r.read()
    if r.status != 200:
        sys.exit("%s %s -> %d %s" % (method, url, r.status, data[:200]))
    return json.loads(data)
with open(path, "w") as out:
    for i in range(n):
        dev, tok = "pump-%05d" % i, "tok-%05d-bench" % i
        base = "/DEFAULT/controller/v1/" + dev
        call("GET", base, tok)
        call("PUT", base + "/configData", tok,
             {"data": {"hw_boardname": "pump", "hw_revision": "1", "sw_version": "1.0.0"}})
        if "configData" in call("GET", base, tok)["_links"]:
            sys.exit("device %s is not registered after its config data" % dev)
        out.write("%s %s\n" % (dev, tok))
PY
  ); then
    gb_note="enrolling devices through the DDI API failed: $(tail -n1 <<<"$out")"
    return 1
  fi
  stop_goosebit
  # Measure in "strict" mode: every poll must carry the device's registered target token.
  GB_WORKERS=${GOOSEBIT_WORKERS:-2}
  if ! start_goosebit strict; then
    gb_note="gooseBit (strict mode) did not answer within 30 s: $(tail -n1 "$gb/goosebit.log")"
    return 1
  fi
  local dev tok code bad_code
  read -r dev tok < devices.txt
  code=$(curl -s -o gb-answer.json -w '%{http_code}' -H "Authorization: TargetToken $tok" "http://127.0.0.1:$gport/DEFAULT/controller/v1/$dev")
  bad_code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: TargetToken wrong" "http://127.0.0.1:$gport/DEFAULT/controller/v1/$dev")
  if [ "$code" != 200 ] || [ "$bad_code" != 401 ]; then
    gb_note="a DDI poll answered $code with the device's token and $bad_code with a wrong one (expected 200 and 401)"
    return 1
  fi
  gb_answer=$(cat gb-answer.json)
  # gooseBit's DDI poll (after fleet.lua): each as one of the devices listed, "<id> <token>"
  # a line, in the file $DEVICES_FILE.
  cat > goosebit-poll.lua <<'LUA'
local devices = {}
for line in io.lines(os.getenv("DEVICES_FILE")) do
  local id, tok = line:match("^(%S+) (%S+)$")
  devices[#devices + 1] = { id, tok }
end
function request()
  local d = pick(devices)
  return wrk.format("GET", "/DEFAULT/controller/v1/" .. d[1], { ["Authorization"] = "TargetToken " .. d[2] })
end
LUA
  cat "$root/bench/wrk/fleet.lua" goosebit-poll.lua "$root/bench/wrk/report.lua" > goosebit.lua
  log "check-ins: gooseBit"
  read -r gb_rps gb_p50 gb_p99 _ gb_n gb_bad _ < <(DEVICES_FILE="$gb/devices.txt" run_wrk goosebit.lua "http://127.0.0.1:$gport/")
  stop_goosebit
  [ -n "$gb_rps" ] || { gb_note="wrk reported no result against gooseBit"; return 1; }
}
if [ -n "${why[goosebit]:-}" ]; then
  gb_note=${why[goosebit]}
else
  goosebit_run || true
fi
cd "$work"

# ---------------------------------------------------------------------------------------------
# The section.
label() {
  case $1 in
    sigil) echo "sigil" ;;
    sha256sum) echo "sha256sum (hashing limit)" ;;
    imgtool) echo "MCUboot imgtool, ed25519" ;;
    rauc) echo "RAUC bundle (plain), CMS ECDSA P-256" ;;
    mender) echo "mender-artifact, ECDSA P-256" ;;
  esac
}
table() {
  local size=$1 p s v
  echo "| tool | version | sign (s) | ÷ sigil | verify (s) | ÷ sigil | artifact bytes |$([ "$size" = small ] && echo " rejects a flipped byte |" || echo " peak RSS sign / verify |")"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  for p in "${peers[@]}"; do
    if [ -n "${why[$p]:-}" ]; then
      echo "| $(label "$p") | not measured | ${why[$p]} | | | | | |"
      continue
    fi
    s=${t[$p:sign:$size]:-—}
    v=${t[$p:verify:$size]:-—}
    [ "$p" = sha256sum ] && s="(hash only)"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$p")" "${ver[$p]}" \
      "$s" "$(ratio "$s" "${t[sigil:sign:$size]:-}")" "$v" "$(ratio "$v" "${t[sigil:verify:$size]:-}")" \
      "${t[$p:bytes:$size]:-—}" \
      "$(if [ "$size" = small ]; then echo "${tamper[$p]:-—}"; else echo "${rss[$p:sign:$size]:-—} / ${rss[$p:verify:$size]:-—}"; fi)"
  done
  echo
  echo "sigil ÷ sha256sum: sign $(ratio "${t[sigil:sign:$size]:-}" "${t[sha256sum:verify:$size]:-}"), verify $(ratio "${t[sigil:verify:$size]:-}" "${t[sha256sum:verify:$size]:-}") (DESIGN.md: within 10% of sha256sum on a large file, see the signer section)."
}

ci_ratio=$(ratio "$s_rps" "${gb_rps:-}")
ci_verdict=$(awk -v r="$ci_ratio" 'BEGIN { if (r !~ /^[0-9.]+$/) print "not measured"; else print (r >= 10 ? "meets target" : "MISSES target") }')

cat <<EOF
## peers

\`bench/peers.sh\`: Sigil against the tools a user would otherwise choose, measured on this
machine ($(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1)) in this run. Ratios are
peer ÷ sigil: above 1.00 the peer is slower.

### Signing and verifying

A random image, warm page cache, files on $(df --output=fstype "$work" | tail -1). hyperfine $(hyperfine --version | cut -d' ' -f2),
median of $RUNS_SMALL runs (1 MiB, 2 warm-up runs) and $RUNS_BIG runs (${BIG_MIB} MiB, 1 warm-up run),
no shell (\`-N\`). Each signer produces its own signed artifact from the same image with its own
key type; each verifier checks the signature and the digest of the whole payload (the flipped-byte
column shows it rejects a one-byte change in the middle of the artifact). Compression is off where
the tool has it (RAUC's squashfs, mender-artifact's tar), as sigil does not compress: the figures
compare signing, not compressors. Python tools run in a venv; peak RSS from GNU time.

#### 1 MiB image

$(table small)

#### ${BIG_MIB} MiB image

$(table big)

Commands (in the bench's temporary directory; \`image.bin\` is the image):

EOF
for p in "${peers[@]}"; do
  [ -n "${why[$p]:-}" ] && { echo "- $(label "$p"): not measured — ${why[$p]}"; continue; }
  [ -n "${sign_cmd[$p]:-}" ] && echo "- \`$(show "${sign_cmd[$p]}")\`"
  echo "- \`$(show "${verify_cmd[$p]}")\`"
done
cat <<EOF

Key set-up (not timed): sigil \`keygen\` + \`root init\` + \`keyset create/sign\` (ed25519);
\`imgtool keygen -k imgtool.pem -t ed25519\`; RAUC: a self-signed ECDSA P-256 certificate from
\`openssl req -x509\` that is also the keyring; mender-artifact 3.9 refuses ed25519 keys
("unsupported private key type"), so an ECDSA P-256 key from \`openssl ecparam\`. Its
\`validate -k\` with an ed25519 public key prints "unsupported public key type" and exits 0, even on
a tampered artifact: the flipped-byte column is what shows each verifier really checks.

### Check-ins: sigil-server against gooseBit

The same load on both servers: \`wrk -t 2 -c $CONNECTIONS -d ${DURATION}s --timeout 10s\` on loopback
after 3 s of the same load to warm up (Python workers, caches),
$DEVICES enrolled devices taken in turn, each request authenticated by that device's token.
- sigil-server ($("$server" --version 2>/dev/null || echo "${ver[sigil]}"), release build, SQLite WAL, check-ins committed with
  \`synchronous = NORMAL\`): \`POST /api/v1/device/checkin\` with a session token
  (\`Authorization: Bearer\`), body \`{"version":"1.0.0","security_counter":1,"state":"idle"}\`; each check-in stores a
  report and answers with the device's assigned update (a deployment is active), e.g.
  \`$(head -c 120 <<<"${sigil_answer:-}")…\`.
- gooseBit (${ver[goosebit]:-not installed}; its default SQLite through Tortoise ORM, WAL;
  \`uvicorn goosebit:app --host 127.0.0.1 --workers ${GOOSEBIT_WORKERS:-2}\`, logging at WARNING): the hawkBit
  DDI poll \`GET /DEFAULT/controller/v1/{controller_id}\` with \`Authorization: TargetToken\`,
  device authentication in strict mode (tokens registered by each device's first poll in setup
  mode, then its config data sent, as SWUpdate would). Every poll records the device's last
  connection and looks for an update; none is assigned, its lighter path, e.g.
  \`${gb_answer:-—}\`.

| server | check-ins/s | p50 (ms) | p99 (ms) | requests | errors (non-2xx/timeouts/socket) |
|---|---:|---:|---:|---:|---:|
| sigil-server | ${s_rps:-—} | ${s_p50:-—} | ${s_p99:-—} | ${s_n:-—} | ${s_bad:-—} |
EOF
if [ -n "$gb_rps" ]; then
  echo "| gooseBit | $gb_rps | $gb_p50 | $gb_p99 | $gb_n | $gb_bad |"
else
  echo "| gooseBit | not measured: $gb_note | | | | |"
fi
cat <<EOF

sigil-server ÷ gooseBit check-ins/s: **$ci_ratio** (target ≥ 10: $ci_verdict).

EOF
