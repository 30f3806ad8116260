#!/usr/bin/env bash
# Same-run ratios for the cluster (make bench-cluster): one node alone;
# three nodes behind HAProxy (requests routed to their owner); the same
# three nodes loaded directly on one of them (2/3 of requests forwarded).
# On 2 cores every process shares them: this shows what a forward costs,
# not scaling. Ports 18080-18099 on 127.0.0.1; everything it starts it
# stops by PID.
#   DURATION (default 10s), CONNS (default 64), USERS (default 300), MIX
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
d="${DURATION:-10s}"; c="${CONNS:-64}"; users="${USERS:-300}"; mix="${MIX:-info=50,buy=25,send=25}"
mkdir -p bin .data/bench-cluster
go build -o bin/merch-store ./cmd/merch-store
go build -o bin/loadgen ./cmd/loadgen
scripts/pg.sh up >/dev/null
base="$(scripts/pg.sh url)"
out=.data/bench-cluster
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fresh_db() {
  PGOPTIONS='-c client_min_messages=warning' scripts/pg.sh psql -q -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
  echo "${base%/merch*}/$1?sslmode=disable"
}
wait_ready() { for _ in $(seq 1 100); do curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
node() { # id http admin internal url
  env NODE_ID="$1" HTTP_ADDR="$2" ADMIN_ADDR="$3" INTERNAL_ADDR="$4" DATABASE_URL="$5" \
    JWT_SECRET=bench-secret-0123456789 LOG_LEVEL=warn REGISTER_RATE=0 MAX_CONNS_PER_IP=0 \
    bin/merch-store >"$out/$1.log" 2>&1 &
  pids+=($!)
  wait_ready "$3"
}
run() { bin/loadgen -quiet -json -c "$c" -d "$d" -setup-c 8 -users "$users" -prefix bc -mix "$mix" -addr "$2" >"$out/$1.json"; }

# 1. One node alone.
url=$(fresh_db bench_single)
env HTTP_ADDR=127.0.0.1:18080 ADMIN_ADDR=127.0.0.1:18081 DATABASE_URL="$url" JWT_SECRET=bench-secret-0123456789 \
  LOG_LEVEL=warn REGISTER_RATE=0 bin/merch-store >"$out/single.log" 2>&1 &
single=$!; pids+=($single)
wait_ready 127.0.0.1:18081
run single 127.0.0.1:18080
kill -TERM "$single"; wait "$single" || true

# 2. and 3. Three nodes, HAProxy in front.
url=$(fresh_db bench_cluster)
node n1 127.0.0.1:18082 127.0.0.1:18083 127.0.0.1:18084 "$url"
node n2 127.0.0.1:18085 127.0.0.1:18086 127.0.0.1:18087 "$url"
node n3 127.0.0.1:18088 127.0.0.1:18089 127.0.0.1:18090 "$url"
sleep 3 # three lease renewals: the shards spread over the nodes
hap="$out/haproxy"; mkdir -p "$hap"
: >"$hap/owners.map"
cp deploy/haproxy/owners.lua "$hap/"
sed -e "s#/usr/local/etc/haproxy/#$root/$hap/#g" -e 's#bind :8080#bind 127.0.0.1:18091#' \
    -e 's#node1:9000 node2:9000 node3:9000#127.0.0.1:18084 127.0.0.1:18087 127.0.0.1:18090#' \
    -e 's#log stdout format raw local0 info#log stderr format raw local0 warning#' \
    -e 's#server node1 node1:8080 check port 8081#server n1 127.0.0.1:18082 check port 18083#' \
    -e 's#server node2 node2:8080 check port 8081#server n2 127.0.0.1:18085 check port 18086#' \
    -e 's#server node3 node3:8080 check port 8081#server n3 127.0.0.1:18088 check port 18089#' \
    deploy/haproxy/haproxy.cfg >"$hap/haproxy.cfg"
haproxy -db -f "$hap/haproxy.cfg" >"$out/haproxy.log" 2>&1 &
pids+=($!)
sleep 1 # the Lua task's first poll of the owners
forwards() { for a in 18083 18086 18089; do curl -s "127.0.0.1:$a/metrics"; done | awk '/^merch_cluster_forwards_total/ {s += $2} END {print s + 0}'; }
fw0=$(forwards)
run routed 127.0.0.1:18091
fw1=$(forwards)
run direct 127.0.0.1:18082
fw2=$(forwards)
python3 - "$out" "$c" "$d" "$mix" "$fw0" "$fw1" "$fw2" <<'PY'
import json, sys, os
out, conns, dur, mix, fw0, fw1, fw2 = sys.argv[1:]
rows = [("one node alone", "single"), ("3 nodes behind HAProxy (routed to owners)", "routed"),
        ("3 nodes, all load on n1 (2/3 forwarded)", "direct")]
base = json.load(open(os.path.join(out, "single.json")))["total"]["rps"]
print(f"mix {mix}, {conns} connections, {dur} each; load generator, HAProxy and nodes share 2 cores")
print(f"{'setup':45} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'ratio':>6}")
for label, name in rows:
    t = json.load(open(os.path.join(out, name + ".json")))["total"]
    print(f"{label:45} {t['rps']:8.0f} {t['latency_us']['p50']/1000:7.2f} {t['latency_us']['p99']/1000:7.2f} {t['errors']:6d} {t['rps']/base:6.2f}")
print(f"forwards: {float(fw1) - float(fw0):.0f} during the routed run, {float(fw2) - float(fw1):.0f} during the direct one")
PY
