"""The telemetry contract: derived angles, tilt classes and payload validation (no services)."""

from __future__ import annotations

import math
import time

import pytest

from pzone.telemetry import (
    InvalidReading,
    Limits,
    TiltState,
    classify_tilt,
    derive_angles,
    parse_reading,
    parse_topic,
)

pytestmark = pytest.mark.unit
LIMITS = Limits()


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "v": 1,
        "zone_id": "zone-1",
        "device_id": "dev-1",
        "seq": 7,
        "ts": time.time(),
        "ax": 0.0,
        "ay": 0.0,
        "az": 1.0,
        "battery": 90,
        "received_at": int(time.time() * 1000),
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize(
    ("vector", "tilt", "pitch", "roll"),
    [
        ((0.0, 0.0, 1.0), 0.0, 0.0, 0.0),
        ((0.0, 0.0, -1.0), 180.0, 0.0, 180.0),
        ((1.0, 0.0, 0.0), 90.0, -90.0, 0.0),
        ((0.0, 1.0, 0.0), 90.0, 0.0, 90.0),
        ((math.sin(math.radians(30)), 0.0, math.cos(math.radians(30))), 30.0, -30.0, 0.0),
        ((0.0, 2 * math.sin(math.radians(45)), 2 * math.cos(math.radians(45))), 45.0, 0.0, 45.0),
    ],
)
def test_angles_from_raw_acceleration(
    vector: tuple[float, float, float], tilt: float, pitch: float, roll: float
) -> None:
    angles = derive_angles(*vector)
    assert angles.tilt_deg == pytest.approx(tilt, abs=1e-6)
    assert angles.pitch_deg == pytest.approx(pitch, abs=1e-6)
    assert angles.roll_deg == pytest.approx(roll, abs=1e-6)


@pytest.mark.parametrize(
    ("tilt", "state"),
    [
        (0, TiltState.UPRIGHT),
        (19.9, TiltState.UPRIGHT),
        (20, TiltState.TILTED),
        (59.9, TiltState.TILTED),
        (60, TiltState.FALLEN),
        (120, TiltState.FALLEN),
    ],
)
def test_tilt_classes(tilt: float, state: TiltState) -> None:
    assert classify_tilt(tilt, 20, 60) is state


def test_valid_reading_is_parsed_with_server_side_angles() -> None:
    reading = parse_reading(event(ax=1.0, az=0.05), LIMITS)
    assert reading.state is TiltState.FALLEN
    assert reading.tilt_deg == pytest.approx(87.14, abs=0.01)
    assert (reading.zone_id, reading.device_id, reading.seq) == ("zone-1", "dev-1", 7)


def test_missing_or_skewed_device_clock_falls_back_to_receive_time() -> None:
    now_ms = int(time.time() * 1000)
    no_clock = parse_reading(event(ts=..., received_at=now_ms), LIMITS)
    assert no_clock.device_ts is None and no_clock.measured_at == no_clock.received_at
    ahead = parse_reading(event(ts=now_ms / 1000 + 3600, received_at=now_ms), LIMITS)
    assert ahead.device_ts is not None and ahead.measured_at == ahead.received_at
    buffered = parse_reading(event(ts=now_ms / 1000 - 600, received_at=now_ms), LIMITS)
    assert buffered.measured_at == buffered.device_ts  # an offline-buffered reading keeps its own time


def test_integral_float_seq_is_accepted() -> None:
    assert parse_reading(event(seq=12.0), LIMITS).seq == 12


def test_the_epoch_is_0_when_absent_and_ids_differing_in_case_are_two_devices() -> None:
    assert parse_reading(event(), LIMITS).epoch == 0
    assert parse_reading(event(epoch=2**31 - 1), LIMITS).epoch == 2**31 - 1
    # Case is kept, as the topic and the IoT thing name keep it: "Dev-1" is not "dev-1".
    assert parse_reading(event(device_id="Dev-1"), LIMITS).device_id == "Dev-1"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"v": ...}, "missing field 'v'"),
        ({"v": 2}, "unknown payload version"),
        ({"v": True}, "unknown payload version"),
        ({"seq": ...}, "missing field 'seq'"),
        ({"seq": "7"}, "must be an integer"),
        ({"seq": 7.5}, "must be an integer"),
        ({"seq": -1}, "out of range"),
        ({"seq": 2**64}, "out of range"),
        ({"ax": ...}, "missing field 'ax'"),
        ({"ay": "0.1"}, "must be a number"),
        ({"az": True}, "must be a number"),
        ({"az": float("nan")}, "must be finite"),
        ({"ax": float("inf")}, "must be finite"),
        ({"ax": 0.0, "ay": 0.0, "az": 0.0}, "too small"),
        ({"az": 40.0}, "beyond the sensor"),
        ({"ax": 10**400}, "out of range"),  # float() overflows: must be a reason, not a crash
        ({"battery": -(10**400)}, "out of range"),
        ({"ts": -5}, "not a Unix time"),
        ({"ts": 1.7e12}, "not a Unix time"),  # milliseconds, not seconds
        ({"ts": "yesterday"}, "must be a number"),
        ({"battery": 140}, "percentage"),
        ({"device_id": "bad id!"}, "device_id must be"),
        ({"zone_id": ""}, "zone_id must be"),
        ({"zone_id": ...}, "zone_id must be"),
        ({"epoch": -1}, "out of range"),
        ({"epoch": 2**31}, "out of range"),
        ({"epoch": "7"}, "must be an integer"),
        ({"epoch": True}, "must be an integer"),
        # Lookalikes of "dev-1" in other scripts and forms never name a device (ids are ASCII only), so one device
        # cannot be spoken for under a name that prints the same.
        ({"device_id": "d\u0435v-1"}, "device_id must be"),  # Cyrillic e
        ({"device_id": "\uff44ev-1"}, "device_id must be"),  # fullwidth d
        ({"device_id": "dev\u20111"}, "device_id must be"),  # non-breaking hyphen
        ({"device_id": "de\u0301v-1"}, "device_id must be"),  # a combining accent
        ({"device_id": "dev-1\n"}, "device_id must be"),
    ],
)
def test_bad_readings_are_rejected_with_a_reason(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidReading, match=reason):
        parse_reading(event(**fields), LIMITS)


@pytest.mark.parametrize(
    "topic",
    ["pzone/z1/tilt", "pzone/z1/d1/x/tilt", "other/z1/d1/tilt", "pzone/z 1/d1/tilt", "pzone//d1/tilt"],
)
def test_wrong_topic_shapes(topic: str) -> None:
    with pytest.raises(InvalidReading):
        parse_topic(topic)


def test_threshold_settings_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from pzone.settings import CoreSettings

    monkeypatch.setenv("PZONE_TILT_UPRIGHT_MAX_DEG", "70")
    with pytest.raises(ValidationError, match="must be below"):
        CoreSettings()
