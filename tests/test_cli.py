"""The pzone CLI end to end: migrations, the simulated fleet through a real broker into rows, and `pzone up`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from pzone.migrations import alembic_config
from pzone.telemetry import Limits
from pzone_firmware.fleet import run_fleet
from pzone_ingest.batch import validate
from pzone_ingest.messages import from_mqtt
from pzone_ingest.settings import Settings as IngestSettings
from tests.support.ingest import REPO, audit, running_worker, wait_rows, worker_settings
from tests.support.services import MosquittoBroker, free_port, wait_port
from tests.test_firmware import Subscriber

pytestmark = pytest.mark.integration


def pzone(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pzone.cli", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_db_upgrade_on_sqlite_and_current(tmp_path: Path) -> None:
    env = {"PZONE_DATA_DIR": str(tmp_path)}
    assert pzone("db", "current", env=env).stdout.strip().startswith("empty")
    done = pzone("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None and head in done.stdout and (tmp_path / "pzone.db").exists()
    assert pzone("db", "current", env=env).stdout.strip() == head


def test_simulated_fleet_through_broker_and_worker_every_sequence_once(
    broker: MosquittoBroker, pg_url: str
) -> None:
    with running_worker(worker_settings(pg_url, broker.url)):
        stats = run_fleet(
            broker.url, count=6, rate_hz=20, duration_s=3, zone_id="zone-9", seed=3, faulty_ratio=0.1
        )
        expected = {device_id: set(device.acked_seqs) for device_id, device in stats.devices.items()}
        total = sum(len(seqs) for seqs in expected.values())
        assert total >= 6 * 40 and stats.undelivered == 0
        assert wait_rows(pg_url, total) == total
    result = audit(pg_url, expected)
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0)
    for seqs in expected.values():  # contiguous: no sequence number skipped by the firmware logic
        assert seqs == set(range(min(seqs), max(seqs) + 1))
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        dead = conn.execute(text("SELECT count(*) FROM ingest_dead_letters")).scalar_one()
    engine.dispose()
    assert dead == stats.faulty_injected > 0


def test_simulate_devices_command_rejects_bad_options(broker: MosquittoBroker) -> None:
    done = pzone("simulate", "devices", "--count", "0", "--mqtt-url", broker.url, env={})
    assert done.returncode == 2 and "count" in (done.stdout + done.stderr).lower()
    done = pzone("simulate", "devices", "--zone", "bad zone!", "--mqtt-url", broker.url, env={})
    assert done.returncode != 0 and "zone_id" in (done.stdout + done.stderr)


def test_simulate_devices_command_publishes_the_fleet_and_its_faults_on_the_zones_topics(
    broker: MosquittoBroker,
) -> None:
    zone = f"cli-{uuid.uuid4().hex[:8]}"
    count, rate, duration = 3, 10.0, 2.0
    tilts = Subscriber(broker.port, [f"pzone/{zone}/+/tilt"])
    everything = Subscriber(broker.port, ["pzone/#"])
    try:
        done = pzone(
            "simulate",
            "devices",
            *("--count", str(count), "--rate", str(rate), "--duration", str(duration)),
            *("--zone", zone, "--faulty-ratio", "0.3", "--seed", "5", "--mqtt-url", broker.url),
            env={"COLUMNS": "200"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        summary = re.search(
            rf"{count} devices in {zone}: (\d+) readings acknowledged, (\d+) faulty payloads", done.stdout
        )
        assert summary, done.stdout
        acked, faulty = int(summary[1]), int(summary[2])
        assert re.search(r"\b0 undelivered", done.stdout), done.stdout
        assert tilts.wait_for(lambda m: len(m) >= acked + faulty, 10), (len(tilts.messages), acked + faulty)
        time.sleep(0.2)  # nothing more arrives
    finally:
        tilts.close()
        everything.close()

    devices = {f"sim-{zone}-{i:04d}" for i in range(count)}
    assert {m.topic for m in tilts.messages} == {f"pzone/{zone}/{device}/tilt" for device in devices}
    assert {m.topic.split("/")[1] for m in everything.messages} == {zone}  # no other zone
    # What the ingest would store or dead-letter: its own parsing and validation, message by message.
    max_bytes = IngestSettings.model_fields["max_payload_bytes"].default
    accepted: dict[str, list[int]] = defaultdict(list)
    rejected: Counter[str] = Counter()
    for m in tilts.messages:
        readings, _, dead, _ = validate(
            [from_mqtt(m.topic, m.payload, int(time.time() * 1000), max_bytes)], Limits()
        )
        device = m.topic.split("/")[2]
        if dead:
            rejected[device] += 1
        else:
            (reading,) = readings
            assert reading.zone_id == zone and reading.device_id == device
            accepted[device].append(reading.seq)
    assert sum(len(seqs) for seqs in accepted.values()) == acked
    # the injected faults arrive, and the ingest refuses every one
    assert sum(rejected.values()) == faulty > 0
    assert len(rejected) >= 2  # spread over the fleet, not one device's
    nominal = rate * duration
    for device in devices:
        seqs = accepted[device]
        assert seqs == list(range(len(seqs)))  # in order, contiguous from the fresh lease's first number, 0
        assert 0.5 * nominal <= len(seqs) <= 1.5 * nominal + 2, (device, len(seqs))


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
