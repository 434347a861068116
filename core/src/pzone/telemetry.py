"""The telemetry contract: topics, payload validation and the angles derived from raw accelerometer readings.

Wire format (version 1), published QoS 1 on ``pzone/{zone_id}/{device_id}/tilt``::

    {"v": 1, "device_id": "dev-0001", "epoch": 7315, "seq": 42, "ts": 1764070000.25, "ax": 0.01, "ay": -0.02,
     "az": 0.99, "battery": 87}

``ts`` (device clock, Unix seconds) may be missing or null; ``battery`` is percent and optional. ``epoch`` names the
incarnation of the device's sequence counter: the firmware draws a new random one whenever its stored sequence bound
is gone (a reflash, a replaced board), so ``(device_id, epoch, seq)`` stays unique when counting restarts at 0.
Firmware older than the field sends none: epoch 0. Everything else is required. Angles are derived here,
server-side, never trusted from the device.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pzone.tilt import FALLEN_MIN_DEG, UPRIGHT_MAX_DEG, TiltState, classify_tilt

PAYLOAD_VERSION = 1
TOPIC_ROOT = "pzone"
TILT_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/tilt"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/status"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Physical plausibility: an MPU6050 measures at most ±16 g; a resting object sees about 1 g.
MAX_AXIS_G = 16.0
MIN_MAGNITUDE_G = 0.2
MAX_SEQ = 2**63 - 1
MAX_EPOCH = 2**31 - 1
# Alarm kinds: a device whose object fell over, and one whose readings are refused for a sequence number far ahead
# of its last one (a forged or corrupted counter that would otherwise freeze its state).
ALARM_FALLEN = TiltState.FALLEN.value
ALARM_SEQ_JUMP = "seq_jump"
# Device timestamps outside this window are garbage, not clock skew.
MIN_DEVICE_TS = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
MAX_DEVICE_TS = datetime(2100, 1, 1, tzinfo=UTC).timestamp()


class InvalidReading(ValueError):
    """A message that breaks the contract; ``reason`` is stored with its dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Angles:
    tilt_deg: float
    pitch_deg: float
    roll_deg: float


# Not frozen: a frozen dataclass sets each field through object.__setattr__, measurably slow on the ingest path.
@dataclass(slots=True)
class Reading:
    zone_id: str
    device_id: str
    epoch: int
    seq: int
    device_ts: datetime | None
    received_at: datetime
    measured_at: datetime
    ax: float
    ay: float
    az: float
    battery: float | None
    tilt_deg: float
    pitch_deg: float
    roll_deg: float
    state: TiltState


def tilt_topic(zone_id: str, device_id: str) -> str:
    return f"{TOPIC_ROOT}/{zone_id}/{device_id}/tilt"


def status_topic(zone_id: str, device_id: str) -> str:
    return f"{TOPIC_ROOT}/{zone_id}/{device_id}/status"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split ``pzone/{zone}/{device}/{kind}`` into its parts, or raise :class:`InvalidReading`."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT:
        raise InvalidReading(f"topic {topic[:200]!r} is not pzone/{{zone_id}}/{{device_id}}/tilt")
    _, zone_id, device_id, kind = parts
    check_id("zone_id", zone_id)
    check_id("device_id", device_id)
    return zone_id, device_id, kind


@functools.lru_cache(maxsize=65536)
def _valid_id(value: str) -> bool:
    # Every message names the same few thousand ids: cache the regex verdict.
    return ID_PATTERN.fullmatch(value) is not None  # match() would let "$" pass a trailing newline


def check_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _valid_id(value):
        raise InvalidReading(
            f"{name} must be 1-64 characters of letters, digits, '_', '-', '.'; got {value!r:.80}"
        )
    return value


def derive_angles(ax: float, ay: float, az: float) -> Angles:
    """Tilt from vertical (sensor z axis up when the object stands), pitch and roll, in degrees."""
    magnitude = math.sqrt(ax * ax + ay * ay + az * az)
    tilt = math.degrees(math.acos(max(-1.0, min(1.0, az / magnitude))))
    pitch = math.degrees(math.atan2(-ax, math.sqrt(ay * ay + az * az)))
    roll = math.degrees(math.atan2(ay, az))
    return Angles(tilt, pitch, roll)


def _number(event: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    value = event.get(key)
    if type(value) is float and math.isfinite(value):  # the common case, first
        return value
    if value is None:
        if required:
            raise InvalidReading(f"missing field {key!r}")
        return None
    # bool is an int subclass in Python; true/false are not measurements.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidReading(f"field {key!r} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        raise InvalidReading(f"field {key!r} is out of range") from None
    if not math.isfinite(number):
        raise InvalidReading(f"field {key!r} must be finite, got {value!r}")
    return number


def _counter(event: dict[str, Any], key: str, maximum: int, *, required: bool) -> int:
    """A non-negative integer field (a whole float is accepted: some JSON encoders write 12.0); 0 when optional
    and absent."""
    value = event.get(key)
    if value is None:
        if required:
            raise InvalidReading(f"missing field {key!r}")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidReading(f"field {key!r} must be an integer, got {value!r:.40}")
    if not 0 <= value <= maximum:
        raise InvalidReading(f"field {key!r} out of range: {value!r:.40}")
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    upright_max_deg: float = UPRIGHT_MAX_DEG
    fallen_min_deg: float = FALLEN_MIN_DEG
    future_tolerance_s: float = 120.0
    past_tolerance_s: float = 7 * 24 * 3600.0
    # How far a device's sequence number may run ahead of the last one applied: a reboot skips at most the
    # firmware's lease block (1000) and an offline device numbers every reading it takes, so the allowance is a
    # floor plus a rate over the time since the last applied reading. A bigger jump is refused and alarmed.
    seq_jump_floor: int = 10_000
    seq_jump_per_s: float = 10.0


def received_at_of(event: dict[str, Any]) -> datetime:
    """When the platform received the message: ``received_at`` (ms since the epoch, added by the IoT rule or the
    worker) within the years a device clock may show, else :class:`InvalidReading`; now when it is absent."""
    received_ms = _number(event, "received_at", required=False)
    if received_ms is None:
        return datetime.now(UTC)
    if not MIN_DEVICE_TS * 1000 <= received_ms < MAX_DEVICE_TS * 1000:
        raise InvalidReading(f"field 'received_at' is not a Unix time in milliseconds: {received_ms!r:.40}")
    return datetime.fromtimestamp(received_ms / 1000.0, tz=UTC)


def parse_reading(event: Any, limits: Limits) -> Reading:
    """Validate one IoT-rule-shaped event (payload fields + zone_id, device_id, received_at in ms).

    Raises :class:`InvalidReading` with a human-readable reason for anything off-contract.
    """
    if not isinstance(event, dict):
        raise InvalidReading(f"event must be a JSON object, got {type(event).__name__}")
    if "v" not in event:
        raise InvalidReading("missing field 'v' (payload version)")
    version = event["v"]
    if isinstance(version, bool) or version != PAYLOAD_VERSION:
        raise InvalidReading(f"unknown payload version {version!r:.40}; this server reads v{PAYLOAD_VERSION}")
    zone_id = check_id("zone_id", event.get("zone_id"))
    device_id = check_id("device_id", event.get("device_id"))

    seq = _counter(event, "seq", MAX_SEQ, required=True)
    epoch = _counter(event, "epoch", MAX_EPOCH, required=False)

    received_at = received_at_of(event)

    ts = _number(event, "ts", required=False)
    device_ts: datetime | None = None
    if ts is not None:
        if not MIN_DEVICE_TS <= ts < MAX_DEVICE_TS:
            raise InvalidReading(f"field 'ts' is not a Unix time in seconds: {ts!r}")
        device_ts = datetime.fromtimestamp(ts, tz=UTC)
    measured_at = received_at
    if device_ts is not None:
        ahead = (device_ts - received_at).total_seconds()
        if -limits.past_tolerance_s <= ahead <= limits.future_tolerance_s:
            measured_at = device_ts

    ax, ay, az = _number(event, "ax"), _number(event, "ay"), _number(event, "az")
    assert ax is not None and ay is not None and az is not None
    if max(abs(ax), abs(ay), abs(az)) > MAX_AXIS_G:
        raise InvalidReading(f"acceleration beyond the sensor's ±{MAX_AXIS_G:g} g range: {ax}, {ay}, {az}")
    if math.sqrt(ax * ax + ay * ay + az * az) < MIN_MAGNITUDE_G:
        raise InvalidReading(
            f"acceleration vector too small to give a direction ({ax}, {ay}, {az}); sensor fault"
        )

    battery = _number(event, "battery", required=False)
    if battery is not None and not 0.0 <= battery <= 100.0:
        raise InvalidReading(f"field 'battery' must be a percentage 0-100, got {battery}")

    angles = derive_angles(ax, ay, az)
    state = classify_tilt(angles.tilt_deg, limits.upright_max_deg, limits.fallen_min_deg)
    return Reading(
        zone_id=zone_id,
        device_id=device_id,
        epoch=epoch,
        seq=seq,
        device_ts=device_ts,
        received_at=received_at,
        measured_at=measured_at,
        ax=ax,
        ay=ay,
        az=az,
        battery=battery,
        tilt_deg=angles.tilt_deg,
        pitch_deg=angles.pitch_deg,
        roll_deg=angles.roll_deg,
        state=state,
    )


def limits_from(settings: Any) -> Limits:
    return Limits(
        upright_max_deg=settings.tilt_upright_max_deg,
        fallen_min_deg=settings.tilt_fallen_min_deg,
        future_tolerance_s=settings.device_clock_future_tolerance_s,
        past_tolerance_s=settings.device_clock_past_tolerance_s,
        seq_jump_floor=settings.device_seq_jump_floor,
        seq_jump_per_s=settings.device_seq_jump_per_s,
    )
