"""Limits on failed logins, per normalized e-mail address and per client address.

After ``login_max_attempts`` failures of one key within ``login_window_s``, further logins for that key are refused
(429 with ``Retry-After``) until the window has passed. A successful login resets its e-mail key (not the client
address's: one valid account must not unlock guessing at others from the same address).

* :class:`RedisLoginLimiter` (when ``PZONE_REDIS_URL`` is set): a fixed window per key, ``INCR`` and ``EXPIRE`` in one
  Lua call; shared by every API process and surviving restarts.
* :class:`InProcessLoginLimiter` (otherwise): a sliding window in this process's memory. It is **per process**: with
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


class LoginLimiter(Protocol):
    def blocked_for(self, keys: Sequence[str]) -> int:
        """0 when every key may try again, else the seconds until all may (at least 1)."""
        ...

    def record_failure(self, keys: Sequence[str]) -> None: ...

    def reset(self, key: str) -> None: ...


def login_limit_keys(email: str, client_ip: str) -> tuple[str, str]:
    """The (e-mail key, client key) of a login attempt; the address is hashed so that it is not kept in clear."""
    return f"email:{hashlib.sha256(email.encode()).hexdigest()}", f"ip:{client_ip}"


class InProcessLoginLimiter:
    """Sliding window in memory (per process; see the module's notes). Thread-safe."""

    SWEEP_EVERY = 1024

    def __init__(
        self, max_attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.clock = clock
        # Only the newest max_attempts failures of a key matter, so each deque is bounded.
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._since_sweep = 0

    def blocked_for(self, keys: Sequence[str]) -> int:
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is not None and len(times) >= self.max_attempts:
                    wait = max(wait, times[0] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def record_failure(self, keys: Sequence[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is None:
                    times = self._failures[key] = deque(maxlen=self.max_attempts)
                times.append(now)
            self._since_sweep += 1
            if self._since_sweep >= self.SWEEP_EVERY:
                self._since_sweep = 0
                horizon = now - self.window_s
                for key in [k for k, t in self._failures.items() if not t or t[-1] <= horizon]:
                    del self._failures[key]

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


# INCR, and start the window's expiry on the first failure (atomic, so a key never lives without a TTL).
_HIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('TTL', KEYS[1]) < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return n
"""


class RedisLoginLimiter:
    """Fixed window per key in Redis: ``<prefix>login:<key>`` counts failures and expires with the window."""

    def __init__(
        self, client: redis.Redis, max_attempts: int, window_s: int, prefix: str = DEFAULT_REDIS_PREFIX
    ) -> None:
        self.client = client
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.prefix = prefix
        self._hit = client.register_script(_HIT_SCRIPT)

    def _key(self, key: str) -> str:
        return f"{self.prefix}login:{key}"

    def blocked_for(self, keys: Sequence[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._key(key))
            pipe.ttl(self._key(key))
        replies = pipe.execute()
        wait = 0
        for count, ttl in zip(replies[::2], replies[1::2], strict=True):
            if count is not None and int(count) >= self.max_attempts:
                wait = max(wait, int(ttl) if int(ttl) > 0 else self.window_s)
        return wait

    def record_failure(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._hit(keys=[self._key(key)], args=[self.window_s])

    def reset(self, key: str) -> None:
        self.client.delete(self._key(key))


def login_limiter_from_settings(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
) -> LoginLimiter:
    """Redis when ``PZONE_REDIS_URL`` is set (or a client is given), else the in-process window."""
    client = redis_client if redis_client is not None else redis_client_from_settings(settings)
    if client is not None:
        return RedisLoginLimiter(client, settings.login_max_attempts, settings.login_window_s, redis_prefix)
    return InProcessLoginLimiter(settings.login_max_attempts, settings.login_window_s)
