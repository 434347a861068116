"""The API's commands: accounts made by `pzone user create` log in through the API, `pzone api` serves it, and
`pzone photos worker` refuses to start without a queue."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from pzone.cli import load_plugins
from pzone.db.engine import make_engine
from pzone.db.models import User
from pzone.migrations import upgrade
from tests.support.api import create_user_in_db, login, make_app
from tests.support.cli import pzone
from tests.support.paths import REPO
from tests.support.services import free_port

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
# Settings that could point a child process somewhere else than the test's own database and folder.
_ISOLATED = ("PZONE_DATABASE_URL", "PZONE_REDIS_URL", "PZONE_S3_BUCKET", "PZONE_DATA_DIR")


def cli_env(tmp_path: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATED}
    env.update(PZONE_DATA_DIR=str(tmp_path / "data"), COLUMNS="200", PZONE_LOG_LEVEL="WARNING")
    if database_url:
        env["PZONE_DATABASE_URL"] = database_url
    return env


def users(database_url: str) -> list[tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [
                (r.email, r.role) for r in conn.execute(select(User.email, User.role).order_by(User.email))
            ]
    finally:
        engine.dispose()


def invoke(args: list[str], env: dict[str, str], stdin: str | None = None) -> Any:
    """The CLI in this process (cheap): typer's runner, with ``env`` as the environment."""
    cleared: dict[str, str | None] = dict.fromkeys(_ISOLATED)
    return CliRunner().invoke(load_plugins(), args, input=stdin, env={**cleared, **env})


# ---------------------------------------------------------------------------------------------------------------
# pzone user create


def test_user_create_from_stdin_makes_an_operator_who_logs_in(pg_url: str, tmp_path: Path) -> None:
    args = ("user", "create", "--email", " Op@Example.COM ", "--role", "operator", "--password-stdin")
    done = pzone(*args, env=cli_env(tmp_path, pg_url), stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created operator op@example.com" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    assert users(pg_url) == [("op@example.com", "operator")]

    with TestClient(make_app(pg_url, tmp_path / "data")) as client:
        login(client, "op@example.com", PASSWORD)
        me = client.get("/api/auth/me").json()
        assert me["email"] == "op@example.com" and me["role"] == "operator"
        assert client.get("/api/dashboard/summary").status_code == 200

    again = pzone(*args, env=cli_env(tmp_path, pg_url), stdin=PASSWORD + "\n")
    assert again.returncode == 2 and "exists already" in again.stdout + again.stderr


def test_user_create_errors_exit_2_with_a_message(sqlite_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, sqlite_url)
    weak = pzone("user", "create", "--email", "ana@example.com", "--password-stdin", env=env, stdin="short\n")
    assert weak.returncode == 2 and "weak password" in weak.stdout and "at least 10" in weak.stdout

    create_user_in_db(sqlite_url, "taken@example.com", PASSWORD)
    cases = {
        "invalid email": ["--email", "not-an-address"],
        "exists already": ["--email", "TAKEN@example.com"],
        "'admin' is not one of": ["--email", "ana@example.com", "--role", "admin"],
    }
    for message, options in cases.items():
        result = invoke(["user", "create", *options, "--password-stdin"], env, stdin=PASSWORD + "\n")
        assert result.exit_code == 2, (message, result.output)
        assert message in result.output, result.output
    # The password is never an option of its own.
    result = invoke(["user", "create", "--email", "ana@example.com", "--password", PASSWORD], env)
    assert result.exit_code == 2 and "No such option" in result.output
    assert users(sqlite_url) == [("taken@example.com", "client")]


def test_user_create_prompts_hidden_with_confirmation(sqlite_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, sqlite_url)
    mismatch = invoke(
        ["user", "create", "--email", "ana@example.com"], env, stdin=f"{PASSWORD}\nother one!!\n"
    )
    assert mismatch.exit_code != 0 and users(sqlite_url) == []
    result = invoke(["user", "create", "--email", "ana@example.com"], env, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "created client ana@example.com" in result.output and PASSWORD not in result.output
    assert users(sqlite_url) == [("ana@example.com", "client")]


def test_user_create_on_an_empty_database_says_to_migrate(tmp_path: Path) -> None:
    env = cli_env(tmp_path)  # the default SQLite file in PZONE_DATA_DIR, never migrated
    result = invoke(
        ["user", "create", "--email", "ana@example.com", "--password-stdin"], env, PASSWORD + "\n"
    )
    assert result.exit_code == 2
    assert "database error" in result.output and "pzone db upgrade" in result.output


# ---------------------------------------------------------------------------------------------------------------
# pzone api


def test_api_hint_when_the_database_is_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append({"app": app, **kwargs}))
    env = cli_env(tmp_path)
    behind = invoke(["api", "--port", "8123"], env)
    assert behind.exit_code == 0, behind.output
    assert "hint:" in behind.output and "pzone db upgrade" in behind.output
    assert served[0]["host"] == "127.0.0.1" and served[0]["port"] == 8123
    assert served[0]["app"].title == "P-ZONE API"

    upgrade(f"sqlite:///{tmp_path / 'data' / 'pzone.db'}")
    current = invoke(["api", "--port", "8124"], env)
    assert current.exit_code == 0 and "hint:" not in current.output, current.output
    everywhere = invoke(
        ["api", "--host", "0.0.0.0", "--port", "8124"], {**env, "PZONE_COOKIE_SECURE": "false"}
    )
    assert everywhere.exit_code == 0 and "hint:" not in everywhere.output, everywhere.output
    secure = invoke(["api", "--host", "0.0.0.0", "--port", "8124"], env)
    assert "PZONE_COOKIE_SECURE=false" in secure.output
    assert served[2]["host"] == "0.0.0.0" and served[2]["port"] == 8124
    assert invoke(["api", "--port", "0"], env).exit_code == 2


def test_pzone_api_process_answers_healthz_and_docs(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pzone.cli", "api", "--port", str(port)],
            env=cli_env(tmp_path, database_url),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{base}/api/healthz", timeout=2) as reply:
                    assert reply.status == 200 and b'"ok"' in reply.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        with urllib.request.urlopen(f"{base}/docs", timeout=5) as reply:
            assert reply.status == 200 and b"swagger" in reply.read().lower()
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=5) as reply:
            paths = reply.read().decode()
        for path in ("/api/devices", "/api/dashboard/summary", "/api/dashboard/devices/{device_id}/tilt"):
            assert f'"{path}"' in paths
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    output = log.read_text()
    assert "hint:" not in output and f"http://127.0.0.1:{port}/docs" in output


def test_pzone_photos_worker_needs_a_queue(tmp_path: Path) -> None:
    """Without PZONE_REDIS_URL the API processes photos itself: the worker refuses to start, and says why."""
    result = pzone("photos", "worker", env=cli_env(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "PZONE_REDIS_URL" in result.stdout
