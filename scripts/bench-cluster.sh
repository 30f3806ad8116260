#!/usr/bin/env bash
# Same-run ratios for the cluster (make bench-cluster): one node alone;
# three nodes behind HAProxy (requests routed to their owner); the same
# three nodes loaded directly on one of them (2/3 of requests forwarded).
# On 2 cores every process shares them: this shows what a forward costs,
# not scaling. Free ports on 127.0.0.1, each checked to belong to the
# process started for it (a node or HAProxy that did not start stops the
# run); databases bench_single and bench_cluster of its own in the
# project-local PostgreSQL; everything it starts it stops by PID.
#   DURATION (default 10s, any Go duration), CONNS (default 64), USERS
#   (default 300), MIX (writes carry an Idempotency-Key, loadgen's default)
# Time: two setups of USERS new users (bcrypt: ~25 s for 300; the direct
# run logs the same users in again), three runs of 2 s warm-up + DURATION,
# ~8 s of cluster start-up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
d="${DURATION:-10s}"; c="${CONNS:-64}"; users="${USERS:-300}"; mix="${MIX:-info=50,buy=25,send=25}"
seconds "$d" >/dev/null # a bad DURATION stops here, before anything starts
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
  scripts/pg.sh psql -q -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  echo "${base%/merch*}/$1?sslmode=disable"
}
cluster_pids=()
port() { echo "127.0.0.1:$(free_port)"; }
node() { # id http admin internal url
  env NODE_ID="$1" HTTP_ADDR="$2" ADMIN_ADDR="$3" INTERNAL_ADDR="$4" DATABASE_URL="$5" \
    JWT_SECRET=bench-secret-0123456789 LOG_LEVEL=warn REGISTER_RATE=0 MAX_CONNS_PER_IP=0 \
    bin/merch-store >"$out/$1.log" 2>&1 &
  pids+=($!); cluster_pids+=($!)
  wait_own_server "$!" "$out/$1.log" "$3" "$2" "$4"
}
step=0
run() { # name addr (progress on stderr every 5 s)
  step=$((step + 1))
  echo "bench-cluster: [$step/3] $1: $users users, $c connections, 2s warm-up + $d, mix $mix" >&2
  bin/loadgen -interval 5s -json -c "$c" -d "$d" -setup-c 8 -users "$users" -prefix bc -mix "$mix" -addr "$2" >"$out/$1.json"
}

# 1. One node alone.
url=$(fresh_db bench_single)
s_http=$(port); s_admin=$(port)
refuse_taken "$s_http" "$s_admin"
env HTTP_ADDR="$s_http" ADMIN_ADDR="$s_admin" DATABASE_URL="$url" JWT_SECRET=bench-secret-0123456789 \
  LOG_LEVEL=warn REGISTER_RATE=0 bin/merch-store >"$out/single.log" 2>&1 &
single=$!; pids+=($single)
wait_own_server "$single" "$out/single.log" "$s_admin" "$s_http"
run single "$s_http"
kill -TERM "$single"; wait "$single" || true

# 2. and 3. Three nodes, HAProxy in front.
echo "bench-cluster: starting three nodes and HAProxy" >&2
url=$(fresh_db bench_cluster)
n1=($(port) $(port) $(port)); n2=($(port) $(port) $(port)); n3=($(port) $(port) $(port)); front=$(port)
refuse_taken "${n1[@]}" "${n2[@]}" "${n3[@]}" "$front"
node n1 "${n1[@]}" "$url"
node n2 "${n2[@]}" "$url"
node n3 "${n3[@]}" "$url"
sleep 3 # three lease renewals: the shards spread over the nodes
hap="$out/haproxy"; mkdir -p "$hap"
: >"$hap/owners.map"
cp deploy/haproxy/owners.lua "$hap/"
sed -e "s#/usr/local/etc/haproxy/#$root/$hap/#g" -e "s#bind :8080#bind $front#" \
    -e "s#node1:9000 node2:9000 node3:9000#${n1[2]} ${n2[2]} ${n3[2]}#" \
    -e 's#log stdout format raw local0 info#log stderr format raw local0 warning#' \
    -e "s#server node1 node1:8080 check port 8081#server n1 ${n1[0]} check port ${n1[1]##*:}#" \
    -e "s#server node2 node2:8080 check port 8081#server n2 ${n2[0]} check port ${n2[1]##*:}#" \
    -e "s#server node3 node3:8080 check port 8081#server n3 ${n3[0]} check port ${n3[1]##*:}#" \
    deploy/haproxy/haproxy.cfg >"$hap/haproxy.cfg"
grep -q "bind $front" "$hap/haproxy.cfg" || die "deploy/haproxy/haproxy.cfg changed: its bind line was not rewritten"
haproxy -db -f "$hap/haproxy.cfg" >"$out/haproxy.log" 2>&1 &
hap_pid=$!; pids+=($hap_pid); cluster_pids+=($hap_pid)
for _ in $(seq 1 100); do own_listener "$hap_pid" "$front" && break; sleep 0.05; done
own_listener "$hap_pid" "$front" || { cat "$out/haproxy.log" >&2; die "HAProxy (pid $hap_pid) is not listening on $front"; }
sleep 1 # the Lua task's first poll of the owners
forwards() { for a in "${n1[1]}" "${n2[1]}" "${n3[1]}"; do curl -s "$a/metrics"; done | awk '/^merch_cluster_forwards_total/ {s += $2} END {print s + 0}'; }
fw0=$(forwards)
run routed "$front"
fw1=$(forwards)
run direct "${n1[0]}"
fw2=$(forwards)
for p in "${cluster_pids[@]}"; do kill -0 "$p" 2>/dev/null || die "a process it started (pid $p) exited during the run: see $out/*.log"; done
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
