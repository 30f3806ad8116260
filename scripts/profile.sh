#!/usr/bin/env bash
# CPU profile of the service under the mixed load (run under
# scripts/with-server.sh; pprof is on its ADMIN_ADDR). Writes bin/cpu.prof
# and bin/allocs.prof and prints the top of each.
#   DURATION  length of the CPU profile, any Go duration (default 10s;
#             pprof takes whole seconds, so it is rounded up); the older
#             PROFILE_SECONDS (a number) still wins when set
#   CONNS (default 64), MIX (default info=50,buy=25,send=25; writes carry
#   an Idempotency-Key, as loadgen's default)
# Time: registering the 1000 users (~80 s, bcrypt-bound), then the profile
# plus 3 s, then pprof's report (a few seconds).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
[[ -n "${ADMIN_ADDR:-}" && -n "${SERVER_PID:-}" ]] || die "run it under scripts/with-server.sh (make profile)"
secs="${PROFILE_SECONDS:-$(seconds "${DURATION:-10s}" ceil)}"
# Register the users first (bcrypt-bound), so the profile shows serving.
echo "profile: registering the users (progress every 5 s)" >&2
bin/loadgen -addr "$SERVER_ADDR" -interval 5s -prefix prof -setup-c 8 -d 1s -warmup 0s -mix info=100 >/dev/null
echo "profile: ${secs}s CPU profile under the load ${MIX:-info=50,buy=25,send=25}" >&2
bin/loadgen -addr "$SERVER_ADDR" -quiet -prefix prof -c "${CONNS:-64}" -d "$((secs + 3))s" -warmup 2s \
  -mix "${MIX:-info=50,buy=25,send=25}" >bin/profile-load.txt &
load=$!
trap 'kill -TERM $load 2>/dev/null || true' EXIT
sleep 2 # logins of known users take milliseconds; then steady state
curl -fsS "http://$ADMIN_ADDR/debug/pprof/profile?seconds=$secs" -o bin/cpu.prof
curl -fsS "http://$ADMIN_ADDR/debug/pprof/allocs" -o bin/allocs.prof
wait "$load"
trap - EXIT
own_listener "$SERVER_PID" "$ADMIN_ADDR" || die "the profiled server is not the one with-server.sh started"
cat bin/profile-load.txt
go tool pprof -top -nodecount=35 bin/merch-store bin/cpu.prof 2>/dev/null | head -45
echo
go tool pprof -top -nodecount=20 -sample_index=alloc_objects bin/merch-store bin/allocs.prof 2>/dev/null | head -30
