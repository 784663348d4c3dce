#!/usr/bin/env bash
# Scale-out benchmark (issue 14): check-ins per second and the fleet-pace row (a million devices
# polling every five minutes, ~3,333/s, p99 < 50 ms) on SQLite, on PostgreSQL with one replica,
# and on PostgreSQL with two replicas sharing it, all in the same run on this machine; with the
# CPU seconds the servers and PostgreSQL spent, to show where the limit is.
#
#   bench/replicas.sh                      prints a Markdown section on stdout
#   DEVICES=200 DURATION=5 bench/replicas.sh   a quicker run
#   PG_STATEMENTS=1 bench/replicas.sh      also prints PostgreSQL's statements by total time and
#                                          the waits it saw (pg_stat_statements) on stderr
#
# Needs wrk and the PostgreSQL server binaries (apt-get install -y wrk postgresql); installs
# them when missing and root. PostgreSQL runs with its default durability (fsync on,
# synchronous_commit on) in a temporary cluster on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
PACE=${PACE:-3333}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if ! command -v wrk >/dev/null || [ -z "$pg_bin" ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk postgresql) >&2
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  else
    echo "bench/replicas.sh needs wrk and postgresql" >&2
    exit 1
  fi
fi
cargo build --release --locked -q -p sigil-server --bin sigil-server --example bench_fleet >&2
server="$CARGO_TARGET_DIR/release/sigil-server"
fleet="$CARGO_TARGET_DIR/release/examples/bench_fleet"

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for l in "$work"/*.log "$work"/pg/log; do [ -s "$l" ] && tail -n 5 "$l" | sed "s|^|$(basename "$l"): |" >&2; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups "$@"; else "$@"; fi; }
ticks() { # user + system clock ticks of the given pids and their children
  local t=0 p
  for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat"))); done
  echo "$t"
}
pg_ticks() { # the postmaster (setpriv execs it) and its backends, counted while they run
  local p t=0
  for p in "$pg_pid" $(pgrep -P "$pg_pid" || true); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)

"$fleet" root "$work/root.sgl"
cat bench/wrk/fleet.lua bench/wrk/checkin.lua bench/wrk/report.lua > "$work/checkin.lua"

# One PostgreSQL for the PostgreSQL runs.
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
as_pg "$pg_bin/initdb" --auth=trust --username=postgres -D "$work/pg/data" > /dev/null
pg_port=$(free_port)
pg_cmd=("$pg_bin/postgres")
[ "$(id -u)" = 0 ] && pg_cmd=(setpriv --reuid=postgres --regid=postgres --clear-groups "$pg_bin/postgres")
"${pg_cmd[@]}" -D "$work/pg/data" -c listen_addresses=127.0.0.1 -c "port=$pg_port" \
  -c "unix_socket_directories=$work/pg" -c max_connections=200 \
  ${PG_STATEMENTS:+-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all} \
  2> "$work/pg/log" &
pg_pid=$!
pids+=("$pg_pid")
for _ in $(seq 100); do "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres && break; sleep 0.1; done

start_server() { # args: name, database url (or empty for SQLite); prints "pid port"
  local name=$1 url=$2 port
  port=$(free_port)
  env RUST_LOG=warn SIGIL_TRUST_ROOT="$work/root.sgl" SIGIL_RATE_PER_SECOND=10000000 SIGIL_RATE_BURST=10000000 \
    SIGIL_TOKEN_RATE_PER_SECOND=10000000 SIGIL_TOKEN_RATE_BURST=10000000 \
    ${url:+SIGIL_DATABASE_URL=$url} ${url:+SIGIL_AUDIT_KEY_FILE=$work/pg-keys/audit.key} \
    "$server" --listen "127.0.0.1:$port" --data-dir "$work/$name" > "$work/$name.out" 2> "$work/$name.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 200); do grep -q "admin token" "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  echo "$pid $port"
}

share() { # args: n; splits the fleet's sessions into n disjoint shares, $work/share.<i>: each
  # device checks in through one generator at a time, as a fleet's devices do (two generators
  # walking the same list in step would have every device check in on two replicas at once,
  # and its two groups queue on its row lock, which no fleet does)
  rm -f "$work"/share.*
  split -n "r/$1" -d -a 2 "$work/sessions.txt" "$work/share."
}
saturate() { # args: ports...; wrk on each (1 thread, CONNECTIONS/n connections); prints "rps p99max errors"
  local n=$# c port i=0
  c=$((CONNECTIONS / n))
  share "$n"
  for port in "$@"; do
    SESSIONS="$work/share.$(printf %02d "$i")" wrk -t 1 -c "$c" -d "${DURATION}s" -s "$work/checkin.lua" "http://127.0.0.1:$port/" \
      | sed -n 's/^RESULT //p' > "$work/wrk.$i" &
    i=$((i + 1))
  done
  wait_jobs
  cat "$work"/wrk.* | awk '{ r += $1; if ($3 > p) p = $3; split($6, e, "/"); b += e[1] + e[2] + e[3] } END { printf "%.1f %.3f %d\n", r, p, b }'
  rm -f "$work"/wrk.*
}
pace() { # args: ports...; the fleet's pace split over the ports; prints "rps p99max p999max errors"
  local n=$# port i=0
  share "$n"
  for port in "$@"; do
    "$fleet" pace "127.0.0.1:$port" "$work/share.$(printf %02d "$i")" $((PACE / n)) $((128 / n)) "$DURATION" > "$work/pace.$i" &
    i=$((i + 1))
  done
  wait_jobs
  cat "$work"/pace.* | awk '{ r += $1; if ($3 > p) p = $3; if ($4 > q) q = $4; b += $6 } END { printf "%.1f %.3f %.3f %d\n", r, p, q, b }'
  rm -f "$work"/pace.*
}
wait_jobs() { local j; for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j" ;; esac; done; }

per_check_in() { # args: ticks, check-ins/s; prints CPU ms per check-in over one measurement
  awk -v t="$1" -v hz="$hz" -v r="$2" -v d="$DURATION" 'BEGIN { printf "%.3f", (r > 0 ? t / hz / (r * d) * 1000 : 0) }'
}
measure() { # args: key, label, server pids (space-separated), ports...; prints a table row and
  # keeps "rps cpu_servers cpu_pg pace_rps pace_p99" in $work/<key>.nums
  local key=$1 label=$2 spids=$3
  shift 3
  local s0 p0 s1 p1 p2 rps p99 bad prps pp99 pp999 pbad cpu_s cpu_p per p
  s0=$(ticks $spids) p0=$(pg_ticks)
  read -r rps p99 bad < <(saturate "$@")
  s1=$(ticks $spids) p1=$(pg_ticks)
  cpu_s=$(awk -v t=$((s1 - s0)) -v hz="$hz" -v d="$DURATION" 'BEGIN { printf "%.2f", t / hz / d }')
  cpu_p=$(awk -v t=$((p1 - p0)) -v hz="$hz" -v d="$DURATION" 'BEGIN { printf "%.2f", t / hz / d }')
  # CPU per check-in at the fleet's pace, for each process: each server, then PostgreSQL (the
  # postmaster and its backends; none for SQLite).
  local -A before
  for p in $spids; do before[$p]=$(ticks "$p"); done
  p1=$(pg_ticks)
  read -r prps pp99 pp999 pbad < <(pace "$@")
  p2=$(pg_ticks)
  per=""
  for p in $spids; do per+="$(per_check_in $(($(ticks "$p") - before[$p])) "$prps") + "; done
  per="${per% + }"
  [ "$key" = sqlite ] || per+=" / $(per_check_in $((p2 - p1)) "$prps")"
  local verdict
  verdict=$(awk -v r="$prps" -v p="$pp99" -v e="$pbad" -v t="$PACE" 'BEGIN { print ((r >= t * 0.99 && p < 50 && e == 0) ? "meets target" : "MISSES target") }')
  echo "$rps $cpu_s $cpu_p $prps $pp99" > "$work/$key.nums"
  echo "| $label | $rps (p99 $p99 ms; errors $bad) | $cpu_s / $cpu_p | $prps (p99 $pp99 ms, p99.9 $pp999 ms; errors $pbad) | $per | $verdict |"
}

echo "SQLite" >&2
read -r sq_pid sq_port < <(start_server sqlite "")
pids+=("$sq_pid") # start_server runs in a subshell: its pids+= does not reach cleanup
admin=$(sed -n 's/^first admin token.*: //p' "$work/sqlite.out")
mkdir -p "$work/setup-sqlite"
"$fleet" setup "127.0.0.1:$sq_port" "$admin" "$DEVICES" 4096 "$work/setup-sqlite" > /dev/null
cp "$work/setup-sqlite/sessions.txt" "$work/sessions.txt"
load_start=$(cut -d' ' -f1 /proc/loadavg)
row_sqlite=$(measure sqlite "SQLite, 1 server" "$sq_pid" "$sq_port")
kill "$sq_pid"; wait "$sq_pid" 2>/dev/null || true

url="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "PostgreSQL, 1 replica" >&2
read -r r1_pid r1_port < <(start_server r1 "$url")
pids+=("$r1_pid")
admin=$(sed -n 's/^first admin token.*: //p' "$work/r1.out")
mkdir -p "$work/setup-pg"
"$fleet" setup "127.0.0.1:$r1_port" "$admin" "$DEVICES" 4096 "$work/setup-pg" > /dev/null
cp "$work/setup-pg/sessions.txt" "$work/sessions.txt"
row_pg1=$(measure pg1 "PostgreSQL, 1 replica" "$r1_pid" "$r1_port")
echo "PostgreSQL, 2 replicas" >&2
read -r r2_pid r2_port < <(start_server r2 "$url")
pids+=("$r2_pid")
row_pg2=$(measure pg2 "PostgreSQL, 2 replicas" "$r1_pid $r2_pid" "$r1_port" "$r2_port")
load_end=$(cut -d' ' -f1 /proc/loadavg)
pg_version=$("$pg_bin/postgres" --version | awk '{print $3}')
if [ -n "${PG_STATEMENTS:-}" ]; then
  "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres >&2 <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
\echo PostgreSQL statements by total execution time (both PostgreSQL runs)
SELECT calls, round(total_exec_time::numeric, 0) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms,
  rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15;
SELECT sum(xact_commit) AS commits, sum(xact_rollback) AS rollbacks, sum(deadlocks) AS deadlocks FROM pg_stat_database;
SQL
fi

cat <<EOF
## replicas

\`bench/replicas.sh\`: check-ins on SQLite (one server) and on PostgreSQL $pg_version (default durability: fsync
and synchronous commit on) with one and with two \`sigil-server\` replicas sharing it, in the same run on this
$(nproc)-core machine over loopback, the servers, PostgreSQL and the load generators all on the same cores. $DEVICES
devices with session tokens; ${DURATION} s per measurement. Saturated: wrk, $CONNECTIONS connections in total split
over the replicas. Fleet pace: \`bench_fleet pace\` at $PACE/s in total (open loop), split over the replicas.
CPU: cores' worth of CPU time the \`sigil-server\` processes / PostgreSQL spent during the saturated run;
per check-in at the pace: CPU time (user + system, from \`/proc/<pid>/stat\`) of each \`sigil-server\` process
and of PostgreSQL's processes during the fleet-pace run, divided by the check-ins it served.

Load average (1 min) when the measurements began / ended: $load_start / $load_end on $(nproc) cores (what is
above the benchmark's own ~2 is other work on the machine, which the absolute figures move with).

| setup | check-ins/s, saturated | CPU cores: servers / PostgreSQL | check-ins/s at the fleet's pace | CPU ms per check-in at the pace: each server / PostgreSQL | target (≥ 3,300/s, p99 < 50 ms) |
|---|---:|---:|---:|---:|---|
$row_sqlite
$row_pg1
$row_pg2

EOF
# Bytes per row of the tables a fleet grows, from the PostgreSQL runs' tables (indexes included).
read -r dev_b dev_n rep_b rep_n mem_b mem_n < <("$pg_bin/psql" -X -q -t -A -F ' ' -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c \
  "SELECT pg_total_relation_size('devices'), (SELECT count(*) FROM devices), pg_total_relation_size('reports'),
          (SELECT count(*) FROM reports), pg_total_relation_size('members'), (SELECT count(*) FROM members)")
# What the figures say, computed from them: CPU per check-in (saturated run), what the second
# replica added, and the paper sizing for ten million devices polling every five minutes.
read -r sq_rps sq_cs _ _ _ < "$work/sqlite.nums"
read -r p1_rps p1_cs p1_cp p1_pace p1_p99 < "$work/pg1.nums"
read -r p2_rps p2_cs p2_cp p2_pace p2_p99 < "$work/pg2.nums"
cat <<EOF
Per group of check-ins (one transaction; up to $(grep -o 'MAX_BATCH: usize = [0-9]*' server/src/api/checkin_queue.rs | grep -o '[0-9]*$') check-ins, up to
$(grep -o 'BATCH_WRITERS: usize = [0-9]*' server/src/store/postgres/checkins.rs | grep -o '[0-9]*$') groups in flight per replica) PostgreSQL runs the same three statements and a commit whatever the group's size,
each prepared per connection (and again every 5 s, so that its plan is made for the tables as
they have grown): the assignments, the devices' rows locked in id order, one
multi-row statement over arrays for the reports, the trims and the devices' new state; then
the commit. Plus the session-token lookups, grouped as the check-ins are, each hash one probe
of the tokens' unique index. A group of unchanged check-ins takes only
its devices' row locks, so groups from all replicas commit side by side; the store's one
advisory lock is taken only by writes that decide something (a status change, an audit entry).
The reports table holds fewer than the 100 kept per device in a run this short, so the trims
here delete little; a fleet in its steady state deletes one report per check-in.

EOF
awk -v sr="$sq_rps" -v sc="$sq_cs" -v r1="$p1_rps" -v s1="$p1_cs" -v c1="$p1_cp" \
    -v r2="$p2_rps" -v s2="$p2_cs" -v c2="$p2_cp" -v cores="$(nproc)" \
    -v db="$dev_b" -v dn="$dev_n" -v rb="$rep_b" -v rn="$rep_n" -v mb="$mem_b" -v mn="$mem_n" \
    -v pace="$PACE" -v a1="$p1_pace" -v q1="$p1_p99" -v a2="$p2_pace" -v q2="$p2_p99" 'BEGIN {
  srv1 = s1 / r1 * 1000; pg1 = c1 / r1 * 1000; srv2 = s2 / r2 * 1000; pg2 = c2 / r2 * 1000
  rate = 10000000 / 300
  printf "CPU per check-in (saturated): SQLite server %.3f ms; on PostgreSQL with one replica, replica %.3f ms + PostgreSQL %.3f ms; with two, replicas %.3f ms + PostgreSQL %.3f ms. ", sc / sr * 1000, srv1, pg1, srv2, pg2
  printf "The second replica changed the saturated rate by %+.0f%% (%.0f to %.0f check-ins/s); ", (r2 / r1 - 1) * 100, r1, r2
  printf "the servers and PostgreSQL used %.2f of the %d cores with one replica and %.2f with two (the load generator and the rest of the machine had the remainder).\n\n", s1 + c1, cores, s2 + c2
  met1 = (a1 >= pace * 0.99 && q1 < 50); met2 = (a2 >= pace * 0.99 && q2 < 50)
  if (met1 && met2) printf "The fleet-pace row is met on PostgreSQL with one and with two replicas in this run: at %d/s the replica and PostgreSQL need about %.2f of the %d cores (from the one-replica costs above; more at the pace, where groups are smaller, as the table shows). Where the limit is: saturated, PostgreSQL used %.2f cores with one replica and %.2f with two, the replicas %.2f and %.2f, so a second replica adds only what the database has left; the limit is the database CPU, not locks (no lock is held across groups except the row of a device whose own group is committing).\n\n", pace, pace * (srv1 + pg1) / 1000, cores, c1, c2, s1, s2
  else printf "The fleet-pace row is %s on PostgreSQL in this run: at %d/s the replica and PostgreSQL alone need about %.2f of the %d cores (from the one-replica costs above), the load generator comes on top, and everything shares the cores with whatever else ran (the load average above); where the CPU runs short, groups wait for it while holding their row locks and a backlog builds, which is what the p99 shows. The limit is CPU, the database CPU first; no lock is held across groups except the row of a device whose own group is committing.\n\n", (met1 ? "met with one replica but missed with two" : (met2 ? "missed with one replica but met with two" : "missed with one and two replicas")), pace, pace * (srv1 + pg1) / 1000, cores
  srv = (srv1 > srv2 ? srv1 : srv2); pg = (pg1 > pg2 ? pg1 : pg2)
  printf "On paper, ten million devices polling every five minutes (%.0f check-ins/s) at the larger of these saturated per-check-in costs (at that rate the groups are as large as when saturated here): %.1f cores of replicas (%d replicas of 4 cores at 70%% load, two at least so that one can fail) and %.1f cores of PostgreSQL for the check-ins alone (%d cores at 70%%).\n\n", rate, rate * srv / 1000, (int(rate * srv / 1000 / 4 / 0.7) + 1 < 2 ? 2 : int(rate * srv / 1000 / 4 / 0.7) + 1), rate * pg / 1000, int(rate * pg / 1000 / 0.7) + 1
  pd = db / dn; pr = rb / (rn > 0 ? rn : 1); pm = mb / mn
  printf "Database size on paper: %.0f bytes per device row, %.0f per report, %.0f per deployment member (indexes included, as measured here); ten million devices with the default 100 reports kept each come to about %.0f GB (reports %.0f GB, devices %.1f GB, %.1f GB per deployment of all of them), before the audit trail (about one entry per version or state change).\n", pd, pr, pm, (1e7 * pd + 1e9 * pr + 1e7 * pm) / 1e9, 1e9 * pr / 1e9, 1e7 * pd / 1e9, 1e7 * pm / 1e9
}'
echo
