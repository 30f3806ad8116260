#!/usr/bin/env bash
# The Locust scenario (locust/locustfile.py), headless and bounded, against
# the server scripts/with-server.sh started (make locust).
#   DURATION    total run time, ramp-up included, any Go duration (default
#               30s; Locust's -t takes whole seconds, so it is rounded up)
#   USERS (50), SPAWN_RATE (10 per second), MERCH_KEYS, MERCH_PROGRESS
#               (see locust/README.md)
# Time: DURATION plus Locust's start and summary (a few seconds).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
[[ -n "${SERVER_ADDR:-}" && -n "${SERVER_PID:-}" ]] || die "run it under scripts/with-server.sh (make locust)"
command -v locust >/dev/null || die "locust not found: apt-get install python3-locust (Debian's, 2.12)"
t=$(seconds "${DURATION:-30s}" ceil)
users="${USERS:-50}"; rate="${SPAWN_RATE:-10}"
echo "locust: $users users (spawned $rate/s, each logs in first), ${t}s in all; progress every ${MERCH_PROGRESS:-5}s" >&2
cd locust
exec locust -f locustfile.py --headless -u "$users" -r "$rate" -t "${t}s" --host "http://$SERVER_ADDR" --only-summary
