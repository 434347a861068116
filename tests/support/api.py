"""The API under test: apps built from explicit settings, sign-up/login helpers, and a uvicorn factory.

Use the app with ``fastapi.testclient.TestClient`` as a context manager so that its lifespan (engine, object store)
runs::

    app = make_app(pg_url, tmp_path / "data")
    with TestClient(app) as client:
        csrf = signup(client, "ana@example.com", "correct horse battery")
        client.post("/api/...", headers={"X-CSRF-Token": csrf})

Apps made here hash passwords with cheap argon2id parameters (``FAST_HASHING``) unless told otherwise, and on Redis
use their own key prefix (``app.state.redis_key_prefix``); :func:`delete_redis_keys` removes a prefix's keys.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from fastapi import FastAPI

from pzone_api.main import create_app
from pzone_api.security import PasswordHashing
from pzone_api.settings import Settings
from tests.support.paths import REPO
from tests.support.services import free_port, wait_port

if TYPE_CHECKING:
    import requests
    from fastapi.testclient import TestClient


TEST_REDIS_URL = os.environ.get("PZONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CSRF_HEADER = "X-CSRF-Token"
# argon2id still, with the smallest sensible cost: the tests hash and verify many passwords.
FAST_HASHING = PasswordHashing(PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1))


def random_redis_prefix() -> str:
    return f"pzone-test-{uuid.uuid4().hex[:12]}:"


def make_app(
    database_url: str,
    data_dir: Path,
    redis_url: str | None = None,
    *,
    redis_key_prefix: str | None = None,
    fast_hashing: bool = True,
    **settings: Any,
) -> FastAPI:
    """``create_app`` with these settings (``cookie_secure=False`` unless given: TestClient talks plain HTTP)."""
    settings.setdefault("cookie_secure", False)
    app = create_app(Settings(database_url=database_url, data_dir=data_dir, redis_url=redis_url, **settings))
    app.state.redis_key_prefix = redis_key_prefix or random_redis_prefix()
    if fast_hashing:
        app.state.password_hashing = FAST_HASHING
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for tests that run the API in its own process (``--factory tests.support.api:app_from_env``).

    Settings come from the ``PZONE_*`` environment as in production; ``PZONE_TEST_REDIS_PREFIX`` sets the Redis key
    prefix.
    """
    app = create_app(Settings())
    prefix = os.environ.get("PZONE_TEST_REDIS_PREFIX")
    if prefix:
        app.state.redis_key_prefix = prefix
    app.state.password_hashing = FAST_HASHING
    return app


def uvicorn_command(factory: str, port: int) -> list[str]:
    """The command that serves the app of ``factory`` (``module:function``) in its own uvicorn process on
    127.0.0.1:``port``, logging warnings and worse."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


@contextlib.contextmanager
def api_process(env: Mapping[str, str], timeout: float = 20.0) -> Iterator[str]:
    """The API in its own uvicorn process (factory :func:`app_from_env`, settings from ``env``); yields its base URL.

    Stopped with SIGTERM (a graceful shutdown: the lifespan's cleanup runs) when the block ends.
    """
    port = free_port()
    process = subprocess.Popen(
        uvicorn_command("tests.support.api:app_from_env", port),
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the API process exited ({process.returncode}): {process.stderr and process.stderr.read()}"
                )
            try:
                wait_port(port, timeout=0.2)
                with urllib.request.urlopen(f"{base_url}/api/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the API did not answer on {base_url} within {timeout}s") from None
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, timeout: float = 20.0) -> Iterator[str]:
    """``app`` served by uvicorn in a thread of this process on a free port (its lifespan runs); yields its base
    URL. Real HTTP without a process start: errors reach pytest's log capture, not a pipe nobody reads."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API server thread exited before it started (see the log)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not start on port {port} within {timeout}s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def random_queue_name() -> str:
    """A huey queue name of its own (its Redis keys are ``huey.*.<name>*``): tests on a shared Redis never meet."""
    return f"pzonetest{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def photo_worker_process(
    env: Mapping[str, str], log_file: Path, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """``pzone photos worker`` in its own process (settings from ``env``, as the API's; its output goes to
    ``log_file``); stopped with SIGTERM (finish the photos in hand) when the block ends."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pzone.cli", "photos", "worker", "--workers", str(workers)],
            cwd=REPO,
            env={**os.environ, "COLUMNS": "200", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def delete_queue_keys(redis_url: str, queue_name: str) -> int:
    """Remove a test queue's huey keys (queue, results, notifications); returns how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"huey.*{queue_name}*", count=500))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def signup(client: TestClient, email: str, password: str) -> str:
    """Sign up (and so log in) on this client; returns the session's CSRF token. Asserts a 201."""
    response = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return str(response.json()["csrf_token"])


def login(client: TestClient, email: str, password: str) -> str:
    """Log in on this client; returns the session's CSRF token. Asserts a 200."""
    response = client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf_token"])


@dataclass(frozen=True)
class SignedInApi:
    """An API served over HTTP (:func:`serve_in_thread`) with an operator signed in, a second user to sign in
    afresh, a device (``dev-1``) and one stored photo of the operator's."""

    base_url: str
    operator: requests.Session
    client_email: str
    password: str
    photo_id: str
    thumb_url: str  # the photo's presigned thumbnail: a path under /api/objects/ with its signature's query

    def fresh_client_session(self) -> requests.Session:
        """A new session of the second user, for a request that may end it."""
        return http_login(self.base_url, self.client_email, self.password)


def http_login(base_url: str, email: str, password: str) -> requests.Session:
    """A ``requests`` session logged in over HTTP: the session cookie in its jar, the CSRF header on every request.
    Asserts a 200."""
    import requests

    session = requests.Session()
    response = session.post(
        f"{base_url}/api/auth/login", json={"email": email, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    session.headers[CSRF_HEADER] = str(response.json()["csrf_token"])
    return session


def create_user_in_db(database_url: str, email: str, password: str, role: str = "client") -> str:
    """A user made directly in the database (e.g. an operator, which sign-up cannot make); returns its id."""
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone_api.security import create_user

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            user = create_user(session, email, password, role, hashing=FAST_HASHING)
            session.commit()
            return user.id
    finally:
        engine.dispose()


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    """Remove every key under ``prefix`` (SCAN, never FLUSH: the Redis is shared); returns how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()
