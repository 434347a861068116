"""The retrain lock: one `dvc repro` at a time per machine (flock) and per database (PostgreSQL advisory lock)."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "retrain.lock"
# pg_try_advisory_lock key (a bigint every replica derives the same way): sha256("pzone-retrain")[:8].
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"pzone-retrain").digest()[:8], "big", signed=True)


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock (this machine's lock file, or the database's advisory lock)."""


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres"))


@contextmanager
def exclusive(data_dir: Path, database_url: str) -> Iterator[None]:
    """Hold the retrain lock: an flock on ``data_dir/retrain.lock`` and, on PostgreSQL, a session advisory lock, so
    that retrains on two machines (or pods) sharing one database exclude each other too. Raises :class:`RetrainBusy`
    at once, never waits. Both go with the process if it dies."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
            raise RetrainBusy(f"another retrain is running on this machine ({path}, {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        if is_postgres(database_url):
            with _advisory_lock(database_url):
                yield
        else:
            yield
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from pzone.db.engine import make_engine

    # Its own connection, kept open for the whole retrain: a session-level advisory lock lives as long as it.
    engine = make_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar():
                raise RetrainBusy(
                    "another retrain is running against this database (PostgreSQL advisory lock)"
                )
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
    finally:
        engine.dispose()
