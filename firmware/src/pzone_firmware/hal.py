"""Hardware abstraction: the small surface the node logic touches, so the same code runs on the board and in CPython.

MicroPython-compatible: plain classes, no typing imports, no f-strings. Implementations live in
``hal_micropython`` (the NodeMCU) and ``hal_cpython`` (tests and the simulated fleet).

The MQTT client factory follows umqtt.simple::

    client = factory(client_id, server, port, user, password, keepalive, ssl, ssl_params)
    client.set_last_will(topic, msg, retain, qos)
    client.connect(clean_session)
    client.publish(topic, msg, retain, qos)   # qos=1 blocks until PUBACK or raises OSError
    client.ping()                             # keep an idle connection alive
    client.disconnect()
    client.abort()                            # drop the socket without DISCONNECT (the will fires)
"""


class Sensor:
    def read(self) -> tuple:
        """(ax, ay, az) in g, z up when the object stands upright. Raises OSError when the sensor fails."""
        raise NotImplementedError


class Battery:
    def percent(self):  # -> int | None
        """Battery charge 0-100, or None when unknown (the field is then left out of the payload)."""
        return None


class Clock:
    def time(self):  # -> float | int | None
        """Unix seconds, or None while the clock has never been synchronised."""
        raise NotImplementedError

    def ticks_ms(self) -> int:
        raise NotImplementedError

    def ticks_diff(self, later: int, earlier: int) -> int:
        """later - earlier in ms; on the board ticks wrap around, so never subtract ticks directly."""
        return later - earlier

    def ticks_add(self, ticks: int, delta: int) -> int:
        return ticks + delta

    def sleep_ms(self, ms: int) -> None:
        raise NotImplementedError

    def sync(self) -> bool:
        """Set the clock from the network (NTP); True when the clock is now synchronised."""
        return self.time() is not None


class Storage:
    def read(self, name: str):  # -> bytes | None
        """The file's bytes, or None when it does not exist."""
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        raise NotImplementedError


class MQTTClient:
    """What the node needs from an MQTT client: umqtt.simple's API plus ``abort``."""

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        raise NotImplementedError

    def connect(self, clean_session: bool = True):
        raise NotImplementedError

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        """At qos=1 returns only after the broker's PUBACK; raises OSError otherwise."""
        raise NotImplementedError

    def ping(self) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        """Clean DISCONNECT: the broker discards the last will."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close the socket without DISCONNECT, as a crash would: the broker publishes the last will."""
        raise NotImplementedError


class Network:
    def is_connected(self) -> bool:
        raise NotImplementedError

    def connect(self, ssid: str, password: str, timeout_ms: int = 15000) -> bool:
        """Join the network (blocking up to timeout_ms); True when connected."""
        raise NotImplementedError


class AlwaysOnline(Network):
    """A host that is always on its network (CPython simulation)."""

    def __init__(self) -> None:
        self.online = True

    def is_connected(self) -> bool:
        return self.online

    def connect(self, ssid: str, password: str, timeout_ms: int = 15000) -> bool:
        return self.online


class Hal:
    """Everything one node needs from its platform, bundled so the node logic takes a single argument.

    ``rand`` returns a float in [0, 1) and only feeds the reconnect jitter; tests pass a seeded one.
    """

    def __init__(self, sensor, clock, storage, mqtt_factory, network=None, battery=None, rand=None):
        self.sensor = sensor  # type: Sensor
        self.clock = clock  # type: Clock
        self.storage = storage  # type: Storage
        self.mqtt_factory = mqtt_factory
        self.network = network if network is not None else AlwaysOnline()  # type: Network
        self.battery = battery if battery is not None else Battery()  # type: Battery
        self.rand = rand if rand is not None else urandom_float


def urandom_float() -> float:
    # os.urandom exists on the ESP8266 (hardware RNG) and in CPython; random.random() is optional on boards.
    import os

    b = os.urandom(3)
    return ((b[0] << 16) | (b[1] << 8) | b[2]) / 16777216.0
