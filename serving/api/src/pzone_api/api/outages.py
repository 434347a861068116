"""What a request gets while a service behind the API is down: a 503 with a stable code and ``Retry-After``.

The database, Redis (sessions, the log-in limiter, the photo queue) and the object store can each be away for a
while (a restart, a failover). A request that needs one of them then fails before it records anything — every write
path commits only after the service has answered — so the honest answer is "try again shortly", never a 500. The
clients reconnect by themselves (SQLAlchemy's pool pre-ping, redis-py, botocore), so the API recovers without a
restart once the service is back.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from pzone.storage import ObjectStoreUnavailable
from pzone_api.api.errors import refused

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
DATABASE_UNAVAILABLE = "database_unavailable"
SESSIONS_UNAVAILABLE = "sessions_unavailable"
STORE_UNAVAILABLE = "store_unavailable"

# Any route may answer it: declared once, for the whole app.
UNAVAILABLE = refused(
    503,
    "A service behind the API is down for now (database_unavailable, sessions_unavailable, store_unavailable): "
    "nothing was recorded; try again after Retry-After seconds.",
)


def unavailable(code: str, reason: str) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"detail": {"code": code, "reason": reason}},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: object store unavailable (%s)", request.method, request.url.path, exc)
    return unavailable(STORE_UNAVAILABLE, "the photo store cannot be reached; try again shortly")


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: Redis unavailable (%s)", request.method, request.url.path, type(exc).__name__)
    return unavailable(SESSIONS_UNAVAILABLE, "sign-in is unavailable for a moment; try again shortly")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        logger.warning(
            "%s %s: database unavailable (%s)", request.method, request.url.path, type(exc).__name__
        )
        return unavailable(DATABASE_UNAVAILABLE, "the database cannot be reached; try again shortly")
    raise exc  # any other database error is a bug: the server's own 500


def install_outage_handlers(app: FastAPI) -> None:
    import redis.exceptions

    app.add_exception_handler(ObjectStoreUnavailable, _store_down)
    # ConnectionError and TimeoutError are the outage errors; a refused command (ResponseError) is a bug.
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    app.add_exception_handler(DBAPIError, _database_error)
