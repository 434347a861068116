"""Shared fixtures: fresh databases on the shared PostgreSQL, SQLite files, and private Mosquitto brokers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pzone.migrations import upgrade
from tests.support.services import MosquittoBroker, create_database, drop_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL (127.0.0.1:5432), migrated to head."""
    name, url = create_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'pzone.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both dialects the schema supports."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto with persistence and deep queues, on its own port."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    instance = MosquittoBroker(workdir)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
