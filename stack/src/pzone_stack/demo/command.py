"""``pzone demo``: the whole circle on one machine, in rounds, on embedded defaults (see :mod:`.rounds`)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pzone_stack.demo.plan import make_plan

# Loggers whose per-request INFO lines would bury the progress display (warnings still show).
QUIET = ("httpx", "huey", "alembic", "pzone.api", "pzone.ingest", "amqtt", "transitions", "pzone_firmware")

_console = Console()


def command(
    rounds: Annotated[
        int, typer.Option(min=1, max=50, help="Rounds of photos → retrain → live accuracy.")
    ] = 3,
    photos_per_round: Annotated[
        int | None,
        typer.Option(
            min=10, max=100_000, help="Photos per round (round 1 takes enough to train); default by preset."
        ),
    ] = None,
    devices: Annotated[
        int, typer.Option(min=3, max=200, help="Simulated devices (scooters) of the fleet.")
    ] = 16,
    epochs: Annotated[
        int | None, typer.Option(min=1, max=500, help="Training epochs; default by preset.")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Minute-scale preset: fewer, smaller photos, a smaller, shorter training."
        ),
    ] = False,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="After the rounds, keep serving until Ctrl-C.")
    ] = False,
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the API and web UI.")] = 8000,
    model_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the model tier.")] = 3000,
    broker_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the embedded broker.")] = 11883,
    project: Annotated[
        Path, typer.Option(help="Repository root (dvc.yaml, params.yaml, the stages' code); default: here.")
    ] = Path("."),
    seed: Annotated[int, typer.Option(help="Random seed of the fleet and the photos.")] = 0,
) -> None:
    """The whole circle on one machine: fleet → ingest → photos → labels → dvc repro → model tier → live accuracy.

    Runs on embedded defaults in $PZONE_DATA_DIR/demo (emptied first); Ctrl-C stops everything cleanly.
    """
    from pzone.settings import CoreSettings

    repo = project.resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / "params.yaml").is_file():
        _console.print(
            f"[red]error:[/red] no dvc.yaml/params.yaml in {escape(str(repo))}: run from the repository root"
        )
        raise typer.Exit(2)
    plan = make_plan(
        rounds=rounds, photos_per_round=photos_per_round, devices=devices, epochs=epochs, quick=quick
    )
    data_dir = CoreSettings().data_dir.resolve()
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).getEffectiveLevel()))
    stop = threading.Event()
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if interrupted:  # a second Ctrl-C: no more waiting
            raise KeyboardInterrupt
        interrupted.append(signum)
        _console.print(f"{signal.Signals(signum).name}: stopping…")
        stop.set()

    # Here, not at the top: the rounds load the API's and the simulator's modules, which every other `pzone`
    # command would otherwise wait for.
    from pzone_stack.demo.rounds import Ports, run_demo

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        results = run_demo(
            plan,
            repo=repo,
            data_dir=data_dir,
            ports=Ports(api_port, model_port, broker_port),
            seed=seed,
            keep_running=keep_running,
            stop=stop,
            console=_console,
        )
    except RuntimeError as exc:
        _console.print(f"[red]demo failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    _console.print(f"demo finished in {time.monotonic() - started:.0f}s")
    if interrupted and not keep_running:
        raise typer.Exit(130)
    if not results or all(r.outcome.startswith("failed") for r in results):
        raise typer.Exit(1)
