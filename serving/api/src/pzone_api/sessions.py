"""Login sessions: opaque random tokens in a cookie, the server-side record in Redis or in SQL.

A token is ``secrets.token_urlsafe(32)``; only its SHA-256 is stored (a leaked store does not leak live cookies).
Each session carries its own CSRF token (double-submit: the client echoes it in ``X-CSRF-Token``). Sessions last
``session_ttl_s`` from login (no sliding renewal).

* :class:`RedisSessionStore` (when ``PZONE_REDIS_URL`` is set): key ``<prefix>session:<sha256(token)>`` holding a
  small JSON document, with the TTL as Redis expiry. Survives API restarts and is shared by every API process.
* :class:`SqlSessionStore` (otherwise): rows of ``web_sessions``; expired rows are never returned and are purged
  opportunistically (on every new session and when one is looked up).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pzone.db.models import WebSession

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from pzone_api.settings import Settings

DEFAULT_REDIS_PREFIX = "pzone:"
MAX_TOKEN_CHARS = 128  # token_urlsafe(32) is 43 characters; anything much longer is not ours


@dataclass(frozen=True)
class SessionData:
    user_id: str
    csrf_token: str
    expires_at: datetime


class SessionStore(Protocol):
    def create(self, user_id: str) -> tuple[str, SessionData]:
        """A new session: (token for the cookie, its data)."""
        ...

    def get(self, token: str) -> SessionData | None:
        """The session of this token, or None when unknown or expired."""
        ...

    async def aget(self, token: str) -> SessionData | None:
        """:meth:`get` for the event loop (every signed-in request asks it): no blocking I/O on the loop."""
        ...

    def delete(self, token: str) -> None:
        """End the session (nothing happens for an unknown token)."""
        ...

    def delete_user(self, user_id: str) -> int:
        """End every session of the user (signed out everywhere); returns how many there were."""
        ...


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _plausible(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_CHARS


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SqlSessionStore:
    """Sessions in the ``web_sessions`` table (the embedded default)."""

    def __init__(self, engine: Engine, ttl_s: int) -> None:
        self.engine = engine
        self.ttl_s = ttl_s

    def create(self, user_id: str) -> tuple[str, SessionData]:
        token, now = new_token(), datetime.now(UTC)
        data = SessionData(user_id, new_token(), now + timedelta(seconds=self.ttl_s))
        with Session(self.engine) as session, session.begin():
            session.execute(delete(WebSession).where(WebSession.expires_at <= now))
            session.add(
                WebSession(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    csrf_token=data.csrf_token,
                    created_at=now,
                    expires_at=data.expires_at,
                )
            )
        return token, data

    def get(self, token: str) -> SessionData | None:
        if not _plausible(token):
            return None
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            row = session.get(WebSession, token_hash(token))
            if row is None:
                return None
            expires_at = _aware(row.expires_at)
            if expires_at <= now:
                session.delete(row)
                session.commit()
                return None
            return SessionData(row.user_id, row.csrf_token, expires_at)

    async def aget(self, token: str) -> SessionData | None:
        return await run_in_threadpool(self.get, token)

    def delete(self, token: str) -> None:
        if not _plausible(token):
            return
        with Session(self.engine) as session, session.begin():
            session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))

    def delete_user(self, user_id: str) -> int:
        with Session(self.engine) as session, session.begin():
            done = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
            return int(getattr(done, "rowcount", 0) or 0)

    def delete_expired(self) -> int:
        """Remove expired rows now; returns how many."""
        with Session(self.engine) as session, session.begin():
            done = session.execute(delete(WebSession).where(WebSession.expires_at <= datetime.now(UTC)))
            return int(getattr(done, "rowcount", 0) or 0)


class RedisSessionStore:
    """Sessions in Redis with native expiry (``SET ... EX ttl``).

    ``async_client`` (the same Redis, asyncio): :meth:`aget` reads with it on the event loop, which costs less than
    a trip to the threadpool and a blocking read there; without it, :meth:`aget` takes that trip.
    """

    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int,
        prefix: str = DEFAULT_REDIS_PREFIX,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.async_client = async_client

    def key(self, token: str) -> str:
        return f"{self.prefix}session:{token_hash(token)}"

    def user_key(self, user_id: str) -> str:
        """The set of a user's session keys (for :meth:`delete_user`); it lives as long as its newest session."""
        return f"{self.prefix}user-sessions:{user_id}"

    def create(self, user_id: str) -> tuple[str, SessionData]:
        token = new_token()
        data = SessionData(user_id, new_token(), datetime.now(UTC) + timedelta(seconds=self.ttl_s))
        document = {
            "user_id": user_id,
            "csrf_token": data.csrf_token,
            "expires_at": data.expires_at.isoformat(),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.key(token), json.dumps(document), ex=self.ttl_s)
        pipe.sadd(self.user_key(user_id), self.key(token))
        pipe.expire(self.user_key(user_id), self.ttl_s)
        pipe.execute()
        return token, data

    def get(self, token: str) -> SessionData | None:
        if not _plausible(token):
            return None
        return _session_of(self.client.get(self.key(token)))

    async def aget(self, token: str) -> SessionData | None:
        if self.async_client is None:
            return await run_in_threadpool(self.get, token)
        if not _plausible(token):
            return None
        return _session_of(await self.async_client.get(self.key(token)))

    def delete(self, token: str) -> None:
        if _plausible(token):
            self.client.delete(self.key(token))

    def delete_user(self, user_id: str) -> int:
        keys = [
            k.decode() if isinstance(k, bytes) else str(k)
            for k in self.client.smembers(self.user_key(user_id))
        ]
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*keys)
        pipe.delete(self.user_key(user_id))
        deleted = int(pipe.execute()[0])
        return deleted


def _session_of(raw: str | bytes | None) -> SessionData | None:
    """The session in a stored JSON document; None when there is none, it is damaged, or it expired."""
    if raw is None:
        return None
    try:
        document = json.loads(raw)
        data = SessionData(
            str(document["user_id"]),
            str(document["csrf_token"]),
            _aware(datetime.fromisoformat(document["expires_at"])),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return data if data.expires_at > datetime.now(UTC) else None


def redis_client_from_settings(settings: Settings) -> redis.Redis | None:
    """A Redis client for ``PZONE_REDIS_URL`` (strings in and out), or None when it is not set."""
    if settings.redis_url is None:
        return None
    import redis

    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def async_redis_client_from_settings(settings: Settings) -> redis.asyncio.Redis | None:
    """:func:`redis_client_from_settings` for asyncio; its connections belong to the event loop that opens them."""
    if settings.redis_url is None:
        return None
    import redis.asyncio

    return redis.asyncio.Redis.from_url(
        settings.redis_url.get_secret_value(),
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def session_store_from_settings(
    settings: Settings,
    engine: Engine,
    *,
    redis_client: redis.Redis | None = None,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
    async_redis_client: redis.asyncio.Redis | None = None,
) -> SessionStore:
    """Redis when ``PZONE_REDIS_URL`` is set (or a client is given), else the ``web_sessions`` table."""
    client = redis_client if redis_client is not None else redis_client_from_settings(settings)
    if client is not None:
        return RedisSessionStore(client, settings.session_ttl_s, redis_prefix, async_redis_client)
    return SqlSessionStore(engine, settings.session_ttl_s)
