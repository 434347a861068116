"""``pzone ingest``: the MQTT ingest worker as a command (registered through the ``pzone.commands`` entry point)."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from pzone.cli.common import console, settings_or_fail, stop_on_signals


def register(app: typer.Typer) -> None:
    app.command()(ingest)


def ingest(
    client_id: Annotated[str | None, typer.Option(help="Stable MQTT client id (the session key).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus metrics port; 0 disables.")] = None,
) -> None:
    """Run the MQTT ingest worker: the same processing as the Lambda, batched, acknowledged after commit."""
    from pzone_ingest.mqtt_worker import IngestWorker
    from pzone_ingest.settings import Settings

    settings = settings_or_fail(Settings, ingest_client_id=client_id, ingest_metrics_port=metrics_port)
    stop = threading.Event()
    stop_on_signals(stop, grace_s=settings.ingest_stop_grace_s)
    worker = IngestWorker(settings)
    # The worker runs in its own thread so that signals only ever interrupt the main thread's idle wait.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # reported below, exit code 1
            errors.append(exc)

    thread = threading.Thread(target=run, name="ingest-worker")
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if errors:
        raise errors[0]
    stats = worker.stats
    console.print(f"ingest stopped after {stats.batches} batches: {stats.totals.as_dict()}")
