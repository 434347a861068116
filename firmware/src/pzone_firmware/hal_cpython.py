"""CPython HAL: paho-mqtt behind the umqtt.simple API, folder storage, a simulated MPU6050 and the host clock.

Used by the tests and the simulated fleet, so that they exercise exactly the node logic that runs on the board.
"""

from __future__ import annotations

import errno
import math
import os
import random
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from pzone_firmware.hal import AlwaysOnline, Battery, Clock, Hal, MQTTClient, Sensor, Storage

AngleFn = Callable[[float], float | tuple[float, float]]


class FolderStorage(Storage):
    """Files in a host folder; writes are atomic (temp file + rename), like a careful flash writer."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        target = self.root / name
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)


class SystemClock(Clock):
    """The host clock, optionally skewed or never synchronised (ts then omitted, as on a board without NTP).

    ``stop_event`` makes sleeps end early when it is set, so a fleet stops promptly.
    """

    def __init__(
        self, skew_s: float = 0.0, synced: bool = True, stop_event: threading.Event | None = None
    ) -> None:
        self.skew_s = skew_s
        self.synced = synced
        self.stop_event = stop_event

    def time(self) -> float | None:
        return time.time() + self.skew_s if self.synced else None

    def ticks_ms(self) -> int:
        return int(time.monotonic() * 1000)

    def sleep_ms(self, ms: int) -> None:
        if ms <= 0:
            return
        if self.stop_event is not None:
            self.stop_event.wait(ms / 1000.0)
        else:
            time.sleep(ms / 1000.0)

    def sync(self) -> bool:
        return self.synced


# MPU6050 at ±2 g: 16384 LSB/g; noise ~400 µg/√Hz gives a few mg RMS at the 44 Hz filter setting.
LSB_G = 1.0 / 16384.0


class SimulatedSensor(Sensor):
    """An MPU6050 on an object whose tilt follows ``angle_fn(t)``: tilt from vertical in degrees, or
    (tilt, azimuth) in degrees, t in seconds since the sensor was created.

    Adds what a real part shows: a per-device zero-g offset, white noise, rare vibration spikes and 16-bit
    quantisation. With a seeded ``rng`` the output is reproducible reading by reading.
    """

    def __init__(
        self,
        angle_fn: AngleFn,
        rng: random.Random | None = None,
        noise_g: float = 0.004,
        bias_g: float = 0.01,
        spike_probability: float = 0.005,
    ) -> None:
        self.angle_fn = angle_fn
        self.rng = rng if rng is not None else random.Random()
        self.noise_g = noise_g
        self.spike_probability = spike_probability
        self.bias = (self.rng.gauss(0, bias_g), self.rng.gauss(0, bias_g), self.rng.gauss(0, bias_g * 1.5))
        self.azimuth = self.rng.uniform(0.0, 360.0)  # direction of lean when angle_fn gives only the tilt
        self.fail_next = 0  # tests: make the next N reads raise OSError, like an I2C NACK
        self._t0 = time.monotonic()

    def read(self) -> tuple[float, float, float]:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise OSError(errno.ENODEV, "simulated I2C failure")
        t = time.monotonic() - self._t0
        angle = self.angle_fn(t)
        tilt, azimuth = angle if isinstance(angle, tuple) else (angle, self.azimuth)
        th, ph = math.radians(tilt), math.radians(azimuth)
        ideal = (math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th))
        rng = self.rng
        out = []
        for value, bias in zip(ideal, self.bias, strict=True):
            v = value + bias + rng.gauss(0.0, self.noise_g)
            if rng.random() < self.spike_probability:
                v += rng.uniform(-0.15, 0.15)  # a knock or a passing truck
            v = max(-2.0, min(2.0 - LSB_G, v))  # ±2 g range
            out.append(round(v / LSB_G) * LSB_G)
        return out[0], out[1], out[2]


class SimulatedBattery(Battery):
    """Slowly discharging cell: loses ``drain_per_reading`` percent per reading."""

    def __init__(self, start: float = 90.0, drain_per_reading: float = 0.001) -> None:
        self.level = start
        self.drain = drain_per_reading

    def percent(self) -> int:
        self.level = max(0.0, self.level - self.drain)
        return round(self.level)


class PahoMQTTClient(MQTTClient):
    """paho-mqtt 2.x (MQTT 3.1.1, like the board) with umqtt.simple's blocking behaviour.

    No background thread: like umqtt, each call does its own network I/O in the caller's thread, pumping
    paho's loop until the CONNACK/PUBACK arrives or ``timeout_s`` passes. Any failure raises OSError and
    leaves the client disconnected for good; the node makes a new client to reconnect. This also keeps paho
    from reconnecting on its own, which umqtt never does.
    """

    def __init__(
        self,
        client_id: str,
        server: str,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 0,
        ssl: bool = False,
        ssl_params: dict[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.client_id = client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = dict(ssl_params or {})
        self.timeout_s = timeout_s
        self._will: tuple[str, bytes, bool, int] | None = None
        self._client: mqtt.Client | None = None
        self._connack: Any = None
        self._alive = False

    @property
    def connected(self) -> bool:
        return self._client is not None and self._alive and self._client.is_connected()

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self._will = (topic, msg, retain, qos)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._connack = reason_code

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._alive = False

    def _configure_tls(self, client: mqtt.Client) -> None:
        p = self.ssl_params
        insecure = bool(p.get("insecure"))
        client.tls_set(
            ca_certs=p.get("ca_certs") or p.get("ca_file"),
            certfile=p.get("certfile"),
            keyfile=p.get("keyfile"),
            cert_reqs=ssl_module.CERT_NONE if insecure else ssl_module.CERT_REQUIRED,
        )
        if insecure:
            client.tls_insecure_set(True)

    def connect(self, clean_session: bool = True) -> bool:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.connect_timeout = self.timeout_s
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if self._will is not None:
            topic, msg, retain, qos = self._will
            client.will_set(topic, msg, qos, retain)
        if self.ssl:
            self._configure_tls(client)
        self._client = client
        self._connack = None
        self._alive = True
        try:
            client.connect(self.server, self.port, self.keepalive)
        except OSError:
            self._close()
            raise
        except ValueError as exc:  # bad host/port arguments
            self._close()
            raise OSError(errno.EINVAL, str(exc)) from exc
        deadline = time.monotonic() + self.timeout_s
        while self._connack is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._alive:
                self._close()
                raise OSError(errno.ETIMEDOUT if remaining <= 0 else errno.ECONNRESET, "no CONNACK")
            rc = client.loop(min(remaining, 1.0))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._connack is None:
                self._close()
                raise OSError(errno.ECONNRESET, "connection failed: %s" % mqtt.error_string(rc))
        if self._connack.is_failure:
            self._close()
            raise OSError(errno.ECONNREFUSED, "CONNACK refused: %s" % self._connack)
        return False

    def _require(self) -> mqtt.Client:
        if self._client is None or not self.connected:
            self._close()
            raise OSError(errno.ENOTCONN, "not connected")
        return self._client

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        client = self._require()
        info = client.publish(topic, msg, qos, retain)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (qos == 0 or info.is_published()):
                    return
                failed = info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
            except (RuntimeError, ValueError):
                failed = True
            remaining = deadline - time.monotonic()
            if failed or not self.connected or remaining <= 0:
                self._close()
                if remaining <= 0:
                    raise OSError(errno.ETIMEDOUT, "no PUBACK within %.1f s" % self.timeout_s)
                raise OSError(errno.ECONNRESET, "connection lost before PUBACK")
            client.loop(min(remaining, 1.0))

    def ping(self) -> None:
        # paho sends PINGREQ from its loop when the keepalive is due and reads any PINGRESP
        client = self._require()
        client.loop(0.0)
        if not self.connected:
            self._close()
            raise OSError(errno.ECONNRESET, "connection lost")

    def disconnect(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            if self.connected:
                client.disconnect()
                # paho writes DISCONNECT and closes the socket itself when it can; pump once in case it could not
                client.loop(0.0)
        finally:
            self._close()

    def abort(self) -> None:
        """Close the TCP connection without DISCONNECT (what a crash looks like to the broker)."""
        client = self._client
        if client is not None:
            sock = client.socket()
            if isinstance(sock, socket.socket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        self._alive = False
        if client is not None:
            client.on_disconnect = None
            # closes the TCP socket and paho's internal wake-up socket pair without sending anything
            client._reset_sockets()


def cpython_hal(
    storage_dir: str | os.PathLike[str],
    sensor: Sensor,
    *,
    clock: Clock | None = None,
    battery: Battery | None = None,
    rand: Callable[[], float] | None = None,
    mqtt_timeout_s: float = 10.0,
    network: AlwaysOnline | None = None,
) -> Hal:
    """A HAL for one simulated node whose flash is the folder ``storage_dir``."""

    def factory(
        client_id: str,
        server: str,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 0,
        ssl: bool = False,
        ssl_params: dict[str, Any] | None = None,
    ) -> PahoMQTTClient:
        return PahoMQTTClient(
            client_id, server, port, user, password, keepalive, ssl, ssl_params, timeout_s=mqtt_timeout_s
        )

    return Hal(
        sensor=sensor,
        clock=clock if clock is not None else SystemClock(),
        storage=FolderStorage(storage_dir),
        mqtt_factory=factory,
        network=network,
        battery=battery,
        rand=rand if rand is not None else random.random,
    )
