"""Limits on attempts: failed logins per normalized e-mail address and per client address, and sign-ups per client
address (each argon2id hash costs 64 MiB and a few hundred milliseconds).

After ``login_max_attempts`` failures of one key within ``login_window_s``, further logins for that key are refused
(429 with ``Retry-After``) until the window has passed. Each attempt is *reserved* before its password is hashed:
one atomic step checks every key and counts the attempt against all of them, so parallel attempts cannot all pass a
check made before any of them failed (a hash takes a while). A failed attempt keeps its reservation, which is the
failure counted; a successful one resets its e-mail key and gives the client address's reservation back (one valid
account must not unlock guessing at others from the same address, nor use up its address's attempts).

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
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pzone_api.sessions import DEFAULT_REDIS_PREFIX, redis_client_from_settings

if TYPE_CHECKING:
    import redis

    from pzone_api.settings import Settings


class AttemptLimiter(Protocol):
    def reserve(self, keys: Sequence[str]) -> int:
        """Count one attempt against every key and return 0; or, when a key has had its attempts, count nothing and
        return the seconds until every key may try again (at least 1). Atomic across threads and processes that
        share the limiter's store."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Give back one reserved attempt of each key (an attempt that succeeded)."""
        ...

    def reset(self, key: str) -> None: ...


def login_limit_keys(email: str, client_ip: str) -> tuple[str, str]:
    """The (e-mail key, client key) of a login attempt; the address is hashed so that it is not kept in clear."""
    return f"email:{hashlib.sha256(email.encode()).hexdigest()}", f"ip:{client_ip}"


class InProcessAttemptLimiter:
    """Sliding window in memory (per process; see the module's notes). Thread-safe."""

    SWEEP_EVERY = 1024

    def __init__(
        self, max_attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.clock = clock
        # Only the newest max_attempts attempts of a key matter, so each deque is bounded.
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._since_sweep = 0

    def reserve(self, keys: Sequence[str]) -> int:
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key in keys:
                times = self._attempts.get(key)
                if times is not None and len(times) >= self.max_attempts:
                    wait = max(wait, times[0] + self.window_s - now)
            if wait > 0:
                return max(1, math.ceil(wait))
            for key in keys:
                times = self._attempts.get(key)
                if times is None:
                    times = self._attempts[key] = deque(maxlen=self.max_attempts)
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
# allowed, the window in seconds. Returns 0, or the seconds until every key may try again.
_RESERVE_SCRIPT = """
local wait = 0
for _, key in ipairs(KEYS) do
    local n = tonumber(redis.call('GET', key) or '0')
    if n >= tonumber(ARGV[1]) then
        local ttl = redis.call('TTL', key)
        if ttl < 1 then ttl = tonumber(ARGV[2]) end
        if ttl > wait then wait = ttl end
    end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
    local n = redis.call('INCR', key)
    if n == 1 or redis.call('TTL', key) < 0 then
        redis.call('EXPIRE', key, ARGV[2])
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
        max_attempts: int,
        window_s: int,
        prefix: str = DEFAULT_REDIS_PREFIX,
        name: str = "login",
    ) -> None:
        self.client = client
        self.name = name
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    def _key(self, key: str) -> str:
        return f"{self.prefix}{self.name}:{key}"

    def reserve(self, keys: Sequence[str]) -> int:
        return int(self._reserve(keys=[self._key(k) for k in keys], args=[self.max_attempts, self.window_s]))

    def release(self, keys: Sequence[str]) -> None:
        self._release(keys=[self._key(k) for k in keys])

    def reset(self, key: str) -> None:
        self.client.delete(self._key(key))


def signup_limit_key(client_ip: str) -> str:
    return f"ip:{client_ip}"


def attempt_limiter_from_settings(
    settings: Settings,
    name: str,
    max_attempts: int,
    window_s: int,
    *,
    redis_client: redis.Redis | None = None,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
) -> AttemptLimiter:
    """Redis when ``PZONE_REDIS_URL`` is set (or a client is given), else the in-process window; ``name`` keeps
    one limit's keys apart from another's (``login``, ``signup``)."""
    client = redis_client if redis_client is not None else redis_client_from_settings(settings)
    if client is not None:
        return RedisAttemptLimiter(client, max_attempts, window_s, redis_prefix, name)
    return InProcessAttemptLimiter(max_attempts, window_s)
