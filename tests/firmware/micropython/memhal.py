"""An in-memory board for the node logic on MicroPython: virtual clock, sensor, battery, storage, Wi-Fi and broker.

Copied into the MicroPython interpreter by tests/firmware/test_micropython.py (see scenarios.py), so it follows the
board modules' rules: no f-strings, no dataclasses, no typing; only MicroPython's own modules.
"""

import errno
import os
import time

from pzone_firmware.config import Config
from pzone_firmware.hal import Battery, Clock, Hal, MQTTClient, Network, Sensor, Storage


class Lcg:
    """A seeded generator (floats in [0, 1)), so a run's jitter and epochs are the same every time."""

    def __init__(self, seed):
        self.state = seed & 0x7FFFFFFF

    def random(self):
        self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
        return self.state / 2147483648


_BOARD_RNG = Lcg(20240601)


def _urandom(n):
    return bytes([int(_BOARD_RNG.random() * 256) for _ in range(n)])


if not hasattr(os, "urandom"):
    # The board's ports (ESP8266, ESP32) have os.urandom, the WebAssembly port has not; the node draws a new
    # storage's epoch from it.
    os.urandom = _urandom


class VirtualClock(Clock):
    """Time that moves only when the node sleeps. The ticks are MicroPython's own arithmetic (they wrap at 2**30)
    and start just before the wrap, so a subtraction of raw ticks in the node would show."""

    UNIX_START = 1764070000

    def __init__(self):
        self.elapsed_ms = 0
        self.synced = True
        self._ticks_start = time.ticks_add(0, -3000)

    def time(self):
        if not self.synced:
            return None
        return self.UNIX_START + self.elapsed_ms // 1000

    def ticks_ms(self):
        return time.ticks_add(self._ticks_start, self.elapsed_ms)

    def ticks_diff(self, later, earlier):
        return time.ticks_diff(later, earlier)

    def ticks_add(self, ticks, delta):
        return time.ticks_add(ticks, delta)

    def sleep_ms(self, ms):
        if ms > 0:
            self.elapsed_ms += ms

    def sync(self):
        self.synced = True
        return True

    def power_cycle(self):
        """Ticks restart at power-up and the RTC forgets the time until the next NTP sync; the world's time goes on."""
        self._ticks_start = time.ticks_add(0, -self.elapsed_ms)
        self.synced = False


class SteadySensor(Sensor):
    """A scooter at rest: about 1 g on z."""

    def __init__(self):
        self.vector = (0.0123, -0.0201, 0.9987)

    def read(self):
        return self.vector


class FixedBattery(Battery):
    def __init__(self, percent=87):
        self.value = percent

    def percent(self):
        return self.value


class MemoryStorage(Storage):
    """Named files in RAM. One instance is the board's flash: keep it across a reboot, or ``wipe()`` it (a reflash)."""

    def __init__(self):
        self.files = {}
        self.writes = 0

    def read(self, name):
        return self.files.get(name)

    def write(self, name, data):
        self.files[name] = bytes(data)
        self.writes += 1

    def wipe(self):
        self.files = {}


class Wifi(Network):
    """Always in range; ``joins`` counts how often the node had to join it."""

    def __init__(self):
        self.joined = False
        self.joins = 0

    def is_connected(self):
        return self.joined

    def connect(self, ssid, password, timeout_ms=15000):
        self.joined = True
        self.joins += 1
        return True


class Broker:
    """The MQTT broker the fake clients talk to; it can go ``away()`` (open connections break, connects are refused)
    and come ``back()``. ``acked`` is every publish it acknowledged, in order, as (topic, payload)."""

    def __init__(self):
        self.up = True
        self.acked = []
        self.retained = {}
        self.wills_fired = 0
        self.incarnation = 0  # a restart breaks every connection made before it
        # when set, the broker goes away by itself after that many more acknowledgements
        self.acks_left = None

    def away(self):
        self.up = False
        self.incarnation += 1

    def back(self, acks_before_away=None):
        self.up = True
        self.acks_left = acks_before_away

    def factory(self, client_id, server, port, user, password, keepalive, ssl, ssl_params):
        return FakeMQTTClient(self, client_id)

    def acknowledge(self, topic, msg, retain):
        if self.acks_left is not None:
            if self.acks_left == 0:
                self.acks_left = None
                self.away()
                raise OSError(errno.ECONNRESET)
            self.acks_left -= 1
        self.acked.append((topic, bytes(msg)))
        if retain:
            self.retained[topic] = bytes(msg)

    def payloads(self, topic):
        return [msg for t, msg in self.acked if t == topic]


class FakeMQTTClient(MQTTClient):
    """umqtt.simple's surface against :class:`Broker`: qos 1 publishes return only once the broker recorded them."""

    def __init__(self, broker, client_id):
        self.broker = broker
        self.client_id = client_id
        self.will = None
        self.incarnation = None  # the broker's, while connected

    def _live(self):
        if self.incarnation is None or not self.broker.up or self.incarnation != self.broker.incarnation:
            self.incarnation = None
            raise OSError(errno.ECONNRESET)

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain)

    def connect(self, clean_session=True):
        if not self.broker.up:
            raise OSError(errno.ECONNREFUSED)
        self.incarnation = self.broker.incarnation
        return False

    def publish(self, topic, msg, retain=False, qos=0):
        self._live()
        self.broker.acknowledge(topic, msg, retain)

    def ping(self):
        self._live()

    def disconnect(self):
        self._live()
        self.incarnation = None

    def abort(self):
        was_live = self.incarnation is not None and self.incarnation == self.broker.incarnation
        self.incarnation = None
        if was_live and self.broker.up and self.will is not None:
            topic, msg, retain = self.will
            self.broker.wills_fired += 1
            if retain:
                self.broker.retained[topic] = bytes(msg)


def node_config(device_id, **overrides):
    data = {
        "device_id": device_id,
        "zone_id": "zone-mp",
        "wifi": {"ssid": "test", "password": "secret"},
        "mqtt": {"host": "broker.test", "port": 1883, "user": device_id, "password": "pw", "keepalive_s": 30},
        "interval_s": 5,
        "buffer_size": 64,
        "seq_block": 8,
        "backoff": {"base_ms": 1000, "cap_ms": 8000},
    }
    for key in overrides:
        data[key] = overrides[key]
    return Config(data, "memhal")


class Board:
    """One device: its flash (storage) and clock outlive a reboot, the node and its RAM buffer do not."""

    def __init__(self, broker, device_id, seed=1, **overrides):
        self.broker = broker
        self.config = node_config(device_id, **overrides)
        self.clock = VirtualClock()
        self.storage = MemoryStorage()
        self.sensor = SteadySensor()
        self.wifi = Wifi()
        self.rand = Lcg(seed).random
        self.node = None

    def boot(self, storage=None):
        """Start the node as main.py does after a reset; ``storage`` replaces the board's (another file system)."""
        from pzone_firmware.app import TiltNode

        if storage is not None:
            self.storage = storage
        hal = Hal(
            self.sensor,
            self.clock,
            self.storage,
            self.broker.factory,
            network=self.wifi,
            battery=FixedBattery(),
            rand=self.rand,
        )
        self.node = TiltNode(self.config, hal)
        return self.node

    def power_cut(self):
        """Power lost: no shutdown, the socket just dies (the broker fires the will); RAM, ticks and the Wi-Fi
        association are gone."""
        node = self.node
        if node is not None and node.client is not None:
            node.client.abort()
        self.node = None
        self.clock.power_cycle()
        self.wifi.joined = False
        return node
