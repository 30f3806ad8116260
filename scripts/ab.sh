#!/usr/bin/env bash
# Same-run A/B of two server binaries: alternating rounds of the same load,
# each binary on a fresh database of the project-local PostgreSQL, one at a
# time, so both see the same (noisy) machine.
#
#   scripts/ab.sh OLD_BINARY NEW_BINARY   (ROUNDS=3 DURATION=6s CONNS=64 KEYS=true)
#
# KEYS=false sends the writes without Idempotency-Key.
#
# Build the old one from a worktree, e.g.
#   git worktree add /tmp/old REV && (cd /tmp/old && go build -o /tmp/ms-old ./cmd/merch-store)
# Prints one line per run: binary, mix, req/s; then the mean per binary and mix.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
[[ $# -eq 2 ]] || die "usage: scripts/ab.sh OLD_BINARY NEW_BINARY"
old=$1 new=$2
rounds=${ROUNDS:-3} dur=${DURATION:-6s} conns=${CONNS:-64} keys=${KEYS:-true}
go build -o bin/loadgen ./cmd/loadgen
scripts/pg.sh up >/dev/null
base="$(scripts/pg.sh url)"
results=$(mktemp)
run() { # binary mix
  local bin=$1 mix=$2 db="ab_$$_$RANDOM" addr admin pid line
  addr="127.0.0.1:$(free_port)" admin="127.0.0.1:$(free_port)"
  scripts/pg.sh psql -q -c "CREATE DATABASE $db" >/dev/null
  DATABASE_URL="${base%/merch*}/$db?sslmode=disable" HTTP_ADDR=$addr ADMIN_ADDR=$admin REGISTER_RATE=0 \
    JWT_SECRET=ab-secret-not-for-production LOG_LEVEL=warn "$bin" >.data/ab-server.log 2>&1 &
  pid=$!
  wait_own_server "$pid" .data/ab-server.log "$admin" "$addr"
  bin/loadgen -addr "$addr" -quiet -prefix ab -users 300 -setup-c 8 -d 1s -warmup 0s -mix info=100 -keys=false >/dev/null
  line=$(bin/loadgen -addr "$addr" -quiet -prefix ab -users 300 -c "$conns" -d "$dur" -warmup 1s -keys="$keys" -mix "$mix" | grep -E '^ +total')
  kill -TERM "$pid"
  wait "$pid" || true
  scripts/pg.sh psql -q -c "DROP DATABASE $db" >/dev/null
  echo "$bin $mix $(awk '{print $3}' <<<"$line")" | tee -a "$results"
}
for _ in $(seq 1 "$rounds"); do
  run "$old" info=100
  run "$new" info=100
  run "$new" info=50,buy=25,send=25
  run "$old" info=50,buy=25,send=25
done
echo "mean req/s:"
awk '{k=$1" "$2; s[k]+=$3; n[k]++} END {for (k in s) printf "  %s %.0f\n", k, s[k]/n[k]}' "$results" | sort
rm -f "$results"
