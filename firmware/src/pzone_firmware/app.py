"""The tilt node: sample, buffer, publish. Runs unchanged on MicroPython (NodeMCU) and CPython (tests, fleet).

MicroPython rules, kept in every module copied to the board (this one, :mod:`~pzone_firmware.wire`,
:mod:`~pzone_firmware.config`, :mod:`~pzone_firmware.delivery`, :mod:`~pzone_firmware.hal`,
:mod:`~pzone_firmware.mpu6050`, :mod:`~pzone_firmware.hal_micropython`): no f-strings, no dataclasses, no typing at
runtime, no collections.deque, no starred items in a display (``[*a, b]``) or dict unpacking (``{**a}``); type
information for mypy lives in comments and plain builtin annotations only. tests/firmware/test_micropython.py runs
these modules on a real MicroPython.
"""

from pzone_firmware.delivery import Backoff, OfflineBuffer, SequenceLease
from pzone_firmware.wire import STATUS_OFFLINE, STATUS_ONLINE, build_payload, status_topic, tilt_topic

MYPY = False
if MYPY:  # type names for mypy only; MicroPython has no typing module and never evaluates annotations
    from pzone_firmware.config import Config
    from pzone_firmware.hal import Hal, MQTTClient


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

    def __init__(self, config: "Config", hal: "Hal", on_ack=None, log=None):
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
            self.config.device_id,
            seq,
            self.hal.clock.time(),
            ax,
            ay,
            az,
            self.hal.battery.percent(),
            self.lease.epoch,
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
