"""Waiting for the photo worker holds no thread: uploads waiting on a slow or stopped worker must not starve the API.

``complete`` waits up to ``PZONE_PROCESSING_WAIT_S`` for the worker's outcome. The API's sync routes and
dependencies run in one threadpool (AnyIO's, 40 threads); a wait that sat in it would, past 40 uploads at once, hold
up every signed-in request (history, the dashboard, log-in) until the waits ran out. Here the API runs in its own
uvicorn process on the real Redis queue and PostgreSQL, with more uploads waiting than that pool has threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from pzone.db.engine import make_engine
from pzone.storage import LocalObjectStore
from pzone_api.processing import PhotoQueue, job_id, photo_queue_from_settings
from pzone_api.settings import Settings
from tests.support.api import (
    TEST_REDIS_URL,
    api_process,
    delete_queue_keys,
    photo_worker_process,
    random_queue_name,
    signup,
)
from tests.support.photos import direct_upload, photo_bytes, queued_app, statuses, worker_env
from tests.support.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAITING = 48  # more than AnyIO's default threadpool (40)


class Clock:
    """When each request came back, on one monotonic clock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, float] = {}

    def timed(self, name: str, call: Callable[[], httpx.Response]) -> httpx.Response:
        response = call()
        with self.lock:
            self.times[name] = time.monotonic()
        return response


def signed_in(base_url: str, email: str) -> tuple[httpx.Client, dict[str, str]]:
    client = httpx.Client(base_url=base_url, timeout=60)
    signed = client.post("/api/auth/signup", json={"email": email, "password": "correct horse battery"})
    assert signed.status_code == 201, signed.text
    return client, {"X-CSRF-Token": signed.json()["csrf_token"]}


def uploaded(client: httpx.Client, headers: dict[str, str], data: bytes) -> str:
    """A direct upload up to its PUT; returns the photo id (not completed)."""
    body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)}
    created = client.post("/api/photos", json=body, headers=headers)
    assert created.status_code == 201, created.text
    ticket = created.json()
    put = client.put(ticket["upload"]["url"], content=data, headers=ticket["upload"]["headers"])
    assert put.status_code in (200, 204), put.text
    return str(ticket["photo"]["id"])


def test_uploads_waiting_on_a_stopped_worker_do_not_hold_up_other_requests(queued: dict[str, Any]) -> None:
    wait_s = 8.0
    env = {**worker_env(queued), "PZONE_PROCESSING_WAIT_S": str(wait_s), "PZONE_COOKIE_SECURE": "false"}
    with api_process(env) as base_url:
        uploader, headers = signed_in(base_url, "many@example.com")
        other, _ = signed_in(base_url, "other@example.com")
        ids = [uploaded(uploader, headers, photo_bytes((64 + i, 48))) for i in range(WAITING)]
        clock = Clock()
        pool = ThreadPoolExecutor(WAITING)
        try:
            waiting = [
                pool.submit(
                    clock.timed,
                    f"complete-{photo_id}",
                    lambda p=photo_id: uploader.post(f"/api/photos/{p}/complete", headers=headers),
                )
                for photo_id in ids
            ]
            # every complete has claimed its photo: all of them are waiting for the (stopped) worker now
            deadline = time.monotonic() + wait_s / 2
            while (started := list(statuses(queued["db"]).values()).count("processing")) < WAITING:
                assert time.monotonic() < deadline, f"only {started} of {WAITING} completes started"
                time.sleep(0.05)
            me = clock.timed("me", lambda: other.get("/api/auth/me"))
            history = clock.timed("history", lambda: other.get("/api/photos"))
            login = clock.timed(
                "login",
                lambda: httpx.post(
                    f"{base_url}/api/auth/login",
                    json={"email": "other@example.com", "password": "correct horse battery"},
                    timeout=60,
                ),
            )
            answers = [future.result(timeout=wait_s * 4) for future in waiting]
        finally:
            pool.shutdown(wait=True)
        assert me.status_code == 200 and history.status_code == 200 and login.status_code == 200
        first_complete = min(t for name, t in clock.times.items() if name.startswith("complete-"))
        # the other user's requests were answered while every upload still waited
        assert max(clock.times["me"], clock.times["history"], clock.times["login"]) < first_complete
        assert [a.status_code for a in answers] == [202] * WAITING, [
            a.text for a in answers if a.status_code != 202
        ]
        assert all(a.json()["status"] == "processing" for a in answers)

        # A worker starts and finishes the queued jobs; asking again then collects each outcome: the stored photo.
        with photo_worker_process(worker_env(queued), Path(queued["log"]), workers=2):
            deadline = time.monotonic() + 120
            while set(statuses(queued["db"]).values()) != {"stored"}:
                assert time.monotonic() < deadline, Path(queued["log"]).read_text()[-2000:]
                time.sleep(0.2)
        with ThreadPoolExecutor(8) as again:
            done = list(again.map(lambda p: uploader.post(f"/api/photos/{p}/complete", headers=headers), ids))
        assert [d.status_code for d in done] == [200] * WAITING, [
            d.text for d in done if d.status_code != 200
        ]
        assert set(statuses(queued["db"]).values()) == {"stored"}


# --- PhotoQueue.until_ready on the real Redis: the wait itself ---------------------------------------------------------
def redis_queue(tmp_path: Path, redis_url: str = TEST_REDIS_URL) -> PhotoQueue:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'q.db'}",
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        processing_queue_name=random_queue_name(),
        processing_immediate=False,
    )
    engine = make_engine(settings.sqlalchemy_url)
    return photo_queue_from_settings(settings, engine, LocalObjectStore(tmp_path / "objects", b"k" * 32))


def test_the_wait_wakes_on_its_outcome_and_not_on_an_older_notification(tmp_path: Path) -> None:
    queue = redis_queue(tmp_path)
    storage = queue.huey.storage
    job = job_id("p1")
    try:

        async def scenario() -> tuple[bool, float, bool, float, bool]:
            # an older job's notification with no outcome behind it: taken out, looked at, and waited on
            storage.conn.lpush(storage.notify_prefix + job, "1")
            started = time.monotonic()
            stale = await queue.until_ready("p1", 0.6)
            stale_s = time.monotonic() - started

            async def finish_later() -> None:
                await asyncio.sleep(0.3)
                storage.put_data(job, b"outcome", is_result=True)  # as the worker's result write does

            started = time.monotonic()
            writer = asyncio.create_task(finish_later())
            ready = await queue.until_ready("p1", 10.0)
            ready_s = time.monotonic() - started
            await writer
            again = await queue.until_ready("p1", 0.0)  # the outcome stays until forgotten
            await queue.aclose()
            return stale, stale_s, ready, ready_s, again

        stale, stale_s, ready, ready_s, again = asyncio.run(scenario())
        assert (
            stale is False and stale_s >= 0.55
        )  # waited out its time: the stale notification did not end it
        assert ready is True and 0.25 <= ready_s < 5  # woke on the notification, long before its 10 s
        assert again is True
    finally:
        delete_queue_keys(TEST_REDIS_URL, queue.huey.name)


def test_a_wait_whose_redis_is_gone_ends_as_a_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = redis_queue(tmp_path, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there

    async def scenario() -> bool:
        try:
            return await queue.until_ready("p1", 5.0)
        finally:
            await queue.aclose()

    with caplog.at_level(logging.WARNING, logger="pzone.api.processing"):
        assert asyncio.run(scenario()) is False
    assert "waiting for photo p1" in caplog.text


def test_the_embedded_queue_never_waits(tmp_path: Path) -> None:
    """Immediate mode: the job ran inside enqueue, so its outcome is there or nothing is coming."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'q.db'}", data_dir=tmp_path / "data")
    queue = photo_queue_from_settings(
        settings, make_engine(settings.sqlalchemy_url), LocalObjectStore(tmp_path / "objects", b"k" * 32)
    )
    assert queue.immediate
    started = time.monotonic()
    assert asyncio.run(queue.until_ready("p1", 30.0)) is False
    assert time.monotonic() - started < 5
    queue.huey.storage.put_data(job_id("p1"), b"outcome", is_result=True)
    assert asyncio.run(queue.until_ready("p1", 30.0)) is True


def test_asking_again_as_the_worker_finishes_gets_the_photo_not_409(
    queued: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job commits the stored photo, then huey writes its outcome: a complete in between (the web UI asking
    again after a 202) must wait for that outcome and answer 200, not "already completed"."""
    import pzone_api.processing.completion as completion

    app = queued_app(queued, processing_wait_s=0.5)
    with TestClient(app) as client:
        csrf = signup(client, "race@example.com", "correct horse battery")
        headers = {"X-CSRF-Token": csrf}
        first, second = (direct_upload(client, csrf, photo_bytes((80 + i, 60))) for i in range(2))
        assert first.status_code == second.status_code == 202
        ids = [first.json()["id"], second.json()["id"]]
        with photo_worker_process(worker_env(queued), Path(queued["log"])):
            deadline = time.monotonic() + 60
            while {client.get(f"/api/photos/{p}").json()["status"] for p in ids} != {"stored"}:
                assert time.monotonic() < deadline, Path(queued["log"]).read_text()[-2000:]
                time.sleep(0.1)
        storage = app.state.photo_queue.huey.storage
        # Back to the moment between the job's commit and its result: stored, no outcome yet.
        outcomes = {}
        for photo_id in ids:
            outcomes[photo_id] = storage.peek_data(job_id(photo_id))
            storage.delete_data(job_id(photo_id))
            storage.conn.delete(storage.notify_prefix + job_id(photo_id))

        def leave_outcome() -> None:  # what huey does right after the job returns
            time.sleep(0.5)
            storage.put_data(job_id(ids[0]), outcomes[ids[0]], is_result=True)

        writer = threading.Thread(target=leave_outcome)
        writer.start()
        started = time.monotonic()
        answer = client.post(f"/api/photos/{ids[0]}/complete", headers=headers)
        writer.join()
        assert answer.status_code == 200 and answer.json()["status"] == "stored", answer.text
        assert time.monotonic() - started >= 0.4  # it did wait for the outcome
        started = time.monotonic()
        twice = client.post(f"/api/photos/{ids[0]}/complete", headers=headers)
        assert twice.status_code == 409 and twice.json()["detail"]["code"] == "already_completed"
        assert time.monotonic() - started < completion.FINISHING_GRACE_S  # delivered: no wait for an outcome

        # An outcome that never comes (expired, lost): 409 once the grace is over.
        monkeypatch.setattr(completion, "FINISHING_GRACE_S", 0.3)
        lost = client.post(f"/api/photos/{ids[1]}/complete", headers=headers)
        assert lost.status_code == 409 and lost.json()["detail"]["code"] == "already_completed"
