"""End-to-end ingest throughput: MQTT QoS 1 messages in, committed rows in PostgreSQL out.

Three consumers are measured in one run, each against its own fresh database and its own private Mosquitto:

- ``worker``: :class:`pzone_ingest.mqtt_worker.IngestWorker` (MQTT v5, shared subscription, batches, manual acks);
- ``seed``: the Lambda path, one ``pzone_ingest.handler.handler(event)`` call (one INSERT, one commit) per message,
  called synchronously from a paho subscriber that acknowledges each message after the handler returns;
- ``raw``: a paho subscriber that only parses the JSON and acknowledges it: the ceiling for a Python consumer.

Method (see benchmarks/README.md): the consumer's persistent session and QoS 1 subscription are created first, a
separate publisher process then publishes all N messages and waits for every PUBACK while the consumer is offline
(the broker queues them for its session), and only then is the consumer started. The clock runs from the
consumer's start until it has committed N rows (confirmed by a SQL count), so the figure is consumer throughput,
not publisher speed. Afterwards SQL checks that no (device_id, seq) is missing or duplicated.

    uv run python benchmarks/ingest.py --quick     # about 30 s on a 2-core machine
    uv run python benchmarks/ingest.py             # longer, more messages

Progress goes to stderr; the last line on stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support without PYTHONPATH=.
    sys.path.insert(0, str(ROOT))

ZONE_ID = "bench-zone"
# The scale-out setting of ingest_shared_group (several workers split the stream).
SHARED_GROUP = "pzone-ingest"
CONSUMER_SUBSCRIPTION = "pzone/#"  # the worker's SUBSCRIPTION
SESSION_EXPIRY_S = 3600
PUBLISH_WINDOW = 10_000  # QoS 1 messages the publisher keeps unacknowledged

# Like tests.support.services.MOSQUITTO_CONF, but without persistence: the benchmark never restarts the broker, and
# a full autosave every second of a queue of 10^5 messages would steal CPU from the consumer being measured.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 5000000
max_inflight_messages 1000
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
"""

QUICK = {"worker": 40_000, "seed": 1_500, "raw": 40_000, "devices": 50, "timeout": 20.0}
FULL = {"worker": 200_000, "seed": 10_000, "raw": 200_000, "devices": 200, "timeout": 300.0}


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


console = _console()


def log(message: str) -> None:
    console.log(message)


# --- services -----------------------------------------------------------------------------------------------------
@dataclass
class Broker:
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        from tests.support.services import free_port, wait_port

        self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port, dir=self.workdir))
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def cpu_seconds(self) -> float:
        return _proc_cpu_seconds(self.process.pid) if self.process else 0.0

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _proc_cpu_seconds(pid: int) -> float:
    """user + system CPU of one process (Linux /proc), 0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of each postgres process on this machine (the shared server): backends, WAL writer, ..."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = _proc_cpu_seconds(int(entry.name))
    return found


class CpuMeter:
    """CPU used between start() and the first stop() by this process, the broker and PostgreSQL.

    stop() is called as soon as the consumer has committed N rows, before it disconnects: a backend that exits
    takes its CPU figure with it. PostgreSQL is counted per process, so backends that come or go do not skew it.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.result: dict[str, float] | None = None

    def start(self) -> None:
        self._start = (time.process_time(), self.broker.cpu_seconds(), _postgres_cpu())

    def stop(self) -> None:
        if self.result is not None:
            return
        process, broker, postgres = self._start
        now = _postgres_cpu()
        self.result = {
            "consumer_process_cpu_s": round(time.process_time() - process, 2),
            "broker_cpu_s": round(self.broker.cpu_seconds() - broker, 2),
            "postgres_cpu_s": round(sum(cpu - postgres.get(pid, 0.0) for pid, cpu in now.items()), 2),
        }


@contextlib.contextmanager
def fresh_database(migrate: bool) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, libpq URL) of a new database on the shared PostgreSQL, dropped afterwards."""
    from tests.support.services import create_database, drop_database

    name, url = create_database()
    try:
        if migrate:
            from pzone.migrations import upgrade

            upgrade(url)
        yield url, url.replace("postgresql+psycopg://", "postgresql://", 1)
    finally:
        drop_database(name)


# --- MQTT helpers -------------------------------------------------------------------------------------------------
def _v5_client(client_id: str, *, manual_ack: bool = False) -> Any:
    import paho.mqtt.client as mqtt

    return mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )


def _connect_properties(receive_maximum: int | None = None) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def precreate_session(port: int, client_id: str, subscription: str) -> None:
    """Connect with a persistent session, subscribe QoS 1, disconnect: the broker now queues for this session."""
    client = _v5_client(client_id)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", port, clean_start=False, properties=_connect_properties())
    client.loop_start()
    try:
        client.subscribe(subscription, qos=1)
        if not subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {subscription!r}")
    finally:
        client.disconnect()
        client.loop_stop()


def _publisher_main(port: int, devices: int, per_device: int, window: int, out: Any) -> None:
    """Runs in a separate process: publish everything QoS 1, at most ``window`` unacknowledged, wait for all PUBACKs.

    The window is ours, not paho's: with paho's own max_inflight > 0 every PUBACK walks all outstanding messages
    (``Client._update_inflight``), which is quadratic and made a 20,000-message publish take 12 s. So paho's limit
    is off (0) and a semaphore keeps ``window`` messages in flight.
    """
    import paho.mqtt.client as mqtt

    from tests.support.mqtt import fleet_messages

    messages = fleet_messages(ZONE_ID, devices, per_device)
    acked = 0
    all_acked = threading.Event()
    slots = threading.BoundedSemaphore(window)

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        acked += 1
        slots.release()
        if acked == len(messages):
            all_acked.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{os.getpid()}")
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    ok = True
    for message in messages:
        if not slots.acquire(timeout=60):
            ok = False
            break
        client.publish(message.topic, message.payload, qos=1)
    ok = ok and all_acked.wait(600)
    seconds = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    out.put({"published": len(messages), "acked": acked, "ok": ok, "seconds": seconds, "window": window})


def publish_in_subprocess(port: int, devices: int, per_device: int, window: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=_publisher_main, args=(port, devices, per_device, window, out))
    process.start()
    result = out.get(timeout=900)
    process.join(30)
    if not result["ok"]:
        raise RuntimeError(f"publisher got {result['acked']} of {result['published']} PUBACKs")
    return dict(result)


# --- verification -------------------------------------------------------------------------------------------------
def verify_rows(pg_url: str, devices: int, per_device: int) -> dict[str, int]:
    import psycopg

    expected = devices * per_device
    with psycopg.connect(pg_url) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq)) FROM sensor_readings"
        ).fetchone()  # type: ignore[misc]
        (missing,) = conn.execute(
            """
            SELECT count(*) FROM generate_series(0, %(devices)s - 1) AS d, generate_series(1, %(per)s) AS s
            WHERE NOT EXISTS (
                SELECT 1 FROM sensor_readings r
                WHERE r.device_id = 'dev-' || lpad(d::text, 3, '0') AND r.seq = s
            )
            """,
            {"devices": devices, "per": per_device},
        ).fetchone()  # type: ignore[misc]
        (dead,) = conn.execute("SELECT count(*) FROM ingest_dead_letters").fetchone()  # type: ignore[misc]
    return {
        "expected": expected,
        "rows": rows,
        "distinct": distinct,
        "lost": missing,
        "duplicated": rows - distinct,
        "unexpected": distinct - (expected - missing),
        "dead_letters": dead,
    }


def count_rows(pg_url: str) -> int:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()  # type: ignore[misc]
    return int(n)


class Finish:
    """Set by a consumer from its commit path when it has committed N rows; remembers when."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at: float | None = None
        self.failed = False

    def mark(self) -> None:
        if not self.event.is_set():
            self.at = time.perf_counter()
            self.event.set()

    def fail(self) -> None:
        self.failed = True
        self.event.set()


def wait_for_rows(pg_url: str, n: int, finish: Finish, deadline: float) -> tuple[bool, float]:
    """Wait for the consumer to report N committed rows, then confirm with a SQL count.

    Returns (reached, end time). The consumers report from their commit path, so the end time is the commit of
    the last row rather than a polling tick; should the SQL count still fall short, SQL is polled until it does.
    """
    reported = finish.event.wait(max(0.0, deadline - time.perf_counter()))
    if reported and finish.at is not None and count_rows(pg_url) >= n:
        return True, finish.at
    while not finish.failed and time.perf_counter() < deadline:
        if count_rows(pg_url) >= n:
            return True, time.perf_counter()
        time.sleep(0.05)
    return False, time.perf_counter()


# --- consumers ----------------------------------------------------------------------------------------------------
@dataclass
class ModeResult:
    mode: str
    n: int
    seconds: float
    reached: bool
    committed: int
    check: dict[str, int]
    publish: dict[str, Any]
    cpu: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Plan:
    devices: int
    timeout: float
    batch_size: int | None
    batch_wait_ms: int | None
    max_inflight: int | None
    shared_group: str
    profile_dir: Path | None
    profile_clock: str = "cpu"


def _worker_settings(plan: Plan, db_url: str, mqtt_url: str, client_id: str) -> Any:
    from pzone_ingest.settings import Settings

    overrides: dict[str, Any] = {}
    if plan.batch_size is not None:
        overrides["ingest_batch_size"] = plan.batch_size
    if plan.batch_wait_ms is not None:
        overrides["ingest_batch_max_wait_ms"] = plan.batch_wait_ms
    if plan.max_inflight is not None:
        overrides["ingest_max_inflight"] = plan.max_inflight
    return Settings(
        database_url=db_url,
        mqtt_url=mqtt_url,
        mqtt_protocol="5",
        ingest_client_id=client_id,
        ingest_shared_group=plan.shared_group,
        ingest_metrics_port=0,
        **overrides,
    )


def _subscription(plan: Plan) -> str:
    return (
        f"$share/{plan.shared_group}/{CONSUMER_SUBSCRIPTION}" if plan.shared_group else CONSUMER_SUBSCRIPTION
    )


def _profiled(target: Callable[..., Any], path: Path, clock: str) -> Callable[..., Any]:
    """``target`` under cProfile, timed by this thread's CPU time ("cpu") or by the wall clock ("wall")."""

    def run(*args: Any, **kwargs: Any) -> Any:
        profile = cProfile.Profile(time.thread_time if clock == "cpu" else time.perf_counter)
        try:
            return profile.runcall(target, *args, **kwargs)
        finally:
            profile.dump_stats(str(path))

    return run


def consume_worker(
    plan: Plan, n: int, db_url: str, pg_url: str, broker: Broker, meter: CpuMeter
) -> dict[str, Any]:
    from pzone_ingest.mqtt_worker import IngestWorker

    settings = _worker_settings(plan, db_url, broker.url, "bench-worker")
    finish = Finish()
    stop = threading.Event()
    failure: list[BaseException] = []

    def on_batch(totals: Any) -> None:
        if totals.inserted >= n:
            finish.mark()

    started = time.perf_counter()
    worker = IngestWorker(settings)
    run = worker.run
    if plan.profile_dir is not None:
        # cProfile sees one thread: profile the batch thread and paho's network thread separately.
        client = worker._client
        client._thread_main = _profiled(
            client._thread_main, plan.profile_dir / "worker-mqtt-thread.pstats", plan.profile_clock
        )
        run = _profiled(worker.run, plan.profile_dir / "worker-batch-thread.pstats", plan.profile_clock)

    def target() -> None:
        try:
            run(stop, on_batch)
        except BaseException as exc:
            failure.append(exc)
            finish.fail()

    thread = threading.Thread(target=target, name="ingest-worker")
    thread.start()
    reached, end = wait_for_rows(pg_url, n, finish, started + plan.timeout)
    meter.stop()
    stop.set()
    thread.join(60)
    if failure:
        raise RuntimeError("the worker failed") from failure[0]
    registry = worker.metrics.registry
    batch_sum = registry.get_sample_value("pzone_ingest_batch_seconds_sum") or 0.0
    batches = worker.stats.batches
    return {
        "reached": reached,
        "seconds": end - started,
        "extra": {
            "batches": batches,
            "mean_batch_size": round(worker.stats.totals.received / batches, 1) if batches else 0,
            "batch_size_setting": settings.ingest_batch_size,
            "batch_max_wait_ms": settings.ingest_batch_max_wait_ms,
            "receive_maximum": settings.ingest_max_inflight,
            "process_batch_seconds_total": round(batch_sum, 3),
            "mean_process_batch_ms": round(1000 * batch_sum / batches, 2) if batches else 0,
            "subscription": worker._subscription(),
        },
    }


def consume_seed(
    plan: Plan, n: int, db_url: str, pg_url: str, broker: Broker, meter: CpuMeter
) -> dict[str, Any]:
    """One handler call per message, as one Lambda invocation per message (warm container: the engine is reused)."""
    os.environ["PZONE_DATABASE_URL"] = db_url
    from pzone_ingest import handler as lambda_handler

    lambda_handler._runtime.cache_clear()
    finish = Finish()
    handled = inserted = 0
    errors: list[BaseException] = []

    def on_message(client: Any, _userdata: Any, message: Any) -> None:
        nonlocal handled, inserted
        try:
            _root, zone_id, device_id, _kind = message.topic.split("/")
            event = {
                **json.loads(message.payload),
                "zone_id": zone_id,
                "device_id": device_id,
                "received_at": int(time.time() * 1000),
            }
            summary = lambda_handler.handler(event)
        except BaseException as exc:  # an error action would keep the message: do not ack
            errors.append(exc)
            return
        client.ack(message.mid, message.qos)
        handled += 1
        inserted += summary["inserted"]
        if inserted >= n:
            finish.mark()

    started = time.perf_counter()
    client = _v5_client("bench-seed", manual_ack=True)
    client.on_message = on_message
    client.connect(
        "127.0.0.1", broker.port, clean_start=False, properties=_connect_properties(_receive_maximum(plan))
    )
    client.loop_start()
    try:
        reached, end = wait_for_rows(pg_url, n, finish, started + plan.timeout)
        meter.stop()
    finally:
        client.disconnect()
        client.loop_stop()
        engine, _limits = lambda_handler._runtime()
        engine.dispose()
        lambda_handler._runtime.cache_clear()
        os.environ.pop("PZONE_DATABASE_URL", None)
    if errors:
        log(f"[red]seed path: {len(errors)} handler errors, first: {errors[0]!r}")
    return {"reached": reached, "seconds": end - started, "extra": {"handler_errors": len(errors)}}


def consume_raw(plan: Plan, n: int, broker: Broker, meter: CpuMeter) -> dict[str, Any]:
    finish = Finish()
    keys: list[tuple[str, int]] = []

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        body = json.loads(message.payload)
        keys.append((body["device_id"], body["seq"]))
        if len(keys) >= n:
            finish.mark()

    started = time.perf_counter()
    client = _v5_client("bench-raw")  # QoS 1 acknowledged by paho when on_message returns
    client.on_message = on_message
    client.connect(
        "127.0.0.1", broker.port, clean_start=False, properties=_connect_properties(_receive_maximum(plan))
    )
    client.loop_start()
    reached = finish.event.wait(plan.timeout)
    meter.stop()
    end = finish.at if finish.at is not None else time.perf_counter()
    client.disconnect()
    client.loop_stop()
    distinct = len(set(keys))
    return {
        "reached": reached,
        "seconds": end - started,
        "check": {
            "expected": n,
            "rows": len(keys),
            "distinct": distinct,
            "lost": n - distinct,
            "duplicated": len(keys) - distinct,
        },
    }


def _receive_maximum(plan: Plan) -> int:
    if plan.max_inflight is not None:
        return plan.max_inflight
    from pzone_ingest.settings import Settings

    return int(Settings.model_fields["ingest_max_inflight"].default)


def run_mode(mode: str, n_requested: int, plan: Plan) -> ModeResult:
    per_device = max(1, math.ceil(n_requested / plan.devices))
    n = per_device * plan.devices
    workdir = Path(tempfile.mkdtemp(prefix=f"pzone-bench-{mode}-"))
    broker = Broker(workdir)
    broker.start()
    try:
        client_id = {"worker": "bench-worker", "seed": "bench-seed", "raw": "bench-raw"}[mode]
        with fresh_database(migrate=mode != "raw") as (db_url, pg_url):
            precreate_session(broker.port, client_id, _subscription(plan))
            log(f"[bold]{mode}[/]: publishing {n} QoS 1 messages from a separate process, consumer offline")
            publish = publish_in_subprocess(broker.port, plan.devices, per_device, window=PUBLISH_WINDOW)
            log(
                f"{mode}: broker acknowledged {publish['published']} messages in {publish['seconds']:.2f}s "
                f"({publish['published'] / publish['seconds']:.0f}/s); starting the consumer"
            )
            meter = CpuMeter(broker)
            meter.start()
            if mode == "worker":
                outcome = consume_worker(plan, n, db_url, pg_url, broker, meter)
            elif mode == "seed":
                outcome = consume_seed(plan, n, db_url, pg_url, broker, meter)
            else:
                outcome = consume_raw(plan, n, broker, meter)
            meter.stop()
            assert meter.result is not None
            cpu = meter.result
            if mode == "raw":
                check = outcome["check"]
                committed = check["distinct"]
            else:
                check = verify_rows(pg_url, plan.devices, per_device)
                committed = check["distinct"]
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result = ModeResult(
        mode=mode,
        n=n,
        seconds=outcome["seconds"],
        reached=outcome["reached"],
        committed=committed,
        check=check,
        publish=publish,
        cpu=cpu,
        extra=outcome.get("extra", {}),
    )
    colour = "green" if result.reached and check["lost"] == 0 and check["duplicated"] == 0 else "red"
    log(
        f"[{colour}]{mode}: {result.committed}/{n} in {result.seconds:.2f}s = {result.rate:,.0f} msg/s; "
        f"lost {check['lost']}, duplicated {check['duplicated']}[/]  cpu {cpu}"
    )
    return result


# --- report -------------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    with contextlib.suppress(Exception):
        import paho.mqtt

        versions["paho_mqtt"] = paho.mqtt.__version__
    with contextlib.suppress(Exception):
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5).stdout
        versions["mosquitto"] = out.splitlines()[0].split()[-1]
    with contextlib.suppress(Exception):
        import psycopg

        from tests.support.services import SHARED_PG_ADMIN

        with psycopg.connect(SHARED_PG_ADMIN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            versions["postgresql"] = str(row[0]) if row else "?"
            row = conn.execute("SHOW synchronous_commit").fetchone()
            versions["postgresql_synchronous_commit"] = str(row[0]) if row else "?"
    return versions


def summarise(results: dict[str, ModeResult], plan: Plan, quick: bool, wall: float) -> dict[str, Any]:
    def rate(mode: str) -> float | None:
        return round(results[mode].rate, 1) if mode in results else None

    worker, seed, raw = rate("worker"), rate("seed"), rate("raw")
    lost = sum(results[m].check["lost"] for m in ("worker", "seed") if m in results)
    duplicated = sum(results[m].check["duplicated"] for m in ("worker", "seed") if m in results)
    worker_vs_seed = round(worker / seed, 2) if worker and seed else None
    worker_vs_raw = round(worker / raw, 3) if worker and raw else None
    summary: dict[str, Any] = {
        "worker_msgs_per_s": worker,
        "seed_path_msgs_per_s": seed,
        "raw_consumer_msgs_per_s": raw,
        "worker_vs_seed": worker_vs_seed,
        "worker_vs_raw": worker_vs_raw,
        "lost": lost,
        "duplicated": duplicated,
        "n": {m: r.n for m, r in results.items()},
        "all_reached": all(r.reached for r in results.values()),
        "targets": {
            "worker_ge_10x_seed": worker_vs_seed is not None and worker_vs_seed >= 10,
            "worker_ge_60pct_raw": worker_vs_raw is not None and worker_vs_raw >= 0.6,
            "no_loss_no_duplicates": lost == 0 and duplicated == 0,
        },
        "shared_subscription": bool(plan.shared_group),
        "subscription": _subscription(plan),
        "receive_maximum": _receive_maximum(plan),
        "publish_window": PUBLISH_WINDOW,
        "broker_persistence": False,
        "devices": plan.devices,
        "quick": quick,
        "machine_cores": os.cpu_count(),
        "wall_s": round(wall, 1),
        "modes": {
            m: {
                "msgs_per_s": round(r.rate, 1),
                "seconds": round(r.seconds, 3),
                "reached": r.reached,
                "committed": r.committed,
                "check": r.check,
                "publish_msgs_per_s": round(r.publish["published"] / r.publish["seconds"], 1),
                "cpu": r.cpu,
                **r.extra,
            }
            for m, r in results.items()
        },
        "versions": _versions(),
    }
    if "raw" in results:
        summary["raw_lost"] = results["raw"].check["lost"]
        summary["raw_duplicated"] = results["raw"].check["duplicated"]
    if "worker" in results:
        summary["batch_size"] = results["worker"].extra.get("batch_size_setting")
        summary["worker_mean_batch_size"] = results["worker"].extra.get("mean_batch_size")
    return summary


def print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="P-ZONE ingest: end-to-end committed messages per second")
    for column in ("mode", "n", "seconds", "msgs/s", "lost", "dup", "consumer CPU s", "postgres CPU s"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    for mode, data in summary["modes"].items():
        table.add_row(
            mode,
            str(data["check"]["expected"]),
            f"{data['seconds']:.2f}",
            f"{data['msgs_per_s']:,.0f}",
            str(data["check"]["lost"]),
            str(data["check"]["duplicated"]),
            str(data["cpu"]["consumer_process_cpu_s"]),
            str(data["cpu"]["postgres_cpu_s"]),
        )
    console.print(table)
    console.print(
        f"worker/seed = {summary['worker_vs_seed']}x (target >= 10), "
        f"worker/raw = {summary['worker_vs_raw']} (target >= 0.6), "
        f"lost = {summary['lost']}, duplicated = {summary['duplicated']} (target 0, 0)"
    )


def print_profile(profile_dir: Path, top: int = 25) -> None:
    for name in ("worker-batch-thread.pstats", "worker-mqtt-thread.pstats"):
        path = profile_dir / name
        if path.exists():
            console.rule(f"{name} (tottime)")
            stats = pstats.Stats(str(path), stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(top)
            console.rule(f"{name} (cumulative)")
            stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run, under 45 s on 2 cores")
    parser.add_argument(
        "--modes", default="worker,seed,raw", help="comma-separated subset of worker,seed,raw"
    )
    parser.add_argument("--n-worker", type=int, help="messages for the worker")
    parser.add_argument("--n-seed", type=int, help="messages for the seed (Lambda-per-message) path")
    parser.add_argument("--n-raw", type=int, help="messages for the raw JSON consumer")
    parser.add_argument("--devices", type=int, help="devices the messages are spread over")
    parser.add_argument("--timeout", type=float, help="per-consumer limit in seconds")
    parser.add_argument("--batch-size", type=int, help="worker ingest_batch_size (default: its setting)")
    parser.add_argument("--batch-wait-ms", type=int, help="worker ingest_batch_max_wait_ms")
    parser.add_argument("--max-inflight", type=int, help="Receive Maximum of every consumer")
    parser.add_argument(
        "--shared-group", default=SHARED_GROUP, help="shared-subscription group; '' for a plain subscription"
    )
    parser.add_argument("--profile", type=Path, help="cProfile the worker's two threads into this folder")
    parser.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: each thread's CPU time (where the GIL-bound work goes); wall: includes waiting",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    preset = QUICK if args.quick else FULL
    sizes = {
        "worker": args.n_worker or preset["worker"],
        "seed": args.n_seed or preset["seed"],
        "raw": args.n_raw or preset["raw"],
    }
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(sizes)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        devices=args.devices or int(preset["devices"]),
        timeout=args.timeout or float(preset["timeout"]),
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_inflight=args.max_inflight,
        shared_group=args.shared_group,
        profile_dir=args.profile,
        profile_clock=args.profile_clock,
    )
    log(
        f"P-ZONE ingest benchmark ({'quick' if args.quick else 'full'}): modes {modes}, "
        f"n {[sizes[m] for m in modes]}, {plan.devices} devices, {os.cpu_count()} cores, "
        f"subscription {_subscription(plan)!r}"
    )
    started = time.perf_counter()
    results = {mode: run_mode(mode, sizes[mode], plan) for mode in modes}
    summary = summarise(results, plan, args.quick, time.perf_counter() - started)
    print_table(summary)
    if args.profile is not None:
        print_profile(args.profile)
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
