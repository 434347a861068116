"""Services away under a running API: Redis during log-in and session lookups, the object store during an upload's
PUT, check, copy and delete. Each answers a 503 with its code and Retry-After, writes no row or object halfway, and
the API works again once the service is back, without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pzone.db.engine import make_engine
from pzone.db.models import Photo, User
from pzone_api.api.deps import SESSION_COOKIE
from pzone_api.processing import requeue_stuck
from pzone_api.sessions import new_token
from tests.support.api import make_app, signup
from tests.support.photos import PHOTO_BUCKET, add_device, photo_bytes, put_upload
from tests.support.s3 import MotoServer, bucket_keys
from tests.support.services import PrivatePostgres, PrivateRedis, create_database, free_port

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


def assert_unavailable(response: Any, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["detail"]["code"] == code
    assert int(response.headers["Retry-After"]) > 0


def rows(database_url: str, model: Any) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())
    finally:
        engine.dispose()


def test_redis_down_during_log_in_and_session_lookup(
    pg_url: str, tmp_path: Path, own_redis: PrivateRedis
) -> None:
    redis = own_redis
    app = make_app(pg_url, tmp_path / "data", redis.url)
    with TestClient(app) as client:
        signup(client, "ana@example.com", PASSWORD)
        assert client.get("/api/auth/me").status_code == 200
        signed_in = dict(client.cookies)

        redis.kill()
        assert_unavailable(client.get("/api/auth/me"), "sessions_unavailable")
        client.cookies.clear()
        login = client.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
        assert_unavailable(login, "sessions_unavailable")
        joined = client.post("/api/auth/signup", json={"email": "bo@example.com", "password": PASSWORD})
        assert_unavailable(joined, "sessions_unavailable")
        assert rows(pg_url, User) == 1  # the refused sign-up left no account behind

        # Back (empty: no persistence, so the old session is gone): the same API serves again.
        redis.start()
        client.cookies.update(signed_in)
        assert client.get("/api/auth/me").status_code == 401
        client.cookies.clear()
        assert (
            client.post(
                "/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        assert client.get("/api/auth/me").status_code == 200
        signup(client, "bo@example.com", PASSWORD)


def test_object_store_down_during_upload_and_processing(
    pg_url: str, tmp_path: Path, own_s3: MotoServer
) -> None:
    s3 = own_s3
    app = make_app(
        pg_url,
        tmp_path / "data",
        s3_bucket=PHOTO_BUCKET,
        s3_endpoint_url=s3.endpoint_url,
        s3_region="us-east-1",
        s3_max_attempts=1,
    )
    add_device(pg_url)
    data = photo_bytes()
    with TestClient(app) as client:
        app.state.store.ensure_bucket()
        csrf = {"X-CSRF-Token": signup(client, "ana@example.com", PASSWORD)}
        created = client.post(
            "/api/photos",
            json={"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)},
            headers=csrf,
        )
        assert created.status_code == 201, created.text
        ticket = created.json()
        assert put_upload(client, ticket["upload"], data) in (200, 204)

        s3.stop()
        # The multipart upload's PUT: refused before any row exists.
        upload = client.post(
            "/api/photos/upload",
            files={"file": ("p.jpg", data, "image/jpeg")},
            data={"device_id": "dev-1"},
            headers=csrf,
        )
        assert_unavailable(upload, "store_unavailable")
        assert rows(pg_url, Photo) == 1
        # The direct upload's check and copy: the photo is kept, still processing, nothing stored for it.
        photo_id = ticket["photo"]["id"]
        assert_unavailable(client.post(f"/api/photos/{photo_id}/complete", headers=csrf), "store_unavailable")
        assert client.get(f"/api/photos/{photo_id}").json()["status"] == "processing"

        # Back, on the same port (moto forgets everything: the bucket and the PUT come again). The photo's
        # job runs again, as the housekeeping does for a job that counts as stuck, and stores it.
        s3.start()
        app.state.store.ensure_bucket()
        app.state.store.put_bytes(f"uploads/{photo_id}", data, "image/jpeg")
        assert requeue_stuck(app.state.engine, app.state.photo_queue, stuck_after_s=0) == [photo_id]
        stored = client.get(f"/api/photos/{photo_id}").json()
        assert stored["status"] == "stored" and stored["sha256"]
        assert bucket_keys(s3, PHOTO_BUCKET, "uploads/") == set()  # the upload object went with the copy
        again = client.post(
            "/api/photos/upload",
            files={"file": ("p.jpg", photo_bytes((320, 240)), "image/jpeg")},
            data={"device_id": "dev-1"},
            headers=csrf,
        )
        assert again.status_code == 201, again.text


def test_database_down_is_a_503(tmp_path: Path) -> None:
    app = make_app(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/pzone", tmp_path / "data")
    with TestClient(app) as client:
        login = client.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
        assert_unavailable(login, "database_unavailable")
        client.cookies.set(SESSION_COOKIE, new_token())  # any plausible token: the lookup needs the database
        assert_unavailable(client.get("/api/auth/me"), "database_unavailable")


@pytest.mark.parametrize("dies_in", ["take_lease", "process_staged"])
def test_database_down_while_a_photo_is_processed_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_in: str
) -> None:
    """The database goes away as a photo's job starts or in its middle: nothing was committed and the photo cannot be
    removed either, so it is kept (processing, for the housekeeping to enqueue again) and the client is told to wait,
    not to upload it again, which would make it a second photo."""
    from pzone.migrations import upgrade
    from pzone_api.processing import photo_queue

    server = PrivatePostgres()
    server.init()
    try:
        _name, url = create_database(server.admin_url)
        upgrade(url)
        add_device(url)
        data = photo_bytes()
        app = make_app(url, tmp_path / "data")  # no Redis: the job runs inside the complete request
        step = getattr(photo_queue, dies_in)

        def database_dies_first(*args: Any, **kwargs: Any) -> Any:
            server.stop("immediate")
            return step(*args, **kwargs)

        with TestClient(app) as client:
            csrf = {"X-CSRF-Token": signup(client, "ana@example.com", PASSWORD)}
            body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)}
            ticket = client.post("/api/photos", json=body, headers=csrf).json()
            assert put_upload(client, ticket["upload"], data) in (200, 204)
            photo_id = ticket["photo"]["id"]

            monkeypatch.setattr(photo_queue, dies_in, database_dies_first)
            answer = client.post(f"/api/photos/{photo_id}/complete", headers=csrf)
            monkeypatch.undo()
            assert_unavailable(answer, "database_unavailable")

            server.start()
            assert client.get(f"/api/photos/{photo_id}").json()["status"] == "processing"
    finally:
        server.remove()
