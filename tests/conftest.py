"""Fixtures of several folders' tests: fresh databases on the shared PostgreSQL, SQLite files, an engine on either,
private Mosquitto brokers and the moto S3 server; the session's private BentoML store; one seeded platform; and
Hypothesis's profile."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Engine

from pzone.db.engine import make_engine
from pzone.migrations import upgrade
from tests.support.bentoml_store import remove_private_store, use_private_store
from tests.support.dataset import SeededPlatform, seed_platform
from tests.support.s3 import AWS_ENV_TO_CLEAR, FAKE_AWS_ENV, MotoServer
from tests.support.services import MosquittoBroker, create_database, drop_database

# On CI the property tests try the same examples every run (a red build is then a change's doing, and reproducible);
# on a developer's machine they explore anew each time, remembering failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Before any test module runs: BentoML reads BENTOML_HOME once, and no test may touch the user's store (BentoML's
# default, ~/bentoml, is where the package stage imports when the variable is unset).
use_private_store()


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_private_store()


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
def engine(db_url: str) -> Iterator[Engine]:
    """The project's engine on ``db_url`` (both dialects), disposed after the test."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


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


@pytest.fixture(scope="session")
def moto_server_process() -> Iterator[MotoServer]:
    """One moto S3 server (a real HTTP server in a subprocess) for the whole session; see ``s3_server``."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials in the environment for boto3, and nothing that could reach a real account."""
    for name in AWS_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    # No shared config or credentials file may supply a profile, a region or real keys.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/pzone-test-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/pzone-test-aws-credentials")


@pytest.fixture
def s3_server(moto_server_process: MotoServer, fake_aws_env: None) -> MotoServer:
    """The moto S3 server, emptied, with fake AWS credentials in the environment for boto3."""
    moto_server_process.reset()
    return moto_server_process


@pytest.fixture(scope="session")
def seeded_platform(tmp_path_factory: pytest.TempPathFactory) -> SeededPlatform:
    """One `pzone dataset seed` platform for the session (about a minute): read it, copy it before writing."""
    return seed_platform(tmp_path_factory.mktemp("seeded"))
