"""Dependency aliases used by the routes (one place, as in the full-stack FastAPI template)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pzone.storage import ObjectStore
from pzone_api.processing import PhotoQueue
from pzone_api.settings import Settings


# Dependencies that do no I/O are ``async def``: FastAPI runs a sync dependency in its threadpool, and that hop costs
# more CPU (~0.1 ms) than most of them do.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_db(engine: Annotated[Engine, Depends(get_engine)]) -> AsyncIterator[Session]:
    """A session per request. Opening one does no I/O; closing one does only while it still holds a connection
    (a transaction to roll back), and only then in the threadpool, so the event loop never waits on the database."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


async def get_photo_queue(request: Request) -> PhotoQueue:
    return request.app.state.photo_queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
DbDep = Annotated[Session, Depends(get_db)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
PhotoQueueDep = Annotated[PhotoQueue, Depends(get_photo_queue)]

# --- auth (sessions, current user, roles, CSRF) ------------------------------------------------------------------------
# Imports of this section stay here so that the section can grow without touching the file's head.
import contextlib  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from fastapi import HTTPException, status  # noqa: E402

from pzone.db.models import User  # noqa: E402
from pzone.storage.factory import local_signing_key  # noqa: E402
from pzone_api.ratelimit import AttemptLimiter, attempt_limiter_from_settings  # noqa: E402
from pzone_api.security import PasswordHashing, constant_time_equal  # noqa: E402
from pzone_api.sessions import (  # noqa: E402
    DEFAULT_REDIS_PREFIX,
    SessionData,
    SessionStore,
    async_redis_client_from_settings,
    redis_client_from_settings,
    session_store_from_settings,
)

SESSION_COOKIE = "pzone_session"
CSRF_COOKIE = "pzone_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class AuthBackends:
    """The session store and the login and sign-up limiters of one app (and the engine they were made for)."""

    engine: Engine
    sessions: SessionStore
    login_limiter: AttemptLimiter
    signup_limiter: AttemptLimiter
    browser_key: bytes = (
        b""  # signs the cookie of a browser that signed in to an account (pzone_api.ratelimit)
    )
    async_redis: Any = None  # redis.asyncio.Redis of the session lookups, closed with the app (aclose)

    async def aclose(self) -> None:
        if self.async_redis is not None:
            with contextlib.suppress(Exception):
                await self.async_redis.aclose()


_auth_backends_lock = threading.Lock()


async def get_auth_backends(request: Request) -> AuthBackends:
    """Created on first use from ``app.state.settings`` and cached on ``app.state.auth_backends``.

    ``app.state.redis_key_prefix`` (set before startup) overrides the Redis key prefix ``pzone:`` (tests use a
    random one per test on a shared Redis).
    """
    state = request.app.state
    engine: Engine = state.engine
    backends: AuthBackends | None = getattr(state, "auth_backends", None)
    if backends is None or backends.engine is not engine:  # a new lifespan makes a new engine
        with _auth_backends_lock:
            backends = getattr(state, "auth_backends", None)
            if backends is None or backends.engine is not engine:
                settings: Settings = state.settings
                prefix: str = getattr(state, "redis_key_prefix", DEFAULT_REDIS_PREFIX)
                client = redis_client_from_settings(settings)
                async_client = async_redis_client_from_settings(settings)
                backends = AuthBackends(
                    engine=engine,
                    sessions=session_store_from_settings(
                        settings,
                        engine,
                        redis_client=client,
                        redis_prefix=prefix,
                        async_redis_client=async_client,
                    ),
                    login_limiter=attempt_limiter_from_settings(
                        settings,
                        "login",
                        settings.login_window_s,
                        redis_client=client,
                        redis_prefix=prefix,
                    ),
                    signup_limiter=attempt_limiter_from_settings(
                        settings,
                        "signup",
                        settings.signup_window_s,
                        redis_client=client,
                        redis_prefix=prefix,
                    ),
                    browser_key=local_signing_key(settings),
                    async_redis=async_client,
                )
                state.auth_backends = backends
    return backends


async def get_session_store(request: Request) -> SessionStore:
    return (await get_auth_backends(request)).sessions


async def get_login_limiter(request: Request) -> AttemptLimiter:
    return (await get_auth_backends(request)).login_limiter


async def get_signup_limiter(request: Request) -> AttemptLimiter:
    return (await get_auth_backends(request)).signup_limiter


async def get_browser_key(request: Request) -> bytes:
    return (await get_auth_backends(request)).browser_key


async def get_password_hashing(request: Request) -> PasswordHashing:
    """``app.state.password_hashing`` when set (tests use cheaper parameters), else argon2-cffi's defaults with
    ``PZONE_PASSWORD_HASH_MEMORY_MIB`` bounding the hashes at once; made on first use."""
    state = request.app.state
    hashing: PasswordHashing | None = getattr(state, "password_hashing", None)
    if hashing is None:
        with _auth_backends_lock:
            hashing = getattr(state, "password_hashing", None)
            if hashing is None:
                settings: Settings = state.settings
                hashing = state.password_hashing = PasswordHashing(
                    memory_budget_mib=settings.password_hash_memory_mib
                )
    return hashing


SessionStoreDep = Annotated[SessionStore, Depends(get_session_store)]
LoginLimiterDep = Annotated[AttemptLimiter, Depends(get_login_limiter)]
SignupLimiterDep = Annotated[AttemptLimiter, Depends(get_signup_limiter)]
BrowserKeyDep = Annotated[bytes, Depends(get_browser_key)]
PasswordHashingDep = Annotated[PasswordHashing, Depends(get_password_hashing)]


def check_csrf(request: Request, session: SessionData) -> None:
    """403 unless a safe method, or ``X-CSRF-Token`` equals the session's CSRF token."""
    if request.method not in UNSAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"CSRF token missing: send the {CSRF_HEADER} header with the csrf_token of your session.",
        )
    if not constant_time_equal(sent, session.csrf_token):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"CSRF token invalid: the {CSRF_HEADER} header does not match your session's csrf_token.",
        )


async def current_session(request: Request, sessions: SessionStoreDep) -> SessionData:
    """The session of the ``pzone_session`` cookie (401 when missing, unknown or expired).

    For unsafe methods (POST, PUT, PATCH, DELETE) the CSRF header is checked too (403), so every authenticated
    mutating route is protected even if it forgets :data:`CsrfChecked`. Async: on Redis the lookup is an asyncio
    read on the event loop, in SQL one trip to the threadpool.
    """
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Not authenticated: log in first.")
    session = await sessions.aget(token)
    if session is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Session expired or invalid: log in again.")
    check_csrf(request, session)
    return session


CurrentSession = Annotated[SessionData, Depends(current_session)]


def current_user(session: CurrentSession, db: DbDep) -> User:
    """The active user of the current session (401 otherwise)."""
    user = db.get(User, session.user_id)
    if user is None or not user.is_active:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Session expired or invalid: log in again.")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def require_operator(user: CurrentUser) -> User:
    """The current user when an operator (403 otherwise)."""
    if user.role != "operator":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Operator role required.")
    return user


OperatorUser = Annotated[User, Depends(require_operator)]


async def require_csrf(request: Request, session: CurrentSession) -> None:
    """For unsafe methods: a valid session and ``X-CSRF-Token`` equal to its CSRF token (401 / 403)."""
    check_csrf(request, session)  # current_session checked it already; stated again for readers of the route


# Put on mutating routes: ``@router.post(..., dependencies=[CsrfChecked])``.
CsrfChecked = Depends(require_csrf)
