#!/usr/bin/env bash
# Project-local PostgreSQL server for `make run`.
#
# usage: scripts/pg.sh up|down|clean|status|url|psql [psql args...]
#
#   up      initdb (first time only), start (if not running), create database
#           "merch" (if missing). Quiet on success.
#   down    stop the server (fast mode) if it is running.
#   clean   stop it, then remove its data directory wherever it is (the
#           /tmp fallback below too) and the .data/pg links. `make clean`.
#   status  exit 0 if the server is running, 3 if not.
#   url     print the connection URL.
#   psql    run psql on the merch database; extra arguments go to psql.
#
# Data lives in <repo>/.data/pg, the log in <repo>/.data/pg.log. The server
# listens on 127.0.0.1:${PGPORT:-54329} only, with trust authentication, and
# keeps its unix socket in the data directory. Binaries come from
# ${PGBIN:-/usr/lib/postgresql/15/bin}.
#
# PostgreSQL refuses to run as root, so when run as root the server commands
# run as the "postgres" OS user (runuser). If that user cannot reach
# <repo>/.data (e.g. the repo is in a private mktemp -d directory), or the
# socket path would be too long, the data directory is kept in
# /tmp/merch-pg-<hash of repo path> instead and .data/pg (and .data/pg.log)
# are symlinks to it.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(dirname -- "$SCRIPT_DIR")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PGPORT:-54329}
DB=merch
DATA_LINK=$REPO/.data/pg
URL="postgres://postgres@127.0.0.1:$PORT/$DB?sslmode=disable"
WAIT=30 # seconds, for pg_ctl -w -t

# Keep libpq environment variables from redirecting our client commands.
unset PGHOST PGHOSTADDR PGDATABASE PGUSER PGPASSWORD PGPASSFILE PGSERVICE \
	PGSERVICEFILE PGOPTIONS PGSSLMODE PGDATA PGCONNECT_TIMEOUT PGTARGETSESSIONATTRS
export LC_ALL=C

die() {
	echo "pg.sh: $*" >&2
	exit 1
}

case "$PORT" in
'' | *[!0-9]*) die "PGPORT must be a number, got '$PORT'" ;;
esac

if [[ $(id -u) == 0 ]]; then
	PG_OWNER=postgres
	as_pg() { runuser -u postgres -- "$@"; }
else
	PG_OWNER=$(id -un)
	as_pg() { "$@"; }
fi

# The postgres user may not be able to access the caller's working
# directory; everything below uses absolute paths.
cd /

# data_dir prints the real data directory if it has been set up (following
# the .data/pg symlink, whose target may be missing after a reboot), or
# nothing.
data_dir() {
	if [[ -L $DATA_LINK ]]; then
		readlink -- "$DATA_LINK"
	elif [[ -d $DATA_LINK ]]; then
		printf '%s\n' "$DATA_LINK"
	fi
}

log_file() {
	local dir=$1
	if [[ $dir == "$DATA_LINK" ]]; then
		printf '%s\n' "$REPO/.data/pg.log"
	else
		printf '%s\n' "$dir/server.log"
	fi
}

# sock_ok DIR: the unix socket path DIR/.s.PGSQL.PORT fits in sun_path.
sock_ok() {
	local path="$1/.s.PGSQL.$PORT"
	((${#path} <= 107))
}

# setup_dir creates the data directory (or its /tmp fallback and the
# symlinks) when missing and prints its real path.
setup_dir() {
	local dir
	dir=$(data_dir)
	if [[ -z $dir ]]; then
		[[ -d $REPO/.data ]] || mkdir -p -m 0755 -- "$REPO/.data"
		local why=""
		if ! as_pg test -x "$REPO/.data" -a -r "$REPO/.data" 2>/dev/null; then
			why="user $PG_OWNER cannot reach $REPO/.data"
		elif ! sock_ok "$DATA_LINK"; then
			why="$DATA_LINK is too long for a unix socket path"
		fi
		if [[ -z $why ]]; then
			dir=$DATA_LINK
		else
			local hash
			hash=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
			dir=/tmp/merch-pg-$hash
			ln -sfn -- "$dir" "$DATA_LINK"
			ln -sfn -- "$dir/server.log" "$REPO/.data/pg.log"
			echo "pg.sh: $why; keeping the server in $dir (.data/pg is a symlink to it)" >&2
		fi
	fi
	if [[ ! -d $dir ]]; then
		mkdir -m 0700 -- "$dir"
		[[ $PG_OWNER == "$(id -un)" ]] || chown "$PG_OWNER:" -- "$dir"
	fi
	local owner
	owner=$(stat -c %U -- "$dir")
	[[ $owner == "$PG_OWNER" ]] || die "$dir is owned by $owner, expected $PG_OWNER"
	[[ $dir != *"'"* ]] || die "data directory path must not contain a single quote: $dir"
	sock_ok "$dir" || die "socket path $dir/.s.PGSQL.$PORT is too long"
	if [[ $dir == "$DATA_LINK" ]]; then
		local log
		log=$(log_file "$dir")
		if [[ ! -e $log ]]; then
			: >"$log"
			chmod 0640 -- "$log"
		fi
		[[ $PG_OWNER == "$(id -un)" ]] || chown "$PG_OWNER:" -- "$log"
	fi
	printf '%s\n' "$dir"
}

running() {
	local dir=$1
	[[ -n $dir && -f $dir/PG_VERSION ]] || return 1
	as_pg "$PGBIN/pg_ctl" -D "$dir" status >/dev/null 2>&1
}

psql_q() {
	"$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"
}

cmd_up() {
	local dir log out
	dir=$(setup_dir)
	log=$(log_file "$dir")
	if [[ ! -f $dir/PG_VERSION ]]; then
		if ! out=$(as_pg "$PGBIN/initdb" -D "$dir" --auth=trust -U postgres \
			--encoding=UTF8 --locale=C --no-instructions 2>&1); then
			printf '%s\n' "$out" >&2
			die "initdb failed"
		fi
	fi
	if ! running "$dir"; then
		if ! as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$log" -w -t "$WAIT" \
			-o "-c listen_addresses=127.0.0.1 -p $PORT -k '$dir'" start >/dev/null; then
			echo "--- $log (tail) ---" >&2
			tail -n 20 -- "$log" >&2 || true
			die "server failed to start"
		fi
	fi
	local exists
	exists=$(psql_q -d postgres -c "select 1 from pg_database where datname = '$DB'")
	if [[ $exists != 1 ]]; then
		"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
	fi
}

cmd_down() {
	local dir
	dir=$(data_dir)
	if running "$dir"; then
		as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -w -t "$WAIT" stop >/dev/null
	fi
}

# cmd_clean removes only what cmd_up creates, and nothing if the server
# does not stop (set -e).
cmd_clean() {
	local dir
	dir=$(data_dir)
	cmd_down
	if [[ -n $dir && $dir != "$DATA_LINK" ]]; then
		case $dir in
		/tmp/merch-pg-*) rm -rf -- "$dir" ;;
		*) die "not removing $dir: $DATA_LINK points outside /tmp/merch-pg-*" ;;
		esac
	fi
	rm -rf -- "$DATA_LINK" "$REPO/.data/pg.log"
}

cmd_status() {
	local dir
	dir=$(data_dir)
	if running "$dir"; then
		echo "running: $URL (data: $dir)"
	else
		echo "not running"
		exit 3
	fi
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
clean) cmd_clean ;;
status) cmd_status ;;
url) printf '%s\n' "$URL" ;;
psql)
	shift
	exec "$PGBIN/psql" "$URL" "$@"
	;;
*)
	echo "usage: $0 up|down|clean|status|url|psql [psql args...]" >&2
	exit 2
	;;
esac
