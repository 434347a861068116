"""Photo intake through the API on real PostgreSQL and a real S3 server (moto) or the local folder store."""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Photo
from pzone.storage import LocalObjectStore, S3ObjectStore
from pzone_api.body_coalescing import DEFAULT_MIN_BYTES, CoalescedBody
from pzone_api.images import inspect_and_derive
from pzone_api.photo_verdicts import retry_pending
from tests.support.api import (
    login,
    make_app,
    photo_worker_process,
    signup,
)
from tests.support.images import bad_uploads
from tests.support.model_input import assert_model_input
from tests.support.model_tier import MODEL_VERSION, ModelTierStandIn
from tests.support.photos import (
    ANY_SIZE,
    PHOTO_BUCKET,
    add_device,
    deactivate_users,
    direct_upload,
    fetch,
    object_keys,
    photo_bytes,
    photo_count,
    put_upload,
    queued_app,
    worker_env,
)
from tests.support.s3 import MotoServer

pytestmark = pytest.mark.integration


def unsigned(photo: dict[str, Any]) -> dict[str, Any]:
    """A photo's JSON with the query (expiry, signature) cut off its signed URLs."""
    return {
        k: v.split("?", 1)[0] if k.endswith("_url") and isinstance(v, str) else v for k, v in photo.items()
    }


def test_direct_upload_orients_strips_and_dedupes(api: dict[str, Any]) -> None:
    client, store = api["client"], api["store"]
    csrf = signup(client, "ana@example.com", "correct horse battery")
    data = photo_bytes((640, 480), orientation=6, gps=True)
    done = direct_upload(client, csrf, data)
    assert done.status_code == 200, done.text
    photo = done.json()
    assert photo["status"] == "stored" and photo["verdict"] == "pending"  # no model tier configured
    assert (photo["width"], photo["height"]) == (480, 640)  # EXIF orientation 6: rotated a quarter turn
    thumb = Image.open(io.BytesIO(fetch(client, photo["thumb_url"])))
    assert max(thumb.size) <= 256 and thumb.size[1] > thumb.size[0]
    assert not thumb.getexif() and "exif" not in thumb.info  # GPS and every other tag gone
    assert b"Exif" not in fetch(client, photo["preview_url"])[:4096]
    # the red corner was top-left before rotation; orientation 6 puts it top-right
    red = thumb.convert("RGB").getpixel((thumb.size[0] - 3, 3))
    assert red[0] > 200 and red[2] < 80
    before = object_keys(store)
    again = direct_upload(client, csrf, data)
    assert again.status_code == 200 and again.json()["sha256"] == photo["sha256"]
    assert object_keys(store) == before  # same bytes twice = one object, and the upload object is gone
    assert not any(key.startswith("uploads/") for key in before)
    history = client.get("/api/photos").json()
    assert history["total"] == 2 and history["items"][0]["id"] == again.json()["id"]  # newest first


class ReplacedAfterDownload:
    """The worker's store, with each staged upload replaced by other bytes as soon as the worker has read it: a
    second PUT through the presigned URL (still valid) landing between the check and the store."""

    def __init__(self, store: Any, replacement: bytes) -> None:
        self.store, self.replacement, self.replaced = store, replacement, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Any]:
        with self.store.open(key) as stream:
            yield stream
        if key.startswith("uploads/"):
            self.store.put_bytes(key, self.replacement, "image/jpeg")
            self.replaced.append(key)


def test_the_stored_original_is_the_checked_bytes_whatever_lands_on_the_upload_key_after(
    api: dict[str, Any],
) -> None:
    client, store, app = api["client"], api["store"], api["app"]
    csrf = signup(client, "race@example.com", "correct horse battery")
    racing = ReplacedAfterDownload(store, b"<html><script>alert(1)</script></html>")
    app.state.photo_queue.store = racing
    data = photo_bytes((320, 240))
    done = direct_upload(client, csrf, data)
    assert done.status_code == 200, done.text
    assert racing.replaced  # the late PUT did land, after the worker's download
    photo = done.json()
    assert photo["sha256"] == hashlib.sha256(data).hexdigest()
    engine = make_engine(api["db"])
    with Session(engine) as session:
        original_key = session.scalars(select(Photo.original_key).where(Photo.id == photo["id"])).one()
    engine.dispose()
    assert original_key is not None and store.get_bytes(original_key) == data
    assert store.head(original_key).content_type == "image/jpeg"
    assert not any(key.startswith("uploads/") for key in object_keys(store))  # the late object went too


def test_multipart_upload(api: dict[str, Any]) -> None:
    client = api["client"]
    csrf = signup(client, "bo@example.com", "correct horse battery")
    response = client.post(
        "/api/photos/upload",
        files={"file": ("p.jpg", photo_bytes((800, 600)), "image/jpeg")},
        data={"device_id": "dev-1", "taken_at": "2026-11-20T10:00:00+00:00"},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 201, response.text
    photo = response.json()
    assert (photo["width"], photo["height"]) == (800, 600)
    assert photo["taken_at_source"] == "client" and photo["taken_at"].startswith("2026-11-20T10:00:00")


def test_multipart_upload_in_small_pieces_is_stored_whole(api: dict[str, Any]) -> None:
    """A client on a slow link: the body arrives in 1 kB pieces, gathered before the parser (CoalescedBody)."""
    client, app = api["client"], api["app"]
    assert any(m.cls is CoalescedBody for m in app.user_middleware)
    csrf = signup(client, "cy@example.com", "correct horse battery")
    noise = np.random.default_rng(5).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "JPEG", quality=90)
    data = out.getvalue()  # noise: about 1.5 MB, more than one coalesced piece
    request = client.build_request(
        "POST",
        "/api/photos/upload",
        files={"file": ("p.jpg", data, "image/jpeg")},
        data={"device_id": "dev-1"},
        headers={"X-CSRF-Token": csrf},
    )
    body = request.read()
    assert len(body) > 2 * DEFAULT_MIN_BYTES
    pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
    headers = {"Content-Type": request.headers["Content-Type"], "X-CSRF-Token": csrf}
    response = client.post("/api/photos/upload", content=pieces, headers=headers)
    assert response.status_code == 201, response.text
    photo = response.json()
    assert photo["sha256"] == hashlib.sha256(data).hexdigest() and photo["size_bytes"] == len(data)
    assert (photo["width"], photo["height"]) == (1600, 1200)


def test_a_photo_time_after_its_upload_began_gives_way_to_the_servers(api: dict[str, Any]) -> None:
    """A client may say when its photo was taken (the request, or EXIF), but not that it was taken after it was sent:
    past the clocks' tolerance the upload time counts; within it, or in the past, the client's time stays (how far
    it may pick the photo's label is the labels' decision)."""
    from datetime import UTC, datetime, timedelta

    client = api["client"]
    csrf = signup(client, "clock@example.com", "correct horse battery")
    now = datetime.now(UTC)
    for taken_at, source in (
        (now + timedelta(days=3), "upload"),
        (now + timedelta(seconds=30), "client"),  # a client clock a little ahead
        (now - timedelta(days=3), "client"),
    ):
        done = direct_upload(client, csrf, photo_bytes((60, 40)), taken_at=taken_at.isoformat())
        assert done.status_code == 200, done.text
        photo = done.json()
        assert photo["taken_at_source"] == source, (taken_at, photo)
        stored = datetime.fromisoformat(photo["taken_at"])
        assert abs((stored - (now if source == "upload" else taken_at)).total_seconds()) < 60


def test_users_see_only_their_own_photos(api: dict[str, Any]) -> None:
    client = api["client"]
    csrf_a = signup(client, "a@example.com", "correct horse battery")
    photo_id = direct_upload(client, csrf_a, photo_bytes()).json()["id"]
    client.cookies.clear()
    csrf_b = signup(client, "b@example.com", "correct horse battery")
    assert client.get(f"/api/photos/{photo_id}").status_code == 404
    assert (
        client.post(f"/api/photos/{photo_id}/complete", headers={"X-CSRF-Token": csrf_b}).status_code == 404
    )
    assert client.get("/api/photos").json()["total"] == 0


def test_requests_without_session_or_csrf_are_refused(api: dict[str, Any]) -> None:
    client = api["client"]
    body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": 10}
    assert client.post("/api/photos", json=body).status_code in (401, 403)
    signup(client, "c@example.com", "correct horse battery")
    assert client.post("/api/photos", json=body).status_code == 403  # CSRF header missing


@pytest.mark.parametrize("store", ["local", "s3"])
def test_model_tier_down_then_back(
    store: str, request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> None:
    from pzone.preprocess import load_square

    extra: dict[str, Any] = {}
    if store == "s3":
        s3: MotoServer = request.getfixturevalue("s3_server")
        extra = {"s3_bucket": PHOTO_BUCKET, "s3_endpoint_url": s3.endpoint_url, "s3_region": "us-east-1"}
    tier = ModelTierStandIn(image_size=96)
    app = make_app(pg_url, tmp_path / "data", model_tier_url=tier.url, model_tier_timeout_s=1.0, **extra)
    add_device(pg_url)
    with TestClient(app) as client:
        if isinstance(app.state.store, S3ObjectStore):
            app.state.store.ensure_bucket()
        csrf = signup(client, "d@example.com", "correct horse battery")
        turned = photo_bytes(orientation=6)
        pending = direct_upload(client, csrf, turned)
        assert (
            pending.status_code == 200 and pending.json()["verdict"] == "pending"
        )  # tier away: upload still works
        tier.start()
        try:
            assert retry_pending(app.state.settings, app.state.engine, app.state.store) == 1
            filled = client.get(f"/api/photos/{pending.json()['id']}").json()
            assert filled["verdict"] == "upright" and filled["model_version"] == MODEL_VERSION
            # The retry sent the model input of the stored preview, near training's square of the original.
            with Session(app.state.engine) as session:
                preview_key = session.get(Photo, pending.json()["id"]).preview_key  # type: ignore[union-attr]
            preview = app.state.store.get_bytes(preview_key)
            assert_model_input(tier.received[-1], [load_square(io.BytesIO(preview), 96)])
            assert_near_training(tier.received[-1][0], turned, 96)
            plain = photo_bytes((320, 240))
            direct = direct_upload(client, csrf, plain).json()
            assert direct["verdict"] == "upright" and direct["verdict_probs"]["upright"] == pytest.approx(0.9)
            # The worker sent the one it made from its own decode of the upload.
            _, derivatives = inspect_and_derive(
                plain, declared_content_type=None, max_pixels=10**8, max_side=20_000, model_size=96
            )
            assert tier.received[-1] == [derivatives["model"]]
            assert_near_training(tier.received[-1][0], plain, 96)
            assert len(tier.received) == 2  # one request each: the size the tier answered was the one sent
        finally:
            tier.stop()


def assert_near_training(image: bytes, original: bytes, size: int) -> None:
    """Within a fraction of a grey level of training's square of the original, on average."""
    from pzone.preprocess import load_square

    with Image.open(io.BytesIO(image)) as opened:
        got = np.asarray(opened).astype(int)
    assert np.abs(got - load_square(io.BytesIO(original), size).astype(int)).mean() < 1.5


@pytest.mark.parametrize("bad", bad_uploads(), ids=lambda b: b.name)
def test_bad_uploads_get_a_reason_and_leave_nothing(bad: Any, pg_url: str, tmp_path: Path) -> None:
    app = make_app(pg_url, tmp_path / "data", image_max_pixels=40_000_000)
    add_device(pg_url)
    with TestClient(app) as client:
        csrf = signup(client, "e@example.com", "correct horse battery")
        store = app.state.store
        before = object_keys(store)
        created = client.post(
            "/api/photos",
            json={
                "device_id": "dev-1",
                "content_type": bad.declared_content_type,
                "size": max(len(bad.data), 1),
            },
            headers={"X-CSRF-Token": csrf},
        )
        if created.status_code == 201:
            ticket = created.json()
            put_upload(client, ticket["upload"], bad.data)
            response = client.post(
                f"/api/photos/{ticket['photo']['id']}/complete", headers={"X-CSRF-Token": csrf}
            )
        else:
            response = created
        assert 400 <= response.status_code < 500, response.text
        detail = response.json()["detail"]
        assert detail["reason"] and detail["code"]
        assert photo_count(pg_url) == 0  # no orphan rows
        assert object_keys(store) == before  # no orphan objects


def test_refusals_of_the_upload_flow(api: dict[str, Any]) -> None:
    client, store = api["client"], api["store"]
    csrf = signup(client, "f@example.com", "correct horse battery")
    headers = {"X-CSRF-Token": csrf}
    unknown = client.post(
        "/api/photos", json={"device_id": "nope", "content_type": "image/jpeg", "size": 1000}, headers=headers
    )
    assert unknown.status_code == 404 and unknown.json()["detail"]["code"] == "unknown_device"
    gif = client.post(
        "/api/photos", json={"device_id": "dev-1", "content_type": "image/gif", "size": 1000}, headers=headers
    )
    assert gif.status_code == 415
    huge = client.post(
        "/api/photos",
        json={"device_id": "dev-1", "content_type": "image/jpeg", "size": 10**10},
        headers=headers,
    )
    assert huge.status_code == 413
    data = photo_bytes()
    ticket = client.post(
        "/api/photos",
        json={"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)},
        headers=headers,
    ).json()
    photo_id = ticket["photo"]["id"]
    nothing = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
    assert nothing.status_code == 409 and nothing.json()["detail"]["code"] == "not_uploaded"
    assert put_upload(client, ticket["upload"], data) in (200, 204)
    assert client.post(f"/api/photos/{photo_id}/complete", headers=headers).status_code == 200
    twice = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
    assert twice.status_code == 409 and twice.json()["detail"]["code"] == "already_completed"
    if isinstance(store, LocalObjectStore):  # moto does not check presigned URLs; our local store does
        short = store.presign_put("uploads/x", "image/jpeg", max_bytes=100, expires_s=1)
        time.sleep(2.1)
        assert client.put(short, content=b"x", headers={"Content-Type": "image/jpeg"}).status_code == 403
        other = store.presign_put("uploads/y", "image/jpeg", max_bytes=100, expires_s=60)
        assert client.put(other, content=b"x", headers={"Content-Type": "image/png"}).status_code == 403
        assert (
            client.put(other, content=b"x" * 101, headers={"Content-Type": "image/jpeg"}).status_code == 413
        )
        assert not store.exists("uploads/y")


def test_a_direct_upload_declares_its_size_and_gets_a_url_for_exactly_it(api: dict[str, Any]) -> None:
    client, store = api["client"], api["store"]
    headers = {"X-CSRF-Token": signup(client, "size@example.com", "correct horse battery")}
    undeclared = client.post(
        "/api/photos", json={"device_id": "dev-1", "content_type": "image/jpeg"}, headers=headers
    )
    assert undeclared.status_code == 422 and undeclared.json()["detail"][0]["loc"] == ["body", "size"]
    for bad in (0, -1, 1.5, None, "many"):
        refused = client.post(
            "/api/photos",
            json={"device_id": "dev-1", "content_type": "image/jpeg", "size": bad},
            headers=headers,
        )
        assert refused.status_code == 422, (bad, refused.text)
    upload = client.post(
        "/api/photos",
        json={"device_id": "dev-1", "content_type": "image/jpeg", "size": 4321},
        headers=headers,
    ).json()["upload"]
    assert upload["max_bytes"] == 4321
    query = parse_qs(urlsplit(upload["url"]).query)
    if isinstance(store, S3ObjectStore):  # S3 refuses a PUT of any other length (moto checks no signature)
        assert "content-length" in query["X-Amz-SignedHeaders"][0].split(";")
    else:  # the local route refuses more
        assert query["max"] == ["4321"]
        assert put_upload(client, upload, b"x" * 4322) == 413


def test_complete_checks_the_object_in_the_worker_and_the_user_in_its_statement(
    pg_url: str, tmp_path: Path
) -> None:
    """complete asks the store nothing itself: the job finds an object too large (413, all removed) or none yet
    (409, the photo waits for its upload again); a deactivated user gets the same 401 as on any signed-in route."""
    app = make_app(pg_url, tmp_path / "data", upload_max_bytes=5_000)
    add_device(pg_url)
    with TestClient(app) as client:
        csrf = signup(client, "big@example.com", "correct horse battery")
        headers = {"X-CSRF-Token": csrf}
        store = app.state.store
        before = object_keys(store)
        body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": 5_000}
        ticket = client.post("/api/photos", json=body, headers=headers).json()
        photo_id = ticket["photo"]["id"]
        store.put_bytes(
            f"uploads/{photo_id}", b"\xff" * 6_000, "image/jpeg"
        )  # past the limit, not via the URL
        too_large = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert too_large.status_code == 413 and too_large.json()["detail"]["code"] == "too_large"
        assert photo_count(pg_url) == 0 and object_keys(store) == before
        assert client.get(f"/api/photos/{photo_id}").status_code == 404

        ticket = client.post("/api/photos", json=body, headers=headers).json()
        photo_id = ticket["photo"]["id"]
        for _ in range(2):  # nothing uploaded yet, as often as asked; the photo stays open for its upload
            early = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
            assert early.status_code == 409 and early.json()["detail"]["code"] == "not_uploaded"
            assert client.get(f"/api/photos/{photo_id}").json()["status"] == "awaiting_upload"
        assert put_upload(client, ticket["upload"], photo_bytes((60, 40))) in (200, 204)
        done = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert done.status_code == 200 and done.json()["status"] == "stored", done.text
        assert done.json()["thumb_url"] and done.json()["created_at"] == ticket["photo"]["created_at"]
        # The same photo; its signed URLs are made per answer (their expiry may fall in the next second).
        assert unsigned(client.get(f"/api/photos/{photo_id}").json()) == unsigned(done.json())

        ticket = client.post("/api/photos", json=body, headers=headers).json()
        deactivate_users(pg_url)
        refused = [
            client.post("/api/photos", json=body, headers=headers),
            client.post(f"/api/photos/{ticket['photo']['id']}/complete", headers=headers),
            client.post(
                "/api/photos/upload",
                files={"file": ("p.jpg", photo_bytes((60, 40)), "image/jpeg")},
                data={"device_id": "dev-1"},
                headers=headers,
            ),
        ]
        for response in refused:
            assert response.status_code == 401, response.text
            assert response.json()["detail"] == "Session expired or invalid: log in again."


# --- the photo worker: a separate process fed through the real Redis --------------------------------------------------


def test_worker_process_processes_and_refuses_through_redis(queued: dict[str, Any]) -> None:
    """API here, worker in its own process, the queue and the outcomes in Redis: same answers as in-process."""
    app = queued_app(queued, processing_wait_s=30.0)
    with TestClient(app) as client, photo_worker_process(worker_env(queued), queued["log"]):
        assert not app.state.photo_queue.immediate
        store = app.state.store
        csrf = signup(client, "w@example.com", "correct horse battery")
        done = direct_upload(client, csrf, photo_bytes((640, 480), orientation=6, gps=True))
        assert done.status_code == 200, done.text + queued["log"].read_text()
        photo = done.json()
        assert photo["status"] == "stored" and (photo["width"], photo["height"]) == (480, 640)
        thumb = Image.open(io.BytesIO(fetch(client, photo["thumb_url"])))
        assert max(thumb.size) <= 256 and not thumb.getexif()
        multipart = client.post(
            "/api/photos/upload",
            files={"file": ("p.jpg", photo_bytes((800, 600)), "image/jpeg")},
            data={"device_id": "dev-1"},
            headers={"X-CSRF-Token": csrf},
        )
        assert multipart.status_code == 201 and multipart.json()["status"] == "stored", multipart.text
        again = client.post(f"/api/photos/{photo['id']}/complete", headers={"X-CSRF-Token": csrf})
        assert again.status_code == 409 and again.json()["detail"]["code"] == "already_completed"
        rows, before = photo_count(queued["db"]), object_keys(store)
        for bad in bad_uploads():
            created = client.post(
                "/api/photos",
                json={
                    "device_id": "dev-1",
                    "content_type": bad.declared_content_type,
                    "size": max(len(bad.data), 1),
                },
                headers={"X-CSRF-Token": csrf},
            )
            if created.status_code != 201:
                continue  # refused from its declared type already
            ticket = created.json()
            put_upload(client, ticket["upload"], bad.data)
            response = client.post(
                f"/api/photos/{ticket['photo']['id']}/complete", headers={"X-CSRF-Token": csrf}
            )
            assert 400 <= response.status_code < 500, (bad.name, response.text)
            detail = response.json()["detail"]
            assert detail["code"] and detail["reason"], bad.name
            assert photo_count(queued["db"]) == rows, bad.name  # no orphan rows
            assert object_keys(store) == before, bad.name  # no orphan objects
        bad_multipart = client.post(
            "/api/photos/upload",
            files={"file": ("t.jpg", bad_uploads()[1].data, "image/jpeg")},
            data={"device_id": "dev-1"},
            headers={"X-CSRF-Token": csrf},
        )
        assert bad_multipart.status_code == 422 and bad_multipart.json()["detail"]["code"] == "truncated"
        assert photo_count(queued["db"]) == rows and object_keys(store) == before


def test_stopped_worker_gives_202_and_the_photo_is_finished_once_a_worker_starts(
    queued: dict[str, Any],
) -> None:
    app = queued_app(queued, processing_wait_s=0.5)
    with TestClient(app) as client:
        csrf = signup(client, "s@example.com", "correct horse battery")
        headers = {"X-CSRF-Token": csrf}
        accepted = direct_upload(client, csrf, photo_bytes())
        assert accepted.status_code == 202, accepted.text
        photo_id = accepted.json()["id"]
        assert accepted.json()["status"] == "processing" and accepted.json()["thumb_url"] is None
        assert client.get(f"/api/photos/{photo_id}").json()["status"] == "processing"
        assert client.get("/api/photos").json()["total"] == 0  # the history lists stored photos only
        asking_again = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert asking_again.status_code == 202  # waits for the same job, which is not done yet
        bad = bad_uploads()[1]  # truncated JPEG: refused by the worker, later
        refused_later = direct_upload(client, csrf, bad.data)
        assert refused_later.status_code == 202
        refused_id = refused_later.json()["id"]

        with photo_worker_process(worker_env(queued), queued["log"]):
            deadline = time.monotonic() + 60
            while client.get(f"/api/photos/{photo_id}").json()["status"] != "stored":
                assert time.monotonic() < deadline, queued["log"].read_text()
                time.sleep(0.2)
            while client.get(f"/api/photos/{refused_id}").status_code != 404:
                assert time.monotonic() < deadline, queued["log"].read_text()
                time.sleep(0.2)
        stored = client.get(f"/api/photos/{photo_id}").json()
        assert stored["thumb_url"] and stored["sha256"] and client.get("/api/photos").json()["total"] == 1
        # asking again collects the outcome the worker left: the photo, or the refusal's reason (once)
        collected = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert collected.status_code == 200 and collected.json()["status"] == "stored"
        twice = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert twice.status_code == 409 and twice.json()["detail"]["code"] == "already_completed"
        reason = client.post(f"/api/photos/{refused_id}/complete", headers=headers)
        assert reason.status_code == 422 and reason.json()["detail"]["code"] == bad.expected_code
        assert client.post(f"/api/photos/{refused_id}/complete", headers=headers).status_code == 404
        assert photo_count(queued["db"]) == 1 and not any(
            k.startswith("uploads/") for k in object_keys(app.state.store)
        )


def test_a_swept_upload_goes_to_the_worker_and_a_late_complete_gets_its_outcome(
    queued: dict[str, Any],
) -> None:
    """On Redis the sweep's job goes to the photo worker like any other; the client that comes back and says
    complete while the outcome is kept gets the stored photo, as if it had never been away."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from pzone_api.processing import finish_or_purge_stale_uploads

    app = queued_app(queued, processing_wait_s=30.0)
    with TestClient(app) as client, photo_worker_process(worker_env(queued), queued["log"]):
        csrf = signup(client, "late@example.com", "correct horse battery")
        data = photo_bytes((640, 480), orientation=6)
        created = client.post(
            "/api/photos",
            json={"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)},
            headers={"X-CSRF-Token": csrf},
        )
        photo_id = created.json()["photo"]["id"]
        assert put_upload(client, created.json()["upload"], data) in (200, 204)
        engine = make_engine(queued["db"])
        try:
            with engine.begin() as conn:
                old = datetime.now(UTC) - timedelta(hours=3)
                conn.execute(update(Photo).where(Photo.id == photo_id).values(created_at=old))
            sweep = finish_or_purge_stale_uploads(
                engine, app.state.store, app.state.photo_queue, timedelta(hours=1)
            )
        finally:
            engine.dispose()
        assert sweep.completed == [photo_id] and sweep.purged == 0
        late = client.post(f"/api/photos/{photo_id}/complete", headers={"X-CSRF-Token": csrf})
        assert late.status_code == 200, late.text + queued["log"].read_text()
        assert late.json()["status"] == "stored" and (late.json()["width"], late.json()["height"]) == (
            480,
            640,
        )
        again = client.post(f"/api/photos/{photo_id}/complete", headers={"X-CSRF-Token": csrf})
        assert again.status_code == 409 and again.json()["detail"]["code"] == "already_completed"


def test_an_early_complete_left_uncollected_does_not_answer_the_next_one(queued: dict[str, Any]) -> None:
    """complete before the PUT, with the worker late (202): the job later finds nothing and leaves "not uploaded"
    in Redis; after the PUT, the next complete must wait for its own job, not take that stale outcome."""
    app = queued_app(queued, processing_wait_s=0.5)
    with TestClient(app) as client:
        csrf = signup(client, "early@example.com", "correct horse battery")
        headers = {"X-CSRF-Token": csrf}
        body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": ANY_SIZE}
        ticket = client.post("/api/photos", json=body, headers=headers).json()
        photo_id = ticket["photo"]["id"]
        early = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert early.status_code == 202 and early.json()["status"] == "processing"
        app.state.settings.processing_wait_s = 30.0
        with photo_worker_process(worker_env(queued), queued["log"]):
            deadline = time.monotonic() + 60
            while client.get(f"/api/photos/{photo_id}").json()["status"] != "awaiting_upload":
                assert time.monotonic() < deadline, queued["log"].read_text()
                time.sleep(0.1)
            assert put_upload(client, ticket["upload"], photo_bytes()) in (200, 204)
            done = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
            assert done.status_code == 200 and done.json()["status"] == "stored", done.text
        twice = client.post(f"/api/photos/{photo_id}/complete", headers=headers)
        assert twice.status_code == 409 and twice.json()["detail"]["code"] == "already_completed"


def test_a_job_lost_with_its_worker_is_enqueued_again_and_never_runs_twice(queued: dict[str, Any]) -> None:
    """The worker took the job and died: the queue is empty, the photo stays "processing". Housekeeping's
    ``requeue_stuck`` enqueues it again once ``processing_stuck_after_s`` passed with no live worker lease, once
    (a second pass finds nothing); a job that finds another one's lease does nothing."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from pzone.db.models import Photo
    from pzone_api.processing import requeue_stuck

    app = queued_app(queued, processing_wait_s=0.3)
    with TestClient(app) as client:
        csrf = signup(client, "lost@example.com", "correct horse battery")
        accepted = direct_upload(client, csrf, photo_bytes())
        assert accepted.status_code == 202, accepted.text
        photo_id = accepted.json()["id"]
        queue, engine = app.state.photo_queue, app.state.engine
        assert queue.huey.pending_count() == 1
        queue.huey.storage.flush_queue()  # what a worker that dequeued the job and crashed leaves
        assert requeue_stuck(engine, queue, 600) == []  # not stuck yet: enqueued just now

        def set_photo(**values: Any) -> None:
            with engine.begin() as conn:
                conn.execute(update(Photo).where(Photo.id == photo_id).values(**values))

        now = datetime.now(UTC)
        # The crashed worker's lease still runs: not yet (it may be alive and slow).
        set_photo(processing_at=now - timedelta(hours=1), worker_lease_until=now + timedelta(minutes=5))
        assert requeue_stuck(engine, queue, 600) == []
        # A job of the same photo meanwhile (a duplicate) leaves it alone while the lease runs.
        assert queue._process(photo_id, None, True) is None
        assert client.get(f"/api/photos/{photo_id}").json()["status"] == "processing"
        # The lease ran out: enqueued again, once.
        set_photo(worker_lease_until=now - timedelta(seconds=1))
        assert requeue_stuck(engine, queue, 600) == [photo_id]
        assert requeue_stuck(engine, queue, 600) == []
        assert queue.huey.pending_count() == 1
        with photo_worker_process(worker_env(queued), queued["log"]):
            deadline = time.monotonic() + 60
            while client.get(f"/api/photos/{photo_id}").json()["status"] != "stored":
                assert time.monotonic() < deadline, queued["log"].read_text()
                time.sleep(0.2)
        with engine.connect() as conn:
            lease = conn.execute(select(Photo.worker_lease_until).where(Photo.id == photo_id)).scalar_one()
        assert lease is None  # given back at the job's end
        # Delivered twice after all (the lost job comes back): the stored photo stays as it is.
        stored = client.get(f"/api/photos/{photo_id}").json()
        outcome = queue._process(photo_id, None, True)
        assert outcome is not None and outcome["code"] == "stored"
        assert client.get(f"/api/photos/{photo_id}").json() == stored


def test_a_put_after_its_photo_was_stored_or_refused_is_swept_and_a_waiting_one_kept(
    api: dict[str, Any],
) -> None:
    """A presigned URL stays valid after ``complete``: a second PUT lands at uploads/<id> although no photo waits
    for it any more. Housekeeping deletes such strays once they are older than the sweep's age (the multipart path
    writes its object just before its row), and never an upload its photo still waits for."""
    from datetime import timedelta

    from pzone_api.processing import sweep_stray_uploads

    client, store, app = api["client"], api["store"], api["app"]
    csrf = signup(client, "late@example.com", "correct horse battery")
    headers = {"X-CSRF-Token": csrf}
    body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": ANY_SIZE}
    good, late = photo_bytes((120, 90)), b"<html>a late PUT</html>"

    stored = client.post("/api/photos", json=body, headers=headers).json()
    assert put_upload(client, stored["upload"], good) in (200, 204)
    done = client.post(f"/api/photos/{stored['photo']['id']}/complete", headers=headers)
    assert done.status_code == 200, done.text
    refused = client.post("/api/photos", json=body, headers=headers).json()
    assert put_upload(client, refused["upload"], b"not a photo at all" * 10) in (200, 204)
    assert client.post(f"/api/photos/{refused['photo']['id']}/complete", headers=headers).status_code == 422
    waiting = client.post("/api/photos", json=body, headers=headers).json()
    assert put_upload(client, waiting["upload"], good) in (200, 204)  # its client has not said complete yet
    for ticket in (stored, refused):  # the URLs still take a PUT
        assert put_upload(client, ticket["upload"], late) in (200, 204)
    uploads = {key for key in object_keys(store) if key.startswith("uploads/")}
    assert uploads == {f"uploads/{t['photo']['id']}" for t in (stored, refused, waiting)}

    engine = app.state.engine
    assert sweep_stray_uploads(engine, store, timedelta(hours=1)) == 0  # too recent: left alone
    assert sweep_stray_uploads(engine, store, timedelta(0)) == 2
    assert {key for key in object_keys(store) if key.startswith("uploads/")} == {
        f"uploads/{waiting['photo']['id']}"
    }
    assert sweep_stray_uploads(engine, store, timedelta(0)) == 0
    photo = client.get(f"/api/photos/{stored['photo']['id']}").json()
    assert photo["status"] == "stored" and photo["sha256"] == hashlib.sha256(good).hexdigest()
    done = client.post(f"/api/photos/{waiting['photo']['id']}/complete", headers=headers)
    assert done.status_code == 200 and done.json()["status"] == "stored", done.text


def test_uploads_never_completed_are_completed_when_their_bytes_arrived_else_purged(
    api: dict[str, Any],
) -> None:
    """The housekeeping sweep, past the upload URL's lifetime: a photo PUT whose client never said complete (lost
    its connection) is completed on the owner's behalf and checked like any other; one with no bytes, or whose owner
    is no longer active, is removed with whatever arrived; a recent one is left to its client."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from pzone.db.models import User
    from pzone_api.processing import finish_or_purge_stale_uploads

    client, store, app = api["client"], api["store"], api["app"]

    def ticket(data: bytes, csrf: str, *, put: bool = True) -> str:
        created = client.post(
            "/api/photos",
            json={"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)},
            headers={"X-CSRF-Token": csrf},
        )
        assert created.status_code == 201, created.text
        if put:
            assert put_upload(client, created.json()["upload"], data) in (200, 204)
        return str(created.json()["photo"]["id"])

    good, text = photo_bytes(), b"this is not a picture, only its name says so\n" * 20
    csrf = signup(client, "old@example.com", "correct horse battery")
    ids = {
        "uploaded": ticket(good, csrf),
        "never_put": ticket(good, csrf, put=False),
        "not_an_image": ticket(text, csrf),
        "recent": ticket(good, csrf),
    }
    ids["gone_owner"] = ticket(good, signup(client, "gone@example.com", "correct horse battery"))
    engine = make_engine(api["db"])
    try:
        with Session(engine) as session:
            old = datetime.now(UTC) - timedelta(hours=3)
            aged = [ids[name] for name in ("uploaded", "never_put", "not_an_image", "gone_owner")]
            session.execute(update(Photo).where(Photo.id.in_(aged)).values(created_at=old))
            session.execute(update(User).where(User.email == "gone@example.com").values(is_active=False))
            session.commit()
        sweep = finish_or_purge_stale_uploads(engine, store, app.state.photo_queue, timedelta(hours=1))
        assert sorted(sweep.completed) == sorted([ids["uploaded"], ids["not_an_image"]])
        assert sweep.purged == 2  # never_put, gone_owner
        with Session(engine) as session:
            status = {p.id: p.status for p in session.scalars(select(Photo))}
        # the text was claimed and checked like any upload: refused, its row and objects removed
        assert status == {ids["uploaded"]: "stored", ids["recent"]: "awaiting_upload"}
        assert {k for k in object_keys(store) if k.startswith("uploads/")} == {f"uploads/{ids['recent']}"}
        # nothing left to do on the next pass
        again = finish_or_purge_stale_uploads(engine, store, app.state.photo_queue, timedelta(hours=1))
        assert again.completed == [] and again.purged == 0
    finally:
        engine.dispose()
    csrf = login(client, "old@example.com", "correct horse battery")
    history = client.get("/api/photos").json()
    shown = {item["id"]: item for item in history["items"]}
    assert shown[ids["uploaded"]]["status"] == "stored" and shown[ids["uploaded"]]["thumb_url"]
    assert Image.open(io.BytesIO(fetch(client, shown[ids["uploaded"]]["thumb_url"]))).size[0] <= 256
    # the client comes back and says complete after all: told it is done, and the photo is there
    late = client.post(f"/api/photos/{ids['uploaded']}/complete", headers={"X-CSRF-Token": csrf})
    assert late.status_code == 409 and late.json()["detail"]["code"] == "already_completed"
    done = client.post(f"/api/photos/{ids['recent']}/complete", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["status"] == "stored"


def test_migration_0005_processing_lease_upgrade_backfill_and_downgrade(db_url: str) -> None:
    """0005 adds processing_at and worker_lease_until; photos processing at upgrade count from their creation."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, inspect

    from pzone.db.models import User
    from pzone.migrations import current, downgrade, upgrade

    def columns() -> set[str]:
        eng = make_engine(db_url)
        try:
            return {c["name"] for c in inspect(eng).get_columns("photos")}
        finally:
            eng.dispose()

    assert {"processing_at", "worker_lease_until"} <= columns()
    downgrade(db_url, "0004")
    assert current(db_url) == "0004" and "processing_at" not in columns()
    created = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:
            conn.execute(insert(User.__table__).values(id="u1", email="u1@x.test", password_hash="-"))  # type: ignore[arg-type]
            for photo_id, status in (("p1", "processing"), ("p2", "stored")):
                conn.execute(
                    insert(Photo.__table__).values(  # type: ignore[arg-type]
                        id=photo_id, user_id="u1", status=status, verdict="pending", created_at=created
                    )
                )
    finally:
        eng.dispose()
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        with Session(eng) as session:
            backfilled = {p.id: p.processing_at for p in session.scalars(select(Photo))}
    finally:
        eng.dispose()
    assert backfilled["p2"] is None
    at = backfilled["p1"]
    assert at is not None and at.replace(tzinfo=UTC) == created
