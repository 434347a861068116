"""The model tier's start-up wait: a fresh deployment has no champion until the first retrain packages one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pzone_model.wait_for_model import wait_for_model
from tests.support.bentoml_store import fresh_store
from tests.support.tiny_model import import_tiny


class FakeStore:
    def __init__(self, appears_at_call: int | None) -> None:
        self.calls = 0
        self.appears_at_call = appears_at_call
        self.now = 0.0
        self.sleeps: list[float] = []

    def find(self, tag: str) -> str | None:
        self.calls += 1
        if self.appears_at_call is not None and self.calls >= self.appears_at_call:
            return f"{tag.split(':')[0]}:v{self.calls}"
        return None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wait(self, interval_s: float, timeout_s: float) -> str | None:
        return wait_for_model(
            "pzone-tilt:latest",
            interval_s=interval_s,
            timeout_s=timeout_s,
            find=self.find,
            sleep=self.sleep,
            clock=lambda: self.now,
        )


@pytest.mark.unit
def test_waits_until_the_model_appears() -> None:
    store = FakeStore(appears_at_call=4)
    assert store.wait(interval_s=5, timeout_s=0) == "pzone-tilt:v4"
    assert store.sleeps == [5, 5, 5]


@pytest.mark.unit
def test_gives_up_at_the_timeout_without_oversleeping() -> None:
    store = FakeStore(appears_at_call=None)
    assert store.wait(interval_s=4, timeout_s=10) is None
    assert sum(store.sleeps) <= 10 and store.calls == 3  # looked at 0, 4 and 8 s


def run_wait(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    return subprocess.Popen(
        [sys.executable, "-m", "pzone_model.wait_for_model", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.integration
def test_the_command_returns_once_a_model_is_imported_into_its_store(tmp_path: Path) -> None:
    home = fresh_store()  # this process imports into it, the command waits on it
    waiting = run_wait(home, "--interval-s", "0.2")
    try:
        time.sleep(2.0)  # its interpreter is up and it has looked at the empty store at least once
        assert waiting.poll() is None, waiting.communicate()[0]
        tag = import_tiny(tmp_path, [0.0, 0.0, 1.0], "7")
        output, _ = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, output
    assert "no pzone-tilt:latest in the model store yet" in output
    assert f"model store holds {tag}" in output


@pytest.mark.integration
def test_a_model_still_being_written_counts_as_not_there_yet(tmp_path: Path) -> None:
    """The trainer's import and the tier's wait share the store: a model folder without its model.yaml (mid-write)
    must not end the wait with a traceback."""
    home = tmp_path / "bentoml"
    (home / "models" / "pzone-tilt" / "half-written").mkdir(parents=True)
    waiting = run_wait(home, "--interval-s", "0.1", "--timeout-s", "0.5")
    output, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and "after 0.5 s" in output and "Traceback" not in output, output


@pytest.mark.integration
def test_the_command_fails_clearly_after_its_timeout_and_on_bad_options(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    (home / "models").mkdir(parents=True)
    timed_out = run_wait(home, "--interval-s", "0.1", "--timeout-s", "0.5")
    output, _ = timed_out.communicate(timeout=60)
    assert timed_out.returncode == 1 and "no pzone-tilt:latest in the model store after 0.5 s" in output, (
        output
    )
    bad = run_wait(home, "--interval-s", "0")
    output, _ = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "--interval-s must be > 0" in output
