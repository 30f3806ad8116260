#!/usr/bin/env bash
# Runs a command against a freshly started merch-store server, then stops the
# server (by its PID) and prints where its log is.
#
#   scripts/with-server.sh <command...>
#
# Environment:
#   DATABASE_URL  use this database; when unset, the project-local PostgreSQL
#                 (scripts/pg.sh) is started and a fresh database "merch_bench"
#                 is created in it, so every run starts from zero users.
#   SERVER_ADDR   where the server listens (default 127.0.0.1:8080)
#   ADMIN_ADDR    its admin listener: /readyz, /metrics, pprof (default 127.0.0.1:8081)
#   SERVER_ENV    extra "K=V ..." for the server
# The command sees SERVER_ADDR, ADMIN_ADDR and SERVER_PID. Load tools
# register many users from one address, so REGISTER_RATE is 0 (off) here.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p bin .data
go build -o bin/merch-store ./cmd/merch-store
go build -o bin/loadgen ./cmd/loadgen

if [[ -z "${DATABASE_URL:-}" ]]; then
  scripts/pg.sh up
  base="$(scripts/pg.sh url)"
  PGOPTIONS='-c client_min_messages=warning' scripts/pg.sh psql -q -c 'DROP DATABASE IF EXISTS merch_bench' -c 'CREATE DATABASE merch_bench' >/dev/null
  DATABASE_URL="${base%/merch*}/merch_bench?sslmode=disable"
fi
export SERVER_ADDR="${SERVER_ADDR:-127.0.0.1:8080}"
export ADMIN_ADDR="${ADMIN_ADDR:-127.0.0.1:8081}"
log=".data/server.log"
# shellcheck disable=SC2086
env DATABASE_URL="$DATABASE_URL" HTTP_ADDR="$SERVER_ADDR" ADMIN_ADDR="$ADMIN_ADDR" REGISTER_RATE=0 \
  JWT_SECRET="${JWT_SECRET:-dev-secret-not-for-production}" LOG_LEVEL="${LOG_LEVEL:-warn}" \
  ${SERVER_ENV:-} bin/merch-store >"$log" 2>&1 &
export SERVER_PID=$!
stop() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
}
trap stop EXIT
for _ in $(seq 1 100); do
  if curl -fsS "http://$ADMIN_ADDR/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.1
done
curl -fsS "http://$ADMIN_ADDR/readyz" >/dev/null || { echo "server not ready"; cat "$log"; exit 1; }
"$@"
