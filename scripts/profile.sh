#!/usr/bin/env bash
# CPU profile of the service under the mixed load (run under
# scripts/with-server.sh; pprof is on its ADMIN_ADDR). Writes bin/cpu.prof
# and bin/allocs.prof and prints the top of each.
set -euo pipefail
secs="${PROFILE_SECONDS:-10}"
# Register the users first (bcrypt-bound), so the profile shows serving.
bin/loadgen -addr "$SERVER_ADDR" -quiet -prefix prof -setup-c 8 -d 1s -warmup 0s -mix info=100 >/dev/null
bin/loadgen -addr "$SERVER_ADDR" -quiet -prefix prof -c "${CONNS:-64}" -d "$((secs + 3))s" -warmup 2s \
  -mix "${MIX:-info=50,buy=25,send=25}" >bin/profile-load.txt &
load=$!
sleep 2 # logins of known users take milliseconds; then steady state
curl -fsS "http://$ADMIN_ADDR/debug/pprof/profile?seconds=$secs" -o bin/cpu.prof
curl -fsS "http://$ADMIN_ADDR/debug/pprof/allocs" -o bin/allocs.prof
wait "$load"
cat bin/profile-load.txt
go tool pprof -top -nodecount=35 bin/merch-store bin/cpu.prof 2>/dev/null | head -45
echo
go tool pprof -top -nodecount=20 -sample_index=alloc_objects bin/merch-store bin/allocs.prof 2>/dev/null | head -30
