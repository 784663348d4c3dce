#!/usr/bin/env bash
# Server benchmark: device check-ins per second with session tokens (p50/p99), and bundle download
# throughput against nginx serving the same file, in the same run, on loopback.
# Targets (DESIGN.md / issue 6): downloads >= 0.9x nginx; the check-in rate of one million devices
# polling every five minutes (~3,300/s) held with p99 < 50 ms. Issue 13: the same pace and
# /healthz keep p99 < 50 ms with no failed request while 10,000 connections are open, 2,000 of
# them attackers holding idle, slow-header and slow-body sockets.
#
#   bench/server.sh                    prints a Markdown section on stdout (bench/run collects it)
#   DEVICES=200 DURATION=5 bench/server.sh   a quicker run
#   PACE=3333 ROUNDS=7 DL_DURATION=5   the paced check-in rate; download rounds and their length
#   FLOOD_CONNECTIONS=8000 FLOOD_ATTACKERS=2000   the connection-flood run
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

# The flood run holds 10,000 sockets in bench_fleet and as many in the server.
ulimit -n "$(ulimit -Hn)"
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
  SIGIL_TOKEN_RATE_PER_SECOND=10000000 SIGIL_TOKEN_RATE_BURST=10000000 SIGIL_MAX_CONNECTIONS=12000 \
  SIGIL_UPLOAD_MAX_BYTES=$(((PAYLOAD_MIB + 1) << 20)) \
  "$server" --listen "127.0.0.1:$port" --data-dir "$work/data" > "$work/server.out" 2> "$work/server.log" &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 100); do grep -q "admin token" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
admin=$(sed -n 's/^first admin token.*: //p' "$work/server.out")
echo "setting up $DEVICES devices" >&2
release=$("$fleet" setup "127.0.0.1:$port" "$admin" "$DEVICES" $((PAYLOAD_MIB << 20)) "$work")
device_token=$(head -1 "$work/sessions.txt")

cat bench/wrk/fleet.lua bench/wrk/checkin.lua bench/wrk/report.lua > "$work/checkin.lua"

run_wrk() { # args: connections, script, url, [header]
  local c=$1 script=$2 url=$3
  shift 3
  wrk -t 2 -c "$c" -d "${DURATION}s" -s "$script" "$@" "$url" | sed -n 's/^RESULT //p'
}

echo "check-ins" >&2
read -r ci_rps ci_p50 ci_p99 _ _ ci_bad _ < <(SESSIONS="$work/sessions.txt" run_wrk "$CONNECTIONS" "$work/checkin.lua" "http://127.0.0.1:$port/")
# A fleet-like load: few connections, so the latency is that of a moderately loaded server.
read -r cl_rps cl_p50 cl_p99 _ _ cl_bad _ < <(SESSIONS="$work/sessions.txt" run_wrk 8 "$work/checkin.lua" "http://127.0.0.1:$port/")

# The fleet's pace: 1,000,000 devices every 300 s = 3,333/s, open loop. This used to be wrk with a
# delay() between requests on each connection; that is closed loop: a connection whose request is
# stuck sends nothing else, so a server stall is counted once per connection rather than in every
# request it holds up (coordinated omission), and the rate drifts with the server's latency.
# `bench_fleet pace` (one thread, about 12% of one core at 3,333/s here, so it leaves the server
# most of this 2-core machine) sends request k at k / rate seconds, round-robin over 128 keep-alive
# connections, and counts each latency from when the request was due: a late send is part of the
# latency. Its timer has 1 ms granularity, which can only add to the latencies it reports.
pace_rate=${PACE:-3333}
read -r cp_rps cp_p50 cp_p99 cp_p999 cp_max cp_bad < <("$fleet" pace "127.0.0.1:$port" "$work/sessions.txt" "$pace_rate" 128 "$DURATION")

# The connection flood: the same paced check-ins over FLOOD_CONNECTIONS keep-alive connections
# (from 127.0.1.x), while FLOOD_ATTACKERS connections (from 127.0.2.x, 200 per address, under
# the default per-address cap) are held idle, with slow headers or with slow bodies, each
# reopened as soon as the server closes it, and /healthz is fetched 20 times a second on a new
# connection each. Default timeouts; only limits.max_connections is raised (to 12,000).
flood_connections=${FLOOD_CONNECTIONS:-8000}
flood_attackers=${FLOOD_ATTACKERS:-2000}
echo "connection flood" >&2
read -r fl_rps fl_p50 fl_p99 fl_p999 fl_max fl_bad h_p50 h_p99 h_max h_bad fl_open fl_closes < <("$fleet" flood "127.0.0.1:$port" "$work/sessions.txt" "$pace_rate" "$flood_connections" "$flood_attackers" "$DURATION")
flood_verdict=$(awk -v p="$fl_p99" -v h="$h_p99" -v e="$fl_bad" -v f="$h_bad" 'BEGIN { print ((p < 50 && h < 50 && e == 0 && f == 0) ? "meets target" : "MISSES target") }')

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

# Throughput on a shared 2-core machine drifts with whatever else runs, so one nginx run and one
# sigil-server run minutes apart gave ratios from 0.89 to 1.19. Instead: ROUNDS rounds, each
# measuring both back to back (the order alternating), the same wrk client, file and connection
# count; the ratio is computed within each round and the median of the rounds is reported.
echo "downloads" >&2
# Throughput moves with the machine's load; the CPU time each server spends per GiB it sends
# (user + system, from /proc, nginx's workers summed) moves much less, and shows the cost of the
# extra copy directly.
ROUNDS=${ROUNDS:-7}
DL_DURATION=${DL_DURATION:-5}
download() { # args: url, [header]; prints MiB/s, MiB received and errors
  wrk -t 2 -c 4 -d "${DL_DURATION}s" -s bench/wrk/report.lua "$@" | sed -n 's/^RESULT //p' |
    awk '{print $4, $7 / 1048576, $6}'
}
cpu_ticks() { # args: pids; prints their user + system clock ticks
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
nginx_workers=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | tr '\n' ' ' || true)
[ -n "$nginx_workers" ] || { echo "bench/server.sh: found no nginx worker processes" >&2; exit 1; }
hz=$(getconf CLK_TCK)
ng_all=() sv_all=() ratios=() dl_bad=0 ng_ticks=0 sv_ticks=0 ng_mib=0 sv_mib=0
for round in $(seq "$ROUNDS"); do
  for side in $( ((round % 2)) && echo "nginx sigil" || echo "sigil nginx"); do
    if [ "$side" = nginx ]; then
      t0=$(cpu_ticks $nginx_workers)
      read -r ng_r mib bad < <(download "http://127.0.0.1:$nport/bundle.sgl")
      ng_ticks=$((ng_ticks + $(cpu_ticks $nginx_workers) - t0))
      ng_mib=$(awk -v a="$ng_mib" -v b="$mib" 'BEGIN { print a + b }')
    else
      t0=$(cpu_ticks "$server_pid")
      read -r sv_r mib bad < <(download "http://127.0.0.1:$port/api/v1/bundles/$release" -H "Authorization: Bearer $device_token")
      sv_ticks=$((sv_ticks + $(cpu_ticks "$server_pid") - t0))
      sv_mib=$(awk -v a="$sv_mib" -v b="$mib" 'BEGIN { print a + b }')
    fi
    [ "$bad" = 0/0/0 ] || dl_bad=$((dl_bad + 1))
  done
  ng_all+=("$ng_r") sv_all+=("$sv_r")
  ratios+=("$(awk -v a="$sv_r" -v b="$ng_r" 'BEGIN { printf "%.2f", a / b }')")
done
per_gib() { awk -v t="$1" -v m="$2" -v hz="$hz" 'BEGIN { printf "%.3f", t / hz / (m / 1024) }'; }
sv_cpu=$(per_gib "$sv_ticks" "$sv_mib")
ng_cpu=$(per_gib "$ng_ticks" "$ng_mib")
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print (NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2) }'; }
ng_mibs=$(median "${ng_all[@]}")
sv_mibs=$(median "${sv_all[@]}")
ratio=$(median "${ratios[@]}")
ratio_range="$(printf '%s\n' "${ratios[@]}" | sort -g | head -1)–$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)"

dl_verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "meets target" : "MISSES target") }')
fleet_verdict=$(awk -v r="$cp_rps" -v p="$cp_p99" -v e="$cp_bad" 'BEGIN { print ((r >= 3300 && p < 50 && e == 0) ? "meets target" : "MISSES target") }')

cat <<EOF
## server

\`bench/server.sh\`: \`sigil-server\` (release build, SQLite in WAL mode,
data on $(df --output=fstype "$work" | tail -1)) and the load generators \`wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')\` (2 threads) and
\`bench_fleet pace\` (open loop, 1 thread) on the same $(nproc)-core machine over loopback, ${DURATION} s per
check-in measurement. $DEVICES enrolled devices, each with a session token; every check-in is
authenticated by its session token, stores a report and answers with the assigned update.
Downloads: a ${PAYLOAD_MIB} MiB bundle to an authenticated device (token lookup + assignment check
per request), against nginx $("$nginx_bin" -v 2>&1 | sed 's|.*/||') (sendfile, 2 workers) serving the same file, both
through wrk with 4 connections: $ROUNDS rounds of ${DL_DURATION} s each way, back to back, medians.

| measurement | result | target | |
|---|---:|---|---|
| check-ins/s, $CONNECTIONS connections | $ci_rps (p50 $ci_p50 ms, p99 $ci_p99 ms; errors (non-2xx/timeouts/socket) $ci_bad) | | |
| check-ins/s, 8 connections | $cl_rps (p50 $cl_p50 ms, p99 $cl_p99 ms; errors $cl_bad) | | |
| check-ins/s at the fleet's pace ($pace_rate/s scheduled, open loop, 128 connections) | $cp_rps (p50 $cp_p50 ms, p99 $cp_p99 ms, p99.9 $cp_p999 ms, max $cp_max ms; errors $cp_bad) | ≥ 3,300/s with p99 < 50 ms | $fleet_verdict |
| check-ins/s at the fleet's pace during a connection flood ($fl_open connections open, $flood_attackers of them attackers; attacker sockets closed by the server: $fl_closes) | $fl_rps (p50 $fl_p50 ms, p99 $fl_p99 ms, p99.9 $fl_p999 ms, max $fl_max ms; errors $fl_bad) | p99 < 50 ms, no errors | $flood_verdict |
| \`GET /healthz\` during the flood (20/s, new connection each) | p50 $h_p50 ms, p99 $h_p99 ms, max $h_max ms; errors $h_bad | p99 < 50 ms, no errors | |
| download MiB/s, sigil-server (median) | $sv_mibs | | |
| download MiB/s, nginx (median) | $ng_mibs | peer | |
| download ratio sigil-server / nginx (median of $ROUNDS rounds; range $ratio_range; rounds with errors: $dl_bad) | $ratio | ≥ 0.90 | $dl_verdict |
| server CPU seconds per GiB sent, sigil-server / nginx (all rounds) | $sv_cpu / $ng_cpu | | |

The first two rows drive the server as fast as it answers (latencies at saturation); the paced row
is a fleet polling at its own rate, each latency counted from when its request was due. Check-ins
(report, device state, trimming old reports) are queued and committed in groups, one SQLite
transaction for all waiting, without their own fsync (see the server's storage notes); each is
answered after its group commits. Uploads, enrolments and deployment changes are fsynced.
nginx sends the file with sendfile (page cache to socket); sigil-server copies each 256 KiB chunk
into a reused buffer (from the page cache without leaving its thread, \`preadv2\` with
\`RWF_NOWAIT\`) and writes it to the socket, one copy more per byte, on the same two cores as wrk. The CPU row shows what that costs: sigil-server spends $(awk -v a="$sv_cpu" -v b="$ng_cpu" 'BEGIN { printf "%.1f", a / b }')× nginx's CPU time per byte
sent; the throughput stays close because wrk, receiving on the same cores, costs more than
either. Bundles are signed, so a fleet can also fetch them from a CDN through the public mirror.

EOF
