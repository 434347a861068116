"""Run ingest workers for tests (in a thread or as a real ``pzone ingest`` process), make the events the IoT rule
delivers, and audit what was stored."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text

from pzone_ingest.mqtt_worker import IngestWorker
from pzone_ingest.settings import Settings
from tests.support.paths import REPO


def worker_settings(
    database_url: str, mqtt_url: str, client_id: str = "test-worker", **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "mqtt_url": mqtt_url,
        "ingest_client_id": client_id,
        "ingest_metrics_port": 0,
        "ingest_batch_max_wait_ms": 50,
        "ingest_retry_max_s": 1.0,
        # The scale-out setting, so that two workers split the stream; tests of the default pass "".
        "ingest_shared_group": "pzone-ingest",
    }
    values.update(extra)
    return Settings(**values)


@contextmanager
def running_worker(settings: Settings) -> Iterator[IngestWorker]:
    worker = IngestWorker(settings)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    if not worker._connected.wait(10):
        stop.set()
        raise TimeoutError("worker did not connect to the broker")
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "worker did not stop"


def worker_process(
    database_url: str, mqtt_url: str, client_id: str, metrics_port: int = 0
) -> subprocess.Popen[str]:
    """A real ``pzone ingest`` process, as a container would run it."""
    env = {
        **os.environ,
        "PZONE_DATABASE_URL": database_url,
        "PZONE_MQTT_URL": mqtt_url,
        "PZONE_INGEST_CLIENT_ID": client_id,
        "PZONE_INGEST_METRICS_PORT": str(metrics_port),
        "PZONE_INGEST_BATCH_MAX_WAIT_MS": "50",
        "PZONE_INGEST_RETRY_MAX_S": "1",
        "PZONE_INGEST_SHARED_GROUP": "pzone-ingest",  # two of these split the stream
        "PZONE_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "pzone.cli", "ingest"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_connected(process: subprocess.Popen[str], timeout: float = 20) -> list[str]:
    """Read the worker's log until it says it is subscribed; returns the lines read."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "subscribed to" in line:
            return lines
    raise TimeoutError("worker process did not connect:\n" + "".join(lines))


def row_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM sensor_readings")).scalar_one())
    finally:
        engine.dispose()


def wait_rows(database_url: str, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    n = row_count(database_url)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        n = row_count(database_url)
    return n


@dataclass
class Audit:
    expected: int
    rows: int
    lost: int
    duplicated: int
    unexpected: int


def audit(database_url: str, expected: dict[str, set[int]]) -> Audit:
    """Compare stored (device, seq) pairs with what was published: lost, duplicated and unexpected rows."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT device_id, seq FROM sensor_readings")).all()
    finally:
        engine.dispose()
    stored = [(d, s) for d, s in rows]
    distinct = set(stored)
    wanted = {(d, s) for d, seqs in expected.items() for s in seqs}
    return Audit(
        expected=len(wanted),
        rows=len(stored),
        lost=len(wanted - distinct),
        duplicated=len(stored) - len(distinct),
        unexpected=len(distinct - wanted),
    )


def expected_from(messages: list[Any]) -> dict[str, set[int]]:
    import json

    out: dict[str, set[int]] = {}
    for message in messages:
        body = json.loads(message.payload)
        out.setdefault(body["device_id"], set()).add(body["seq"])
    return out


def iot_event(device: str, seq: int, tilt: float = 2.0, zone: str = "zone-1", **extra: Any) -> dict[str, Any]:
    """What the IoT rule SELECT *, topic(2) AS zone_id, topic(3) AS topic_device_id, timestamp() AS received_at
    yields."""
    rad = math.radians(tilt)
    now = time.time()
    body = {
        "v": 1,
        "device_id": device,
        "seq": seq,
        "ts": now,
        "ax": math.sin(rad),
        "ay": 0.0,
        "az": math.cos(rad),
    }
    body.update(battery=77, zone_id=zone, topic_device_id=device, received_at=int(now * 1000), **extra)
    return body


def count(engine: Engine, model: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())
