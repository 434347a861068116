"""MQTT helpers for tests: payloads on the wire contract, a publisher that gets every message acknowledged, a
subscriber that records what arrives, and what the ingest would make of a message."""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pzone import telemetry
from pzone.telemetry import InvalidReading, Limits, parse_reading, tilt_topic


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


# --- what arrives: a recording subscriber, and the ingest's verdict on a message ---------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def to_event(topic: str, payload: bytes, received_ms: int | None = None) -> dict[str, Any]:
    """Build the event the IoT rule hands to the ingest (payload fields + zone_id, device_id, received_at ms).

    JSON is parsed strictly (no NaN/Infinity), as the ingest does; raises ValueError/InvalidReading when the
    payload cannot even become an event.
    """
    zone_id, device_id, _kind = telemetry.parse_topic(topic)
    body = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    if not isinstance(body, dict):
        raise InvalidReading("payload is not a JSON object")
    received = received_ms if received_ms is not None else int(time.time() * 1000)
    return {**body, "zone_id": zone_id, "device_id": device_id, "received_at": received}


def ingest_accepts(topic: str, payload: bytes) -> telemetry.Reading | None:
    """The parsed reading, or None when the ingest would dead-letter the message."""
    try:
        return parse_reading(to_event(topic, payload), Limits())
    except (ValueError, UnicodeDecodeError):  # InvalidReading is a ValueError
        return None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Subscriber:
    """A paho QoS 1 subscriber in its own thread; reconnects (and resubscribes) when the broker restarts."""

    def __init__(self, port: int, topics: list[str], *, persistent: bool = False) -> None:
        self.topics = topics
        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.subscriptions = 0  # SUBACKs so far: grows by one on every reconnect
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        # paho's stubs say int, but sub-second delays work and keep the broker-restart tests fast
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *a: self.ready.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.ready.wait(5), "subscriber did not get its SUBACK"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, *args: Any) -> None:
        with self.cond:
            self.subscriptions += 1
            self.cond.notify_all()
        self.ready.set()

    def wait_resubscribed(self, before: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.subscriptions > before, timeout)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.messages), timeout)

    def on(self, suffix: str) -> list[Received]:
        with self.cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def tilt_seqs(self) -> list[int]:
        return [json.loads(m.payload)["seq"] for m in self.on("/tilt")]

    def close(self) -> None:
        self.client.disconnect()  # wakes the network thread at once, so loop_stop does not wait out a select
        self.client.loop_stop()
