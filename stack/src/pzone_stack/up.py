"""``pzone up``: the platform on embedded defaults, with a simulated fleet and a live status board."""

from __future__ import annotations

import threading
import time
from typing import Annotated

import typer
from rich.markup import escape

from pzone.cli.common import console, fail, settings_or_fail, stop_on_signals
from pzone_stack.local_stack import (
    PHOTO_WORKER_THREADS,
    FleetSpec,
    LocalStack,
    embedded_broker_settings,
    start_local_stack,
    uses_external_broker,
)


def up(
    devices: Annotated[int, typer.Option(min=1, max=500, help="Simulated devices per zone.")] = 8,
    zones: Annotated[int, typer.Option(min=1, max=20, help="Number of simulated zones.")] = 2,
    rate: Annotated[float, typer.Option(min=0.05, max=20.0, help="Readings per second per device.")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="Seconds to run; 0 runs until Ctrl-C.")] = 0.0,
    faulty_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of extra faulty payloads.")
    ] = 0.02,
    broker_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the embedded broker.")] = 11883,
    api_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the API and web UI; 0: no API.")
    ] = 8000,
) -> None:
    """One machine, embedded defaults: broker + migrations + ingest + simulated fleet + API and web UI."""
    from pzone.db.engine import make_engine, safe_url
    from pzone_ingest.settings import Settings as IngestSettings
    from pzone_stack.status_board import StatusBoard

    external = uses_external_broker()
    settings = settings_or_fail(IngestSettings, **({} if external else embedded_broker_settings(broker_port)))
    fleets = [
        FleetSpec(
            f"zone-{z + 1}", devices, rate, seed=z, duration_s=duration or 10**9, faulty_ratio=faulty_ratio
        )
        for z in range(zones)
    ]
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        stack = start_local_stack(
            settings,
            fleets,
            stop=stop,
            broker_port=None if external else broker_port,
            api_port=api_port or None,
        )
    except RuntimeError as exc:
        raise fail(escape(str(exc))) from exc
    url = settings.sqlalchemy_url
    console.print(
        f"database: {safe_url(url)}; broker: {'embedded ' if stack.broker else ''}{_public_mqtt(stack)}"
    )
    if settings.ingest_metrics_port:
        console.print(f"ingest metrics: http://127.0.0.1:{settings.ingest_metrics_port}/metrics")
    _print_api(stack)
    board = StatusBoard(make_engine(url))
    deadline = time.monotonic() + duration if duration else None
    try:
        board.live(console, stop, deadline)
    finally:
        stack.stop()
    console.print(board.render())
    console.print(f"ingest: {stack.ingest_worker.stats.totals.as_dict()}")


def _print_api(stack: LocalStack) -> None:
    if stack.api_port is None:
        return
    if stack.photo_worker is not None:
        from pzone_api.settings import Settings as ApiSettings

        queue = ApiSettings().processing_queue_name
        console.print(f"photo worker: {PHOTO_WORKER_THREADS} threads on the Redis queue {queue!r}")
    console.print(
        f"web UI and API: http://127.0.0.1:{stack.api_port}/  (API docs: /docs; an operator for the dashboard: "
        "pzone user create --role operator --email you@example.com)"
    )


def _public_mqtt(stack: LocalStack) -> str:
    from pzone_ingest.settings import mqtt_endpoint

    host, port, tls, _user, _password = mqtt_endpoint(stack.mqtt_url)
    return f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"
