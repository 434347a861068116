"""``pzone dataset seed``: a local training dataset in a minute or two, through the platform's real intake.

It fills the embedded platform (``$PZONE_DATA_DIR``, default ``.pzone`` at the project root, where `dvc repro`
reads it) the way the demo's first round does: the local stack on free ports (embedded broker, migrations, ingest,
a simulated fleet, the API), a wait until the fleet has every class, ``--photos`` photos of devices at rest at
their true tilt with the demo's class-balanced pick, uploaded through the API, a wait for the readings around the
last photos; then the stack stops and the labels are refreshed (platform work, with params.yaml's ``labels``).
Unlike the demo (a 3 s label window), params.yaml labels with ±30 s: the fleet's poses last minutes and only a
device that has held its pose for the window is photographed
(:class:`~pzone_stack.photosim.photographer.PoseClock`), so nine photos in ten get a label.
Run again, it adds photos. It never touches real services: PZONE_DATABASE_URL, S3, Redis or MQTT set is refused.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from pzone.cli.common import console, fail, stop_on_signals
from pzone.tilt import TILT_CLASSES

if TYPE_CHECKING:
    from pzone.labels import LabelStats

# Variables that would point the stack at real services; the seed fills the embedded platform only.
EXTERNAL = ("PZONE_DATABASE_URL", "PZONE_S3_BUCKET", "PZONE_REDIS_URL", "PZONE_MQTT_URL")
ZONE = "zone-seed"
READING_RATE_HZ = 2.0
# Poses last minutes (the demo's fleet changes every few tens of seconds and labels with a 3 s window): a device
# photographed after holding its pose for params.yaml's window_s mostly holds it for window_s more, so its photo
# gets a label (about nine in ten), while 16 devices still lean and fall within seconds of the start.
SEED_TILT_OPTIONS = {
    "fall_rate_per_h": 15.0,
    "lean_rate_per_h": 15.0,
    "mean_fallen_s": 300.0,
    "mean_leaning_s": 300.0,
}
EVERY_CLASS_TIMEOUT_S = 120.0
SETTLE_MARGIN_S = 2.0  # beyond the label window: the last readings reach the database


@dataclass(frozen=True)
class SeedPlan:
    photos: int
    devices: int
    seed: int
    photo_size: tuple[int, int]
    interval_s: float


@dataclass
class SeedResult:
    uploaded: int = 0
    failed: int = 0
    stats: LabelStats | None = None  # the refresh: every stored photo, earlier runs' too
    seconds: float = 0.0
    interrupted: bool = False  # stopped by a signal before the plan was done


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` → (width, height), each 64–4096 pixels; ValueError otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"--photo-size must look like 480x360, got {text!r}")
    width, height = (int(part) for part in parts)
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise ValueError(f"--photo-size must be 64 to 4096 pixels each way, got {text!r}")
    return width, height


def external_services(env: dict[str, str]) -> list[str]:
    return [name for name in EXTERNAL if env.get(name)]


def seed_platform(
    plan: SeedPlan, *, project: Path, data_dir: Path, stop: threading.Event, out: Console
) -> SeedResult:
    """Fill the embedded platform in ``data_dir`` with ``plan.photos`` photos and refresh its labels with the
    ``labels`` params of ``project``'s params.yaml. RuntimeError when the stack cannot start."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pzone.settings import CoreSettings
    from pzone_ingest.settings import Settings as IngestSettings
    from pzone_pipelines.retrain.refresh import project_label_params, refresh_platform_labels
    from pzone_stack.local_stack import (
        FleetSpec,
        embedded_broker_settings,
        free_port,
        scoped_environment,
        start_local_stack,
    )
    from pzone_stack.photosim.client import ApiClient
    from pzone_stack.photosim.photographer import (
        PoseClock,
        Thresholds,
        photograph_round,
        pick_by_class,
        wait_for_fleet,
    )

    label_params = project_label_params(project)
    thresholds = Thresholds(label_params.upright_max_deg, label_params.fallen_min_deg)
    result = SeedResult()
    started = time.monotonic()
    broker_port, api_port = free_port(), free_port()
    with scoped_environment({**os.environ, "PZONE_DATA_DIR": str(data_dir)}):
        ingest = IngestSettings(**embedded_broker_settings(broker_port), ingest_metrics_port=0)
        fleet = FleetSpec(ZONE, plan.devices, READING_RATE_HZ, seed=plan.seed, tilt_options=SEED_TILT_OPTIONS)
        with out.status("starting the local stack…"):
            stack = start_local_stack(ingest, [fleet], stop=stop, broker_port=broker_port, api_port=api_port)
        try:
            with ApiClient(f"http://127.0.0.1:{api_port}") as client:
                client.signup_random()
                # Photos of devices that have held their pose for the label window: their labels see one pose.
                poses = PoseClock(stack.tilt_models, thresholds)
                hold_s = label_params.window_s
                with out.status(f"waiting for a device of every class to hold still for {hold_s:g} s…"):
                    ready = wait_for_fleet(
                        client,
                        stack.tilt_models,
                        stop,
                        lambda: poses.held(hold_s),
                        every_class_s=EVERY_CLASS_TIMEOUT_S + hold_s,
                    )
                if not ready and not stop.is_set():
                    out.print(
                        "[yellow]not every class is in the fleet yet: photographing what there is[/yellow]"
                    )
                with Progress(
                    TextColumn("photos"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=out,
                    transient=True,
                ) as progress:
                    task = progress.add_task("photos", total=plan.photos)
                    result.uploaded, result.failed = photograph_round(
                        client,
                        stack.tilt_models,
                        ZONE,
                        plan.photos,
                        rng=np.random.default_rng(plan.seed),
                        interval_s=plan.interval_s,
                        size=plan.photo_size,
                        stop=stop,
                        pick=pick_by_class(thresholds, poses=poses, hold_s=hold_s),
                        thresholds=thresholds,
                        on_shot=lambda _shot: progress.advance(task),
                    )
            settle = label_params.window_s + SETTLE_MARGIN_S
            with out.status(f"waiting {settle:g} s for the readings around the last photos…"):
                stop.wait(settle)
        finally:
            result.interrupted = stop.is_set()  # before the stack's own stop sets it
            with out.status("stopping the local stack…"):
                stack.stop()
    url = CoreSettings(data_dir=data_dir).sqlalchemy_url
    with out.status("refreshing the labels…"):
        result.stats = refresh_platform_labels(url, label_params)
    result.seconds = time.monotonic() - started
    return result


def report(result: SeedResult, data_dir: Path, out: Console) -> None:
    stats = result.stats
    assert stats is not None, "seed_platform refreshes the labels before it returns"
    failed = f" ({result.failed} failed)" if result.failed else ""
    out.print(
        f"seeded {result.uploaded} photos{failed} into {escape(str(data_dir))} in {result.seconds:.0f} s"
    )
    counts = ", ".join(f"{name} {stats.labels.get(name, 0)}" for name in TILT_CLASSES)
    out.print(
        f"labeled photos by class (params.yaml labels): {counts} — {stats.labeled} of {stats.photos} stored "
        "photos (earlier seeds included)"
    )
    missing = [name for name in TILT_CLASSES if not stats.labels.get(name)]
    if missing:
        out.print(
            f"[yellow]no {', '.join(missing)} photo labeled yet[/yellow]: run it again (it adds photos) or with "
            "more --photos"
        )
    out.print("next: [bold]uv run dvc repro[/bold] (at the repository root)")


def seed(
    photos: Annotated[int, typer.Option(min=1, max=100_000, help="Photos to take and upload.")] = 150,
    devices: Annotated[
        int, typer.Option(min=3, max=200, help="Simulated devices (scooters) of the fleet.")
    ] = 16,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed of the fleet and the photos.")] = 0,
    photo_size: Annotated[str, typer.Option(help="Photo size, WIDTHxHEIGHT.")] = "480x360",
    interval_s: Annotated[
        float, typer.Option(min=0.0, max=60.0, help="Seconds between two photos (each is one upload).")
    ] = 0.2,
    project: Annotated[
        Path, typer.Option(help="Repository root (its params.yaml has the label params); default: here.")
    ] = Path("."),
) -> None:
    """Fill the embedded platform ($PZONE_DATA_DIR, default .pzone here) with rendered photos of a simulated fleet
    and the readings that label them, through the real intake; then `uv run dvc repro` trains on them.

    Takes a minute or two; run again, it adds photos. Real services (PZONE_DATABASE_URL, S3, Redis, MQTT) are
    refused: this seeds the embedded platform only.
    """
    from pzone.settings import CoreSettings

    external = external_services(dict(os.environ))
    if external:
        raise fail(
            f"`pzone dataset seed` fills the embedded platform only, and {', '.join(external)} point(s) at real "
            "services: unset them (or seed in a shell without them)"
        )
    try:
        size = parse_size(photo_size)
    except ValueError as exc:
        raise fail(escape(str(exc))) from None
    root = project.resolve()
    if not (root / "params.yaml").is_file():
        raise fail(f"no params.yaml in {escape(str(root))}: run from the repository root (or give --project)")
    data_dir = CoreSettings().data_dir
    data_dir = (data_dir if data_dir.is_absolute() else root / data_dir).resolve()
    plan = SeedPlan(photos, devices, seed_value, size, interval_s)
    console.print(
        f"seeding {escape(str(data_dir))}: {photos} photos of {devices} simulated devices, {size[0]}x{size[1]}"
    )
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        result = seed_platform(plan, project=root, data_dir=data_dir, stop=stop, out=console)
    except RuntimeError as exc:
        raise fail(escape(f"the local stack did not start: {exc}")) from None
    report(result, data_dir, console)
    if result.interrupted:
        raise typer.Exit(130)
