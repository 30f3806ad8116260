#!/usr/bin/env bash
# The ceiling comparison: in one run, load the real service and a static
# fasthttp handler that answers an /api/info-sized body, with the same load
# generator settings, and print the ratios. Run under scripts/with-server.sh.
#   DURATION (default 10s), CONNS (default 64), USERS (default 1000)
set -euo pipefail
d="${DURATION:-10s}"; c="${CONNS:-64}"; users="${USERS:-1000}"
static_addr=127.0.0.1:8091
bin/loadgen -serve-static "$static_addr" >/dev/null 2>&1 &
static_pid=$!
trap 'kill -TERM $static_pid 2>/dev/null; wait $static_pid 2>/dev/null || true' EXIT
out=.data/bench-http; mkdir -p "$out"
run() { # name, args...
  local name=$1; shift
  bin/loadgen -quiet -json -c "$c" -d "$d" -setup-c 8 "$@" >"$out/$name.json"
}
# One population for every scenario, registered once (bcrypt-bound: the
# service sheds a burst of more concurrent registrations than its hashing
# queue holds, so register 8 at a time).
run static -addr "$static_addr" -no-setup -mix info=100
run info -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=100
run mixed -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,buy=25,send=25
run login -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix auth=100
# Registration storm: info/send alone, then the same while another
# generator registers new users as fast as the service lets it (bounded by
# timeout; each registration costs a bcrypt hash at BCRYPT_COST).
run quiet -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,send=50
# 64 concurrent registrations of new names, again and again (each generator
# stops when the service sheds it; the loop starts the next), bounded.
timeout "$(( ${d%s} + 8 ))s" bash -c 'for i in $(seq 1 1000); do
  bin/loadgen -quiet -addr "$0" -users 1000000 -prefix "storm$1x$i" -setup-c 64 -d 1s >/dev/null 2>&1
done' "$SERVER_ADDR" "$$" &
storm_pid=$!
sleep 2
run storm -addr "$SERVER_ADDR" -users "$users" -prefix bench -mix info=50,send=50
kill -TERM "$storm_pid" 2>/dev/null; wait "$storm_pid" 2>/dev/null || true
python3 - "$out" "$c" "$d" <<'PY'
import json, sys, os
out, conns, dur = sys.argv[1:]
res = {n: json.load(open(os.path.join(out, n + ".json"))) for n in ("static", "info", "mixed", "login", "quiet", "storm")}
ceiling = res["static"]["total"]["rps"]
print(f"machine: {os.cpu_count()} cores, load generator on the same machine; {conns} connections, {dur} per scenario")
print(f"{'scenario':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}")
for name, label in (("static", "static fasthttp ceiling"), ("info", "GET /api/info"),
                    ("mixed", "info50/buy25/send25"), ("login", "login (existing users)"),
                    ("quiet", "info50/send50"), ("storm", "info50/send50 + reg. storm")):
    t = res[name]["total"]
    lat = t["latency_us"]
    print(f"{label:<28}{t['rps']:>10.0f}{lat['p50']/1000:>9.2f}{lat['p99']/1000:>9.2f}{t['errors']:>8}{t['rps']/ceiling:>8.2f}")
q, s = res["quiet"]["total"]["latency_us"]["p99"], res["storm"]["total"]["latency_us"]["p99"]
print(f"registration storm moves info/send p99 by {s/q:.2f}x")
PY
