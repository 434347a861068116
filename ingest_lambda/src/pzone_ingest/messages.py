"""Turn what arrives (an MQTT message or an IoT-rule event) into one shape the processing step understands.

The local worker builds exactly the event that the AWS IoT rule
``SELECT *, topic(2) AS zone_id, topic(3) AS device_id, timestamp() AS received_at FROM 'pzone/+/+/tilt'``
hands to the Lambda, so both run the same code from here on.
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


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (Python accepts them by default); one decoder, built once."""
    return _STRICT_DECODER.decode(text)


def from_mqtt(
    topic: str, payload: bytes | bytearray, received_at_ms: int, max_payload_bytes: int
) -> Incoming:
    raw = bytes(payload[:RAW_PAYLOAD_KEEP_BYTES])
    if len(payload) > max_payload_bytes:
        return Incoming(
            "tilt", topic, raw, error=f"payload of {len(payload)} bytes exceeds {max_payload_bytes}"
        )
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
    claimed = body.get("device_id", device_id)
    if claimed != device_id:
        return Incoming(
            kind, topic, raw, error=f"payload device_id {claimed!r:.80} does not match the topic's"
        )
    return Incoming(
        kind,
        topic,
        raw,
        event={**body, "zone_id": zone_id, "device_id": device_id, "received_at": received_at_ms},
    )


def from_iot_event(event: Any) -> Incoming:
    """An event as the IoT rule delivers it to the Lambda (payload fields plus zone_id, device_id, received_at)."""
    try:
        raw = json.dumps(event, default=str, allow_nan=True).encode()[:RAW_PAYLOAD_KEEP_BYTES]
    except (TypeError, ValueError):
        raw = repr(event).encode()[:RAW_PAYLOAD_KEEP_BYTES]
    if not isinstance(event, dict):
        return Incoming("tilt", None, raw, error=f"event must be a JSON object, got {type(event).__name__}")
    zone_id, device_id = event.get("zone_id"), event.get("device_id")
    # The status rule adds ``topic(4) AS kind``; the tilt rule's events carry no kind.
    kind = event.get("kind", "tilt")
    if kind not in ("tilt", "status"):
        return Incoming("tilt", None, raw, error=f"unknown message kind {kind!r:.40} in event")
    topic = None
    if isinstance(zone_id, str) and isinstance(device_id, str):
        topic = (status_topic if kind == "status" else tilt_topic)(zone_id, device_id)
    return Incoming(kind, topic, raw, event=event)
