"""Limits on attempts: failed logins, and sign-ups per client address (each argon2id hash costs 64 MiB and a few
hundred milliseconds).

A login counts against three keys, each with its own limit within ``login_window_s`` (then 429 with
``Retry-After`` until the window has passed):

* the e-mail address *from this client address* (``PZONE_LOGIN_MAX_ATTEMPTS``, 5): guessing one account from one
  place stops soon, and someone guessing elsewhere cannot lock its owner out here;
* the e-mail address from everywhere (``PZONE_LOGIN_MAX_PER_EMAIL``, 20): guessing spread over many addresses stops
  too. A browser that signed in to the account before (a signed cookie of that account) is exempt from this key,
  so that such guessing cannot lock the owner out of the browsers they use;
* the client address over every e-mail address (``PZONE_LOGIN_MAX_PER_ADDRESS``, 50): one address guessing at many
  accounts stops, while the many people behind one NAT, each with a typo, do not lock each other out.

Each attempt is *reserved* before its password is hashed: one atomic step checks every key and counts the attempt
against all of them, so parallel attempts cannot all pass a check made before any of them failed (a hash takes a
while). A failed attempt keeps its reservation, which is the failure counted; a successful one forgets its pair's
failures and gives the other reservations back (the failures others made against the account stay counted: a
success must not unlock guessing at it, nor at other accounts from the same address).

* :class:`RedisAttemptLimiter` (when ``PZONE_REDIS_URL`` is set): a fixed window per key, ``INCR`` and ``EXPIRE`` in one
  Lua call; shared by every API process and surviving restarts.
* :class:`InProcessAttemptLimiter` (otherwise): a sliding window in this process's memory. It is **per process**: with
  N API workers an attacker gets up to N times the attempts, and a restart forgets the counts. Use Redis for more
  than one process.

The client address is ``request.client.host``: behind a reverse proxy, run uvicorn with ``--proxy-headers`` and
``--forwarded-allow-ips`` set to the proxy so that it is the real client's, not the proxy's.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pzone_api.sessions import DEFAULT_REDIS_PREFIX, redis_client_from_settings

if TYPE_CHECKING:
    import redis

    from pzone_api.settings import Settings


class AttemptLimiter(Protocol):
    def reserve(self, limits: Mapping[str, int]) -> int:
        """Count one attempt against every key (mapped to the attempts it is allowed per window) and return 0; or,
        when a key has had its attempts, count nothing and return the seconds until every key may try again (at
        least 1). Atomic across threads and processes that share the limiter's store."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Give back one reserved attempt of each key (an attempt that succeeded)."""
        ...

    def reset(self, key: str) -> None: ...


@dataclass(frozen=True)
class LoginKeys:
    """The keys of one login attempt (e-mail addresses hashed, so that none is kept in clear) and their limits."""

    pair: str
    email: str
    address: str
    limits: Mapping[str, int]

    def after_success(self, limiter: AttemptLimiter) -> None:
        """Forget this pair's failures; give this attempt's reservations on the other keys back."""
        limiter.reset(self.pair)
        limiter.release([key for key in self.limits if key != self.pair])


def login_keys(
    email: str,
    client_ip: str,
    *,
    per_pair: int,
    per_email: int,
    per_address: int,
    known_browser: bool = False,
) -> LoginKeys:
    """The keys of a login attempt; ``known_browser``: the client showed the account's browser cookie, which
    exempts it from the e-mail's key (see the module's notes)."""
    digest = hashlib.sha256(email.encode()).hexdigest()
    pair, email_key, address = f"pair:{digest}:{client_ip}", f"email:{digest}", f"ip:{client_ip}"
    limits = {pair: per_pair, address: per_address}
    if not known_browser:
        limits[email_key] = per_email
    return LoginKeys(pair, email_key, address, limits)


def browser_mark(key: bytes, email: str) -> str:
    """The value of the cookie that marks a browser as one that signed in to ``email``'s account (an HMAC: it
    cannot be made without the server's key, nor tells the address)."""
    return hmac.new(key, b"pzone-known-browser:" + email.encode(), hashlib.sha256).hexdigest()


def is_known_browser(key: bytes, email: str, cookie: str | None) -> bool:
    return cookie is not None and hmac.compare_digest(browser_mark(key, email), cookie)


class InProcessAttemptLimiter:
    """Sliding window in memory (per process; see the module's notes). Thread-safe."""

    SWEEP_EVERY = 1024

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        # Only the newest attempts up to a key's limit matter, so each deque is bounded by it.
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._since_sweep = 0

    def reserve(self, limits: Mapping[str, int]) -> int:
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key, allowed in limits.items():
                times = self._attempts.get(key)
                if times is not None and len(times) >= allowed:
                    wait = max(wait, times[-allowed] + self.window_s - now)
            if wait > 0:
                return max(1, math.ceil(wait))
            for key, allowed in limits.items():
                times = self._attempts.get(key)
                if times is None or times.maxlen != allowed:
                    times = self._attempts[key] = deque(times or (), maxlen=allowed)
                times.append(now)
            self._since_sweep += 1
            if self._since_sweep >= self.SWEEP_EVERY:
                self._since_sweep = 0
                horizon = now - self.window_s
                for key in [k for k, t in self._attempts.items() if not t or t[-1] <= horizon]:
                    del self._attempts[key]
        return 0

    def release(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                times = self._attempts.get(key)
                if times:
                    times.pop()  # the newest: this attempt's, or one as recent

    def reset(self, key: str) -> None:
        with self._lock:
            self._attempts.pop(key, None)


# Check every key, then count the attempt against all of them, in one step (Redis runs a script atomically); a key's
# window starts with its first attempt, and a key never lives without a TTL. KEYS: the limit keys; ARGV: the attempts
# allowed for each key, in the same order, then the window in seconds. Returns 0, or the seconds until every key may
# try again.
_RESERVE_SCRIPT = """
local window = tonumber(ARGV[#KEYS + 1])
local wait = 0
for i, key in ipairs(KEYS) do
    local n = tonumber(redis.call('GET', key) or '0')
    if n >= tonumber(ARGV[i]) then
        local ttl = redis.call('TTL', key)
        if ttl < 1 then ttl = window end
        if ttl > wait then wait = ttl end
    end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
    local n = redis.call('INCR', key)
    if n == 1 or redis.call('TTL', key) < 0 then
        redis.call('EXPIRE', key, window)
    end
end
return 0
"""
# Give one attempt back, never below zero (the window may have ended meanwhile, and the key with it).
_RELEASE_SCRIPT = """
for _, key in ipairs(KEYS) do
    if tonumber(redis.call('GET', key) or '0') > 0 then
        redis.call('DECR', key)
    end
end
return 0
"""


class RedisAttemptLimiter:
    """Fixed window per key in Redis: ``<prefix><name>:<key>`` counts the attempts (a success may give its own
    back) and expires with the window."""

    def __init__(
        self,
        client: redis.Redis,
        window_s: int,
        prefix: str = DEFAULT_REDIS_PREFIX,
        name: str = "login",
    ) -> None:
        self.client = client
        self.name = name
        self.window_s = window_s
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    def _key(self, key: str) -> str:
        return f"{self.prefix}{self.name}:{key}"

    def reserve(self, limits: Mapping[str, int]) -> int:
        keys = list(limits)
        return int(
            self._reserve(keys=[self._key(k) for k in keys], args=[*(limits[k] for k in keys), self.window_s])
        )

    def release(self, keys: Sequence[str]) -> None:
        self._release(keys=[self._key(k) for k in keys])

    def reset(self, key: str) -> None:
        self.client.delete(self._key(key))


def signup_limit_key(client_ip: str) -> str:
    return f"ip:{client_ip}"


def attempt_limiter_from_settings(
    settings: Settings,
    name: str,
    window_s: int,
    *,
    redis_client: redis.Redis | None = None,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
) -> AttemptLimiter:
    """Redis when ``PZONE_REDIS_URL`` is set (or a client is given), else the in-process window; ``name`` keeps
    one limit's keys apart from another's (``login``, ``signup``)."""
    client = redis_client if redis_client is not None else redis_client_from_settings(settings)
    if client is not None:
        return RedisAttemptLimiter(client, window_s, redis_prefix, name)
    return InProcessAttemptLimiter(window_s)
