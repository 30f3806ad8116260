"""Locust scenario for the merch store API, mirroring cmd/loadgen.

Each simulated user logs in once on start (creating its account with 1000
coins on first auth), then runs weighted tasks: info 50, buy 25, send 25.
A 400 "insufficient funds" answer is an expected business outcome: it is
reported as a success under its own name ("buy (insufficient funds)",
"send (insufficient funds)") so it is counted separately from both normal
successes and failures. Any other non-2xx status or a connection error is
a failure.

Run headless and bounded, e.g.:

    locust -f locust/locustfile.py --headless -u 50 -r 10 -t 30s \
        --host http://127.0.0.1:8080 --only-summary

Environment:
    MERCH_PREFIX    user name prefix (default: "lc" + 8 random hex digits, so
                    repeated runs create fresh users)
    MERCH_PASSWORD  password of every simulated user (default "locust-password")
    MERCH_FUNDS_MSG body substring marking an expected 400 (default "insufficient")
"""

import itertools
import os
import random
import uuid

import gevent
from locust import HttpUser, constant, task
from locust.exception import StopUser

PREFIX = os.environ.get("MERCH_PREFIX") or "lc" + uuid.uuid4().hex[:8] + "-"
PASSWORD = os.environ.get("MERCH_PASSWORD", "locust-password")
FUNDS_MSG = os.environ.get("MERCH_FUNDS_MSG", "insufficient").lower()

# Mostly cheap items so users keep coins for a while (same idea as loadgen).
CHEAP_ITEMS = ["pen", "socks", "cup"]
OTHER_ITEMS = ["book", "wallet", "t-shirt", "umbrella", "powerbank", "hoody", "pink-hoody"]

AUTH_ATTEMPTS = 5

# Per-process state. gevent switches only on I/O, so plain list/counter
# updates need no locking. Only users whose auth succeeded are listed, so
# every send goes to an existing recipient.
_user_ids = itertools.count()
_registered = []


class MerchUser(HttpUser):
    host = "http://127.0.0.1:8080"
    # No think time: like loadgen's closed model, the next request goes out
    # as soon as the previous one completes.
    wait_time = constant(0)

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
        with self.client.get(f"/api/buy/{item}", headers=self.headers, name="buy", catch_response=True) as r:
            _check(r)

    @task(25)
    def send(self):
        to = self._other_user()
        if to is None:
            return  # alone so far: nobody to send to yet
        body = {"toUser": to, "amount": random.randint(1, 5)}
        with self.client.post("/api/sendCoin", json=body, headers=self.headers, name="send", catch_response=True) as r:
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
