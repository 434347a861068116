"""MQTT helpers for tests: payloads on the wire contract and a publisher that gets every message acknowledged."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from pzone.telemetry import tilt_topic


def reading_payload(device_id: str, seq: int, tilt_deg: float = 2.0, ts: float | None = None) -> bytes:
    """A valid v1 payload for an object tilted ``tilt_deg`` from vertical."""
    rad = math.radians(tilt_deg)
    body = {
        "v": 1,
        "device_id": device_id,
        "seq": seq,
        "ts": time.time() if ts is None else ts,
        "ax": round(math.sin(rad), 5),
        "ay": 0.0,
        "az": round(math.cos(rad), 5),
        "battery": 80,
    }
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes


def fleet_messages(zone_id: str, devices: int, per_device: int, seed: int = 0) -> list[Outgoing]:
    """Readings of several devices, interleaved as a real fleet's would be."""
    rng = random.Random(seed)
    out = []
    for seq in range(1, per_device + 1):
        for d in range(devices):
            device_id = f"dev-{d:03d}"
            out.append(
                Outgoing(tilt_topic(zone_id, device_id), reading_payload(device_id, seq, rng.uniform(0, 10)))
            )
    return out


def _client(url: str, client_id: str) -> mqtt.Client:
    parts = urlsplit(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(0.1, 1)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    return client


def publish_all(
    url: str,
    messages: Iterable[Outgoing],
    client_id: str = "test-publisher",
    pace_s: float = 0.0,
    timeout: float = 60,
) -> int:
    """Publish QoS 1 and return once the broker acknowledged every message.

    Messages published while the broker is away are queued by paho and sent again after it reconnects.
    """
    client = _client(url, client_id)
    acked: set[int] = set()
    lock = threading.Lock()

    def on_publish(
        _client: mqtt.Client, _userdata: object, mid: int, _reason: object, _props: object
    ) -> None:
        with lock:
            acked.add(mid)

    client.on_publish = on_publish
    client.loop_start()
    mids = []
    try:
        for message in messages:
            mids.append(client.publish(message.topic, message.payload, qos=1).mid)
            if pace_s:
                time.sleep(pace_s)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                missing = len(set(mids) - acked)
            if not missing:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"{missing} messages not acknowledged by the broker in {timeout}s")
    finally:
        client.disconnect()
        client.loop_stop()
    return len(mids)


def chunks(items: list[Outgoing], size: int) -> Iterator[list[Outgoing]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
