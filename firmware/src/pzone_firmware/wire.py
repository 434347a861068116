"""The wire contract the board speaks: topics, status messages and the v1 reading payload.

It mirrors ``pzone.telemetry``, which the board cannot import: readings go QoS 1 to
``pzone/{zone_id}/{device_id}/tilt`` as JSON v1; ``pzone/{zone_id}/{device_id}/status`` carries a retained
``{"v":1,"status":"online"}`` after connect and the retained last will ``{"v":1,"status":"offline"}``.
Copied to the board: MicroPython rules as in :mod:`pzone_firmware.app`.
"""

try:
    import ujson as json
except ImportError:
    import json

PAYLOAD_VERSION = 1
TOPIC_ROOT = "pzone"
STATUS_ONLINE = b'{"v":1,"status":"online"}'
STATUS_OFFLINE = b'{"v":1,"status":"offline"}'


def tilt_topic(zone_id: str, device_id: str) -> str:
    return "%s/%s/%s/tilt" % (TOPIC_ROOT, zone_id, device_id)


def status_topic(zone_id: str, device_id: str) -> str:
    return "%s/%s/%s/status" % (TOPIC_ROOT, zone_id, device_id)


def _dumps(obj) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"))
    except TypeError:  # older ujson takes no separators; it is compact anyway
        return json.dumps(obj)


def build_payload(
    device_id: str, seq: int, ts, ax: float, ay: float, az: float, battery=None, epoch: int = 0
) -> bytes:
    """The v1 reading; ``ts`` and ``battery`` are left out when unknown, ``epoch`` when 0 (the contract reads an
    absent one as 0)."""
    payload = {
        "v": PAYLOAD_VERSION,
        "device_id": device_id,
        "seq": seq,
        "ax": round(ax, 4),
        "ay": round(ay, 4),
        "az": round(az, 4),
    }
    if ts is not None:
        # The board's clock gives whole seconds (its single-precision floats cannot hold ms of a Unix time).
        payload["ts"] = round(ts, 3) if isinstance(ts, float) else ts
    if battery is not None:
        payload["battery"] = battery
    if epoch:
        payload["epoch"] = epoch
    return _dumps(payload).encode()
