"""Property-based: whatever a device, a broker or an IoT rule hands the ingest, each message is a reading, a status
or a refusal with a reason, never another exception (which would fail its whole batch). Hypothesis generates the
messages: arbitrary JSON values in every field of the contract, near-valid events with one field spoiled, and raw
bytes on a topic. Bounded budgets: the examples below, no deadline (a 2-core CI machine)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pzone.telemetry import MAX_SEQ, InvalidReading, Limits, parse_reading
from pzone.tilt import TiltState
from pzone_ingest.batch import parse_status
from pzone_ingest.messages import from_iot_event, from_mqtt

pytestmark = pytest.mark.unit

BUDGET = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = (
    "v",
    "device_id",
    "topic_device_id",
    "zone_id",
    "seq",
    "ts",
    "ax",
    "ay",
    "az",
    "battery",
    "received_at",
)

# Any JSON value, and the numbers that break naive code: huge integers, nan/inf, negative zero, subnormals.
EXTREMES = (1e300, -1e300, 1e18, -1e18, 2**63, 2**63 - 1, -(2**63), 2**64, 10**400, 5e-324, -0.0, 0.0, 1, -1)
scalars = st.one_of(
    st.sampled_from(EXTREMES),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers().map(lambda n: n * 10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
)


def valid_event() -> dict[str, Any]:
    now = time.time()
    return {
        "v": 1,
        "device_id": "d-1",
        "topic_device_id": "d-1",
        "zone_id": "zone-1",
        "seq": 7,
        "ts": now,
        "ax": 0.1,
        "ay": 0.0,
        "az": 0.99,
        "battery": 80,
        "received_at": int(now * 1000),
    }


def read(event: Any) -> Any:
    """What the ingest makes of one event: its reading, its status, or the refusal's reason."""
    incoming = from_iot_event(event)
    if incoming.error is not None:
        return incoming.error
    try:
        if incoming.kind == "status":
            return parse_status(incoming.event)
        return parse_reading(incoming.event, Limits())
    except InvalidReading as exc:
        return exc.reason


@BUDGET
@given(event=st.dictionaries(st.sampled_from((*FIELDS, "kind", "status")), json_values, max_size=12))
def test_any_event_is_a_reading_a_status_or_a_reason(event: dict[str, Any]) -> None:
    result = read(event)
    if isinstance(result, str):
        assert result  # a refusal says why


@pytest.mark.parametrize("field", FIELDS)
@settings(max_examples=80, deadline=None)
@given(value=json_values)
def test_one_spoiled_field_is_refused_with_a_reason_or_still_a_sane_reading(field: str, value: Any) -> None:
    event = {**valid_event(), field: value}
    result = read(event)
    if isinstance(result, str):
        assert result  # a refusal says why
        return
    assert 0.0 <= result.tilt_deg <= 180.0 and isinstance(result.state, TiltState)
    assert 0 <= result.seq <= MAX_SEQ and result.device_id == "d-1"
    assert math.isfinite(result.measured_at.timestamp()) and math.isfinite(result.received_at.timestamp())


@BUDGET
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=10).map(
            lambda d: json.dumps(d, allow_nan=True).encode()
        ),
    ),
    kind=st.sampled_from(("tilt", "status", "firmware")),
)
def test_any_bytes_on_a_topic_are_a_reading_a_status_or_a_reason(payload: bytes, kind: str) -> None:
    incoming = from_mqtt(f"pzone/zone-1/d-1/{kind}", payload, int(time.time() * 1000), 4096)
    if incoming.error is not None:
        assert incoming.error
        return
    read_event = {**incoming.event, "topic_device_id": incoming.event["device_id"], "kind": incoming.kind}
    result = read(read_event)
    if isinstance(result, str):
        assert result
