"""Locust scenario for the merch store API, mirroring cmd/loadgen.

Each simulated user logs in once on start (creating its account with 1000
coins on first auth), then runs weighted tasks: info 50, buy 25, send 25.
A 400 "insufficient funds" answer is an expected business outcome: it is
reported as a success under its own name ("buy (insufficient funds)",
"send (insufficient funds)") so it is counted separately from both normal
successes and failures. Any other non-2xx status or a connection error is
a failure. Every buy and sendCoin carries its own Idempotency-Key (a random
per-process prefix and a counter), as loadgen's do, so write figures include
the service storing the key. The client is FastHttpUser (geventhttpclient, a
dependency of Debian's python3-locust): several times cheaper per request
than HttpUser's requests session, so Locust itself is less of the limit.

Run headless and bounded, e.g.:

    locust -f locust/locustfile.py --headless -u 50 -r 10 -t 30s \
        --host http://127.0.0.1:8080 --only-summary

Environment:
    MERCH_PREFIX    user name prefix (default: "lc" + 8 random hex digits, so
                    repeated runs create fresh users)
    MERCH_PASSWORD  password of every simulated user (default "locust-password")
    MERCH_FUNDS_MSG body substring marking an expected 400 (default "insufficient")
    MERCH_KEYS      0 to send writes without Idempotency-Key (default 1)
    MERCH_PROGRESS  seconds between progress lines on stderr (default 5; 0 = none)
"""

import itertools
import os
import random
import sys
import time
import uuid

import gevent
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser

PREFIX = os.environ.get("MERCH_PREFIX") or "lc" + uuid.uuid4().hex[:8] + "-"
PASSWORD = os.environ.get("MERCH_PASSWORD", "locust-password")
FUNDS_MSG = os.environ.get("MERCH_FUNDS_MSG", "insufficient").lower()
KEYS = os.environ.get("MERCH_KEYS", "1") not in ("0", "false", "no", "off", "")
PROGRESS_S = float(os.environ.get("MERCH_PROGRESS", "5"))

# Keys are honoured for 24 hours per user, so they are unique across runs
# (random prefix) and within one (counter): 16 + 1 + up to 20 characters of
# the 64 allowed. A counter costs nothing next to uuid4 per request.
_KEY_RUN = uuid.uuid4().hex[:16]
_key_seq = itertools.count()

# Mostly cheap items so users keep coins for a while (same idea as loadgen).
CHEAP_ITEMS = ["pen", "socks", "cup"]
OTHER_ITEMS = ["book", "wallet", "t-shirt", "umbrella", "powerbank", "hoody", "pink-hoody"]

AUTH_ATTEMPTS = 5

# Per-process state. gevent switches only on I/O, so plain list/counter
# updates need no locking. Only users whose auth succeeded are listed, so
# every send goes to an existing recipient.
_user_ids = itertools.count()
_registered = []


def _write_headers(headers):
    """The headers of one write: the user's, plus a fresh Idempotency-Key."""
    if not KEYS:
        return headers
    return {**headers, "Idempotency-Key": f"{_KEY_RUN}-{next(_key_seq)}"}


class MerchUser(FastHttpUser):
    host = "http://127.0.0.1:8080"
    # No think time: like loadgen's closed model, the next request goes out
    # as soon as the previous one completes.
    wait_time = constant(0)
    # One attempt per request (geventhttpclient counts attempts): a write
    # is never sent twice behind the statistics' back. Bounded waits.
    max_retries = 1
    connection_timeout = 10.0
    network_timeout = 10.0

    def on_start(self):
        self.username = f"{PREFIX}{next(_user_ids)}"
        token = self._login()
        if token is None:
            raise StopUser()
        self.headers = {"Authorization": f"Bearer {token}"}
        _registered.append(self.username)

    def _login(self):
        """Authenticates, retrying 429/503 and connection errors with a
        short back-off (bcrypt makes first logins slow on a fresh service)."""
        body = {"username": self.username, "password": PASSWORD}
        for attempt in range(AUTH_ATTEMPTS):
            if attempt:
                gevent.sleep(0.2 * attempt)
            with self.client.post("/api/auth", json=body, name="auth", catch_response=True) as r:
                if r.status_code == 200:
                    try:
                        token = r.json()["token"]
                    except (ValueError, KeyError, TypeError):
                        r.failure("auth: response has no token")
                        return None
                    r.success()
                    return token
                # A non-2xx is a failure even when it will be retried, so
                # overload (429/503) stays visible in the statistics.
                if r.status_code == 0:
                    r.failure(f"auth: connection error: {r.error}")
                else:
                    r.failure(f"auth: HTTP {r.status_code}: {_snippet(r)}")
                if r.status_code not in (0, 429, 503):
                    return None
        return None

    @task(50)
    def info(self):
        with self.client.get("/api/info", headers=self.headers, name="info", catch_response=True) as r:
            _check(r)

    @task(25)
    def buy(self):
        items = CHEAP_ITEMS if random.random() < 0.9 else OTHER_ITEMS
        item = random.choice(items)
        with self.client.get(f"/api/buy/{item}", headers=_write_headers(self.headers), name="buy", catch_response=True) as r:
            _check(r)

    @task(25)
    def send(self):
        to = self._other_user()
        if to is None:
            return  # alone so far: nobody to send to yet
        body = {"toUser": to, "amount": random.randint(1, 5)}
        headers = _write_headers(self.headers)
        with self.client.post("/api/sendCoin", json=body, headers=headers, name="send", catch_response=True) as r:
            _check(r)

    def _other_user(self):
        if len(_registered) < 2:
            return None
        while True:
            to = random.choice(_registered)
            if to != self.username:
                return to


def _check(r):
    """2xx is success; 400 insufficient funds is an expected outcome
    (success, reported under a separate name); anything else fails."""
    if 200 <= r.status_code < 300:
        r.success()
    elif r.status_code == 400 and FUNDS_MSG in (r.text or "").lower():
        r.request_meta["name"] = r.request_meta["name"] + " (insufficient funds)"
        r.success()
    elif r.status_code == 0:
        r.failure(f"connection error: {r.error}")
    else:
        r.failure(f"HTTP {r.status_code}: {_snippet(r)}")


def _snippet(r):
    return (r.text or "")[:120]


# Progress: Locust's headless --only-summary run is silent until the end,
# and the first phase (every user's first login costs a bcrypt hash) can
# take a while, so print one line every MERCH_PROGRESS seconds.
_progress = None


@events.test_start.add_listener
def _start_progress(environment, **_kwargs):
    global _progress
    if PROGRESS_S > 0 and environment.runner is not None and _progress is None:
        _progress = gevent.spawn(_progress_loop, environment, time.monotonic())


@events.test_stop.add_listener
def _stop_progress(**_kwargs):
    global _progress
    if _progress is not None:
        _progress.kill(block=False)
        _progress = None


def _progress_loop(environment, start):
    last_n, last_t = 0, start
    while True:
        gevent.sleep(PROGRESS_S)
        total, now = environment.runner.stats.total, time.monotonic()
        rps = (total.num_requests - last_n) / max(now - last_t, 1e-9)  # over the last interval
        last_n, last_t = total.num_requests, now
        print(
            f"[{now - start:6.1f}s] users {environment.runner.user_count}, "
            f"logged in {len(_registered)}, requests {total.num_requests}, "
            f"failures {total.num_failures}, {rps:.0f} req/s",
            file=sys.stderr,
            flush=True,
        )
