"""Errors that reach the top of a command (``pzone.cli.common.run_cli``): a sentence and a hint with exit code 1,
the traceback only with PZONE_DEBUG=1 or `pzone --debug`; known errors get their own sentence."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.cli import pzone
from tests.support.services import free_port

STAGE = textwrap.dedent(
    """
    from pzone.cli.common import run_command
    from pzone.errors import UserError

    def main(kind: str) -> None:
        if kind == "user":
            raise UserError("the widget is missing", "put a widget in place")
        if kind == "exit":
            import typer
            raise typer.Exit(3)
        raise RuntimeError("no such widget\\nsecond line")

    run_command(main)
    """
)


def stage(kind: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A stage module's ``main`` run as `dvc repro` runs it (``python -m``): here, ``python -c``."""
    base = {k: v for k, v in os.environ.items() if k != "PZONE_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", STAGE, kind],
        env={**base, "COLUMNS": "60", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.unit
def test_an_unexpected_error_is_one_sentence_and_the_traceback_only_on_request() -> None:
    plain = stage("bug")
    assert plain.returncode == 1 and "Traceback" not in plain.stdout + plain.stderr
    lines = plain.stderr.splitlines()
    assert lines[0] == "error: RuntimeError: no such widget", lines  # the first line only, not wrapped at 60
    assert lines[1].startswith("hint: an unexpected error: run again with PZONE_DEBUG=1") and len(lines) == 2
    debug = stage("bug", PZONE_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "no such widget" in debug.stderr


@pytest.mark.unit
def test_a_user_error_is_its_sentence_and_hint_and_exits_keep_their_code() -> None:
    done = stage("user")
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: the widget is missing", "hint: put a widget in place"]
    assert stage("exit").returncode == 3  # a command's own exit code is kept


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PZONE_")}
    return {**env, "COLUMNS": "200", **extra}


@pytest.mark.integration
def test_the_pzone_command_names_an_unreachable_database_and_debug_shows_the_stack() -> None:
    env = clean_env(PZONE_DATABASE_URL=f"postgresql+psycopg://pzone@127.0.0.1:{free_port()}/pzone")
    done = pzone("db", "current", env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out, out
    assert "error: cannot reach the database at postgresql+psycopg://pzone@127.0.0.1:" in done.stderr, out
    assert "hint: is the server up" in done.stderr
    debug = pzone("--debug", "db", "current", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.unit
def test_invalid_settings_are_a_sentence() -> None:
    done = pzone("db", "current", env=clean_env(PZONE_TILT_UPRIGHT_MAX_DEG="steep"))
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "error: invalid settings: tilt_upright_max_deg:" in done.stderr, done.stderr
