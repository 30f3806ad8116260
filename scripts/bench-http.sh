#!/usr/bin/env bash
# The ceiling comparison: in one run, load the real service and a static
# fasthttp handler that answers an /api/info-sized body, with the same load
# generator settings, and print the ratios. Run under scripts/with-server.sh.
#   DURATION (default 10s, any Go duration), CONNS (default 64), USERS (default 1000)
# Every buy and sendCoin carries a unique Idempotency-Key (loadgen's
# default), so the write rows include storing the key; the last row is the
# same mixed load without keys, to show what they cost.
# Time: the first scenario registers USERS new users (one bcrypt hash each,
# about 75 ms on one core: ~80 s for 1000), then 7 scenarios of 2 s warm-up
# + DURATION each, and a 2 s head start of the storm.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
[[ -n "${SERVER_ADDR:-}" && -n "${SERVER_PID:-}" ]] || die "run it under scripts/with-server.sh (make bench-http)"
d="${DURATION:-10s}"; c="${CONNS:-64}"; users="${USERS:-1000}"
secs=$(seconds "$d" ceil)
static_addr=127.0.0.1:$(free_port)
bin/loadgen -serve-static "$static_addr" >.data/bench-http-static.log 2>&1 &
static_pid=$!
storm_pid=""
cleanup() {
  for p in $storm_pid $static_pid; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do own_listener "$static_pid" "$static_addr" && break; sleep 0.05; done
own_listener "$static_pid" "$static_addr" || die "the static ceiling server (pid $static_pid) is not listening on $static_addr"
out=.data/bench-http; mkdir -p "$out"
scenarios=7
n=0
run() { # name, args... (progress on stderr every 5 s)
  local name=$1; shift
  n=$((n + 1))
  echo "bench-http: [$n/$scenarios] $name: $c connections, 2s warm-up + $d $*" >&2
  bin/loadgen -interval 5s -json -c "$c" -d "$d" -setup-c 8 "$@" >"$out/$name.json"
}
run static -addr "$static_addr" -no-setup -mix info=100
# One population for every scenario, registered once (bcrypt-bound: the
# service sheds a burst of more concurrent registrations than its hashing
# queue holds, so register 8 at a time). This first login of every user
# is the long phase: loadgen prints "setup: n/USERS" while it lasts.
run info -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=100
run mixed -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,buy=25,send=25
run login -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix auth=100
# Registration storm: info/send alone, then the same while another
# generator registers new users as fast as the service lets it (bounded by
# timeout; each registration costs a bcrypt hash at BCRYPT_COST).
run quiet -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,send=50
# 64 concurrent registrations of new names, again and again (each generator
# stops when the service sheds it; the loop starts the next), bounded.
echo "bench-http: registration storm for $((secs + 8))s (new users, 64 at a time)" >&2
timeout "$((secs + 8))s" bash -c 'for i in $(seq 1 1000); do
  bin/loadgen -quiet -addr "$0" -users 1000000 -prefix "storm$1x$i" -setup-c 64 -d 1s >/dev/null 2>&1
done' "$SERVER_ADDR" "$$" &
storm_pid=$!
sleep 2
run storm -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,send=50
kill -TERM "$storm_pid" 2>/dev/null || true
wait "$storm_pid" 2>/dev/null || true
storm_pid=""
# The same writes without Idempotency-Key: the key's cost, same run.
run mixed_nokeys -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,buy=25,send=25 -keys=false
kill -0 "$SERVER_PID" 2>/dev/null || die "the server (pid $SERVER_PID) exited during the run"
python3 - "$out" "$c" "$d" <<'PY'
import json, sys, os
out, conns, dur = sys.argv[1:]
names = ("static", "info", "mixed", "login", "quiet", "storm", "mixed_nokeys")
res = {n: json.load(open(os.path.join(out, n + ".json"))) for n in names}
ceiling = res["static"]["total"]["rps"]
print(f"machine: {os.cpu_count()} cores, load generator on the same machine; {conns} connections, {dur} per scenario")
print("writes (buy, sendCoin) carry a unique Idempotency-Key unless the row says otherwise")
print(f"{'scenario':<32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}")
for name, label in (("static", "static fasthttp ceiling"), ("info", "GET /api/info"),
                    ("mixed", "info50/buy25/send25"), ("login", "login (existing users)"),
                    ("quiet", "info50/send50"), ("storm", "info50/send50 + reg. storm"),
                    ("mixed_nokeys", "info50/buy25/send25, no keys")):
    t = res[name]["total"]
    lat = t["latency_us"]
    print(f"{label:<32}{t['rps']:>10.0f}{lat['p50']/1000:>9.2f}{lat['p99']/1000:>9.2f}{t['errors']:>8}{t['rps']/ceiling:>8.2f}")
q, s = res["quiet"]["total"]["latency_us"]["p99"], res["storm"]["total"]["latency_us"]["p99"]
print(f"registration storm moves info/send p99 by {s/q:.2f}x")
m, k = res["mixed"]["total"]["rps"], res["mixed_nokeys"]["total"]["rps"]
print(f"keys cost the mixed load {100 * (1 - m / k):.1f} % of its req/s ({m:.0f} with, {k:.0f} without)")
PY
