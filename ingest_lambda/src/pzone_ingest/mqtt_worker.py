"""``pzone ingest``: the local stand-in for IoT Core's rule engine, running the Lambda's processing code.

- MQTT v5 shared subscription (``$share/<group>/pzone/#``) so several workers split the stream; persistent session
  (clean_start=False and a session expiry) keyed by a stable client id.
- QoS 1 with manual acknowledgement: a message is acknowledged only after its batch is committed. Receive Maximum
  bounds the unacknowledged messages the broker may push, so memory stays bounded when the database is slow or down.
- Batches by size and time; when the database is down it stops acknowledging, retries with backoff and loses nothing.
- SIGTERM drains: the batch in hand is committed and acknowledged, then the client disconnects (the session stays).
- Prometheus metrics on an HTTP port.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from pzone.db.engine import make_engine, safe_url
from pzone.telemetry import TOPIC_ROOT, limits_from
from pzone_ingest.batch import BatchResult, process_batch
from pzone_ingest.messages import Incoming, from_mqtt
from pzone_ingest.settings import Settings, mqtt_endpoint

logger = logging.getLogger("pzone.ingest.worker")

SUBSCRIPTION = f"{TOPIC_ROOT}/#"


class _Pending(NamedTuple):
    topic: str
    payload: bytes | bytearray
    mid: int
    qos: int
    received_ms: int
    connection: int


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("pzone_ingest_received", "MQTT messages received", registry=r)
        self.inserted = Counter("pzone_ingest_inserted", "Readings inserted", registry=r)
        self.duplicates = Counter(
            "pzone_ingest_duplicates", "Replayed readings not inserted again", registry=r
        )
        self.dead_letters = Counter(
            "pzone_ingest_dead_letters", "Messages stored as dead letters", registry=r
        )
        self.seq_jumps = Counter(
            "pzone_ingest_seq_jumps",
            "Readings refused for a sequence number far ahead of their device's last one",
            registry=r,
        )
        self.statuses = Counter("pzone_ingest_statuses", "Device status messages applied", registry=r)
        self.db_errors = Counter("pzone_ingest_db_errors", "Batches that failed on the database", registry=r)
        self.batch_seconds = Histogram(
            "pzone_ingest_batch_seconds",
            "Time to validate, store and commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_size = Histogram(
            "pzone_ingest_batch_size",
            "Messages per batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.inflight = Gauge(
            "pzone_ingest_inflight", "Messages received but not yet acknowledged", registry=r
        )
        self.connected = Gauge("pzone_ingest_connected", "1 while connected to the broker", registry=r)

    def record(self, result: BatchResult, seconds: float) -> None:
        self.inserted.inc(result.inserted)
        self.duplicates.inc(result.duplicates)
        self.dead_letters.inc(result.dead_letters)
        self.seq_jumps.inc(result.seq_jumps)
        self.statuses.inc(result.statuses)
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(result.received)


@dataclass
class WorkerStats:
    batches: int = 0
    totals: BatchResult = field(default_factory=BatchResult)


class IngestWorker:
    def __init__(
        self, settings: Settings, engine: Engine | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.sqlalchemy_url)
        self.metrics = metrics or Metrics()
        self.limits = limits_from(settings)
        self.stats = WorkerStats()
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._connection = 0
        self._ack_lock = threading.Lock()
        self._connected = threading.Event()
        self._client = self._make_client()

    # --- MQTT -----------------------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.mqtt_protocol == "5"
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.ingest_client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        _host, _port, tls, username, password = mqtt_endpoint(s.mqtt_url.get_secret_value())
        if username:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set()
        # Reconnect fast: after a broker restart, the sooner the subscription is back the smaller the window.
        client.reconnect_delay_set(min_delay=0.25, max_delay=5)  # type: ignore[arg-type]  # paho sleeps a float fine
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _subscription(self) -> str:
        group = self.settings.ingest_shared_group
        return (
            f"$share/{group}/{SUBSCRIPTION}" if group and self.settings.mqtt_protocol == "5" else SUBSCRIPTION
        )

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            logger.warning("broker refused the connection: %s", reason)
            return
        with self._ack_lock:
            # Messages queued from an earlier connection are dropped unacknowledged: the broker redelivers them.
            self._connection += 1
        client.subscribe(self._subscription(), qos=1)
        self._connected.set()
        self.metrics.connected.set(1)
        logger.info(
            "connected (session present: %s), subscribed to %s", flags.session_present, self._subscription()
        )

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected.clear()
        self.metrics.connected.set(0)
        log = logger.warning if getattr(reason, "is_failure", True) else logger.info
        log("disconnected from the broker: %s", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._queue.put(
            _Pending(
                message.topic,
                message.payload,
                message.mid,
                message.qos,
                int(time.time() * 1000),
                self._connection,
            )
        )

    @property
    def connections(self) -> int:
        """How many times the worker has connected (1 after the first connect)."""
        return self._connection

    def _ack(self, batch: list[_Pending]) -> None:
        with self._ack_lock:
            current = self._connection
            for item in batch:
                if item.qos > 0 and item.connection == current:
                    self._client.ack(item.mid, item.qos)

    def connect(self) -> None:
        s = self.settings
        host, port, _tls, _user, _password = mqtt_endpoint(s.mqtt_url.get_secret_value())
        properties = None
        kwargs: dict[str, Any] = {}
        if s.mqtt_protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = s.ingest_session_expiry_s
            properties.ReceiveMaximum = s.ingest_max_inflight
            kwargs["clean_start"] = False
        self._client.connect_async(host, port, keepalive=30, properties=properties, **kwargs)
        self._client.loop_start()

    # --- batching -------------------------------------------------------------------------------------------------
    def _next_batch(self, stop: threading.Event) -> list[_Pending]:
        s = self.settings
        batch: list[_Pending] = []
        deadline: float | None = None
        stale = 0
        while len(batch) < s.ingest_batch_size:
            if deadline is None:
                if stop.is_set():  # checked every round, not only when the queue runs dry
                    break
                timeout = 0.2
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            if item.connection != self._connection:
                stale += 1  # from a dead connection: the broker sends it again
                continue
            batch.append(item)
            if deadline is None:
                deadline = time.monotonic() + s.ingest_batch_max_wait_ms / 1000.0
        if stale:
            logger.info("dropped %d messages of an earlier connection (the broker redelivers them)", stale)
        return batch

    def _process(self, batch: list[_Pending], stop: threading.Event) -> bool:
        """Commit one batch, retrying while the database is unreachable. False if stopped before it committed."""
        max_bytes = self.settings.max_payload_bytes
        items = [from_mqtt(p.topic, p.payload, p.received_ms, max_bytes) for p in batch]
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                try:
                    result = process_batch(self.engine, items, self.limits, source="mqtt")
                except Exception as exc:
                    if isinstance(exc, DBAPIError) and _is_connection_error(exc):
                        raise
                    # Refused data (or a bug) must not wedge the stream: isolate the message that causes it.
                    logger.warning("batch failed (%s): retrying message by message", type(exc).__name__)
                    result = self._process_one_by_one(items)
            # The database is down or restarting: keep the batch, acknowledge nothing, try again.
            except DBAPIError as exc:
                self.metrics.db_errors.inc()
                logger.warning("database unavailable (%s); retrying in %.1fs", type(exc.orig).__name__, delay)
                if stop.wait(delay * random.uniform(0.8, 1.2)):
                    return False
                delay = min(delay * 2, self.settings.ingest_retry_max_s)
                continue
            self.metrics.record(result, time.perf_counter() - started)
            self._add_totals(result)
            return True

    def _process_one_by_one(self, items: list[Incoming]) -> BatchResult:
        """A batch the database rejected for its data: find the culprits and dead-letter them, keep the rest."""
        total = BatchResult()
        for item in items:
            try:
                one = process_batch(self.engine, [item], self.limits, source="mqtt")
            except Exception as exc:
                if isinstance(exc, DBAPIError) and _is_connection_error(exc):
                    raise
                what = (
                    "database rejected the message" if isinstance(exc, SQLAlchemyError) else "ingest failed"
                )
                reason = f"{what}: {type(exc).__name__}: {str(exc)[:300]}"
                culprit = Incoming(item.kind, item.topic, item.raw, error=reason)
                one = process_batch(self.engine, [culprit], self.limits, source="mqtt")
            for name in total.as_dict():
                setattr(total, name, getattr(total, name) + getattr(one, name))
        return total

    def _add_totals(self, result: BatchResult) -> None:
        self.stats.batches += 1
        for name, value in result.as_dict().items():
            setattr(self.stats.totals, name, getattr(self.stats.totals, name) + value)

    def run(
        self, stop: threading.Event, on_batch: Callable[[BatchResult], None] | None = None
    ) -> WorkerStats:
        """Consume until ``stop`` is set, then drain what is in hand and disconnect (the session persists)."""
        s = self.settings
        metrics_server = None
        if s.ingest_metrics_port:
            try:
                metrics_server, _thread = start_http_server(
                    s.ingest_metrics_port, addr=s.ingest_metrics_host, registry=self.metrics.registry
                )
            except OSError as exc:
                logger.warning(
                    "metrics port %s unavailable (%s): running without metrics", s.ingest_metrics_port, exc
                )
        logger.info(
            "ingest worker %s: broker %s, database %s", s.ingest_client_id, _safe_mqtt(s), _safe_db(s)
        )
        self.connect()
        try:
            while True:
                batch = self._next_batch(stop)
                if not batch:
                    if stop.is_set():
                        break
                    continue
                self.metrics.received.inc(len(batch))
                self.metrics.inflight.set(len(batch))
                if not self._process(batch, stop):
                    break  # stopped while the database was down: nothing acknowledged, the broker keeps it all
                self._ack(batch)
                self.metrics.inflight.set(0)
                if on_batch is not None:
                    on_batch(self.stats.totals)
                if stop.is_set():
                    break  # drained the batch in hand; what is still queued stays unacknowledged in the session
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            self.engine.dispose()
            if metrics_server is not None:
                metrics_server.shutdown()
        return self.stats


def _is_connection_error(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def _safe_mqtt(settings: Settings) -> str:
    host, port, tls, _user, _password = mqtt_endpoint(settings.mqtt_url.get_secret_value())
    return f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"


def _safe_db(settings: Settings) -> str:
    return safe_url(settings.sqlalchemy_url)
