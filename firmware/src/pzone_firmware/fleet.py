"""Simulated fleet (CPython only): many virtual tilt nodes, each running the board's TiltNode logic with the
CPython HAL and its own MQTT connection (client id = device id), one thread per device.

Usage::

    stats = run_fleet("mqtt://127.0.0.1:1883", count=50, rate_hz=5, duration_s=60, seed=7, faulty_ratio=0.01)
    for dev in stats.devices.values():
        print(dev.device_id, dev.acked_ranges(), dev.buffer_drops)
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pzone_firmware.app import TiltNode
from pzone_firmware.config import Config, ConfigError, check_id
from pzone_firmware.hal_cpython import SimulatedBattery, SimulatedSensor, SystemClock, cpython_hal
from pzone_firmware.tiltmodel import TiltModel

log = logging.getLogger(__name__)

FAULT_KINDS = (
    "not_json",
    "not_utf8",
    "not_object",
    "seq_string",
    "seq_fraction",
    "seq_negative",
    "axis_string",
    "axis_bool",
    "nan",
    "infinity",
    "missing_field",
    "unknown_version",
    "zero_vector",
    "out_of_range",
    "battery_range",
    "ts_millis",
)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    user: str | None = None
    password: str | None = None
    ssl_params: dict[str, Any] = field(default_factory=dict)


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://host:port`` or ``mqtts://user:pass@host:port``; for mqtts, ``?ca_certs=PATH`` or ``?insecure=1``."""
    parts = urlsplit(url)
    if parts.scheme in ("mqtt", "tcp"):
        tls, default_port = False, 1883
    elif parts.scheme in ("mqtts", "ssl"):
        tls, default_port = True, 8883
    else:
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    ssl_params: dict[str, Any] = {}
    if "ca_certs" in query:
        ssl_params["ca_certs"] = query["ca_certs"]
    if query.get("insecure") in ("1", "true", "yes"):
        ssl_params["insecure"] = True
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or default_port,
        tls=tls,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl_params=ssl_params,
    )


def faulty_payload(
    rng: random.Random, device_id: str, seq: int, ts: float | None = None
) -> tuple[str, bytes]:
    """One off-contract payload (kind, bytes) of a randomly chosen kind. Each kind is rejected by the ingest:
    either strict JSON parsing or ``pzone.telemetry.parse_reading`` refuses it."""
    kind = rng.choice(FAULT_KINDS)
    return kind, faulty_payload_of(kind, rng, device_id, seq, ts)


def faulty_payload_of(
    kind: str, rng: random.Random, device_id: str, seq: int, ts: float | None = None
) -> bytes:
    good: dict[str, Any] = {
        "v": 1,
        "device_id": device_id,
        "seq": max(seq, 0),
        "ts": round(ts if ts is not None else time.time(), 3),
        "ax": round(rng.uniform(-0.05, 0.05), 4),
        "ay": round(rng.uniform(-0.05, 0.05), 4),
        "az": round(rng.uniform(0.97, 1.01), 4),
        "battery": rng.randint(20, 100),
    }
    if kind == "not_json":
        return json.dumps(good).encode()[: rng.randint(5, 40)]  # truncated, as by a reset mid-write
    if kind == "not_utf8":
        return b"\xff\xfe" + bytes(rng.randrange(256) for _ in range(14))
    if kind == "not_object":
        return json.dumps([good["ax"], good["ay"], good["az"]]).encode()
    bad = dict(good)
    if kind == "seq_string":
        bad["seq"] = str(good["seq"])
    elif kind == "seq_fraction":
        bad["seq"] = good["seq"] + 0.5
    elif kind == "seq_negative":
        bad["seq"] = -1 - rng.randint(0, 1000)
    elif kind == "axis_string":
        axis = rng.choice(("ax", "ay", "az"))
        bad[axis] = str(good[axis])
    elif kind == "axis_bool":
        bad[rng.choice(("ax", "ay", "az"))] = True
    elif kind == "nan":
        bad[rng.choice(("ax", "ay", "az"))] = math.nan
    elif kind == "infinity":
        bad[rng.choice(("ax", "ay", "az"))] = math.inf
    elif kind == "missing_field":
        del bad[rng.choice(("v", "seq", "ax", "ay", "az"))]
    elif kind == "unknown_version":
        bad["v"] = rng.choice((0, 2, "1", 1.5))
    elif kind == "zero_vector":
        bad["ax"] = bad["ay"] = bad["az"] = 0.0
    elif kind == "out_of_range":
        bad[rng.choice(("ax", "ay", "az"))] = rng.choice((-1, 1)) * rng.uniform(17.0, 100.0)
    elif kind == "battery_range":
        bad["battery"] = rng.choice((-5, 101, 150, 255))
    elif kind == "ts_millis":
        bad["ts"] = round(good["ts"] * 1000.0)  # milliseconds where seconds are expected
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    return json.dumps(bad).encode()  # allow_nan: Python writes NaN/Infinity, which JSON forbids


@dataclass
class DeviceStats:
    device_id: str
    acked_seqs: list[int] = field(default_factory=list)  # in the order the broker acknowledged them
    readings: int = 0  # readings taken (sequence numbers issued)
    published: int = 0  # readings acknowledged by the broker (PUBACK)
    faulty_injected: int = 0  # faulty payloads acknowledged by the broker
    buffer_drops: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    undelivered: int = 0  # still in the offline buffer at the end (the broker never got them)
    clock_synced: bool = True
    error: str | None = None

    def acked_ranges(self) -> list[tuple[int, int]]:
        """The acknowledged sequence numbers as sorted, inclusive (first, last) runs."""
        ranges: list[tuple[int, int]] = []
        for seq in sorted(set(self.acked_seqs)):
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        return ranges


@dataclass
class FleetStats:
    zone_id: str
    devices: dict[str, DeviceStats]
    elapsed_s: float = 0.0
    finished: bool = False

    @property
    def readings(self) -> int:
        return sum(d.readings for d in self.devices.values())

    @property
    def published(self) -> int:
        return sum(d.published for d in self.devices.values())

    @property
    def faulty_injected(self) -> int:
        return sum(d.faulty_injected for d in self.devices.values())

    @property
    def buffer_drops(self) -> int:
        return sum(d.buffer_drops for d in self.devices.values())

    @property
    def reconnects(self) -> int:
        return sum(d.reconnects for d in self.devices.values())

    @property
    def undelivered(self) -> int:
        return sum(d.undelivered for d in self.devices.values())

    @property
    def errors(self) -> dict[str, str]:
        return {k: d.error for k, d in self.devices.items() if d.error}


class _SimDevice:
    """One virtual node: TiltNode + CPython HAL + seeded tilt model, driven by its own thread."""

    def __init__(
        self,
        device_id: str,
        zone_id: str,
        broker: BrokerAddress,
        *,
        seed: int,
        rate_hz: float,
        faulty_ratio: float,
        storage_dir: Path,
        stop: threading.Event,
        buffer_size: int,
        on_done: Callable[[], None],
        tilt_options: dict[str, float] | None = None,
    ) -> None:
        self.device_id = device_id
        self.on_done = on_done
        self.faulty_ratio = faulty_ratio
        self.stop = stop
        self.interval_s = 1.0 / rate_hz
        # independent streams, so e.g. fault injection never shifts the tilt sequence
        setup = random.Random(f"{seed}:{device_id}:setup")
        self.fault_rng = random.Random(f"{seed}:{device_id}:fault")
        self.phase_s = setup.uniform(0.0, self.interval_s)  # spread the fleet's publishes over the interval
        synced = setup.random() >= 0.1  # one node in ten never got NTP: its readings carry no ts
        self.model = TiltModel(
            random.Random(f"{seed}:{device_id}:tilt"), self.interval_s, **(tilt_options or {})
        )
        sensor = SimulatedSensor(self.model.angle, rng=random.Random(f"{seed}:{device_id}:noise"))
        clock = SystemClock(skew_s=setup.gauss(0.0, 0.5), synced=synced, stop_event=stop)
        battery = SimulatedBattery(start=setup.uniform(30.0, 100.0), drain_per_reading=0.0005)
        hal = cpython_hal(
            storage_dir,
            sensor,
            clock=clock,
            battery=battery,
            rand=random.Random(f"{seed}:{device_id}:jitter").random,
        )
        config = Config(
            {
                "device_id": device_id,
                "zone_id": zone_id,
                "wifi": {"ssid": "simulated", "password": None},
                "mqtt": {
                    "host": broker.host,
                    "port": broker.port,
                    "tls": broker.tls,
                    "user": broker.user,
                    "password": broker.password,
                    "keepalive_s": 30,
                    "ssl_params": broker.ssl_params,
                },
                "interval_s": self.interval_s,
                "buffer_size": buffer_size,
                "seq_block": 1000,
                "backoff": {"base_ms": 500, "cap_ms": 15000},
            },
            source="fleet:" + device_id,
        )
        self.lock = threading.Lock()
        self.stats = DeviceStats(device_id, clock_synced=synced)
        self.node = TiltNode(config, hal, on_ack=self._acked, log=log.debug)
        self.thread: threading.Thread | None = None

    def _acked(self, seq: int) -> None:
        with self.lock:
            self.stats.acked_seqs.append(seq)

    def _inject_fault(self, node: TiltNode) -> None:
        if self.faulty_ratio <= 0 or self.fault_rng.random() >= self.faulty_ratio:
            return
        _, payload = faulty_payload(self.fault_rng, self.device_id, node.last_seq)
        # straight to the topic, outside the buffer: faults consume no sequence number
        if node.publish_raw(node.tilt_topic, payload, False, 1):
            with self.lock:
                self.stats.faulty_injected += 1

    def _main(self, duration_s: float, flush_timeout_s: float) -> None:
        try:
            if self.stop.wait(self.phase_s):
                return
            deadline = time.monotonic() + duration_s
            self.node.run(
                until=lambda: self.stop.is_set() or time.monotonic() >= deadline,
                after_step=self._inject_fault,
            )
            self.node.shutdown(int(flush_timeout_s * 1000))
        except Exception as exc:  # one broken device must not take the fleet down; report it instead
            log.exception("device %s failed", self.device_id)
            with self.lock:
                self.stats.error = repr(exc)
            if self.node.client is not None:
                self.node.client.abort()
        finally:
            self.on_done()

    def start(self, duration_s: float, flush_timeout_s: float) -> None:
        self.thread = threading.Thread(
            target=self._main, args=(duration_s, flush_timeout_s), name=self.device_id, daemon=True
        )
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def snapshot(self) -> DeviceStats:
        node = self.node
        with self.lock:
            s = self.stats
            return DeviceStats(
                device_id=s.device_id,
                acked_seqs=list(s.acked_seqs),
                readings=node.readings,
                published=node.published,
                faulty_injected=s.faulty_injected,
                buffer_drops=node.buffer_drops,
                reconnects=node.reconnects,
                connect_failures=node.connect_failures,
                disconnects=node.disconnects,
                undelivered=len(node.buffer),
                clock_synced=s.clock_synced,
                error=s.error,
            )


def run_fleet(
    mqtt_url: str,
    count: int,
    rate_hz: float,
    duration_s: float,
    zone_id: str = "zone-1",
    *,
    seed: int = 0,
    faulty_ratio: float = 0.0,
    device_prefix: str = "sim",
    state_dir: Path | None = None,
    stop_event: threading.Event | None = None,
    on_progress: Callable[[FleetStats], None] | None = None,
    buffer_size: int = 256,
    flush_timeout_s: float = 10.0,
    progress_interval_s: float = 1.0,
    tilt_options: dict[str, float] | None = None,
    on_start: Callable[[dict[str, TiltModel]], None] | None = None,
) -> FleetStats:
    """Run ``count`` virtual nodes publishing at ``rate_hz`` for ``duration_s``, then flush and disconnect.

    Device ids are ``{device_prefix}-{zone_id}-{i:04d}``. ``state_dir`` keeps each node's "flash" (its
    sequence lease) between runs, so sequence numbers continue; without it every run starts from 0.
    Setting ``stop_event`` ends the run early (still flushing). ``on_progress`` gets a snapshot about every
    ``progress_interval_s`` from the calling thread. ``tilt_options`` are keyword arguments of every device's
    :class:`TiltModel` (event rates and durations). ``on_start`` gets each device's tilt model (by device id) once,
    before the devices start: observers read the true tilt with ``model.current()`` and must not advance it.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    if not rate_hz > 0 or not math.isfinite(rate_hz):
        raise ValueError("rate_hz must be a positive number")
    if duration_s < 0:
        raise ValueError("duration_s must be >= 0")
    if not 0.0 <= faulty_ratio <= 1.0:
        raise ValueError("faulty_ratio must be within 0..1")
    try:
        check_id("run_fleet", "zone_id", zone_id)
        check_id("run_fleet", "device_id", f"{device_prefix}-{zone_id}-{count - 1:04d}")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    broker = parse_mqtt_url(mqtt_url)
    stop = stop_event if stop_event is not None else threading.Event()
    with tempfile.TemporaryDirectory(prefix="pzone-fleet-") as tmp:
        root = Path(state_dir) if state_dir is not None else Path(tmp)
        return _run(
            broker,
            count,
            rate_hz,
            duration_s,
            zone_id,
            root,
            stop,
            on_progress,
            seed=seed,
            faulty_ratio=faulty_ratio,
            device_prefix=device_prefix,
            buffer_size=buffer_size,
            flush_timeout_s=flush_timeout_s,
            progress_interval_s=progress_interval_s,
            tilt_options=tilt_options,
            on_start=on_start,
        )


def _run(
    broker: BrokerAddress,
    count: int,
    rate_hz: float,
    duration_s: float,
    zone_id: str,
    root: Path,
    stop: threading.Event,
    on_progress: Callable[[FleetStats], None] | None,
    *,
    seed: int,
    faulty_ratio: float,
    device_prefix: str,
    buffer_size: int,
    flush_timeout_s: float,
    progress_interval_s: float,
    tilt_options: dict[str, float] | None = None,
    on_start: Callable[[dict[str, TiltModel]], None] | None = None,
) -> FleetStats:
    running = [count]
    all_done = threading.Event()
    lock = threading.Lock()

    def one_done() -> None:
        with lock:
            running[0] -= 1
            if running[0] == 0:
                all_done.set()

    devices = [
        _SimDevice(
            f"{device_prefix}-{zone_id}-{i:04d}",
            zone_id,
            broker,
            seed=seed,
            rate_hz=rate_hz,
            faulty_ratio=faulty_ratio,
            storage_dir=root / f"{device_prefix}-{zone_id}-{i:04d}",
            stop=stop,
            buffer_size=buffer_size,
            on_done=one_done,
            tilt_options=tilt_options,
        )
        for i in range(count)
    ]
    if on_start is not None:
        on_start({d.device_id: d.model for d in devices})
    started = time.monotonic()

    def snapshot(finished: bool) -> FleetStats:
        return FleetStats(
            zone_id=zone_id,
            devices={d.device_id: d.snapshot() for d in devices},
            elapsed_s=time.monotonic() - started,
            finished=finished,
        )

    for d in devices:
        d.start(duration_s, flush_timeout_s)
    try:
        while not all_done.wait(progress_interval_s):
            if on_progress is not None:
                on_progress(snapshot(False))
    except BaseException:
        stop.set()  # e.g. Ctrl-C: let every device flush and disconnect before leaving
        raise
    finally:
        for d in devices:
            d.join()
    result = snapshot(True)
    if on_progress is not None:
        on_progress(result)
    return result
