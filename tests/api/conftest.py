"""Fixtures of the API's photo tests: an API on either object store, and the settings of one whose photos go
through a worker process on the shared Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pzone.storage import S3ObjectStore
from tests.support.api import (
    TEST_REDIS_URL,
    delete_queue_keys,
    delete_redis_keys,
    make_app,
    random_queue_name,
    random_redis_prefix,
)
from tests.support.photos import PHOTO_BUCKET, add_device
from tests.support.s3 import MotoServer


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
