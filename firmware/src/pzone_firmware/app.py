"""The tilt node: sample, buffer, publish. Runs unchanged on MicroPython (NodeMCU) and CPython (tests, fleet).

MicroPython rules kept here: no f-strings, no dataclasses, no typing at runtime, no collections.deque; type
information for mypy lives in comments and plain builtin annotations only.

Wire contract (mirrors ``pzone.telemetry``, which the board cannot import): readings go QoS 1 to
``pzone/{zone_id}/{device_id}/tilt`` as JSON v1; ``pzone/{zone_id}/{device_id}/status`` carries a retained
``{"v":1,"status":"online"}`` after connect and the retained last will ``{"v":1,"status":"offline"}``.
"""

try:
    import ujson as json
except ImportError:
    import json

MYPY = False
if MYPY:  # type names for mypy only; MicroPython has no typing module and never evaluates annotations
    from pzone_firmware.hal import Hal, MQTTClient

PAYLOAD_VERSION = 1
TOPIC_ROOT = "pzone"
STATUS_ONLINE = b'{"v":1,"status":"online"}'
STATUS_OFFLINE = b'{"v":1,"status":"offline"}'
CONFIG_FILE = "config.json"

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_REQUIRED = object()


def tilt_topic(zone_id: str, device_id: str) -> str:
    return "%s/%s/%s/tilt" % (TOPIC_ROOT, zone_id, device_id)


def status_topic(zone_id: str, device_id: str) -> str:
    return "%s/%s/%s/status" % (TOPIC_ROOT, zone_id, device_id)


def _dumps(obj) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"))
    except TypeError:  # older ujson takes no separators; it is compact anyway
        return json.dumps(obj)


def build_payload(device_id: str, seq: int, ts, ax: float, ay: float, az: float, battery=None) -> bytes:
    """The v1 reading; ``ts`` and ``battery`` are left out when unknown (the contract allows that)."""
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
    return _dumps(payload).encode()


# --- configuration ---------------------------------------------------------------------------------------


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


# --- building blocks -------------------------------------------------------------------------------------


class OfflineBuffer:
    """Fixed-capacity FIFO (a ring over a preallocated list: no deque(maxlen) on MicroPython).

    When full, appending drops the oldest item: fresh readings matter more than old ones.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items = [None] * capacity  # type: list
        self._head = 0
        self._count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._count

    def append(self, item) -> bool:
        """Add at the tail; True when the oldest item had to be dropped to make room."""
        dropped = False
        if self._count == self.capacity:
            self._items[self._head] = None
            self._head = (self._head + 1) % self.capacity
            self._count -= 1
            self.dropped += 1
            dropped = True
        self._items[(self._head + self._count) % self.capacity] = item
        self._count += 1
        return dropped

    def peek(self):
        if self._count == 0:
            raise IndexError("buffer is empty")
        return self._items[self._head]

    def pop(self):
        item = self.peek()
        self._items[self._head] = None
        self._head = (self._head + 1) % self.capacity
        self._count -= 1
        return item

    def items(self) -> list:
        return [self._items[(self._head + i) % self.capacity] for i in range(self._count)]


class SequenceLease:
    """Per-device sequence numbers that never repeat across reboots, with one flash write per ``block`` numbers.

    The storage holds an upper bound: every number handed out so far is below it. Before handing out the
    bound itself, a new bound (+block) is written first; after a reboot counting restarts at the stored bound,
    so the unused rest of the last block becomes a gap (allowed) and no number is ever reused.

    Two slot files are written alternately and the larger valid bound wins, so a write torn by a power cut
    leaves the previous bound, which still covers every number issued (none were issued from the new block).
    """

    SLOTS = ("seq.a", "seq.b")

    def __init__(self, storage, block: int = 1000):
        if block < 1:
            raise ValueError("block must be >= 1")
        self._storage = storage
        self.block = block
        self.writes = 0
        bound, slot = self._load()
        self.bound = bound
        self._next = bound
        self._slot = slot

    def _read_slot(self, name: str):
        try:
            raw = self._storage.read(name)
        except OSError:
            return None
        if raw is None:
            return None
        try:
            parts = raw.decode().split()
            if len(parts) == 2 and parts[0] == parts[1]:
                value = int(parts[0])
                if value >= 0:
                    return value
        except ValueError:  # UnicodeError is a ValueError on both CPython and MicroPython
            pass
        return None  # torn or garbage: ignore this slot

    def _load(self):
        best, best_slot = 0, 1  # so the first write goes to slot 0
        for i in range(len(self.SLOTS)):
            value = self._read_slot(self.SLOTS[i])
            if value is not None and value >= best:
                best, best_slot = value, i
        return best, best_slot

    @property
    def next_seq(self) -> int:
        return self._next

    def next(self) -> int:
        """The next number; raises OSError (and hands out nothing) when the new bound cannot be stored."""
        if self._next >= self.bound:
            new_bound = self._next + self.block
            slot = 1 - self._slot
            # the duplicated number lets a reader tell a complete write from a torn one
            self._storage.write(self.SLOTS[slot], ("%d %d\n" % (new_bound, new_bound)).encode())
            self.writes += 1
            self._slot = slot
            self.bound = new_bound
        value = self._next
        self._next = value + 1
        return value


class Backoff:
    """Exponential reconnect delay with 'equal jitter' (half fixed, half random) so a fleet that lost its
    broker together does not reconnect in lockstep. The ceiling doubles per failure up to ``cap_ms``."""

    def __init__(self, base_ms: int, cap_ms: int, rand):
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self._rand = rand
        self.failures = 0
        self.last_ceiling_ms = 0
        self.last_delay_ms = 0

    def ceiling(self, failures: int) -> int:
        value = self.base_ms
        for _ in range(failures):
            value *= 2
            if value >= self.cap_ms:
                return self.cap_ms
        return min(value, self.cap_ms)

    def failure(self) -> int:
        """Record one failed attempt; returns how long to wait (ms) before the next."""
        ceiling = self.ceiling(self.failures)
        self.failures += 1
        half = ceiling // 2
        delay = half + int(self._rand() * (ceiling - half))
        self.last_ceiling_ms = ceiling
        self.last_delay_ms = delay
        return delay

    def reset(self) -> None:
        self.failures = 0


def _abort(client) -> None:
    """Drop a connection without DISCONNECT, so the broker still publishes the last will."""
    try:
        client.abort()
    except Exception:  # already broken: nothing left to close
        pass


# --- the node --------------------------------------------------------------------------------------------


class TiltNode:
    """One sensor node: ``step()`` takes a reading and pushes what it can; ``run()`` loops at the interval.

    Readings go into a bounded offline buffer first and leave it only after the broker's PUBACK, in order,
    so nothing is lost while the broker or the network is away (until the buffer overflows; then the oldest
    are dropped and counted). Connection attempts back off exponentially with jitter.
    """

    CLOCK_RESYNC_MS = 3600 * 1000  # the ESP8266 clock drifts; re-read NTP hourly
    CLOCK_RETRY_MS = 60 * 1000  # a failed NTP query blocks ~1 s on the board, so don't retry every step

    def __init__(self, config: Config, hal: "Hal", on_ack=None, log=None):
        self.config = config
        self.hal = hal
        self.on_ack = on_ack  # called with each seq once the broker acknowledged it
        self._log = log
        self.tilt_topic = tilt_topic(config.zone_id, config.device_id)
        self.status_topic = status_topic(config.zone_id, config.device_id)
        self.buffer = OfflineBuffer(config.buffer_size)
        self.lease = SequenceLease(hal.storage, config.seq_block)
        self.backoff = Backoff(config.backoff_base_ms, config.backoff_cap_ms, hal.rand)
        self.client = None  # type: MQTTClient | None
        self._next_connect = None  # type: int | None  # ticks_ms before which no connect is tried
        self._last_activity = 0
        self._last_sync = None  # type: int | None
        self.readings = 0
        self.published = 0
        self.connect_attempts = 0
        self.connect_failures = 0
        self.connects = 0
        self.disconnects = 0
        self.sensor_errors = 0
        self.storage_errors = 0
        self.last_seq = -1
        self.last_acked_seq = -1

    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log("[%s] %s" % (self.config.device_id, msg))

    @property
    def connected(self) -> bool:
        return self.client is not None

    @property
    def buffer_drops(self) -> int:
        return self.buffer.dropped

    @property
    def reconnects(self) -> int:
        return self.connects - 1 if self.connects > 0 else 0

    def stats(self) -> dict:
        return {
            "readings": self.readings,
            "published": self.published,
            "buffered": len(self.buffer),
            "buffer_drops": self.buffer.dropped,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "disconnects": self.disconnects,
            "sensor_errors": self.sensor_errors,
            "storage_errors": self.storage_errors,
            "last_seq": self.last_seq,
            "last_acked_seq": self.last_acked_seq,
            "connected": self.connected,
        }

    # one cycle ----------------------------------------------------------------------------------------

    def step(self) -> None:
        self.sample()
        self.service()

    def sample(self):
        """Read the sensor and queue one reading; returns its seq, or None when nothing could be read."""
        try:
            ax, ay, az = self.hal.sensor.read()
        except OSError as exc:
            self.sensor_errors += 1
            self.log("sensor read failed: %r" % (exc,))
            return None
        try:
            seq = self.lease.next()
        except OSError as exc:
            # without a stored bound a reboot could reuse this number; skip the reading instead
            self.storage_errors += 1
            self.log("cannot store the sequence bound: %r" % (exc,))
            return None
        msg = build_payload(
            self.config.device_id, seq, self.hal.clock.time(), ax, ay, az, self.hal.battery.percent()
        )
        if self.buffer.append((seq, msg)):
            self.log("offline buffer full: dropped the oldest reading")
        self.readings += 1
        self.last_seq = seq
        return seq

    def service(self) -> int:
        """Connect when due, keep the connection alive and flush the buffer; returns readings delivered."""
        if self.client is None and not (self.connect_due() and self.connect()):
            return 0
        sent = self.flush()
        if self.client is not None:
            self._keepalive(self.client)
        if self.client is not None:
            self._maybe_sync_clock()
        return sent

    def connect_due(self) -> bool:
        if self._next_connect is None:
            return True
        clock = self.hal.clock
        return clock.ticks_diff(clock.ticks_ms(), self._next_connect) >= 0

    def ms_until_connect(self) -> int:
        if self.client is not None or self._next_connect is None:
            return 0
        clock = self.hal.clock
        return max(0, clock.ticks_diff(self._next_connect, clock.ticks_ms()))

    def connect(self) -> bool:
        """One attempt: network, MQTT session with the last will, retained 'online'. False (and a backoff
        delay) on failure."""
        cfg = self.config
        clock = self.hal.clock
        self.connect_attempts += 1
        client = None
        try:
            net = self.hal.network
            if not net.is_connected() and not net.connect(cfg.wifi_ssid, cfg.wifi_password):
                raise OSError("wifi not connected")
            if clock.time() is None:
                self._maybe_sync_clock()
            client = self.hal.mqtt_factory(
                cfg.device_id,
                cfg.mqtt_host,
                cfg.mqtt_port,
                cfg.mqtt_user,
                cfg.mqtt_password,
                cfg.keepalive_s,
                cfg.mqtt_tls,
                cfg.mqtt_ssl_params,
            )
            client.set_last_will(self.status_topic, STATUS_OFFLINE, True, 1)
            client.connect(True)
            client.publish(self.status_topic, STATUS_ONLINE, True, 1)
        except Exception as exc:  # umqtt raises MQTTException (not OSError) for a refused CONNACK
            if client is not None:
                _abort(client)
            self.connect_failures += 1
            delay = self.backoff.failure()
            self._next_connect = clock.ticks_add(clock.ticks_ms(), delay)
            self.log("connect failed (%r); next try in %d ms" % (exc, delay))
            return False
        self.client = client
        self.connects += 1
        self.backoff.reset()
        self._next_connect = None
        self._last_activity = clock.ticks_ms()
        self.log("connected to %s:%d" % (cfg.mqtt_host, cfg.mqtt_port))
        return True

    def flush(self) -> int:
        """Publish buffered readings oldest first; each leaves the buffer only after its PUBACK."""
        sent = 0
        while self.client is not None and len(self.buffer) > 0:
            seq, msg = self.buffer.peek()
            try:
                self.client.publish(self.tilt_topic, msg, False, 1)
            except Exception as exc:
                self.connection_lost(exc)
                break
            self.buffer.pop()
            sent += 1
            self.published += 1
            self.last_acked_seq = seq
            self._last_activity = self.hal.clock.ticks_ms()
            if self.on_ack is not None:
                self.on_ack(seq)
        return sent

    def publish_raw(self, topic: str, msg: bytes, retain: bool = False, qos: int = 1) -> bool:
        """Publish something outside the reading stream (diagnostics); False when not connected or it failed."""
        if self.client is None:
            return False
        try:
            self.client.publish(topic, msg, retain, qos)
        except Exception as exc:
            self.connection_lost(exc)
            return False
        self._last_activity = self.hal.clock.ticks_ms()
        return True

    def connection_lost(self, exc=None) -> None:
        if self.client is not None:
            _abort(self.client)
            self.client = None
            self.disconnects += 1
            # the first retry is immediate; the backoff only grows if that fails too
            self._next_connect = None
            self.log("connection lost: %r" % (exc,))

    def _keepalive(self, client: "MQTTClient") -> None:
        # umqtt.simple sends no pings by itself; when readings are sparser than the keepalive, ping.
        clock = self.hal.clock
        if clock.ticks_diff(clock.ticks_ms(), self._last_activity) >= self.config.keepalive_s * 500:
            try:
                client.ping()
            except Exception as exc:
                self.connection_lost(exc)
                return
            self._last_activity = clock.ticks_ms()

    def _maybe_sync_clock(self) -> None:
        clock = self.hal.clock
        now = clock.ticks_ms()
        wait = self.CLOCK_RESYNC_MS if clock.time() is not None else self.CLOCK_RETRY_MS
        if self._last_sync is not None and clock.ticks_diff(now, self._last_sync) < wait:
            return
        self._last_sync = now
        try:
            clock.sync()
        except Exception as exc:
            self.log("clock sync failed: %r" % (exc,))

    # loops --------------------------------------------------------------------------------------------

    def run(self, until=None, max_steps=None, after_step=None) -> int:
        """Sample every ``interval_s`` until ``until()`` is true or ``max_steps`` were taken; returns steps.

        While offline with readings waiting, it also wakes up for reconnect attempts between samples.
        """
        clock = self.hal.clock
        interval = self.config.interval_ms
        next_sample = clock.ticks_ms()
        steps = 0
        while True:
            if until is not None and until():
                break
            if max_steps is not None and steps >= max_steps:
                break
            now = clock.ticks_ms()
            wait = clock.ticks_diff(next_sample, now)
            if wait > 0:
                if self.client is None and len(self.buffer) > 0:
                    # offline with readings waiting: reconnect when the backoff allows, not at the next sample
                    to_connect = self.ms_until_connect()
                    if to_connect < wait:
                        if to_connect > 0:
                            clock.sleep_ms(to_connect)
                        else:
                            self.service()
                        continue
                clock.sleep_ms(wait)
                continue
            self.step()
            steps += 1
            if after_step is not None:
                after_step(self)
            next_sample = clock.ticks_add(next_sample, interval)
            behind = clock.ticks_diff(clock.ticks_ms(), next_sample)
            if behind > interval:
                # a long outage or flush ate several intervals: resume the cadence instead of bursting
                next_sample = clock.ticks_ms()
        return steps

    def shutdown(self, flush_timeout_ms: int = 5000) -> bool:
        """Deliver what is buffered (trying up to ``flush_timeout_ms``), mark the device offline and
        disconnect cleanly. True when nothing was left undelivered."""
        clock = self.hal.clock
        start = clock.ticks_ms()
        while len(self.buffer) > 0 and clock.ticks_diff(clock.ticks_ms(), start) < flush_timeout_ms:
            self.service()
            if len(self.buffer) > 0 and self.client is None:
                left = flush_timeout_ms - clock.ticks_diff(clock.ticks_ms(), start)
                clock.sleep_ms(max(1, min(self.ms_until_connect(), left)))
        if self.client is not None:
            client = self.client
            self.client = None
            try:
                # a clean DISCONNECT suppresses the will, so say 'offline' ourselves
                client.publish(self.status_topic, STATUS_OFFLINE, True, 1)
                client.disconnect()
            except Exception:
                _abort(client)
        return len(self.buffer) == 0
