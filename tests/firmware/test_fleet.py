"""The simulated fleet: many TiltNodes with the CPython HAL against a private Mosquitto, plus its tilt model."""

from __future__ import annotations

import json
import random
import statistics
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from pzone import telemetry
from pzone_firmware.fleet import (
    FAULT_KINDS,
    DeviceStats,
    FleetStats,
    faulty_payload,
    faulty_payload_of,
    parse_mqtt_url,
    run_fleet,
)
from pzone_firmware.tiltmodel import FALLEN, LEANING, UPRIGHT, TiltModel
from tests.support.mqtt import Subscriber, ingest_accepts
from tests.support.services import MosquittoBroker

ZONE = "zone-f"


Tilts = dict[tuple[str, int], tuple[float, float, float]]


def tilts_by_seq(sub: Subscriber) -> Tilts:
    out: Tilts = {}
    for m in sub.on("/tilt"):
        reading = ingest_accepts(m.topic, m.payload)
        if reading is not None:
            out[(reading.device_id, reading.seq)] = (reading.ax, reading.ay, reading.az)
    return out


def expected_messages(stats: FleetStats) -> int:
    return stats.published + stats.faulty_injected


# --- unit ----------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_tilt_model_is_mostly_upright_with_falls_and_leans_at_realistic_angles() -> None:
    # rates far above the fleet's defaults so one run of 20,000 samples (1.1 h at 5 Hz) sees many events
    model = TiltModel(
        random.Random(5), 0.2, fall_rate_per_h=30, lean_rate_per_h=30, mean_fallen_s=20, mean_leaning_s=20
    )
    upright: list[float] = []
    fallen: list[float] = []
    leaning: list[float] = []
    settled = 0
    previous = model.state
    for _ in range(20_000):
        tilt, azimuth = model.next()
        assert 0.0 <= tilt <= 180.0 and 0.0 <= azimuth <= 360.0
        settled = settled + 1 if model.state == previous else 0
        previous = model.state
        if settled < 15:  # 3 s after a change of state the scooter has come to rest
            continue
        {UPRIGHT: upright, FALLEN: fallen, LEANING: leaning}[model.state].append(tilt)
    total = len(upright) + len(fallen) + len(leaning)
    assert len(upright) / total > 0.6
    assert model.events > 20 and fallen and leaning
    assert statistics.median(upright) < 8 and max(upright) < 15
    assert all(76 <= t <= 94 for t in fallen)
    assert all(20 <= t <= 55 for t in leaning)


@pytest.mark.unit
def test_tilt_model_is_reproducible_from_its_seed() -> None:
    def trace(seed: int) -> list[tuple[float, float]]:
        model = TiltModel(random.Random(seed), 0.1, fall_rate_per_h=200, lean_rate_per_h=200)
        return [model.next() for _ in range(2000)]

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


@pytest.mark.unit
def test_tilt_model_current_is_the_latest_sample_and_does_not_advance() -> None:
    model = TiltModel(random.Random(3), 0.5, fall_rate_per_h=10_000.0)
    assert model.current() == (model.tilt, model.azimuth)
    twin = TiltModel(random.Random(3), 0.5, fall_rate_per_h=10_000.0)
    for _ in range(50):
        sample = model.next()
        assert model.current() == sample == model.current()
        assert twin.next() == sample  # reading current() changed nothing


@pytest.mark.unit
def test_every_fault_kind_is_rejected_by_the_ingest() -> None:
    topic = telemetry.tilt_topic(ZONE, "sim-dev")
    rng = random.Random(0)
    for kind in FAULT_KINDS:
        for _ in range(20):
            payload = faulty_payload_of(kind, rng, "sim-dev", 12)
            assert ingest_accepts(topic, payload) is None, (kind, payload)
    kinds = Counter(faulty_payload(rng, "sim-dev", 3)[0] for _ in range(2000))
    assert set(kinds) == set(FAULT_KINDS)


@pytest.mark.unit
def test_parse_mqtt_url() -> None:
    plain = parse_mqtt_url("mqtt://127.0.0.1:1884")
    assert (plain.host, plain.port, plain.tls, plain.user, plain.password) == (
        "127.0.0.1",
        1884,
        False,
        None,
        None,
    )
    secure = parse_mqtt_url("mqtts://dev%40x:p%3Ass@broker.example.com?insecure=1")
    assert (secure.host, secure.port, secure.tls) == ("broker.example.com", 8883, True)
    assert (secure.user, secure.password, secure.ssl_params) == ("dev@x", "p:ss", {"insecure": True})
    with pytest.raises(ValueError):
        parse_mqtt_url("http://x:1")
    with pytest.raises(ValueError):
        parse_mqtt_url("mqtt://:1883")


@pytest.mark.unit
def test_run_fleet_rejects_bad_arguments_before_starting() -> None:
    with pytest.raises(ValueError, match="zone_id"):
        run_fleet("mqtt://127.0.0.1:1", 1, 1.0, 1.0, "bad zone!")
    with pytest.raises(ValueError, match="device_id"):
        run_fleet("mqtt://127.0.0.1:1", 1, 1.0, 1.0, "z" * 64)  # the device id would exceed 64 characters
    with pytest.raises(ValueError, match="rate_hz"):
        run_fleet("mqtt://127.0.0.1:1", 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="mqtt://"):
        run_fleet("http://127.0.0.1:1", 1, 1.0, 1.0)


@pytest.mark.unit
def test_acked_ranges_compress_sequence_numbers() -> None:
    stats = DeviceStats("d", acked_seqs=[5, 0, 1, 2, 7, 6, 10])
    assert stats.acked_ranges() == [(0, 2), (5, 7), (10, 10)]


# --- integration ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_every_acked_reading_arrives_exactly_once_and_faults_are_rejected(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber]
) -> None:
    sub = subscribe([f"pzone/{ZONE}/+/tilt", f"pzone/{ZONE}/+/status"])
    progress: list[FleetStats] = []
    stats = run_fleet(
        broker.url,
        5,
        25.0,
        1.5,
        ZONE,
        seed=11,
        faulty_ratio=0.15,
        device_prefix="t",
        on_progress=progress.append,
    )
    assert stats.finished and progress and progress[-1] is stats
    assert set(stats.devices) == {f"t-{ZONE}-{i:04d}" for i in range(5)}
    assert not stats.errors and stats.undelivered == 0 and stats.buffer_drops == 0
    assert stats.faulty_injected > 0
    assert sub.wait_for(lambda m: sum(x.topic.endswith("/tilt") for x in m) >= expected_messages(stats), 10)
    assert sub.wait_for(lambda m: sum(x.topic.endswith("/status") for x in m) >= 2 * 5, 5)

    accepted: dict[str, list[int]] = defaultdict(list)
    rejected: Counter[str] = Counter()
    for m in sub.on("/tilt"):
        reading = ingest_accepts(m.topic, m.payload)
        device_id = m.topic.split("/")[2]
        if reading is None:
            rejected[device_id] += 1
        else:
            accepted[device_id].append(reading.seq)
    for device_id, dev in stats.devices.items():
        assert 30 <= dev.readings <= 45  # 25 Hz for 1.5 s
        assert dev.published == dev.readings == len(dev.acked_seqs)
        assert dev.acked_ranges() == [(0, dev.readings - 1)]  # contiguous: faults consume no seq
        assert accepted[device_id] == dev.acked_seqs  # each acked seq exactly once, in order
        assert rejected[device_id] == dev.faulty_injected
        assert dev.reconnects == 0
        statuses = [json.loads(m.payload)["status"] for m in sub.on(f"/{device_id}/status")]
        assert statuses == ["online", "offline"]  # clean shutdown says offline itself


@pytest.mark.integration
def test_fleet_is_reproducible_from_its_seed_and_resumes_sequences_from_its_state(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    def run(seed: int, state_dir: Path | None = None) -> tuple[FleetStats, Tilts]:
        sub = subscribe([f"pzone/{ZONE}/+/tilt"])
        stats = run_fleet(broker.url, 2, 30.0, 0.6, ZONE, seed=seed, state_dir=state_dir, faulty_ratio=0.2)
        assert sub.wait_for(lambda m: len(m) >= expected_messages(stats), 10)
        sub.close()
        return stats, tilts_by_seq(sub)

    first, a = run(7, tmp_path / "state")
    _, b = run(7)
    _, c = run(8)
    common = sorted(set(a) & set(b))
    assert len(common) >= 2 * 12
    assert [a[k] for k in common] == [b[k] for k in common]  # same seed: same readings, noise included
    common_c = sorted(set(a) & set(c))
    assert [a[k] for k in common_c] != [c[k] for k in common_c]

    resumed, _ = run(7, tmp_path / "state")
    for device_id, dev in resumed.devices.items():
        before = first.devices[device_id]
        assert min(dev.acked_seqs) > max(before.acked_seqs)  # the lease survived the "reboot"
        assert dev.acked_ranges() == [(1000, 1000 + dev.readings - 1)]


@pytest.mark.integration
def test_stop_event_ends_the_fleet_early_and_it_still_flushes(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber]
) -> None:
    sub = subscribe([f"pzone/{ZONE}/+/tilt"])
    stop = threading.Event()
    progress: list[FleetStats] = []

    def on_progress(stats: FleetStats) -> None:
        progress.append(stats)
        if stats.published >= 3 * 10:
            stop.set()

    stats = run_fleet(
        broker.url, 3, 20.0, 60.0, ZONE, stop_event=stop, on_progress=on_progress, progress_interval_s=0.2
    )
    assert stats.finished and stats.elapsed_s < 10
    assert stats.undelivered == 0 and stats.published == stats.readings >= 30
    assert sub.wait_for(lambda m: len(m) >= stats.published, 5)
    assert len(progress) >= 2 and not progress[0].finished


@pytest.mark.integration
def test_fleet_hands_out_its_tilt_models_and_takes_tilt_options(broker: MosquittoBroker) -> None:
    seen: dict[str, TiltModel] = {}
    stats = run_fleet(
        broker.url,
        count=3,
        rate_hz=20,
        duration_s=1.5,
        zone_id="zone-p",
        seed=1,
        tilt_options={"fall_rate_per_h": 1e7, "mean_fallen_s": 1e6},  # everyone falls at once and stays down
        on_start=seen.update,
    )
    assert sorted(seen) == sorted(stats.devices) and len(seen) == 3
    for model in seen.values():
        tilt, _azimuth = model.current()
        assert tilt > 60.0 and model.state == "fallen"
