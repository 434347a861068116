"""The platform on one machine, in one process: broker, migrations, ingest, simulated fleets, the API and its worker.

`pzone up` and `pzone demo` both start it through :class:`LocalStack`, so the local stack is wired in one place.
Each part runs in a thread of this process; :meth:`LocalStack.stop` ends them in an order that loses nothing the
fleet published: the fleets flush first, then ingest commits what it holds, then the API and the broker go.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pzone_stack.broker import EmbeddedBroker

API_START_TIMEOUT_S = 30.0
PHOTO_WORKER_THREADS = 2


@dataclass(frozen=True)
class FleetSpec:
    """One zone of simulated sensors (the firmware's logic on the real wire format)."""

    zone: str
    devices: int
    rate_hz: float
    seed: int = 0
    duration_s: float = 10.0**9
    faulty_ratio: float = 0.0
    tilt_options: Mapping[str, float] | None = None


@dataclass
class LocalStack:
    """What ``start`` wired; ``tilt_models`` holds every simulated device's true tilt, by device id."""

    stop_event: threading.Event
    ingest_settings: Any
    broker: EmbeddedBroker | None = None
    ingest_worker: Any = None
    api_server: Any = None
    photo_worker: Any = None
    api_port: int | None = None
    tilt_models: dict[str, Any] = field(default_factory=dict)
    _fleet_threads: list[threading.Thread] = field(default_factory=list)
    _ingest_thread: threading.Thread | None = None

    @property
    def mqtt_url(self) -> str:
        return str(self.ingest_settings.mqtt_url.get_secret_value())

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._fleet_threads:
            thread.join(timeout=30)
        if self._ingest_thread is not None:
            self._ingest_thread.join(timeout=60)
        if self.api_server is not None:
            self.api_server.should_exit = True
        if self.photo_worker is not None:
            self.photo_worker.stop(graceful=True)
        if self.broker is not None:
            self.broker.stop()


def embedded_broker_settings(broker_port: int) -> dict[str, Any]:
    """Ingest's settings against the embedded broker (amqtt: MQTT 3.1.1 only, no shared subscriptions)."""
    return {
        "mqtt_url": f"mqtt://127.0.0.1:{broker_port}",
        "mqtt_protocol": "3.1.1",
        "ingest_shared_group": "",
    }


@contextmanager
def scoped_environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` as this process's whole environment while the block runs (every Settings() in the stack's threads
    reads it); the previous one restored after."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def uses_external_broker() -> bool:
    """PZONE_MQTT_URL set: the stack uses that broker instead of starting the embedded one."""
    return "PZONE_MQTT_URL" in os.environ


def start_local_stack(
    ingest_settings: Any,
    fleets: Sequence[FleetSpec],
    *,
    stop: threading.Event,
    broker_port: int | None,
    api_port: int | None,
) -> LocalStack:
    """Start the parts (``broker_port`` None: a broker runs already; ``api_port`` None: no API) and return once the
    API answers and every fleet runs. ``ingest_settings`` is pzone_ingest's Settings; a failure stops what started
    and raises RuntimeError."""
    from pzone.migrations import upgrade
    from pzone_ingest.mqtt_worker import IngestWorker

    stack = LocalStack(stop, ingest_settings, api_port=api_port)
    ingest_settings.data_dir.mkdir(parents=True, exist_ok=True)
    if broker_port is not None:
        stack.broker = EmbeddedBroker("127.0.0.1", broker_port)
        try:
            stack.broker.start()
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(str(exc)) from exc
    upgrade(ingest_settings.sqlalchemy_url)
    stack.ingest_worker = IngestWorker(ingest_settings)
    stack._ingest_thread = _thread(stack.ingest_worker.run, "ingest", stop)
    started = [_start_fleet(stack, spec, ingest_settings.data_dir / "fleet") for spec in fleets]
    if api_port is not None:
        stack.api_server, stack.photo_worker = _start_api(api_port)
    api_up = api_port is None or wait_until(lambda: port_open(api_port), API_START_TIMEOUT_S, stop)
    if not api_up or not all(event.wait(API_START_TIMEOUT_S) for event in started):
        stack.stop()
        raise RuntimeError(f"the API (port {api_port}) or the fleet did not start")
    return stack


def _start_fleet(stack: LocalStack, spec: FleetSpec, state_dir: Path) -> threading.Event:
    from pzone_firmware.fleet import run_fleet

    started = threading.Event()

    def on_start(models: dict[str, Any]) -> None:
        stack.tilt_models.update(models)
        started.set()

    def run() -> None:
        try:
            run_fleet(
                stack.mqtt_url,
                spec.devices,
                spec.rate_hz,
                spec.duration_s,
                spec.zone,
                seed=spec.seed,
                faulty_ratio=spec.faulty_ratio,
                stop_event=stack.stop_event,
                state_dir=state_dir,
                tilt_options=dict(spec.tilt_options) if spec.tilt_options else None,
                on_start=on_start,
            )
        finally:
            started.set()  # a fleet that failed to start must not keep start_local_stack waiting

    stack._fleet_threads.append(_thread(run, f"fleet-{spec.zone}"))
    return started


def _start_api(port: int) -> tuple[Any, Any]:
    """The API and web UI in a thread (plain HTTP on localhost: no Secure cookies); with a Redis queue, a photo
    worker in threads of this process too (embedded, the API processes photos itself)."""
    import uvicorn

    from pzone.db.engine import make_engine
    from pzone.storage import object_store_from_settings
    from pzone_api.main import create_app
    from pzone_api.processing import photo_queue_from_settings
    from pzone_api.settings import Settings as ApiSettings

    settings = ApiSettings(cookie_secure=False)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    _thread(server.run, "api")
    consumer = None
    if not settings.processing_in_api:
        queue = photo_queue_from_settings(
            settings, make_engine(settings.sqlalchemy_url), object_store_from_settings(settings)
        )
        consumer = queue.consumer(PHOTO_WORKER_THREADS, in_thread=True, shutdown_timeout=30)
        consumer.start()
    return server, consumer


def _thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def wait_until(
    check: Callable[[], bool], timeout_s: float, stop: threading.Event, step_s: float = 0.5
) -> bool:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        stop.wait(step_s)
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
