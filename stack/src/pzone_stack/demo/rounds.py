"""The demo's rounds: photos of the fleet → `dvc repro` (through `pzone retrain`'s code) → the model tier → live accuracy.

The platform of the demo lives in ``$PZONE_DATA_DIR/demo`` (SQLite, objects, MLflow, BentoML store) and starts empty
on every run, so the rounds mean what they say. The model tier starts once a first model exists; until then verdicts
stay pending and the API's background retry fills them in.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from pzone_stack.demo.model_tier import ModelTier
from pzone_stack.demo.plan import (
    READING_RATE_HZ,
    TILT_OPTIONS,
    ZONE,
    Plan,
    RoundResult,
    demo_params,
    results_table,
)
from pzone_stack.demo.project import make_project
from pzone_stack.local_stack import (
    FleetSpec,
    LocalStack,
    embedded_broker_settings,
    scoped_environment,
    start_local_stack,
    wait_until,
)
from pzone_stack.photosim.photographer import (
    Thresholds,
    fleet_classes,
    photograph_round,
    pick_by_class,
    wait_for_fleet,
)

# Variables of the user's shell that would point the demo at real services: it runs on embedded defaults only.
EXTERNAL = ("PZONE_DATABASE_URL", "PZONE_S3_BUCKET", "PZONE_REDIS_URL", "PZONE_MQTT_URL", "PZONE_MODEL_TAG")
SNAPSHOT_MANIFEST = Path("data/snapshot/manifest.json")


@dataclass(frozen=True)
class Ports:
    api: int
    model: int
    broker: int


def demo_env(data_dir: Path, ports: Ports) -> dict[str, str]:
    """The demo's own environment: its platform in ``data_dir``, embedded services, a fast model watcher."""
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    env.update(
        PZONE_DATA_DIR=str(data_dir),
        BENTOML_HOME=str(data_dir / "bentoml"),
        BENTOML_DO_NOT_TRACK="True",
        PZONE_MODEL_TIER_URL=f"http://127.0.0.1:{ports.model}",
        PZONE_MODEL_WATCH_INTERVAL_S="1",
        PZONE_VERDICT_RETRY_INTERVAL_S="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    return env


# --- measuring --------------------------------------------------------------------------------------------------


def pending_verdicts(engine: Any) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from pzone.db.models import Photo

    with Session(engine) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Photo)
                .where(Photo.status == "stored", Photo.verdict == "pending")
            )
            or 0
        )


def measure_live(engine: Any, since: datetime, version: str) -> tuple[float | None, float | None, int]:
    """(accuracy, macro-F1, scored) of ``version``'s predictions since ``since``, against the sensor labels the
    round's retrain refreshed with the project's ``labels`` params (before its pipeline, whether it trained, skipped
    or failed)."""
    from sqlalchemy.orm import Session

    from pzone.accuracy import live_accuracy

    with Session(engine) as session:
        report = live_accuracy(session, since=since, model_version=version)
    for item in report["versions"]:
        if item["model_version"] == version:
            return item["accuracy"], item["macro_f1"], int(item["scored"])
    return None, None, 0


def snapshot_labeled(project: Path) -> int | None:
    from pzone_pipelines.retrain import read_json

    manifest = read_json(project / SNAPSHOT_MANIFEST)
    if not manifest:
        return None
    return sum(len(item.get("photo_ids", [])) for item in manifest.get("images", []))


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class DemoRun:
    """One run's parts: the stack, the model tier (started once a model exists), the platform and the project."""

    plan: Plan
    stack: LocalStack
    tier: ModelTier
    engine: Any
    client: Any
    platform: Path
    project: Path
    env: dict[str, str]
    labels: dict[str, Any]
    stop: threading.Event
    tier_started: bool = False

    @property
    def thresholds(self) -> Thresholds:
        from pzone.labels import LabelParams

        params = LabelParams.from_mapping(self.labels)
        return Thresholds(params.upright_max_deg, params.fallen_min_deg)


def run_demo(
    plan: Plan,
    *,
    repo: Path,
    data_dir: Path,
    ports: Ports,
    seed: int,
    keep_running: bool,
    stop: threading.Event,
    console: Console,
) -> list[RoundResult]:
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pzone.db.engine import make_engine
    from pzone_ingest.settings import Settings as IngestSettings
    from pzone_pipelines.params import load_params
    from pzone_stack.photosim.client import ApiClient

    platform, project = data_dir / "demo", data_dir / "demo-project"
    for folder in (platform, project):  # the demo's own folders: every run starts from nothing
        shutil.rmtree(folder, ignore_errors=True)
    (platform / "logs").mkdir(parents=True)
    env = demo_env(platform, ports)
    console.print(f"demo platform: {platform}; project copy: {project}")
    make_project(repo, project, demo_params(plan))
    labels = load_params(project / "params.yaml").get("labels") or {}
    results: list[RoundResult] = []
    with scoped_environment(env):
        ingest = IngestSettings(**embedded_broker_settings(ports.broker), ingest_metrics_port=0)
        fleet = FleetSpec(ZONE, plan.devices, READING_RATE_HZ, seed=seed, tilt_options=TILT_OPTIONS)
        stack = start_local_stack(ingest, [fleet], stop=stop, broker_port=ports.broker, api_port=ports.api)
        run = DemoRun(
            plan,
            stack,
            ModelTier(ports.model, env, platform / "logs" / "model-tier.log"),
            make_engine(f"sqlite:///{platform / 'pzone.db'}"),
            ApiClient(f"http://127.0.0.1:{ports.api}"),
            platform,
            project,
            env,
            labels,
            stop,
        )
        try:
            _get_ready(run, console)
            rng = np.random.default_rng(seed)
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                for number in range(1, plan.rounds + 1):
                    if stop.is_set():
                        break
                    results.append(_play_round(run, number, rng, progress, console))
            console.print(results_table(results))
            print_urls(console, ports, platform, project)
            if keep_running and not stop.is_set():
                console.print("serving until Ctrl-C (the fleet keeps publishing)")
                stop.wait()
        finally:
            run.client.close()
            run.engine.dispose()
            with console.status("stopping…"):
                run.tier.stop()
                stack.stop()
    return results


def _get_ready(run: DemoRun, console: Console) -> None:
    """A signed-in client, every device known to the API, and (briefly) a fleet where something fell and leans."""
    run.client.signup_random()
    with console.status("waiting for the fleet to lean and fall…"):
        models = run.stack.tilt_models
        wait_for_fleet(
            run.client, models, run.stop, lambda: fleet_classes(models, run.thresholds), every_class_s=60
        )


def _play_round(run: DemoRun, number: int, rng: Any, progress: Any, console: Console) -> RoundResult:
    """Photos, then a retrain, then the live accuracy of the model that answered during the round."""
    from datetime import UTC

    from pzone_pipelines.retrain import served_version

    result = RoundResult(number)
    started = time.monotonic()
    since = datetime.now(UTC)
    result.live_version = served_version(run.tier.url) if run.tier_started else None
    count = run.plan.first_round_photos if number == 1 else run.plan.photos_per_round
    task = progress.add_task(f"round {number}: photos", total=count, info="")
    result.photos, result.failed_uploads = photograph_round(
        run.client,
        run.stack.tilt_models,
        ZONE,
        count,
        rng=rng,
        interval_s=run.plan.photo_interval_s,
        size=run.plan.photo_size,
        stop=run.stop,
        pick=pick_by_class(run.thresholds),
        thresholds=run.thresholds,
        on_shot=lambda _shot: progress.advance(task),
    )
    run.stop.wait(4.0)  # the readings around the last photos reach the database
    progress.update(task, description=f"round {number}: dvc repro", info="")
    _retrain(run, number, result, lambda info: progress.update(task, info=info), console)
    result.labeled = snapshot_labeled(run.project)
    if result.live_version:
        result.live_accuracy, result.live_macro_f1, result.live_scored = measure_live(
            run.engine, since, result.live_version
        )
    _roll_out(
        run,
        number,
        result,
        lambda description, info: progress.update(task, description=description, info=info),
        console,
    )
    result.serving = served_version(run.tier.url) if run.tier_started else None
    result.seconds = time.monotonic() - started
    progress.update(task, description=f"round {number}: done", info=result.outcome)
    return result


def _retrain(
    run: DemoRun, number: int, result: RoundResult, show: Callable[[str], None], console: Console
) -> None:
    """The round's label refresh and `dvc repro`, exactly as `pzone retrain` runs them (its lock included); the log
    to a file."""
    from pzone_pipelines.retrain import exclusive, retrain_once

    log_path = run.platform / "logs" / f"round-{number}.log"
    with log_path.open("w", encoding="utf-8") as out, exclusive(run.platform, env_url(run.platform)):

        def on_line(line: str) -> None:
            out.write(line + "\n")
            out.flush()
            if "Running stage" in line:
                show(line.split("'")[1] if "'" in line else line)

        outcome = retrain_once(
            run.project,
            database_url=env_url(run.platform),
            env=run.env,
            on_line=on_line,
            should_stop=run.stop.is_set,
        )
    if not outcome.pipeline.ok:
        stage = outcome.pipeline.failed_stage or "?"
        result.outcome = f"failed: {stage}"
        console.print(f"[red]round {number}: dvc repro failed in {stage}[/red]; see {log_path}")
    else:
        result.outcome = "promoted" if outcome.promoted else "kept" if outcome.trained else "no change"
        result.test_macro_f1 = outcome.test_macro_f1 if outcome.trained else None
    result.champion = outcome.champion_version if outcome.pipeline.ok else None


def _roll_out(
    run: DemoRun, number: int, result: RoundResult, show: Callable[[str, str], None], console: Console
) -> None:
    """Start the model tier with the first champion; then wait until it serves the round's champion and the
    photos still pending (round 1's, taken before any model) have their verdict."""
    from pzone_pipelines.retrain import wait_for_version

    champion = result.champion
    if not champion:
        return
    if not run.tier_started:
        show(f"round {number}: model tier", "starting")
        run.tier.start()
        run.tier_started = True
    show(f"round {number}: rollout", champion)
    seen = wait_for_version(run.tier.url, champion, 180, should_stop=run.stop.is_set)
    if seen != champion and not run.stop.is_set():
        console.print(
            f"[yellow]the model tier serves {seen or 'nothing'}, not {champion}[/yellow]; see {run.tier.log_path}"
        )
    show(f"round {number}: rollout", "verdicts for pending photos")
    wait_until(lambda: pending_verdicts(run.engine) == 0, 60, run.stop)


def env_url(platform: Path) -> str:
    return f"sqlite:///{platform / 'pzone.db'}"


def print_urls(console: Console, ports: Ports, platform: Path, project: Path) -> None:
    console.print(
        f"web UI: http://127.0.0.1:{ports.api}/   API docs: http://127.0.0.1:{ports.api}/docs   "
        f"model tier: http://127.0.0.1:{ports.model}/ (POST /classify)\n"
        f"training runs: uv run mlflow ui --backend-store-uri sqlite:///{platform / 'mlflow.db'}\n"
        f"the dashboard needs an operator: PZONE_DATA_DIR={platform} uv run pzone user create --role operator "
        f"--email you@example.com\n"
        f"the pipeline: cd {project} && PZONE_DATA_DIR={platform} uv run dvc metrics show"
    )
