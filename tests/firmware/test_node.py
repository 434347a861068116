"""The board's node logic (pzone_firmware.app.TiltNode) under CPython with a simulated MPU6050.

Integration tests run it against a private, real Mosquitto and check what a paho subscriber receives; unit tests
cover the building blocks (buffer, sequence lease, backoff, config, MPU6050 driver, board HAL with fakes).
"""

from __future__ import annotations

import ast
import importlib
import json
import random
import re
import struct
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pzone import telemetry
from pzone.telemetry import Limits, TiltState, parse_reading
from pzone_firmware import wire
from pzone_firmware.app import TiltNode
from pzone_firmware.config import Config, ConfigError, check_id, load_config
from pzone_firmware.delivery import Backoff, OfflineBuffer, SequenceLease
from pzone_firmware.hal import AlwaysOnline, Hal
from pzone_firmware.hal_cpython import (
    FolderStorage,
    SimulatedBattery,
    SimulatedSensor,
    SystemClock,
    cpython_hal,
)
from pzone_firmware.mpu6050 import MPU6050, AveragingSensor, parse_orientation
from pzone_firmware.wire import STATUS_OFFLINE, STATUS_ONLINE
from tests.support.micropython import BOARD_MODULES, FIRMWARE_SRC
from tests.support.mqtt import Subscriber, to_event
from tests.support.paths import REPO
from tests.support.services import MosquittoBroker

# --- helpers ------------------------------------------------------------------------------------------------


def node_config(
    port: int, device_id: str = "dev-0001", zone_id: str = "zone-t", **overrides: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "device_id": device_id,
        "zone_id": zone_id,
        "wifi": {"ssid": "test", "password": "secret"},
        "mqtt": {"host": "127.0.0.1", "port": port, "user": device_id, "password": "pw", "keepalive_s": 30},
        "interval_s": 0.02,
        "buffer_size": 64,
        "seq_block": 8,
        "backoff": {"base_ms": 20, "cap_ms": 160},
    }
    for key, value in overrides.items():
        if key == "mqtt":
            cfg["mqtt"].update(value)
        else:
            cfg[key] = value
    return cfg


class Tilt:
    """A settable tilt for the simulated sensor (degrees from vertical)."""

    def __init__(self, degrees: float = 3.0) -> None:
        self.degrees = degrees

    def __call__(self, t: float) -> float:
        return self.degrees


def make_node(
    storage_dir: Path,
    port: int,
    tilt: Tilt | None = None,
    *,
    clock: SystemClock | None = None,
    seed: int = 0,
    **overrides: Any,
) -> TiltNode:
    sensor = SimulatedSensor(tilt or Tilt(), rng=random.Random(seed))
    hal = cpython_hal(
        storage_dir,
        sensor,
        clock=clock,
        battery=SimulatedBattery(80.0),
        rand=random.Random(seed).random,
        mqtt_timeout_s=3.0,
    )
    return TiltNode(Config(node_config(port, **overrides)), hal)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def drain(node: TiltNode, timeout: float = 5.0) -> None:
    """Let the node reconnect (honouring its backoff) and flush, without taking new readings."""
    assert wait_until(lambda: node.service() >= 0 and len(node.buffer) == 0 and node.connected, timeout), (
        node.stats()
    )


# --- integration: against a real Mosquitto ---------------------------------------------------------------


@pytest.mark.integration
def test_payloads_follow_the_contract_and_pass_the_ingest_parser(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    sub = subscribe(["pzone/+/+/tilt"])
    tilt = Tilt(3.0)
    node = make_node(tmp_path / "n1", broker.port, tilt)
    expected = [(3.0, TiltState.UPRIGHT), (85.0, TiltState.FALLEN), (35.0, TiltState.TILTED)]
    for degrees, _ in expected:
        tilt.degrees = degrees
        for _ in range(3):
            node.step()
    assert sub.wait_for(lambda m: len(m) >= 9)
    assert node.published == 9 and len(node.buffer) == 0

    messages = sub.on("/tilt")
    assert {m.topic for m in messages} == {telemetry.tilt_topic("zone-t", "dev-0001")}
    states = []
    for m in messages:
        body = json.loads(m.payload)
        assert set(body) == {"v", "device_id", "epoch", "seq", "ts", "ax", "ay", "az", "battery"}
        assert body["v"] == 1 and body["device_id"] == "dev-0001"
        assert (
            isinstance(body["seq"], int) and isinstance(body["battery"], int) and 0 <= body["battery"] <= 100
        )
        assert all(isinstance(body[k], float) for k in ("ts", "ax", "ay", "az"))
        assert abs(body["ts"] - time.time()) < 30
        magnitude = (body["ax"] ** 2 + body["ay"] ** 2 + body["az"] ** 2) ** 0.5
        assert 0.9 < magnitude < 1.1  # ~1 g at rest
        reading = parse_reading(to_event(m.topic, m.payload), Limits())
        assert reading.device_ts is not None
        states.append((reading.seq, reading.state, reading.tilt_deg))
    assert [s[0] for s in states] == list(range(9))
    for i, (degrees, state) in enumerate(expected):
        for _, got_state, got_deg in states[3 * i : 3 * i + 3]:
            assert got_state == state
            assert abs(got_deg - degrees) < 5.0


@pytest.mark.integration
def test_unsynced_clock_omits_ts_and_run_loop_keeps_the_interval(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    sub = subscribe(["pzone/+/+/tilt"])
    node = make_node(tmp_path / "n", broker.port, clock=SystemClock(synced=False), interval_s=0.05)
    started = time.monotonic()
    assert node.run(max_steps=6) == 6
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.5  # 5 intervals between 6 samples
    assert sub.wait_for(lambda m: len(m) >= 6)
    for m in sub.on("/tilt"):
        body = json.loads(m.payload)
        assert "ts" not in body
        reading = parse_reading(to_event(m.topic, m.payload), Limits())
        assert reading.device_ts is None and reading.measured_at == reading.received_at


@pytest.mark.integration
def test_offline_buffering_delivers_everything_once_in_order_after_the_broker_returns(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    # a clean session: the broker cannot redeliver what it saw half-acknowledged before the restart, so any
    # duplicate below would be the node's
    sub = subscribe(["pzone/+/+/tilt"])
    node = make_node(tmp_path / "n", broker.port)
    for _ in range(3):
        node.step()
    assert node.published == 3 and sub.wait_for(lambda m: len(m) >= 3)
    subscribed = sub.subscriptions

    broker.stop()
    for _ in range(10):
        node.step()
    assert not node.connected
    assert len(node.buffer) == 10 and node.published == 3
    assert [seq for seq, _ in node.buffer.items()] == list(range(3, 13))
    assert node.buffer.dropped == 0 and node.connect_failures >= 1

    broker.start()
    assert sub.wait_resubscribed(subscribed), "subscriber did not come back"
    drain(node)
    assert node.published == 13 and node.reconnects == 1
    assert sub.wait_for(lambda m: len(m) >= 13)
    time.sleep(0.2)  # a duplicate would arrive right behind
    assert sub.tilt_seqs() == list(range(13))


@pytest.mark.integration
def test_bounded_buffer_drops_the_oldest_readings(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    broker.stop()
    node = make_node(tmp_path / "n", broker.port, buffer_size=4)
    for _ in range(10):
        node.step()
    assert node.connects == 0 and node.readings == 10
    assert [seq for seq, _ in node.buffer.items()] == [6, 7, 8, 9]
    assert node.buffer.dropped == 6 and node.buffer_drops == 6

    broker.start()
    sub = subscribe(["pzone/+/+/tilt"])
    drain(node)
    assert sub.wait_for(lambda m: len(m) >= 4)
    time.sleep(0.1)
    assert sub.tilt_seqs() == [6, 7, 8, 9]


@pytest.mark.integration
def test_sequence_numbers_continue_above_the_last_after_a_reboot(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    sub = subscribe(["pzone/+/+/tilt"])
    flash = tmp_path / "flash"
    first = make_node(flash, broker.port, seq_block=8)
    for _ in range(5):
        first.step()
    assert first.lease.writes == 2  # the new storage's epoch, then one bound for the whole block 0..7
    assert first.client is not None
    first.client.abort()  # power cut: no shutdown, nothing else written

    second = make_node(flash, broker.port, seq_block=8)
    for _ in range(10):  # crosses into the next block: 8..15, then 16..23
        second.step()
    assert second.lease.writes == 2
    assert second.client is not None
    second.client.abort()

    third = make_node(flash, broker.port, seq_block=8)
    third.step()
    third.shutdown()

    expected = [*range(5), *range(8, 18), 24]
    assert sub.wait_for(lambda m: len(m) >= len(expected))
    time.sleep(0.1)
    seqs = sub.tilt_seqs()
    assert seqs == expected
    assert len(set(seqs)) == len(seqs)


@pytest.mark.integration
def test_backoff_grows_on_repeated_failures_and_resets_after_connecting(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    broker.stop()
    node = make_node(tmp_path / "n", broker.port, backoff={"base_ms": 40, "cap_ms": 320})
    node.sample()
    ceilings, delays, gaps = [], [], []
    last_attempt = None
    for _ in range(6):
        assert wait_until(node.connect_due, timeout=2.0)
        now = time.monotonic()
        if last_attempt is not None:
            gaps.append((now - last_attempt) * 1000)
        last_attempt = now
        attempts = node.connect_attempts
        node.service()
        assert node.connect_attempts == attempts + 1 and not node.connected
        ceilings.append(node.backoff.last_ceiling_ms)
        delays.append(node.backoff.last_delay_ms)
        node.service()  # not due yet: no attempt in between
        assert node.connect_attempts == attempts + 1
    assert ceilings == [40, 80, 160, 320, 320, 320]
    for ceiling, delay in zip(ceilings, delays, strict=True):
        assert ceiling // 2 <= delay <= ceiling  # equal jitter
    for gap, delay in zip(gaps, delays, strict=False):
        assert gap >= delay - 2  # the node waited at least the delay it announced
    assert node.connect_failures == 6

    broker.start()
    drain(node)
    assert node.backoff.failures == 0 and node.connects == 1


@pytest.mark.integration
def test_last_will_marks_a_crashed_device_offline_and_reconnect_marks_it_online(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    status = telemetry.status_topic("zone-t", "dev-0001")
    live = subscribe([status])
    node = make_node(tmp_path / "n", broker.port)
    node.step()
    assert live.wait_for(lambda m: len(m) >= 1)
    assert live.on("/status")[0].payload == STATUS_ONLINE == b'{"v":1,"status":"online"}'
    late = subscribe([status])  # a newcomer sees the retained state
    assert late.wait_for(lambda m: len(m) >= 1)
    assert late.messages[0].retain and late.messages[0].payload == STATUS_ONLINE

    assert node.client is not None
    node.client.abort()  # the device dies: TCP closes without DISCONNECT
    assert live.wait_for(lambda m: len(m) >= 2)
    assert live.messages[1].payload == STATUS_OFFLINE == b'{"v":1,"status":"offline"}'
    assert json.loads(STATUS_OFFLINE) == {"v": 1, "status": "offline"}
    retained = subscribe([status])
    assert retained.wait_for(lambda m: len(m) >= 1)
    assert retained.messages[0].retain and retained.messages[0].payload == STATUS_OFFLINE

    node.step()  # the publish fails and the connection is given up
    node.step()  # reconnects
    assert node.connected and node.reconnects == 1
    assert live.wait_for(lambda m: len(m) >= 3)
    assert live.messages[2].payload == STATUS_ONLINE
    again = subscribe([status])
    assert again.wait_for(lambda m: len(m) >= 1) and again.messages[0].payload == STATUS_ONLINE

    assert node.shutdown() is True  # a clean stop says offline itself (the will is suppressed)
    assert live.wait_for(lambda m: len(m) >= 4)
    assert live.messages[3].payload == STATUS_OFFLINE
    assert not node.connected


@pytest.mark.integration
@pytest.mark.slow
def test_last_will_fires_when_a_silent_device_misses_its_keepalive(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """Power loss: no FIN, no packets; the broker notices after 1.5 x keepalive."""
    live = subscribe([telemetry.status_topic("zone-t", "dev-0001")])
    node = make_node(tmp_path / "n", broker.port, mqtt={"keepalive_s": 1})
    node.step()
    assert live.wait_for(lambda m: len(m) >= 1)
    frozen_at = time.monotonic()
    # nothing is called: the node is "frozen"; Mosquitto sweeps keepalives only every few seconds
    assert live.wait_for(lambda m: len(m) >= 2, timeout=10.0)
    assert time.monotonic() - frozen_at >= 1.0
    assert live.messages[1].payload == STATUS_OFFLINE
    if node.client is not None:
        node.client.abort()


@pytest.mark.integration
def test_a_failed_sensor_read_consumes_no_sequence_number(
    broker: MosquittoBroker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    sub = subscribe(["pzone/+/+/tilt"])
    node = make_node(tmp_path / "n", broker.port)
    sensor = node.hal.sensor
    assert isinstance(sensor, SimulatedSensor)
    node.step()
    sensor.fail_next = 2
    node.step()
    node.step()
    node.step()
    assert node.sensor_errors == 2 and node.readings == 2
    assert sub.wait_for(lambda m: len(m) >= 2)
    assert sub.tilt_seqs() == [0, 1]


# --- unit: building blocks ----------------------------------------------------------------------------------


@pytest.mark.unit
def test_offline_buffer_is_a_bounded_fifo_dropping_the_oldest() -> None:
    buf = OfflineBuffer(3)
    assert [buf.append(i) for i in range(5)] == [False, False, False, True, True]
    assert buf.items() == [2, 3, 4] and buf.dropped == 2 and len(buf) == 3
    assert buf.pop() == 2 and buf.peek() == 3
    buf.append(5)
    assert buf.items() == [3, 4, 5]
    while len(buf):
        buf.pop()
    with pytest.raises(IndexError):
        buf.peek()


class MemoryStorage:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.writes = 0
        self.fail = False

    def read(self, name: str) -> bytes | None:
        return self.files.get(name)

    def write(self, name: str, data: bytes) -> None:
        if self.fail:
            raise OSError(28, "no space left")
        self.writes += 1
        self.files[name] = data


@pytest.mark.unit
def test_sequence_lease_writes_once_per_block_and_never_repeats_after_reboots() -> None:
    storage = MemoryStorage()
    lease = SequenceLease(storage, block=100)
    assert [lease.next() for _ in range(250)] == list(range(250))
    assert storage.writes == 4  # the epoch, then bounds 100, 200, 300
    issued = 250
    for _ in range(5):  # reboots at arbitrary points
        lease = SequenceLease(storage, block=100)
        first = lease.next()
        assert first >= issued
        for _ in range(37):
            lease.next()
        issued = lease.next_seq
    assert storage.writes == 4 + 5


@pytest.mark.unit
def test_sequence_lease_survives_a_torn_write() -> None:
    storage = MemoryStorage()
    lease = SequenceLease(storage, block=10)
    for _ in range(25):  # bounds 10 (seq.a), 20 (seq.b), 30 (seq.a)
        lease.next()
    epoch = storage.files.pop("epoch")
    assert storage.files == {"seq.a": b"30 30\n", "seq.b": b"20 20\n"}
    storage.files["epoch"] = epoch
    # power cut while writing bound 40 to seq.b: a truncated number, or garbage
    for torn in (b"40 4", b"", b"\xff\xff\x00", b"4"):
        storage.files["seq.b"] = torn
        assert SequenceLease(storage, block=10).next() == 30  # still above 24, the last issued
    storage.files["seq.a"] = b"garbage"
    storage.files["seq.b"] = b"20 20\n"
    assert SequenceLease(storage, block=10).next() == 20


@pytest.mark.unit
def test_an_epoch_is_drawn_only_when_no_bound_is_stored() -> None:
    storage = MemoryStorage()
    lease = SequenceLease(storage, block=10, rand=lambda: 0.5)
    assert lease.epoch == 1 + int(0.5 * (SequenceLease.EPOCH_MAX - 1))
    assert storage.files == {"epoch": b"%d %d\n" % (lease.epoch, lease.epoch)}  # stored before any number
    assert [lease.next() for _ in range(3)] == [0, 1, 2]
    rebooted = SequenceLease(storage, block=10, rand=lambda: 0.9)
    assert (rebooted.epoch, rebooted.next()) == (lease.epoch, 10)  # a reboot keeps the epoch

    # A reflash wipes the bound (an epoch file left behind by a partial wipe does not matter): counting restarts
    # at 0 under a new epoch, so the server keeps these numbers apart from the old ones.
    del storage.files["seq.a"], storage.files["seq.b"]
    reflashed = SequenceLease(storage, block=10, rand=lambda: 0.25)
    assert reflashed.epoch not in (0, lease.epoch) and reflashed.next() == 0
    # Storage written by firmware without epochs: epoch 0, which is what the server reads an absent field as.
    legacy = MemoryStorage()
    legacy.files["seq.a"] = b"500 500\n"
    assert (SequenceLease(legacy, block=10).epoch, SequenceLease(legacy, block=10).next()) == (0, 500)
    # Epochs drawn from the board's RNG: never 0, within a small int.
    drawn = {SequenceLease(MemoryStorage()).epoch for _ in range(50)}
    assert len(drawn) == 50 and all(0 < e <= SequenceLease.EPOCH_MAX for e in drawn)


@pytest.mark.unit
def test_sequence_lease_hands_out_nothing_when_the_bound_cannot_be_stored() -> None:
    storage = MemoryStorage()
    lease = SequenceLease(storage, block=2)
    assert [lease.next(), lease.next()] == [0, 1]
    storage.fail = True
    with pytest.raises(OSError):
        lease.next()
    storage.fail = False
    assert lease.next() == 2


@pytest.mark.unit
def test_backoff_doubles_to_the_cap_with_equal_jitter() -> None:
    low = Backoff(100, 1000, lambda: 0.0)
    assert [low.failure() for _ in range(6)] == [50, 100, 200, 400, 500, 500]
    high = Backoff(100, 1000, lambda: 0.999999)
    assert [high.failure() for _ in range(6)] == [99, 199, 399, 799, 999, 999]
    high.reset()
    assert high.failure() == 99
    rng = random.Random(3)
    mixed = Backoff(100, 1000, rng.random)
    delays = [mixed.failure() for _ in range(40)]
    assert len(set(delays[5:])) > 10  # jittered, not lockstep


@pytest.mark.unit
def test_config_errors_name_the_missing_or_wrong_field(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path)
    with pytest.raises(ConfigError, match=r"config\.json not found"):
        load_config(storage)
    storage.write("config.json", b"{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(storage)

    good = node_config(1883)
    storage.write("config.json", json.dumps(good).encode())
    cfg = load_config(storage)
    assert (cfg.device_id, cfg.mqtt_port, cfg.mqtt_tls, cfg.keepalive_s) == ("dev-0001", 1883, False, 30)

    for path in ("device_id", "zone_id", "wifi.ssid", "mqtt.host", "mqtt.port", "mqtt.user", "mqtt.password"):
        broken = json.loads(json.dumps(good))
        node = broken
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        del node[leaf]
        storage.write("config.json", json.dumps(broken).encode())
        with pytest.raises(ConfigError, match=re.escape(f"config.json: missing field '{path}'")):
            load_config(storage)
    no_mqtt = {k: v for k, v in good.items() if k != "mqtt"}
    with pytest.raises(ConfigError, match=r"missing field 'mqtt\.host'"):
        Config(no_mqtt)
    with pytest.raises(ConfigError, match=r"'mqtt\.port' must be an integer port"):
        Config(node_config("1883"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'device_id' must be 1-64"):
        Config(node_config(1883, device_id="bad/id"))
    with pytest.raises(ConfigError, match="'interval_s' must be a positive number"):
        Config(node_config(1883, interval_s=0))
    example = json.loads((FIRMWARE_SRC.parents[1] / "device" / "config.example.json").read_text())
    assert Config(example).mqtt_tls is True


@pytest.mark.unit
def test_id_rule_matches_the_contract() -> None:
    samples = [
        "a",
        "dev-0001",
        "Zone_1.b",
        "-x",
        "_x",
        ".x",
        "",
        "a" * 64,
        "a" * 65,
        "a/b",
        "a b",
        "ü",
        "a+b",
        "9",
        "dev-1\n",
    ]
    for value in samples:
        try:
            check_id("t", "id", value)
            ours = True
        except ConfigError:
            ours = False
        assert ours == bool(telemetry.ID_PATTERN.fullmatch(value)), value


@pytest.mark.unit
def test_build_payload_is_compact_contract_json() -> None:
    raw = wire.build_payload("d-1", 7, 1764070000.123456, 0.012345, -0.5, 0.86, 55)
    body = json.loads(raw)
    assert body == {"v": 1, "device_id": "d-1", "seq": 7, "ts": 1764070000.123, "ax": 0.0123, "ay": -0.5,
                    "az": 0.86, "battery": 55}  # fmt: skip
    assert b" " not in raw
    assert "ts" not in json.loads(wire.build_payload("d-1", 8, None, 0.0, 0.0, 1.0))
    assert json.loads(wire.build_payload("d-1", 9, 1764070000, 0.0, 0.0, 1.0))["ts"] == 1764070000
    assert wire.tilt_topic("z", "d") == telemetry.tilt_topic("z", "d")
    assert wire.status_topic("z", "d") == telemetry.status_topic("z", "d")


class FakeClient:
    """An in-memory umqtt-like client: records publishes; ``fail_on`` makes a given payload's publish fail."""

    log: list[tuple[str, Any]]

    def __init__(self, log: list[tuple[str, Any]], fail_on: Callable[[bytes], bool]) -> None:
        self.log = log
        self.fail_on = fail_on

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self.log.append(("will", (topic, msg, retain, qos)))

    def connect(self, clean_session: bool = True) -> bool:
        self.log.append(("connect", clean_session))
        return False

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        if self.fail_on(msg):
            raise OSError(104, "connection reset")
        self.log.append(("publish", (topic, msg, retain, qos)))

    def ping(self) -> None:
        self.log.append(("ping", None))

    def disconnect(self) -> None:
        self.log.append(("disconnect", None))

    def abort(self) -> None:
        self.log.append(("abort", None))


@pytest.mark.unit
def test_a_reading_leaves_the_buffer_only_after_its_puback(tmp_path: Path) -> None:
    log: list[tuple[str, Any]] = []
    failing = {"seq": 2, "times": 1}

    def fail_on(msg: bytes) -> bool:
        if msg.startswith(b"{") and json.loads(msg).get("seq") == failing["seq"] and failing["times"] > 0:
            failing["times"] -= 1
            return True
        return False

    hal = Hal(
        sensor=SimulatedSensor(Tilt(2.0), rng=random.Random(1)),
        clock=SystemClock(),
        storage=FolderStorage(tmp_path),
        mqtt_factory=lambda *args: FakeClient(log, fail_on),
        rand=lambda: 0.0,
    )
    node = TiltNode(Config(node_config(1883, backoff={"base_ms": 1, "cap_ms": 2})), hal)
    for _ in range(3):
        node.step()
    assert node.published == 2 and [s for s, _ in node.buffer.items()] == [2]
    assert ("abort", None) in log and not node.connected  # dropped without DISCONNECT: the will stays armed
    node.step()
    assert node.published == 4 and len(node.buffer) == 0
    seqs = [json.loads(a[1])["seq"] for k, a in log if k == "publish" and a[0].endswith("/tilt")]
    assert seqs == [0, 1, 2, 3]
    will = next(a for k, a in log if k == "will")
    assert will == ("pzone/zone-t/dev-0001/status", STATUS_OFFLINE, True, 1)
    onlines = [a for k, a in log if k == "publish" and a[1] == STATUS_ONLINE]
    assert onlines == [("pzone/zone-t/dev-0001/status", STATUS_ONLINE, True, 1)] * 2


@pytest.mark.unit
def test_no_network_means_no_mqtt_attempt_and_a_growing_backoff(tmp_path: Path) -> None:
    made: list[FakeClient] = []

    def factory(*args: Any) -> FakeClient:
        made.append(FakeClient([], lambda msg: False))
        return made[-1]

    network = AlwaysOnline()
    network.online = False  # Wi-Fi lost
    hal = Hal(
        sensor=SimulatedSensor(Tilt(2.0), rng=random.Random(1)),
        clock=SystemClock(),
        storage=FolderStorage(tmp_path),
        mqtt_factory=factory,
        network=network,
        rand=lambda: 0.0,
    )
    node = TiltNode(Config(node_config(1883, backoff={"base_ms": 1, "cap_ms": 8})), hal)
    for _ in range(4):
        assert wait_until(node.connect_due, 1.0)
        node.step()
    assert node.connect_failures == 4 and not made and len(node.buffer) == 4
    assert node.backoff.last_ceiling_ms == 8
    network.online = True
    assert wait_until(node.connect_due, 1.0)
    node.step()
    assert node.connected and node.published == 5 and len(made) == 1


class ManualClock(SystemClock):
    """Simulated time: sleeping advances it, and ``on_sleep`` lets a test change the world meanwhile."""

    def __init__(self, on_sleep: Callable[[int], None]) -> None:
        super().__init__()
        self.now_ms = 0
        self.on_sleep = on_sleep

    def ticks_ms(self) -> int:
        return self.now_ms

    def sleep_ms(self, ms: int) -> None:
        self.now_ms += max(0, ms)
        self.on_sleep(self.now_ms)


@pytest.mark.unit
def test_run_loop_reconnects_between_sparse_samples(tmp_path: Path) -> None:
    network = AlwaysOnline()
    network.online = False

    def world(now_ms: int) -> None:
        network.online = now_ms >= 5000  # Wi-Fi comes back after 5 s

    clock = ManualClock(world)
    hal = Hal(
        sensor=SimulatedSensor(Tilt(2.0), rng=random.Random(1)),
        clock=clock,
        storage=FolderStorage(tmp_path),
        mqtt_factory=lambda *args: FakeClient([], lambda msg: False),
        network=network,
        rand=lambda: 0.0,
    )
    node = TiltNode(Config(node_config(1883, interval_s=60, backoff={"base_ms": 1000, "cap_ms": 60000})), hal)
    node.run(until=lambda: node.published > 0 or clock.now_ms > 120_000)
    assert node.published == 1 and node.readings == 1  # delivered before the second sample was due
    assert 5000 <= clock.now_ms < 10_000  # retries at 0.5, 1.5, 3.5, 7.5 s: backoff with jitter, not 60 s
    assert node.connect_failures == 4


class FakeMPUBus:
    """Registers of an MPU6050 behind a machine.I2C-like interface."""

    def __init__(self, raw: tuple[int, int, int], who: int = 0x68) -> None:
        self.raw = raw
        self.who = who
        self.writes: list[tuple[int, int, bytes]] = []
        self.fail = False

    def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
        if self.fail:
            raise OSError(19, "ENODEV")
        if reg == 0x75:
            return bytes([self.who])
        assert (reg, n) == (0x3B, 6)
        return struct.pack(">hhh", *self.raw)

    def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
        self.writes.append((addr, reg, bytes(buf)))


@pytest.mark.unit
def test_mpu6050_driver_scales_and_reorients() -> None:
    bus = FakeMPUBus((0, 8192, 16384))
    dev = MPU6050(bus, range_g=2)
    assert dev.acceleration() == (0.0, 0.5, 1.0)
    assert (0x68, 0x6B, b"\x01") in bus.writes  # woken up
    assert (0x68, 0x1C, b"\x00") in bus.writes  # ±2 g
    assert MPU6050(FakeMPUBus((0, 0, 4096)), range_g=8).acceleration() == (0.0, 0.0, 1.0)
    sensor = AveragingSensor(dev, samples=4, orientation="+x-z+y")
    assert sensor.read() == (0.0, -1.0, 0.5)
    with pytest.raises(ValueError):
        parse_orientation("+x+x+z")
    bus.fail = True
    with pytest.raises(OSError):
        dev.acceleration()
    assert not dev.ready  # re-initialised on the next read
    with pytest.raises(OSError, match="no MPU6050"):
        MPU6050(FakeMPUBus((0, 0, 0), who=0x00)).init()


@pytest.mark.unit
def test_the_board_gets_every_module_it_imports() -> None:
    """What the board imports of the package is copied to it: by the README's flashing steps, compiled by mpy-cross."""
    imported = set()
    for name in BOARD_MODULES:
        for node in ast.walk(ast.parse((FIRMWARE_SRC / name).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pzone_firmware."):
                imported.add(node.module.split(".")[1] + ".py")
    for main in ("boot.py", "main.py"):
        for node in ast.walk(ast.parse((REPO / "firmware" / "device" / main).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pzone_firmware."):
                imported.add(node.module.split(".")[1] + ".py")
    assert imported <= set(BOARD_MODULES), imported - set(BOARD_MODULES)
    readme = (REPO / "firmware" / "README.md").read_text()
    flashing = re.search(r"cp (src/pzone_firmware/__init__\.py.*?):lib/pzone_firmware/", readme, re.S)
    assert flashing is not None
    copied = set(re.findall(r"src/pzone_firmware/(\w+\.py)", flashing.group(1)))
    for part in readme.split("\n"):
        if part.startswith("for m in "):
            compiled = {f"{m}.py" for m in part.split(" in ", 1)[1].split(";")[0].split()}
    assert copied == set(BOARD_MODULES)
    assert compiled == set(BOARD_MODULES) - {"__init__.py"}


@pytest.mark.unit
def test_board_modules_stay_micropython_compatible() -> None:
    """No f-strings, no variable annotations, no CPython-only imports in what is copied to the board."""
    banned = {"typing", "dataclasses", "collections", "enum", "abc", "pathlib", "__future__", "threading"}
    for name in BOARD_MODULES:
        tree = ast.parse((FIRMWARE_SRC / name).read_text())
        for node in ast.walk(tree):
            assert not isinstance(node, ast.JoinedStr), f"{name}:{node.lineno}: f-string"
            assert not isinstance(node, ast.AnnAssign), f"{name}:{node.lineno}: variable annotation"
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned, f"{name}:{node.lineno}"
            if isinstance(node, ast.ImportFrom) and node.module and not _inside_mypy_guard(tree, node):
                assert node.module.split(".")[0] not in banned, f"{name}:{node.lineno}"


def _inside_mypy_guard(tree: ast.Module, target: ast.AST) -> bool:
    for node in ast.walk(tree):
        is_guard = isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "MYPY"
        if is_guard and any(target is child for child in ast.walk(node)):
            return True
    return False


# --- the board HAL, with fake MicroPython modules -------------------------------------------------------------


class FakeUMQTT:
    """umqtt.simple's classic constructor (with ssl_params) and connect(clean_session) only."""

    instances: ClassVar[list[FakeUMQTT]] = []

    def __init__(
        self,
        client_id: str,
        server: str,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 0,
        ssl: bool = False,
        ssl_params: dict[str, Any] | None = None,
    ) -> None:
        self.args = (client_id, server, port, user, password, keepalive, ssl, ssl_params)
        self.calls: list[tuple[str, Any]] = []
        self.sock = types.SimpleNamespace(
            settimeout=lambda t: self.calls.append(("settimeout", t)), close=lambda: None
        )
        FakeUMQTT.instances.append(self)

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self.calls.append(("will", (topic, msg, retain, qos)))

    def connect(self, clean_session: bool = True) -> bool:
        self.calls.append(("connect", clean_session))
        return False

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self.calls.append(("publish", (topic, msg, retain, qos)))


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    bus = FakeMPUBus((0, 0, 16384))
    machine = types.ModuleType("machine")
    machine.Pin = lambda *a, **k: types.SimpleNamespace(value=lambda: 1)  # type: ignore[attr-defined]
    machine.SoftI2C = lambda **k: bus  # type: ignore[attr-defined]
    machine.I2C = machine.SoftI2C  # type: ignore[attr-defined]
    machine.ADC = lambda n: types.SimpleNamespace(read=lambda: 952)  # type: ignore[attr-defined]
    network = types.ModuleType("network")
    network.STA_IF, network.AP_IF = 0, 1  # type: ignore[attr-defined]
    wlan = types.SimpleNamespace(up=False)
    network.WLAN = lambda iface: types.SimpleNamespace(  # type: ignore[attr-defined]
        active=lambda on=None: True,
        isconnected=lambda: wlan.up,
        connect=lambda ssid, pw: setattr(wlan, "up", True),
    )
    umqtt = types.ModuleType("umqtt")
    simple = types.ModuleType("umqtt.simple")
    simple.MQTTClient = FakeUMQTT  # type: ignore[attr-defined]
    ntptime = types.ModuleType("ntptime")
    ntptime.settime = lambda: None  # type: ignore[attr-defined]
    for name, module in {
        "machine": machine,
        "network": network,
        "umqtt": umqtt,
        "umqtt.simple": simple,
        "ntptime": ntptime,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(time, "ticks_ms", lambda: int(time.monotonic() * 1000), raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: a - b, raising=False)
    monkeypatch.setattr(time, "ticks_add", lambda a, b: a + b, raising=False)
    monkeypatch.setattr(time, "sleep_ms", lambda ms: time.sleep(ms / 1000), raising=False)
    monkeypatch.delitem(sys.modules, "pzone_firmware.hal_micropython", raising=False)
    FakeUMQTT.instances.clear()
    yield importlib.import_module("pzone_firmware.hal_micropython")
    sys.modules.pop("pzone_firmware.hal_micropython", None)


@pytest.mark.unit
def test_board_hal_drives_the_node_through_umqtt(board: types.ModuleType, tmp_path: Path) -> None:
    (tmp_path / "ca.der").write_bytes(b"\x30\x82fake")
    cfg = node_config(8883, battery={"full_scale_mv": 4300, "empty_mv": 3300, "full_mv": 4150})
    cfg["mqtt"].update(
        tls=True, ssl_params={"server_hostname": "mqtt.example.com", "ca_file": str(tmp_path / "ca.der")}
    )
    config = Config(cfg)
    storage = board.FlashStorage(str(tmp_path))
    hal = board.board_hal(config, storage)
    node = TiltNode(config, hal)
    node.step()
    assert node.published == 1 and node.connected
    (client,) = FakeUMQTT.instances
    assert client.args[:7] == ("dev-0001", "127.0.0.1", 8883, "dev-0001", "pw", 30, True)
    assert client.args[7] == {"server_hostname": "mqtt.example.com", "cadata": b"\x30\x82fake"}
    kinds = [k for k, _ in client.calls]
    assert kinds[:2] == ["will", "connect"] and "settimeout" in kinds
    publishes = [a for k, a in client.calls if k == "publish"]
    assert publishes[0] == ("pzone/zone-t/dev-0001/status", STATUS_ONLINE, True, 1)
    topic, msg, retain, qos = publishes[1]
    body = json.loads(msg)
    assert (topic, retain, qos) == ("pzone/zone-t/dev-0001/tilt", False, 1)
    assert (body["ax"], body["ay"], body["az"]) == (0.0, 0.0, 1.0)
    assert isinstance(body["ts"], int) and abs(body["ts"] - time.time()) < 5
    assert body["battery"] == 82  # 952 counts of a 4300 mV full scale = 3997 mV; (3997-3300)/850
    assert parse_reading(to_event(topic, msg), Limits()).state == TiltState.UPRIGHT
    assert storage.read("seq.a") == b"8 8\n"
