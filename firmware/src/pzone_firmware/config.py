"""The device's configuration (``config.json`` on the board): every field checked, with a message naming it.

Copied to the board: MicroPython rules as in :mod:`pzone_firmware.app`.
"""

try:
    import ujson as json
except ImportError:
    import json

CONFIG_FILE = "config.json"

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_REQUIRED = object()


class ConfigError(ValueError):
    """The configuration is missing a field or has a wrong value; the message names the field."""


def check_id(source: str, name: str, value) -> str:
    """The contract's id rule (pzone.telemetry.ID_PATTERN) without ``re``: MicroPython's lacks {m,n}."""
    ok = isinstance(value, str) and 1 <= len(value) <= 64 and value[0] not in "_.-"
    if ok:
        for ch in value:
            if ch not in _ID_CHARS:
                ok = False
                break
    if not ok:
        raise ConfigError(
            "%s: field '%s' must be 1-64 letters, digits, '_', '-', '.' (not starting with a symbol), got %r"
            % (source, name, value)
        )
    return value


def _field(data, path: str, kind: str, source: str, default=_REQUIRED):
    node = data
    for key in path.split("."):
        if not isinstance(node, dict):
            raise ConfigError("%s: the parent of field '%s' must be a JSON object" % (source, path))
        if key not in node:
            if default is _REQUIRED:
                raise ConfigError("%s: missing field '%s'" % (source, path))
            return default
        node = node[key]
    value = node
    if kind == "str":
        ok = isinstance(value, str) and len(value) > 0
        want = "a non-empty string"
    elif kind == "secret":
        # null is allowed (explicitly) only for a development broker that lets anonymous clients in
        ok = value is None or isinstance(value, str)
        want = "a string or null"
    elif kind == "port":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
        want = "an integer port 1-65535"
    elif kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        want = "a positive integer"
    elif kind == "positive":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        want = "a positive number"
    elif kind == "bool":
        ok = isinstance(value, bool)
        want = "true or false"
    elif kind == "object":
        ok = value is None or isinstance(value, dict)
        want = "a JSON object or null"
    else:
        raise ValueError(kind)
    if not ok:
        raise ConfigError("%s: field '%s' must be %s, got %r" % (source, path, want, value))
    return value


class Config:
    """Validated device configuration (``config.json`` on the board; see config.example.json)."""

    def __init__(self, data, source: str = CONFIG_FILE):
        if not isinstance(data, dict):
            raise ConfigError("%s: must be a JSON object" % source)
        self.device_id = check_id(source, "device_id", _field(data, "device_id", "str", source))
        self.zone_id = check_id(source, "zone_id", _field(data, "zone_id", "str", source))
        self.wifi_ssid = _field(data, "wifi.ssid", "str", source)
        self.wifi_password = _field(data, "wifi.password", "secret", source)
        self.mqtt_host = _field(data, "mqtt.host", "str", source)
        self.mqtt_port = _field(data, "mqtt.port", "port", source)
        self.mqtt_user = _field(data, "mqtt.user", "secret", source)
        self.mqtt_password = _field(data, "mqtt.password", "secret", source)
        self.mqtt_tls = _field(data, "mqtt.tls", "bool", source, False)
        self.mqtt_ssl_params = _field(data, "mqtt.ssl_params", "object", source, None) or {}
        self.keepalive_s = _field(data, "mqtt.keepalive_s", "count", source, 60)
        self.interval_s = _field(data, "interval_s", "positive", source, 5)
        self.buffer_size = _field(data, "buffer_size", "count", source, 64)
        self.seq_block = _field(data, "seq_block", "count", source, 1000)
        self.backoff_base_ms = _field(data, "backoff.base_ms", "count", source, 1000)
        self.backoff_cap_ms = _field(data, "backoff.cap_ms", "count", source, 60000)
        self.ntp_host = _field(data, "ntp_host", "str", source, "pool.ntp.org")
        self.sensor = _field(data, "sensor", "object", source, None) or {}
        self.battery = _field(data, "battery", "object", source, None)
        if self.backoff_cap_ms < self.backoff_base_ms:
            raise ConfigError("%s: backoff.cap_ms must be >= backoff.base_ms" % source)

    @property
    def interval_ms(self) -> int:
        return max(1, int(self.interval_s * 1000))


def load_config(storage, name: str = CONFIG_FILE) -> Config:
    raw = storage.read(name)
    if raw is None:
        raise ConfigError("%s not found: copy config.example.json to %s and fill it in" % (name, name))
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError("%s is not valid JSON: %s" % (name, exc)) from None
    return Config(data, name)
