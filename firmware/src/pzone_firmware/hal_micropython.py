"""The board's HAL: NodeMCU (ESP8266) + MPU6050 on I2C, WLAN, NTP, umqtt.simple, the A0 ADC for the battery.

Only imported on the board (``machine``, ``network``, ``ntptime`` and ``umqtt`` do not exist in CPython).
Hardware objects are created in :func:`board_hal`, never at import.
"""

import os
import time

import machine
import network

from pzone_firmware.hal import Battery, Clock, Hal, MQTTClient, Network, Storage
from pzone_firmware.mpu6050 import MPU6050, AveragingSensor

# MicroPython's time module has the wrapping tick counters; CPython's (what mypy knows) does not.
_ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
_ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
_ticks_add = time.ticks_add  # type: ignore[attr-defined]
_sleep_ms = time.sleep_ms  # type: ignore[attr-defined]

UNIX_2000 = 946684800
# A clock earlier than this (2023-11) has not been set since power-up (the RTC starts at 2000-01-01).
MIN_PLAUSIBLE_UNIX = 1700000000


class FlashStorage(Storage):
    """Small files on the board's filesystem (LittleFS recommended: it levels wear; see README)."""

    def __init__(self, root: str = ""):
        self.root = root

    def _path(self, name: str) -> str:
        return self.root + "/" + name if self.root else name

    def read(self, name: str):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:  # ENOENT: MicroPython has no FileNotFoundError subclass on every port
            return None

    def write(self, name: str, data: bytes) -> None:
        # No rename-over on FAT; the sequence lease tolerates a torn write by alternating two files.
        with open(self._path(name), "wb") as f:
            f.write(data)
        try:
            os.sync()
        except AttributeError:
            pass


class BoardClock(Clock):
    def __init__(self, ntp_host: str = "pool.ntp.org"):
        self.ntp_host = ntp_host
        # Ports differ in epoch: ESP8266 counts from 2000, newer ports from 1970.
        self._offset = UNIX_2000 if time.gmtime(0)[0] == 2000 else 0
        self._synced = False

    def time(self):
        now = time.time() + self._offset
        if not self._synced:
            if now < MIN_PLAUSIBLE_UNIX:
                return None
            self._synced = True  # the RTC survived a soft reset with a set time
        return int(now)

    def ticks_ms(self) -> int:
        return _ticks_ms()

    def ticks_diff(self, later: int, earlier: int) -> int:
        return _ticks_diff(later, earlier)

    def ticks_add(self, ticks: int, delta: int) -> int:
        return _ticks_add(ticks, delta)

    def sleep_ms(self, ms: int) -> None:
        _sleep_ms(ms)

    def sync(self) -> bool:
        try:
            import ntptime

            ntptime.host = self.ntp_host
            if hasattr(ntptime, "timeout"):
                ntptime.timeout = 2
            ntptime.settime()  # sets the RTC to UTC
            self._synced = True
        except Exception:  # OSError on timeout, IndexError on a short reply from some firmware versions
            pass
        return self.time() is not None


class WifiNetwork(Network):
    def __init__(self):
        self._wlan = network.WLAN(network.STA_IF)

    def is_connected(self) -> bool:
        return self._wlan.isconnected()

    def connect(self, ssid: str, password: str, timeout_ms: int = 15000) -> bool:
        wlan = self._wlan
        wlan.active(True)
        if wlan.isconnected():
            return True
        wlan.connect(ssid, password)
        start = _ticks_ms()
        while not wlan.isconnected() and _ticks_diff(_ticks_ms(), start) < timeout_ms:
            _sleep_ms(100)
        return wlan.isconnected()


class AdcBattery(Battery):
    """Battery voltage on A0. NodeMCU boards divide A0 (220k/100k) so 1024 counts is ~3.2 V; add a series
    resistor (e.g. 100k) for a 1S Li-ion and set ``full_scale_mv`` to match (see README)."""

    def __init__(self, full_scale_mv: int = 4300, empty_mv: int = 3300, full_mv: int = 4150):
        self._adc = machine.ADC(0)
        self.full_scale_mv = full_scale_mv
        self.empty_mv = empty_mv
        self.full_mv = full_mv

    def percent(self):
        mv = self._adc.read() * self.full_scale_mv // 1024
        pct = (mv - self.empty_mv) * 100 // (self.full_mv - self.empty_mv)
        return max(0, min(100, pct))


# DER files stored next to config.json (binary cannot live in JSON): the CA that signs the broker's certificate,
# and the device's own certificate and key for brokers that authenticate clients by certificate (AWS IoT Core).
_SSL_FILES = {"ca_file": "cadata", "cert_file": "cert", "key_file": "key"}


def _load_ssl_params(params) -> dict:
    out = {}
    for key in params:
        if key not in _SSL_FILES:
            out[key] = params[key]
    for key in _SSL_FILES:
        if params.get(key):
            with open(params[key], "rb") as f:
                out[_SSL_FILES[key]] = f.read()
    if ("cert" in out) != ("key" in out):
        raise ValueError("mqtt.ssl_params needs both cert_file and key_file, or neither")
    return out


def _ssl_context(params):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if "cert" in params:
        ctx.load_cert_chain(params["cert"], params["key"])
    if "cadata" in params:
        ctx.load_verify_locations(cadata=params["cadata"])
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class BoardMQTTClient(MQTTClient):
    """umqtt.simple with socket timeouts (so a half-open connection raises instead of hanging) and abort().

    Works with both the classic (ssl, ssl_params) and the newer (ssl=SSLContext) umqtt.simple constructors.
    """

    def __init__(
        self,
        client_id,
        server,
        port=0,
        user=None,
        password=None,
        keepalive=0,
        ssl=False,
        ssl_params=None,
        timeout_s=10,
    ):
        from umqtt.simple import MQTTClient as UMQTTClient

        params = _load_ssl_params(ssl_params or {})
        self.timeout_s = timeout_s
        try:
            self._c = UMQTTClient(client_id, server, port, user, password, keepalive, ssl, params)
        except TypeError:  # umqtt.simple >= 1.4: the 7th argument is an SSLContext, no ssl_params
            ctx = _ssl_context(params) if ssl else None
            self._c = UMQTTClient(client_id, server, port, user, password, keepalive, ctx)

    def _settimeout(self) -> None:
        sock = getattr(self._c, "sock", None)
        if sock is not None:
            try:
                sock.settimeout(self.timeout_s)
            except (AttributeError, OSError):  # some TLS sockets on the ESP8266 lack it
                pass

    def set_last_will(self, topic, msg, retain=False, qos=0) -> None:
        self._c.set_last_will(topic, msg, retain, qos)

    def connect(self, clean_session=True):
        try:
            present = self._c.connect(clean_session, self.timeout_s)
        except TypeError:  # classic umqtt.simple: connect(clean_session) only
            present = self._c.connect(clean_session)
        self._settimeout()
        return present

    def publish(self, topic, msg, retain=False, qos=0) -> None:
        # check_msg() in umqtt resets the socket to blocking; set the timeout again each time
        self._settimeout()
        self._c.publish(topic, msg, retain, qos)

    def ping(self) -> None:
        self._settimeout()
        self._c.ping()

    def disconnect(self) -> None:
        self._c.disconnect()

    def abort(self) -> None:
        sock = getattr(self._c, "sock", None)
        if sock is not None:
            sock.close()


def board_hal(config, storage=None) -> Hal:
    """Create the hardware objects from the validated config (pins default to NodeMCU D1=SCL, D2=SDA)."""
    s = config.sensor
    i2c_class = getattr(machine, "SoftI2C", None) or machine.I2C
    i2c = i2c_class(
        scl=machine.Pin(s.get("scl", 5)), sda=machine.Pin(s.get("sda", 4)), freq=s.get("freq", 400000)
    )
    device = MPU6050(i2c, s.get("address", 0x68), s.get("range_g", 2))
    sensor = AveragingSensor(device, s.get("samples", 4), s.get("orientation", "+x+y+z"), _sleep_ms)
    battery = None
    if config.battery is not None:
        b = config.battery
        battery = AdcBattery(b.get("full_scale_mv", 4300), b.get("empty_mv", 3300), b.get("full_mv", 4150))
    return Hal(
        sensor=sensor,
        clock=BoardClock(config.ntp_host),
        storage=storage if storage is not None else FlashStorage(),
        mqtt_factory=BoardMQTTClient,
        network=WifiNetwork(),
        battery=battery,
    )
