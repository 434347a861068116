"""`pzone simulate devices`: the simulated fleet on the zone's topics of a real broker, faults included, as the
ingest would take or refuse each message."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter, defaultdict

import pytest

from pzone.telemetry import Limits
from pzone_ingest.batch import validate
from pzone_ingest.messages import from_mqtt
from pzone_ingest.settings import Settings as IngestSettings
from tests.support.cli import pzone
from tests.support.mqtt import Subscriber
from tests.support.services import MosquittoBroker

pytestmark = pytest.mark.integration


def test_simulate_devices_command_rejects_bad_options(broker: MosquittoBroker) -> None:
    done = pzone("simulate", "devices", "--count", "0", "--mqtt-url", broker.url, env=os.environ)
    assert done.returncode == 2 and "count" in (done.stdout + done.stderr).lower()
    done = pzone("simulate", "devices", "--zone", "bad zone!", "--mqtt-url", broker.url, env=os.environ)
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
            env={**os.environ, "COLUMNS": "200"},
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
        checked = validate([from_mqtt(m.topic, m.payload, int(time.time() * 1000), max_bytes)], Limits())
        device = m.topic.split("/")[2]
        if checked.rejected:
            rejected[device] += 1
        else:
            (reading,) = checked.readings
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
