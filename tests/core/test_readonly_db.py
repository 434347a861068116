"""Read-only access to the platform's database (``pzone.db.readonly``): reads work, writes fail on both dialects,
and a database that cannot be read says why — without creating anything."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from pzone.db.models import Zone
from pzone.db.readonly import (
    BEHIND,
    MISSING,
    UNREACHABLE,
    DatabaseUnavailable,
    check_readable,
    read_only_engine,
)
from pzone.migrations import downgrade
from tests.support.services import free_port


@pytest.mark.integration
def test_a_read_only_engine_reads_and_cannot_write(db_url: str) -> None:
    engine = read_only_engine(db_url)
    try:
        check_readable(db_url, engine)  # migrated to head: readable
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(Zone)) == 0
            with pytest.raises(DBAPIError, match=r"readonly|read-only"):
                connection.execute(insert(Zone).values(id="z-1"))
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(Zone)) == 0
    finally:
        engine.dispose()


def reason_of(url: str) -> DatabaseUnavailable:
    engine = read_only_engine(url)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            check_readable(url, engine)
    finally:
        engine.dispose()
    return caught.value


@pytest.mark.integration
def test_a_database_that_cannot_be_read_says_why_and_nothing_is_created(
    tmp_path: Path, sqlite_url: str
) -> None:
    missing = tmp_path / "no-platform" / "pzone.db"
    problem = reason_of(f"sqlite:///{missing}")
    assert problem.reason == MISSING and str(missing) in str(problem) and problem.hint
    assert not missing.parent.exists()  # not even the folder

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    problem = reason_of(f"sqlite:///{empty}")
    assert problem.reason == BEHIND and "none (never migrated)" in str(problem)
    assert "pzone db upgrade" in (problem.hint or "")
    assert empty.stat().st_size == 0

    downgrade(sqlite_url, "0004")
    problem = reason_of(sqlite_url)
    assert problem.reason == BEHIND and "at schema revision 0004" in str(problem)

    problem = reason_of(f"postgresql+psycopg://pzone:secret@127.0.0.1:{free_port()}/pzone")
    assert problem.reason == UNREACHABLE and "cannot reach the database" in str(problem)
    assert "secret" not in str(problem)  # the password is masked
