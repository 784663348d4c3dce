#!/usr/bin/env bash
# Agent benchmark: stage a 256 MiB bundle with `sigil-agent --once` and measure
#   1. peak RSS of the agent process (GNU time -v; target <= 16 MiB, constant in the bundle size),
#   2. CPU time per MiB of the agent against `sha256sum` of the same bundle file,
#   3. bytes downloaded twice after (a) a connection cut at a random offset (the agent resumes
#      in-process with Range) and (b) the agent killed (SIGKILL) at a random offset and started
#      again (it re-verifies the slot up to its last checkpoint and resumes there);
#      target <= one chunk: 0 for a cut (the agent resumes from the exact byte it holds); for a
#      kill, at most one checkpoint interval (64 KiB = one write buffer in that run; the CPU and
#      RSS runs use the default 1 MiB interval).
#
#   bench/agent.sh               prints a Markdown section on stdout (bench/run collects it)
#   SIZE_MIB=32 bench/agent.sh   a smaller bundle for a quick check
#
# Server: a minimal static HTTP/1.1 Range server with stub device endpoints (challenge,
# session, check-in), written in Python below — not sigil-server — so that it can count the
# body bytes it sends, cut a connection at a chosen offset and hold one open (stall). The
# agent's figures do not depend on the server's speed (CPU time and RSS are the agent's).
# Flash: a sparse image file with erased value 0x00, 64 KiB sectors, 8-byte program unit.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-256}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time for peak RSS" >&2
  (apt-get update -qq && apt-get install -y -qq time) >&2
fi

cargo build --release --locked -q -p sigil-signer -p sigil-agent >&2
sigil="$CARGO_TARGET_DIR/release/sigil"
agent="$CARGO_TARGET_DIR/release/sigil-agent"

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# Keys, root, key set; the running image (v1.0.0) and the update (v1.1.0, SIZE_MIB MiB).
"$sigil" keygen --out root.pem >/dev/null
"$sigil" keygen --out release.pem >/dev/null
"$sigil" keygen --out device.pem >/dev/null
"$sigil" root init --threshold 1 --out root.sgl root.pub.pem >/dev/null
"$sigil" keyset create --threshold 1 --key-set-version 1 --out keyset.sgl release.pub.pem >/dev/null
"$sigil" keyset sign keyset.sgl --key root.pem --root root.sgl >/dev/null
head -c 65536 /dev/urandom > old.bin
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > new.bin
sign() {
  "$sigil" sign "$1" --key-set keyset.sgl --key release.pem --product acme/pump --component app \
    --version "$2" --security-counter "$3" --out "$4" --force >/dev/null
}
sign old.bin 1.0.0 1 active.sgl
sign new.bin 1.1.0 2 bundle.sgl
rm -f new.bin
bundle_len=$(stat -c %s bundle.sgl)

# Flash layout: protected state 2 sectors, requests 1 sector, active N sectors, staging N+1
# sectors (swap-offset).
sector=65536
slot_sectors=$(( (bundle_len + sector - 1) / sector ))
request_off=$((2 * sector))
active_off=$((3 * sector))
staging_off=$((active_off + slot_sectors * sector))
flash_len=$(( (3 + slot_sectors + slot_sectors + 1) * sector ))
new_flash() {
  rm -f flash.img
  truncate -s "$flash_len" flash.img
  dd if=active.sgl of=flash.img bs="$sector" seek=3 conv=notrunc status=none
  rm -rf state
}

cat > server.py <<'PY'
import http.server, json, os, socket, sys, threading, time
BUNDLE = sys.argv[1]
STATS = sys.argv[2]
SIZE = os.path.getsize(BUNDLE)
lock = threading.Lock()
stats = {"sent": 0, "requests": 0}
def control():
    try:
        with open(STATS + ".ctl") as f:
            return json.load(f)
    except Exception:
        return {}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/challenge"):
            self.reply({"nonce": "00" * 32, "expires_in": 60})
        elif self.path.endswith("/session"):
            self.reply({"token": "bench", "expires_in": 900})
        else:
            self.reply({"update": {"deployment": 1, "release": "bench", "version": "1.1.0",
                                   "size": SIZE, "download_url": "/bundle"}})
    def do_GET(self):
        ctl = control()
        start = 0
        r = self.headers.get("Range")
        if r and r.startswith("bytes=") and r.endswith("-"):
            start = int(r[6:-1])
        with lock:
            stats["requests"] += 1
            first = stats["requests"] == 1
        limit = ctl.get("cut") if first else None
        stall = ctl.get("stall") if first else None
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(SIZE - start))
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, SIZE - 1, SIZE))
        self.end_headers()
        sent = 0
        with open(BUNDLE, "rb") as f:
            f.seek(start)
            while True:
                n = 65536
                for l in (limit, stall):
                    if l is not None:
                        n = min(n, l - sent)
                if n <= 0:
                    break
                chunk = f.read(n)
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                with lock:
                    stats["sent"] += len(chunk)
                    with open(STATS + ".tmp", "w") as out:
                        json.dump(stats, out)
                    os.replace(STATS + ".tmp", STATS)
        self.wfile.flush()
        if stall is not None and sent >= stall:
            time.sleep(3600)
        if limit is not None:
            time.sleep(0.2)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY

# start_server [CONTROL_JSON [STATS_FILE]]: the server on a free port ($port).
start_server() {
  local ctl=${1:-} stats=${2:-stats.json}
  [ -n "$ctl" ] || ctl='{}'
  rm -f "$stats" port.txt
  echo "$ctl" > "$stats.ctl"
  python3 server.py bundle.sgl "$stats" > port.tmp &
  server_pid=$!
  for _ in $(seq 200); do
    if [ -s port.tmp ]; then mv port.tmp port.txt; break; fi
    sleep 0.05
  done
  port=$(cat port.txt)
}
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
sent() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' stats.json; }

write_config() {
  cat > agent.toml <<EOF
[server]
url = "http://127.0.0.1:$port"
[device]
id = "bench-1"
key = "device.pem"
trust_root = "root.sgl"
product = "acme/pump"
component = "app"
[flash]
path = "flash.img"
erase_size = $sector
write_size = 8
erased = 0
protected_offset = 0
request_offset = $request_off
active_offset = $active_off
staging_offset = $staging_off
slot_sectors = $slot_sectors
[download]
max_attempts = 4
backoff_initial = "10ms"
backoff_max = "100ms"
stall_timeout = "${1:-30s}"
checkpoint_bytes = ${2:-1048576}
[hooks]
reboot = ["/bin/true"]
[state]
dir = "state"
EOF
}

# 1 + 2: full staging under GNU time.
new_flash
start_server
write_config
RUST_LOG=warn /usr/bin/time -v -o time.txt "$agent" --once --config agent.toml > out.txt
grep -q "reboot requested" out.txt || { cat out.txt >&2; echo "agent did not stage the bundle" >&2; exit 1; }
stop_server
rss_kib=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' time.txt)
agent_cpu=$(awk -F: '/User time|System time/ {s += $2} END {printf "%.3f", s}' time.txt)
agent_wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' time.txt)
/usr/bin/time -f "%U %S" -o sha.txt sha256sum bundle.sgl > /dev/null
sha_cpu=$(awk '{printf "%.3f", $1 + $2}' sha.txt)
mib=$(python3 -c "print('%.1f' % ($bundle_len / 1048576))")

# A smaller bundle for the "constant memory" comparison: RSS must not grow with the size.
small_rss="n/a"
if [ "$SIZE_MIB" -gt 16 ]; then
  head -c $((16 * 1024 * 1024)) /dev/urandom > small.bin
  sign small.bin 1.1.0 2 small.sgl
  mv bundle.sgl big.sgl && mv small.sgl bundle.sgl
  new_flash; start_server; write_config
  RUST_LOG=warn /usr/bin/time -v -o time-small.txt "$agent" --once --config agent.toml > /dev/null
  stop_server
  small_rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); printf "%.1f MiB", $2 / 1024}' time-small.txt)
  mv big.sgl bundle.sgl
fi

# 3a: connection cut at a random offset; the agent resumes with Range in the same run.
cut=$(python3 -c "import random; print(random.randrange(1, $bundle_len))")
new_flash
start_server "{\"cut\": $cut}"
write_config
RUST_LOG=warn "$agent" --once --config agent.toml > out.txt
grep -q "reboot requested" out.txt || { cat out.txt >&2; exit 1; }
redl_cut=$(( $(sent) - bundle_len ))
stop_server

# 3b: agent killed (SIGKILL) at a random offset while the server holds the connection; a new
# agent process re-verifies the slot up to its checkpoint and resumes.
kill_at=$(python3 -c "import random; print(random.randrange(1, $bundle_len))")
new_flash
start_server "{\"stall\": $kill_at}"
write_config 600s 65536
RUST_LOG=warn "$agent" --once --config agent.toml > /dev/null 2>&1 &
agent_pid=$!
for _ in $(seq 600); do
  [ -s stats.json ] && [ "$(sent)" -ge "$kill_at" ] && break
  sleep 0.1
done
# Let the agent drain the socket and write what it received: wait until its checkpoint has
# not moved for a second (bytes still in socket buffers were never received, so they would
# count as re-downloaded without being so).
checkpoint() { python3 -c 'import json; print(json.load(open("state/state.json"))["update"]["checkpoint"])' 2>/dev/null || echo 0; }
last=-1
for _ in $(seq 120); do
  now=$(checkpoint)
  [ "$now" = "$last" ] && break
  last=$now
  sleep 1
done
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
first=$(sent)
stop_server
start_server '{}' stats2.json
write_config 30s 65536
RUST_LOG=warn "$agent" --once --config agent.toml > out.txt
grep -q "reboot requested" out.txt || { cat out.txt >&2; exit 1; }
second=$(python3 -c 'import json; print(json.load(open("stats2.json"))["sent"])')
redl_kill=$(( first + second - bundle_len ))
stop_server

python3 - "$rss_kib" "$agent_cpu" "$sha_cpu" "$mib" "$agent_wall" "$small_rss" "$cut" "$redl_cut" "$kill_at" "$redl_kill" <<'PY'
import sys
rss_kib, agent_cpu, sha_cpu, mib, wall, small_rss, cut, redl_cut, kill_at, redl_kill = sys.argv[1:]
rss = int(rss_kib) / 1024
a, s, m = float(agent_cpu), float(sha_cpu), float(mib)
ok = lambda b: "yes" if b else "**no**"
print("## agent")
print()
print(f"`bench/agent.sh`: `sigil-agent --once` stages a {m:.1f} MiB bundle (download from a loopback")
print("Python Range server with stub device endpoints, streaming verification, 64 KiB writes into a")
print("file-backed NOR flash image, verification again from the slot, mark pending).")
print()
print("| figure | value | target | met |")
print("|---|---|---|---|")
print(f"| peak RSS staging {m:.0f} MiB (GNU time) | {rss:.1f} MiB | <= 16 MiB | {ok(rss <= 16)} |")
print(f"| peak RSS staging 16 MiB (same agent) | {small_rss} | constant | — |")
print(f"| agent CPU (user+sys) | {a:.2f} s ({1000*a/m:.2f} ms/MiB), wall {wall} | — | — |")
print(f"| sha256sum CPU on the same file | {s:.2f} s ({1000*s/m:.2f} ms/MiB) | — | — |")
print(f"| agent / sha256sum CPU | {a/s:.2f}x | — (the agent hashes twice: while streaming and from the slot) | — |")
print(f"| re-downloaded after a connection cut at byte {cut} | {redl_cut} bytes | <= 65536 | {ok(int(redl_cut) <= 65536)} |")
print(f"| re-downloaded after SIGKILL at byte {kill_at} and restart (64 KiB checkpoints) | {redl_kill} bytes | <= 65536 (one checkpoint) | {ok(int(redl_kill) <= 65536)} |")
PY
