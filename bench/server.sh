#!/usr/bin/env bash
# Server benchmark: device check-ins per second with session tokens (p50/p99), and bundle download
# throughput against nginx serving the same file, in the same run, on loopback.
# Targets (DESIGN.md / issue 6): downloads >= 0.9x nginx; the check-in rate of one million devices
# polling every five minutes (~3,300/s) held with p99 < 50 ms.
#
#   bench/server.sh                    prints a Markdown section on stdout (bench/run collects it)
#   DEVICES=200 DURATION=5 bench/server.sh   a quicker run
#
# Needs wrk and nginx (apt-get install -y wrk nginx-light); installs them when missing and root.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
PAYLOAD_MIB=${PAYLOAD_MIB:-64}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light) >&2
  else
    echo "bench/server.sh needs wrk and nginx" >&2
    exit 1
  fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked -q -p sigil-server --bin sigil-server --example bench_fleet >&2
server="$CARGO_TARGET_DIR/release/sigil-server"
fleet="$CARGO_TARGET_DIR/release/examples/bench_fleet"

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as an unprivileged user
pids=()
cleanup() {
  grep -E "ERROR|WARN" "$work/server.log" 2>/dev/null | tail -n 20 >&2 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$fleet" root "$work/root.sgl"
port=$(free_port)
RUST_LOG=warn SIGIL_TRUST_ROOT="$work/root.sgl" SIGIL_RATE_PER_SECOND=10000000 SIGIL_RATE_BURST=10000000 \
  SIGIL_UPLOAD_MAX_BYTES=$(((PAYLOAD_MIB + 1) << 20)) \
  "$server" --listen "127.0.0.1:$port" --data-dir "$work/data" > "$work/server.out" 2> "$work/server.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "admin token" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
admin=$(sed -n 's/^first admin token.*: //p' "$work/server.out")
echo "setting up $DEVICES devices" >&2
release=$("$fleet" setup "127.0.0.1:$port" "$admin" "$DEVICES" $((PAYLOAD_MIB << 20)) "$work")
device_token=$(head -1 "$work/sessions.txt")

cat > "$work/checkin.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("SESSIONS")) do tokens[#tokens + 1] = line end
local n = 0
local offset = 0
local body = '{"version":"1.0.0","security_counter":1,"state":"idle"}'
function setup(thread)
  offset = offset + 1
  thread:set("offset", offset * 7919)
end
function request()
  n = n + 1
  local t = tokens[((n + offset) % #tokens) + 1]
  return wrk.format("POST", "/api/v1/device/checkin",
    { ["Authorization"] = "Bearer " .. t, ["Content-Type"] = "application/json" }, body)
end
LUA
cat > "$work/report.lua" <<'LUA'
function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  local bad = string.format("%d/%d/%d", e.status, e.timeout, e.connect + e.read + e.write)
  io.write(string.format("RESULT %.1f %.3f %.3f %.1f %s\n", summary.requests / s,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.bytes / s / 1048576, bad))
end
LUA
cat "$work/report.lua" >> "$work/checkin.lua"
echo "-- DELAY" >> "$work/checkin.lua"

run_wrk() { # args: connections, script, url, [header]
  local c=$1 script=$2 url=$3
  shift 3
  wrk -t 2 -c "$c" -d "${DURATION}s" -s "$script" "$@" "$url" | sed -n 's/^RESULT //p'
}

echo "check-ins" >&2
read -r ci_rps ci_p50 ci_p99 _ ci_bad < <(SESSIONS="$work/sessions.txt" run_wrk "$CONNECTIONS" "$work/checkin.lua" "http://127.0.0.1:$port/")
# A fleet-like load: few connections, so the latency is that of a moderately loaded server.
read -r cl_rps cl_p50 cl_p99 _ cl_bad < <(SESSIONS="$work/sessions.txt" run_wrk 8 "$work/checkin.lua" "http://127.0.0.1:$port/")

# The fleet's pace: 1,000,000 devices every 300 s = 3,333/s. wrk has no fixed-rate mode, so each
# of 128 connections waits between its requests (wrk's delay() hook, whole milliseconds). The
# first run estimates the server's latency at that load; the second corrects the delay for it and
# is the one reported.
paced() { # args: delay in ms
  sed "s/^-- DELAY$/function delay() return $1 end/" "$work/checkin.lua" > "$work/paced.lua"
  SESSIONS="$work/sessions.txt" run_wrk 128 "$work/paced.lua" "http://127.0.0.1:$port/"
}
pace_target=${PACE:-3500}
pace_delay=$(awk -v r="$pace_target" 'BEGIN { printf "%d", 128 * 1000 / r }')
read -r cp_rps _ < <(paced "$pace_delay")
pace_delay=$(awk -v c=128 -v r="$pace_target" -v a="$cp_rps" -v d="$pace_delay" \
  'BEGIN { l = c * 1000 / a - d; x = c * 1000 / r - l; printf "%d", (x < 1 ? 1 : x) }')
read -r cp_rps cp_p50 cp_p99 _ cp_bad < <(paced "$pace_delay")

# nginx serving the same bundle file.
nport=$(free_port)
mkdir -p "$work/www" "$work/nginx"
cp "$work/bundle.sgl" "$work/www/bundle.sgl"
chmod 755 "$work/www"
chmod 644 "$work/www/bundle.sgl"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$nport; root $work/www; }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2> "$work/nginx/stderr" &
pids+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$nport/bundle.sgl" 2>/dev/null && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$nport/bundle.sgl" || { echo "nginx does not serve the bundle" >&2; exit 1; }
cat /dev/null "$work/www/bundle.sgl" "$work/data/bundles/$release" > /dev/null

echo "downloads" >&2
read -r _ _ _ ng_mibs ng_bad < <(run_wrk 4 "$work/report.lua" "http://127.0.0.1:$nport/bundle.sgl")
read -r _ _ _ sv_mibs sv_bad < <(run_wrk 4 "$work/report.lua" "http://127.0.0.1:$port/api/v1/bundles/$release" -H "Authorization: Bearer $device_token")

ratio=$(awk -v a="$sv_mibs" -v b="$ng_mibs" 'BEGIN { printf "%.2f", a / b }')
dl_verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "meets target" : "MISSES target") }')
fleet_verdict=$(awk -v r="$cp_rps" -v p="$cp_p99" 'BEGIN { print ((r >= 3300 && p < 50) ? "meets target" : "MISSES target") }')

cat <<EOF
## server

\`bench/server.sh\`: \`sigil-server\` (release build, SQLite in WAL mode,
data on $(df --output=fstype "$work" | tail -1)) and the load generator \`wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')\` (2 threads)
on the same $(nproc)-core machine over loopback, ${DURATION} s per measurement. $DEVICES enrolled devices,
each with a session token; every check-in is authenticated by its session token, stores a report
and answers with the assigned update. Downloads: a ${PAYLOAD_MIB} MiB bundle to an authenticated
device (token lookup + assignment check per request), against nginx $("$nginx_bin" -v 2>&1 | sed 's|.*/||')
(sendfile, 2 workers) serving the same file, 4 connections each.

| measurement | result | target | |
|---|---:|---|---|
| check-ins/s, $CONNECTIONS connections | $ci_rps (p50 $ci_p50 ms, p99 $ci_p99 ms; errors (non-2xx/timeouts/socket) $ci_bad) | | |
| check-ins/s, 8 connections | $cl_rps (p50 $cl_p50 ms, p99 $cl_p99 ms; errors $cl_bad) | | |
| check-ins/s at the fleet's pace (128 connections, ${pace_delay} ms between requests) | $cp_rps (p50 $cp_p50 ms, p99 $cp_p99 ms; errors $cp_bad) | ≥ 3,300/s with p99 < 50 ms | $fleet_verdict |
| download MiB/s, sigil-server | $sv_mibs (errors $sv_bad) | | |
| download MiB/s, nginx | $ng_mibs (errors $ng_bad) | peer | |
| download ratio sigil-server / nginx | $ratio | ≥ 0.90 | $dl_verdict |

The first two rows drive the server as fast as it answers (latencies at saturation); the paced row
approximates a fleet polling at its own rate. Each check-in is one SQLite write transaction
(report, device state, trimming old reports) committed without its own fsync (see the server's
storage notes); uploads, enrolments and deployment changes are fsynced.

EOF
