"""Batch uploads (several photos picked at once): one create and one complete for all of them, each photo answered
on its own; real PostgreSQL, the real S3 server (moto) or the local store, and the worker through the real Redis."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.api import make_app, photo_worker_process, signup
from tests.support.images import bad_uploads
from tests.support.photos import (
    ANY_SIZE,
    add_device,
    deactivate_users,
    direct_upload,
    fetch,
    object_keys,
    photo_bytes,
    photo_count,
    put_upload,
    queued_app,
    statuses,
    worker_env,
)

pytestmark = pytest.mark.integration


def create_batch(client: TestClient, csrf: str, photos: list[dict[str, Any]]) -> Any:
    return client.post("/api/photos/batch", json={"photos": photos}, headers={"X-CSRF-Token": csrf})


def complete_batch(client: TestClient, csrf: str, ids: list[str]) -> Any:
    return client.post("/api/photos/batch/complete", json={"ids": ids}, headers={"X-CSRF-Token": csrf})


def jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_batch_is_created_uploaded_and_completed_with_two_requests(api: dict[str, Any]) -> None:
    client, store = api["client"], api["store"]
    csrf = signup(client, "batch@example.com", "correct horse battery")
    same = photo_bytes((640, 480), orientation=6, gps=True)
    datas = [same, jpeg((300, 200), (200, 30, 30)), same]
    created = create_batch(
        client,
        csrf,
        [
            {"device_id": "dev-1", "content_type": "image/jpeg", "size": len(datas[0])},
            {
                "zone_id": "zone-1",
                "content_type": "image/jpeg",
                "size": len(datas[1]),
                "taken_at": "2026-11-20T10:00:00+00:00",
            },
            {"device_id": "dev-1", "content_type": "image/jpeg", "size": len(datas[2])},
        ],
    )
    assert created.status_code == 201, created.text
    items = created.json()["items"]
    assert [i["photo"]["status"] for i in items] == ["awaiting_upload"] * 3
    assert items[1]["photo"]["device_id"] is None and items[1]["photo"]["zone_id"] == "zone-1"
    assert items[0]["upload"]["max_bytes"] == len(datas[0])
    assert len({i["photo"]["id"] for i in items}) == 3 and len({i["upload"]["url"] for i in items}) == 3
    for item, data in zip(items, datas, strict=True):
        assert put_upload(client, item["upload"], data) in (200, 204)
    ids = [i["photo"]["id"] for i in items]
    done = complete_batch(client, csrf, ids)
    assert done.status_code == 200, done.text
    answers = done.json()["items"]
    assert [a["id"] for a in answers] == ids and [a["status"] for a in answers] == [200, 200, 200]
    photos = [a["photo"] for a in answers]
    assert all(p["status"] == "stored" and a["error"] is None for p, a in zip(photos, answers, strict=True))
    assert (photos[0]["width"], photos[0]["height"]) == (480, 640)  # EXIF orientation applied
    thumb = Image.open(io.BytesIO(fetch(client, photos[0]["thumb_url"])))
    assert not thumb.getexif() and "exif" not in thumb.info  # GPS stripped, as for one photo
    assert photos[1]["taken_at_source"] == "client" and photos[1]["taken_at"].startswith("2026-11-20T10:00")
    assert photos[0]["sha256"] == photos[2]["sha256"] != photos[1]["sha256"]
    keys = object_keys(store)
    assert len([k for k in keys if k.startswith("originals/")]) == 2  # same bytes twice: one original
    assert not any(k.startswith("uploads/") for k in keys)
    history = client.get("/api/photos").json()
    assert history["total"] == 3 and {p["id"] for p in history["items"]} == set(ids)
    again = complete_batch(client, csrf, ids[:1])  # the batch's photos are ordinary photos afterwards
    assert again.json()["items"][0]["status"] == 409
    assert again.json()["items"][0]["error"]["code"] == "already_completed"


def test_a_refused_item_refuses_the_whole_create_and_names_it(api: dict[str, Any]) -> None:
    client = api["client"]
    csrf = signup(client, "refuse@example.com", "correct horse battery")
    good = {"device_id": "dev-1", "content_type": "image/jpeg", "size": 1000}
    cases = [
        ({"device_id": "nope", "content_type": "image/jpeg", "size": 1000}, 404, "unknown_device"),
        ({"zone_id": "zone-404", "content_type": "image/jpeg", "size": 1000}, 404, "unknown_zone"),
        (
            {"device_id": "dev-1", "zone_id": "zone-9", "content_type": "image/jpeg", "size": 1000},
            422,
            "zone_mismatch",
        ),
        ({"content_type": "image/jpeg", "size": 1000}, 422, "no_target"),
        ({"device_id": "dev-1", "content_type": "image/gif", "size": 1000}, 415, "unsupported_type"),
        ({"device_id": "dev-1", "content_type": "image/jpeg", "size": 10**10}, 413, "too_large"),
    ]
    for bad, status, code in cases:
        response = create_batch(client, csrf, [good, bad, good])
        assert response.status_code == status, (bad, response.text)
        detail = response.json()["detail"]
        assert detail["code"] == code and detail["index"] == 1 and detail["reason"].startswith("photos[1]: ")
    assert photo_count(api["db"]) == 0  # nothing of any refused batch was created
    empty = create_batch(client, csrf, [])
    assert empty.status_code == 422 and empty.json()["detail"]["code"] == "empty_batch"
    over = create_batch(client, csrf, [good] * 21)  # PZONE_UPLOAD_BATCH_MAX: 20 by default
    assert over.status_code == 422 and over.json()["detail"]["code"] == "batch_too_large"
    assert create_batch(client, csrf, [good] * 101).status_code == 422  # bounded before it is parsed whole
    assert create_batch(client, csrf, [{"device_id": "dev-1"}]).status_code == 422  # no content type
    not_a_list = client.post("/api/photos/batch", json={"photos": good}, headers={"X-CSRF-Token": csrf})
    assert not_a_list.status_code == 422
    assert client.post("/api/photos/batch", json={"photos": [good]}).status_code == 403  # CSRF header missing
    assert complete_batch(client, "forged", ["x"]).status_code == 403
    assert photo_count(api["db"]) == 0
    client.cookies.clear()
    assert client.post("/api/photos/batch", json={"photos": [good]}).status_code == 401
    assert client.post("/api/photos/batch/complete", json={"ids": ["x"]}).status_code == 401


def test_a_batch_complete_answers_each_photo_on_its_own_and_leaves_nothing_half_stored(
    api: dict[str, Any],
) -> None:
    """Stored, not uploaded yet, a bad image, an unknown id, another user's photo, an already completed one, an
    object past the size limit: one request, each its own answer; refused photos leave no row and no object."""
    client, store, db = api["client"], api["store"], api["db"]
    csrf_other = signup(client, "other@example.com", "correct horse battery")
    foreign = direct_upload(client, csrf_other, photo_bytes((100, 80))).json()["id"]
    foreign_open = create_batch(
        client, csrf_other, [{"device_id": "dev-1", "content_type": "image/jpeg", "size": 1000}]
    ).json()["items"][0]["photo"]["id"]
    client.cookies.clear()
    csrf = signup(client, "mixed@example.com", "correct horse battery")
    completed = direct_upload(client, csrf, photo_bytes((120, 90))).json()["id"]
    truncated = next(b for b in bad_uploads() if b.name == "truncated.jpg")
    body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": ANY_SIZE}
    items = create_batch(client, csrf, [body, body, body, body]).json()["items"]
    good, waiting, bad, big = (i["photo"]["id"] for i in items)
    assert put_upload(client, items[0]["upload"], photo_bytes((200, 150))) in (200, 204)
    assert put_upload(client, items[2]["upload"], truncated.data) in (200, 204)
    store.put_bytes(
        f"uploads/{big}", b"\xff" * (21 * 1024 * 1024), "image/jpeg"
    )  # past the limit, not via the URL
    rows_before = photo_count(db)
    ids = [good, waiting, bad, "no-such-photo", foreign, foreign_open, completed, big]
    done = complete_batch(client, csrf, ids)
    assert done.status_code == 200, done.text
    answers = {a["id"]: a for a in done.json()["items"]}
    assert [a["id"] for a in done.json()["items"]] == ids
    expected = {
        good: (200, None),
        waiting: (409, "not_uploaded"),
        bad: (422, "truncated"),
        "no-such-photo": (404, "not_found"),
        foreign: (404, "not_found"),  # another user's photos are not even acknowledged
        foreign_open: (404, "not_found"),
        completed: (409, "already_completed"),
        big: (413, "too_large"),
    }
    for photo_id, (status, code) in expected.items():
        answer = answers[photo_id]
        assert answer["status"] == status, (photo_id, answer)
        if code is None:
            assert answer["photo"]["status"] == "stored" and answer["error"] is None
        else:
            assert answer["error"]["code"] == code and answer["error"]["reason"] and answer["photo"] is None
    assert photo_count(db) == rows_before - 2  # the bad image's and the oversized object's rows are gone
    now = statuses(db)
    assert bad not in now and big not in now and now[waiting] == "awaiting_upload"
    assert now[foreign_open] == "awaiting_upload"  # another user's photo was not touched
    assert not {f"uploads/{bad}", f"uploads/{big}"} & object_keys(store)  # their bytes are gone too
    # The photo still waiting can be uploaded and completed later, alone or in a batch.
    assert put_upload(client, items[1]["upload"], photo_bytes((90, 60))) in (200, 204)
    later = complete_batch(client, csrf, [waiting])
    assert later.json()["items"][0]["status"] == 200
    for wrong in ([], [good, good], [good] * 21):
        response = complete_batch(client, csrf, wrong)
        assert response.status_code == 422
    assert complete_batch(client, csrf, ["x" * 65]).status_code == 422
    assert complete_batch(client, csrf, [""]).json()["items"][0]["status"] == 404


def test_a_deactivated_user_is_refused_for_the_whole_batch(pg_url: str, tmp_path: Path) -> None:
    app = make_app(pg_url, tmp_path / "data")
    add_device(pg_url)
    with TestClient(app) as client:
        csrf = signup(client, "gone@example.com", "correct horse battery")
        body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": ANY_SIZE}
        items = create_batch(client, csrf, [body, body]).json()["items"]
        assert put_upload(client, items[0]["upload"], photo_bytes((60, 40))) in (200, 204)
        deactivate_users(pg_url)
        for response in (
            create_batch(client, csrf, [body]),
            complete_batch(client, csrf, [i["photo"]["id"] for i in items]),
        ):
            assert response.status_code == 401, response.text
            assert response.json()["detail"] == "Session expired or invalid: log in again."
        assert set(statuses(pg_url).values()) == {"awaiting_upload"}  # nothing claimed, nothing processed


def test_a_batch_through_the_worker_process(queued: dict[str, Any]) -> None:
    """All the batch's jobs are in the Redis queue before the API waits for the first: a worker with two threads
    processes them side by side, and a refused photo is refused as alone."""
    app = queued_app(queued, processing_wait_s=30.0)
    with (
        TestClient(app) as client,
        photo_worker_process(worker_env(queued), queued["log"], workers=2),
    ):
        assert not app.state.photo_queue.immediate
        store = app.state.store
        csrf = signup(client, "wb@example.com", "correct horse battery")
        body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": ANY_SIZE}
        items = create_batch(client, csrf, [body] * 5).json()["items"]
        datas = [jpeg((320, 240), (40 * i, 90, 200)) for i in range(4)] + [bad_uploads()[1].data]
        for item, data in zip(items, datas, strict=True):
            assert put_upload(client, item["upload"], data) in (200, 204)
        before = object_keys(store)
        done = complete_batch(client, csrf, [i["photo"]["id"] for i in items])
        assert done.status_code == 200, done.text + queued["log"].read_text()
        answers = done.json()["items"]
        assert [a["status"] for a in answers] == [200, 200, 200, 200, 422], answers
        assert all(a["photo"]["thumb_url"] for a in answers[:4])
        assert answers[4]["error"]["code"] == "truncated"
        assert photo_count(queued["db"]) == 4
        assert f"uploads/{items[4]['photo']['id']}" not in object_keys(store)
        assert len(object_keys(store) - before) == 4 * 3  # original, preview, thumb of each stored photo


def test_a_batch_past_the_wait_answers_202_and_completes_once_a_worker_runs(queued: dict[str, Any]) -> None:
    """No worker yet: the batch's one wait runs out, every photo is 202 processing; asked again with a worker, the
    same jobs answer (each photo once) and nothing is processed twice."""
    app = queued_app(queued, processing_wait_s=0.5)
    with TestClient(app) as client:
        csrf = signup(client, "late@example.com", "correct horse battery")
        body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": ANY_SIZE}
        items = create_batch(client, csrf, [body] * 3).json()["items"]
        for index, item in enumerate(items):
            assert put_upload(client, item["upload"], jpeg((64, 48), (60 * index, 10, 10))) in (200, 204)
        ids = [i["photo"]["id"] for i in items]
        late = complete_batch(client, csrf, ids)
        assert [a["status"] for a in late.json()["items"]] == [202, 202, 202], late.text
        assert all(a["photo"]["status"] == "processing" for a in late.json()["items"])
        with photo_worker_process(worker_env(queued), queued["log"]):
            app.state.settings.processing_wait_s = 30.0
            done = complete_batch(client, csrf, ids)
            assert [a["status"] for a in done.json()["items"]] == [200, 200, 200], queued["log"].read_text()
        assert set(statuses(queued["db"]).values()) == {"stored"}
        again = complete_batch(client, csrf, ids)
        assert [a["error"]["code"] for a in again.json()["items"]] == ["already_completed"] * 3
