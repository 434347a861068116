"""Read-only access to the platform's database: an engine that cannot write, and why a database cannot be read.

A reader that must leave the platform exactly as it found it (the snapshot stage of `dvc repro`) opens it here:
SQLite through a ``mode=ro`` URI (nothing is created, not even the file or its folder), PostgreSQL in sessions whose
transactions are read-only (``default_transaction_read_only``), so a write fails instead of happening.
:func:`check_readable` turns a missing file, an unreachable server or a schema at another revision than the code's
into a :class:`DatabaseUnavailable` that says which.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pzone.db.engine import safe_url
from pzone.errors import UserError, one_line

MISSING = "missing"
UNREACHABLE = "unreachable"
BEHIND = "behind"

_HINTS = {
    MISSING: "point PZONE_DATA_DIR (or PZONE_DATABASE_URL) at the platform's, or create one with `pzone db upgrade`",
    UNREACHABLE: "is the server up, and does PZONE_DATABASE_URL name it?",
    BEHIND: "bring the schema to the code's with `pzone db upgrade`",
}


class DatabaseUnavailable(UserError):
    """The database cannot be read; ``reason`` is :data:`MISSING`, :data:`UNREACHABLE` or :data:`BEHIND`."""

    def __init__(self, message: str, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint if hint is not None else _HINTS[reason])
        self.reason = reason


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (absolute), None for other databases (and for SQLite in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


def read_only_engine(url: str, **kwargs: Any) -> Engine:
    """An engine on ``url`` through which nothing can be written (connections are opened per use: NullPool)."""
    kwargs.setdefault("poolclass", NullPool)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            raise ValueError(f"a read-only engine needs a database file, not {safe_url(url)}")
        uri = f"file:{quote(str(path))}?mode=ro"
        engine = create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False), **kwargs
        )

        @event.listens_for(engine, "connect")
        def _wait_for_writers(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")  # a live platform's writer may hold the lock briefly
            cursor.close()

        return engine
    connect_args = dict(kwargs.pop("connect_args", {}))
    options = " ".join(filter(None, [connect_args.get("options"), "-c default_transaction_read_only=on"]))
    connect_args["options"] = options
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args.setdefault("connect_timeout", 10)  # a server that never answers: a sentence, not a hang
    return create_engine(url, connect_args=connect_args, **kwargs)


def check_readable(url: str, engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` unless ``engine`` (on ``url``) reaches a database at the code's schema."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from pzone.migrations import alembic_config

    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise DatabaseUnavailable(f"there is no platform database at {path}", MISSING)
    try:
        with engine.connect() as connection:
            at = MigrationContext.configure(connection).get_current_revision()
    except exc.DBAPIError as error:
        raise DatabaseUnavailable(
            f"cannot reach the database at {safe_url(url)}: {one_line(error.orig or error)}", UNREACHABLE
        ) from None
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if at != head:
        raise DatabaseUnavailable(
            f"the database at {safe_url(url)} is at schema revision {at or 'none (never migrated)'}, "
            f"the code expects {head}",
            BEHIND,
        )
