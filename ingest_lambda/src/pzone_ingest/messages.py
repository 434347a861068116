"""Turn what arrives (an MQTT message or an IoT-rule event) into one shape the processing step understands.

The local worker builds exactly the event that the AWS IoT rule
``SELECT *, topic(2) AS zone_id, topic(3) AS topic_device_id, timestamp() AS received_at FROM 'pzone/+/+/tilt'``
hands to the Lambda, so both run the same code from here on. The rule names the topic's device id apart from the
payload's own ``device_id``, so that a payload that names another device than its topic is refused on both paths
(under ``AS device_id`` the topic's would silently overwrite it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pzone.db.models import RAW_PAYLOAD_KEEP_BYTES
from pzone.telemetry import InvalidReading, parse_topic, status_topic, tilt_topic


@dataclass(slots=True)
class Incoming:
    """One message: its event when one could be built, else ``error`` says why not."""

    kind: str  # "tilt" or "status"
    topic: str | None
    raw: bytes
    event: Any = None
    error: str | None = None
    size: int | None = None  # the payload's whole size, when ``raw`` keeps only part of it


# An oversized payload is refused for its size, and its dead letter keeps only this much of it (enough to see what it
# was): the refusal must be no way to store RAW_PAYLOAD_KEEP_BYTES per message.
OVERSIZE_KEEP_BYTES = 1024


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (Python accepts them by default); one decoder, built once."""
    return _STRICT_DECODER.decode(text)


def from_mqtt(
    topic: str, payload: bytes | bytearray, received_at_ms: int, max_payload_bytes: int
) -> Incoming:
    if len(payload) > max_payload_bytes:
        return Incoming(
            "tilt",
            topic,
            bytes(payload[:OVERSIZE_KEEP_BYTES]),
            error=f"payload of {len(payload)} bytes exceeds {max_payload_bytes}",
            size=len(payload),
        )
    raw = bytes(payload[:RAW_PAYLOAD_KEEP_BYTES])
    try:
        zone_id, device_id, kind = parse_topic(topic)
    except InvalidReading as exc:
        return Incoming("tilt", topic, raw, error=exc.reason)
    if kind not in ("tilt", "status"):
        return Incoming("tilt", topic, raw, error=f"unknown message kind {kind!r} in topic")
    try:
        body = loads_strict(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Incoming(kind, topic, raw, error="payload is not UTF-8 text")
    except ValueError as exc:
        return Incoming(kind, topic, raw, error=f"payload is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return Incoming(kind, topic, raw, error=f"payload must be a JSON object, got {type(body).__name__}")
    event = {**body, "zone_id": zone_id, TOPIC_DEVICE_ID: device_id, "received_at": received_at_ms}
    return _from_rule_event(kind, topic, raw, event)


# The IoT rule's name for topic(3); the payload's own device_id stays beside it.
TOPIC_DEVICE_ID = "topic_device_id"


def _from_rule_event(kind: str, topic: str | None, raw: bytes, event: dict[str, Any]) -> Incoming:
    """The rule-shaped event with the topic's device id as ``device_id``; refused when the payload names another
    device, or when the rule did not say which topic it came from."""
    topic_device = event.get(TOPIC_DEVICE_ID)
    if topic_device is None:
        return Incoming(
            kind, topic, raw, error=f"event has no {TOPIC_DEVICE_ID}: the IoT rule must select topic(3) as it"
        )
    claimed = event.get("device_id", topic_device)
    if claimed != topic_device:
        return Incoming(
            kind, topic, raw, error=f"payload device_id {claimed!r:.80} does not match the topic's"
        )
    fields = {key: value for key, value in event.items() if key != TOPIC_DEVICE_ID}
    return Incoming(kind, topic, raw, event={**fields, "device_id": topic_device})


def from_iot_event(event: Any) -> Incoming:
    """An event as the IoT rule delivers it to the Lambda (payload fields plus zone_id, topic_device_id,
    received_at, and kind for status messages)."""
    try:
        raw = json.dumps(event, default=str, allow_nan=True).encode()[:RAW_PAYLOAD_KEEP_BYTES]
    except (TypeError, ValueError):
        raw = repr(event).encode()[:RAW_PAYLOAD_KEEP_BYTES]
    if not isinstance(event, dict):
        return Incoming("tilt", None, raw, error=f"event must be a JSON object, got {type(event).__name__}")
    zone_id, device_id = event.get("zone_id"), event.get(TOPIC_DEVICE_ID)
    # The status rule adds ``topic(4) AS kind``; the tilt rule's events carry no kind.
    kind = event.get("kind", "tilt")
    if kind not in ("tilt", "status"):
        return Incoming("tilt", None, raw, error=f"unknown message kind {kind!r:.40} in event")
    topic = None
    if isinstance(zone_id, str) and isinstance(device_id, str):
        topic = (status_topic if kind == "status" else tilt_topic)(zone_id, device_id)
    return _from_rule_event(kind, topic, raw, event)
