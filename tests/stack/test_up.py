"""`pzone up`: the whole local stack (broker, ingest, simulated fleet, API and web UI) on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.paths import REPO
from tests.support.services import free_port, wait_port

pytestmark = pytest.mark.integration


@pytest.mark.e2e
def test_pzone_up_runs_the_stack_on_embedded_defaults(tmp_path: Path) -> None:
    env = {"PZONE_DATA_DIR": str(tmp_path), "PZONE_INGEST_METRICS_PORT": "0", "COLUMNS": "160"}
    args = ["up", "--devices", "3", "--zones", "2", "--rate", "4", "--duration", "8", "--faulty-ratio", "0.1"]
    api_port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pzone.cli",
            *args,
            "--broker-port",
            str(free_port()),
            "--api-port",
            str(api_port),
        ],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_port(api_port, timeout=40)
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/healthz", timeout=5) as response:
        assert response.status == 200  # the API and web UI run beside the telemetry path
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=5) as response:
        assert b"P-ZONE" in response.read()
    stdout, stderr = process.communicate(timeout=90)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "P-ZONE devices" in done.stdout and "readings stored" in done.stdout
    engine = create_engine(f"sqlite:///{tmp_path / 'pzone.db'}")
    with engine.connect() as conn:
        devices = conn.execute(text("SELECT count(*) FROM devices")).scalar_one()
        rows = conn.execute(text("SELECT count(*) FROM sensor_readings")).scalar_one()
        distinct = conn.execute(
            text("SELECT count(DISTINCT device_id || ':' || seq) FROM sensor_readings")
        ).scalar_one()
    engine.dispose()
    assert devices == 6
    assert rows == distinct and rows >= 6 * 4 * 4  # at least half the nominal readings in 8 s
