#!/usr/bin/env bash
# Runs a command against a merch-store server that this script starts,
# with a database of its own, then stops the server (by its PID) and drops
# the database.
#
#   scripts/with-server.sh <command...>
#
# It refuses to run (exit 1, nothing loaded) when its own server did not
# start: an address already in use (e.g. `make run` on :8080), a server
# that exits, or a /readyz answered by any process but its own. Without
# that check a load tool would silently measure the dev server and write
# to the dev database.
#
# Environment:
#   SERVER_ADDR   where the server listens (default: a free 127.0.0.1 port)
#   ADMIN_ADDR    its admin listener: /readyz, /metrics, pprof (default: a free port)
#   BENCH_DATABASE_URL  use this database as it is (never the dev one: a
#                 database named "merch", make run's, is refused). When unset, the
#                 project-local PostgreSQL (scripts/pg.sh) is started and a
#                 fresh database merch_bench_<pid> is created in it, so every
#                 run starts from zero users; it is dropped at the end
#                 (KEEP_DB=1 keeps it). DATABASE_URL is ignored here: it is
#                 what `make run` uses.
#   START_WAIT    seconds to wait for readiness (default 60)
#   SERVER_ENV    extra "K=V ..." for the server
# The command sees SERVER_ADDR, ADMIN_ADDR and SERVER_PID. Load tools
# register many users from one address, so REGISTER_RATE is 0 (off) here.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
mkdir -p bin .data
go build -o bin/merch-store ./cmd/merch-store
go build -o bin/loadgen ./cmd/loadgen

export SERVER_ADDR="${SERVER_ADDR:-127.0.0.1:$(free_port)}"
export ADMIN_ADDR="${ADMIN_ADDR:-127.0.0.1:$(free_port)}"
[[ "$SERVER_ADDR" != "$ADMIN_ADDR" ]] || die "SERVER_ADDR and ADMIN_ADDR are both $SERVER_ADDR"
refuse_taken "$SERVER_ADDR" "$ADMIN_ADDR"

db=""
drop_db() {
  [[ -n "$db" && -z "${KEEP_DB:-}" ]] || return 0
  scripts/pg.sh psql -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
if [[ -n "${BENCH_DATABASE_URL:-}" ]]; then
  name="${BENCH_DATABASE_URL%%\?*}"; name="${name##*/}"
  [[ "$name" != merch ]] || die "BENCH_DATABASE_URL names database \"merch\", the one make run uses: give a bench its own"
  url="$BENCH_DATABASE_URL"
else
  scripts/pg.sh up
  base="$(scripts/pg.sh url)"
  db="merch_bench_$$"
  scripts/pg.sh psql -q -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null ||
    die "could not create database $db in the project-local PostgreSQL ($base)"
  url="${base%/merch*}/$db?sslmode=disable"
fi

log=".data/server.log"
# shellcheck disable=SC2086
env DATABASE_URL="$url" HTTP_ADDR="$SERVER_ADDR" ADMIN_ADDR="$ADMIN_ADDR" REGISTER_RATE=0 \
  JWT_SECRET="${JWT_SECRET:-dev-secret-not-for-production}" LOG_LEVEL="${LOG_LEVEL:-warn}" \
  ${SERVER_ENV:-} bin/merch-store >"$log" 2>&1 &
export SERVER_PID=$!
stop() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
  drop_db
}
trap stop EXIT
wait_own_server "$SERVER_PID" "$log" "$ADMIN_ADDR" "$SERVER_ADDR"
echo "with-server: merch-store pid $SERVER_PID on $SERVER_ADDR (admin $ADMIN_ADDR), database ${db:-from BENCH_DATABASE_URL}, log $log" >&2
rc=0
"$@" || rc=$?
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  tail -n 30 "$log" >&2 || true
  die "the server (pid $SERVER_PID) exited during the run: its figures are not to be trusted (log: $log)"
fi
exit "$rc"
