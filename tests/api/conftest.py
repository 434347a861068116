"""Fixtures of the API's photo tests: an API on either object store, and the settings of one whose photos go
through a worker process on the shared Redis; and, for the OpenAPI conformance test, one signed-in API over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pzone.migrations import upgrade
from pzone.storage import S3ObjectStore
from tests.support.api import (
    TEST_REDIS_URL,
    SignedInApi,
    create_user_in_db,
    delete_queue_keys,
    delete_redis_keys,
    http_login,
    make_app,
    random_queue_name,
    random_redis_prefix,
    serve_in_thread,
)
from tests.support.photos import PHOTO_BUCKET, add_device, photo_bytes
from tests.support.s3 import MotoServer
from tests.support.services import PrivateRedis, create_database, drop_database


@pytest.fixture(params=["local", "s3"])
def api(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An API on a fresh PostgreSQL with one device, storing photos in the local folder or in S3 (moto)."""
    extra: dict[str, Any] = {}
    if request.param == "s3":
        s3: MotoServer = request.getfixturevalue("s3_server")
        extra = {"s3_bucket": PHOTO_BUCKET, "s3_endpoint_url": s3.endpoint_url, "s3_region": "us-east-1"}
    app = make_app(pg_url, tmp_path / "data", **extra)
    add_device(pg_url)
    with TestClient(app) as client:
        store = app.state.store
        if isinstance(store, S3ObjectStore):
            store.ensure_bucket()
        yield {"client": client, "store": store, "db": pg_url, "app": app}


@pytest.fixture
def queued(pg_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings for an API that queues photos on the shared Redis, under a queue name and key prefix of its own."""
    queue_name, prefix = random_queue_name(), random_redis_prefix()
    env = {
        "PZONE_DATABASE_URL": pg_url,
        "PZONE_DATA_DIR": str(tmp_path / "data"),
        "PZONE_REDIS_URL": TEST_REDIS_URL,
        "PZONE_PROCESSING_QUEUE_NAME": queue_name,
        "PZONE_LOG_LEVEL": "WARNING",
        # An API process's sessions and limits under this test's own keys (tests.support.api.app_from_env), so that
        # sign-ups of earlier runs on the shared Redis never count against this one.
        "PZONE_TEST_REDIS_PREFIX": prefix,
    }
    for name in (
        "PZONE_S3_BUCKET",
        "PZONE_S3_ENDPOINT_URL",
        "PZONE_MODEL_TIER_URL",
        "PZONE_PROCESSING_IMMEDIATE",
    ):
        env[name] = ""  # never from the surrounding environment
    add_device(pg_url)
    try:
        yield {
            "env": env,
            "db": pg_url,
            "queue_name": queue_name,
            "prefix": prefix,
            "log": tmp_path / "worker.log",
        }
    finally:
        delete_queue_keys(TEST_REDIS_URL, queue_name)
        delete_redis_keys(TEST_REDIS_URL, prefix)


@pytest.fixture(scope="module")
def signed_in_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedInApi]:
    """One API for a whole module, on a fresh PostgreSQL (sessions in SQL, photos processed in the API), served over
    HTTP with an operator signed in (every route lets an operator in) and one stored photo of the operator's.

    The login and sign-up limits are out of reach: a run that sends many logins would otherwise be answered 429
    from then on, and could not sign the second user in again (test_auth covers the limits).
    """
    name, url = create_database()
    try:
        upgrade(url)
        add_device(url)
        password = "correct horse battery"
        create_user_in_db(url, "operator@example.com", password, role="operator")
        create_user_in_db(url, "client@example.com", password)
        app = make_app(
            url,
            tmp_path_factory.mktemp("signed-in-api") / "data",
            login_max_attempts=1_000_000,
            login_max_per_email=1_000_000,
            login_max_per_address=1_000_000,
            signup_max_per_address=1_000_000,
        )
        with serve_in_thread(app) as base_url:
            operator = http_login(base_url, "operator@example.com", password)
            stored = operator.post(
                f"{base_url}/api/photos/upload",
                files={"file": ("photo.jpg", photo_bytes(), "image/jpeg")},
                data={"device_id": "dev-1"},
                timeout=30,
            )
            assert stored.status_code == 201, stored.text
            yield SignedInApi(
                base_url=base_url,
                operator=operator,
                client_email="client@example.com",
                password=password,
                photo_id=stored.json()["id"],
                thumb_url=stored.json()["thumb_url"],
            )
            operator.close()
    finally:
        drop_database(name)


@pytest.fixture
def own_s3(fake_aws_env: None) -> Iterator[MotoServer]:
    """A moto S3 server of this test's own, which it may stop and start again (on the same port)."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may kill and start again (on the same port)."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
