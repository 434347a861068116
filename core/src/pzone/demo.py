"""`pzone demo`: the whole circle on one machine, in rounds.

The embedded broker, the ingest worker, the API and web UI (photos processed in-process), a simulated fleet and
virtual clients photographing it; each round uploads photos, retrains through the same code as `pzone retrain`
(`dvc repro` on a copy of the project under ``$PZONE_DATA_DIR/demo-project``, with demo-sized params, so the
user's ``params.yaml`` is never touched), promotes or keeps, and measures the live accuracy of the model that
answered during the round on that round's photos. The model tier (`bentoml serve`, a subprocess) starts once a
first model exists; until then verdicts stay pending and the API's background retry fills them in.

The platform of the demo lives in ``$PZONE_DATA_DIR/demo`` (SQLite, objects, MLflow, BentoML store) and starts
empty on every run: the rounds then mean what they say. Heavy imports are inside the functions.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger("pzone.demo")
_console = Console()

ZONE = "zone-demo"
CLASSES = ("upright", "tilted", "fallen")
# Loggers whose per-request INFO lines would bury the progress display (warnings still show).
QUIET = ("httpx", "huey", "alembic", "pzone.api", "pzone.ingest", "amqtt", "transitions", "pzone_firmware")
# Variables of the user's shell that would point the demo at real services: it runs on embedded defaults only.
EXTERNAL = ("PZONE_DATABASE_URL", "PZONE_S3_BUCKET", "PZONE_REDIS_URL", "PZONE_MQTT_URL", "PZONE_MODEL_TAG")


# --- sizing (pure) ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int
    first_round_photos: int  # round 1 must hold enough of every class to train, validate and test
    photos_per_round: int
    devices: int
    epochs: int
    image_size: int
    photo_size: tuple[int, int]
    photo_interval_s: float  # between two photos: the photographing runs faster than real time


def make_plan(
    *, rounds: int, photos_per_round: int | None, devices: int, epochs: int | None, quick: bool
) -> Plan:
    per_round = photos_per_round or (80 if quick else 150)
    return Plan(
        rounds=rounds,
        first_round_photos=max(per_round, 150 if quick else 300),
        photos_per_round=per_round,
        devices=devices,
        epochs=epochs or (8 if quick else 20),
        image_size=64 if quick else 96,
        photo_size=(320, 240) if quick else (480, 360),
        photo_interval_s=0.12 if quick else 0.2,
    )


# The fleet's tilt behaviour: every state lasts tens of seconds on average, so that a photo's device rarely moves
# within the label window around it; all three classes common (upright ~40 %).
TILT_OPTIONS = {
    "fall_rate_per_h": 60.0,
    "lean_rate_per_h": 75.0,
    "mean_fallen_s": 45.0,
    "mean_leaning_s": 45.0,
}
READING_RATE_HZ = 2.0
SETTLED_DEG = 2.0  # a device within this of its pose's target angle is at rest
UPRIGHT_MAX_DEG, FALLEN_MIN_DEG = 20.0, 60.0  # the labels thresholds of params.yaml (the demo keeps them)


def demo_params(plan: Plan) -> dict[str, Any]:
    """Overrides of the project's params.yaml for the demo's copy. The label window is short because the fleet
    changes state every few tens of seconds (the default 30 s window would see most photos' objects move); the
    first model's bar is low so that round 1 always has something to serve."""
    return {
        "labels": {"window_s": 3},
        "prepare": {"image_size": plan.image_size, "val_fraction": 0.15, "test_fraction": 0.2},
        "train": {"epochs": plan.epochs, "batch_size": 32},
        "register": {"margin": 0.01, "min_macro_f1": 0.0},
    }


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class RoundResult:
    number: int
    photos: int = 0
    failed_uploads: int = 0
    labeled: int | None = None  # labeled photos in the round's training snapshot
    test_macro_f1: float | None = None
    outcome: str = "-"  # promoted | kept | no change | failed: <stage>
    serving: str | None = None  # the champion after the round
    live_version: str | None = None  # the model that answered during the round
    live_accuracy: float | None = None
    live_macro_f1: float | None = None
    live_scored: int = 0
    seconds: float = 0.0


def results_table(results: list[RoundResult]) -> Table:
    from rich.table import Table

    table = Table(title="P-ZONE demo: rounds")
    for name in (
        "round",
        "photos",
        "labeled",
        "test macro-F1",
        "promoted?",
        "serving after",
        "live accuracy",
    ):
        table.add_column(name, justify="right" if name not in ("promoted?", "serving after") else "left")
    for r in results:
        if r.live_accuracy is not None:
            live = f"{r.live_accuracy:.3f} of {r.live_scored} ({r.live_version})"
        elif r.live_version:
            live = f"n/a: nothing scored ({r.live_version})"
        else:
            live = "n/a: no model yet"
        table.add_row(
            str(r.number),
            f"{r.photos}" + (f" ({r.failed_uploads} failed)" if r.failed_uploads else ""),
            "-" if r.labeled is None else str(r.labeled),
            "-" if r.test_macro_f1 is None else f"{r.test_macro_f1:.3f}",
            r.outcome,
            r.serving or "-",
            live,
        )
    return table


# --- the demo's copy of the project ----------------------------------------------------------------------------


def make_project(repo: Path, root: Path, overrides: Mapping[str, Any]) -> Path:
    """A DVC project at ``root``: the repository's dvc.yaml, every source its stages depend on (not the pipeline's
    outputs) and params.yaml with ``overrides``; ``dvc init --no-scm``."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))
    shutil.copy(repo / "dvc.yaml", root / "dvc.yaml")
    outputs = {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in pipeline["stages"].values()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
    }
    for stage in pipeline["stages"].values():
        for dep in stage.get("deps", []):
            if any(dep == out or dep.startswith(f"{out}/") for out in outputs):
                continue
            source, target = repo / dep, root / dep
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(
                    source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif source.is_file():
                shutil.copy(source, target)
    params = merge(yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8")), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for args in (("init", "--no-scm", "-q", "-f"), ("config", "core.analytics", "false")):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True)
    return root


# --- processes --------------------------------------------------------------------------------------------------


SERVE = (sys.executable, "-m", "bentoml", "serve", "pzone_model.service:PZoneTilt")


class ModelTier:
    """`bentoml serve pzone_model.service:PZoneTilt` in its own process group (stopped as a whole)."""

    def __init__(self, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env, self.log_path = dict(env), log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*SERVE, "--host", "127.0.0.1", "--port", str(self.port)],
            env=self._env,
            cwd=self.log_path.parent,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C handling stops it; the terminal's SIGINT does not race us
        )
        log_file.close()

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


@dataclass
class Stack:
    """What runs for the whole demo (threads of this process); stopped by :meth:`stop`."""

    stop_event: threading.Event
    broker: Any = None
    api_server: Any = None
    threads: list[threading.Thread] = field(default_factory=list)
    tilt_models: dict[str, Any] = field(default_factory=dict)
    tier: ModelTier | None = None

    def stop(self) -> None:
        self.stop_event.set()
        if self.tier is not None:
            self.tier.stop()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.api_server is not None:
            self.api_server.should_exit = True
        if self.broker is not None:
            self.broker.stop()


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


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_stack(plan: Plan, *, broker_port: int, api_port: int, seed: int, stop: threading.Event) -> Stack:
    """Broker, migrations, ingest, fleet and API, each in a thread; returns once the API answers."""
    from pzone.broker import EmbeddedBroker
    from pzone.migrations import upgrade
    from pzone_api.main import create_app
    from pzone_api.settings import Settings as ApiSettings
    from pzone_firmware.fleet import run_fleet
    from pzone_ingest.settings import Settings as IngestSettings
    from pzone_ingest.worker import IngestWorker

    stack = Stack(stop)
    mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
    ingest_settings = IngestSettings(
        mqtt_url=mqtt_url, mqtt_protocol="3.1.1", ingest_shared_group="", ingest_metrics_port=0
    )
    upgrade(ingest_settings.sqlalchemy_url)
    stack.broker = EmbeddedBroker("127.0.0.1", broker_port)
    stack.broker.start()

    def add(target: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> None:
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=name, daemon=True)
        thread.start()
        stack.threads.append(thread)

    add(IngestWorker(ingest_settings).run, "ingest", stop)
    started = threading.Event()

    def on_start(models: dict[str, Any]) -> None:
        stack.tilt_models.update(models)
        started.set()

    add(
        run_fleet,
        "fleet",
        mqtt_url,
        plan.devices,
        READING_RATE_HZ,
        10.0**9,
        ZONE,
        seed=seed,
        stop_event=stop,
        state_dir=ingest_settings.data_dir / "fleet",
        tilt_options=TILT_OPTIONS,
        on_start=on_start,
    )
    import uvicorn

    app = create_app(ApiSettings(cookie_secure=False))  # plain HTTP on localhost
    stack.api_server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning")
    )
    threading.Thread(target=stack.api_server.run, name="api", daemon=True).start()
    if not wait_until(lambda: port_open(api_port), 30, stop) or not started.wait(30):
        stack.stop()
        raise RuntimeError(f"the API (port {api_port}) or the fleet did not start")
    return stack


def true_class(model: Any) -> str:
    from pzone.telemetry import classify_tilt

    tilt, _azimuth = model.current()
    return classify_tilt(tilt, UPRIGHT_MAX_DEG, FALLEN_MIN_DEG).value


def at_rest(model: Any) -> bool:
    """Whether the object has settled in its pose (a person photographs a scooter that lies, not one falling)."""
    return abs(float(getattr(model, "tilt", 0.0)) - float(getattr(model, "target", 0.0))) < SETTLED_DEG


def fleet_classes(models: Mapping[str, Any]) -> dict[str, list[str]]:
    """Devices at rest, by their true class now."""
    by_class: dict[str, list[str]] = {}
    for device_id in sorted(models):
        if at_rest(models[device_id]):
            by_class.setdefault(true_class(models[device_id]), []).append(device_id)
    return by_class


def pick_device(models: Mapping[str, Any], rng: Any) -> str | None:
    """A device to photograph: first a class, uniformly among those present in the fleet right now, then a device
    at rest in it. People photograph fallen and leaning scooters more than their share (they report them), and it
    keeps every class common in the training data whatever the fleet's proportions. None: everything moves."""
    by_class = fleet_classes(models)
    if not by_class:
        return None
    classes = sorted(by_class)
    members = by_class[classes[int(rng.integers(len(classes)))]]
    return members[int(rng.integers(len(members)))]


def photograph_round(
    client: Any,
    models: Mapping[str, Any],
    count: int,
    plan: Plan,
    rng: Any,
    stop: threading.Event,
    on_photo: Callable[[bool], None],
) -> tuple[int, int]:
    """``count`` photos of devices at their true tilt, uploaded through the API; (uploaded, failed)."""
    from datetime import UTC, datetime

    import httpx

    from pzone.photosim.client import ApiError, DeviceState, photograph

    uploaded = failed = 0
    next_at = time.monotonic()
    for _ in range(count):
        if stop.wait(max(0.0, next_at - time.monotonic())):
            break
        next_at = time.monotonic() + plan.photo_interval_s
        device_id = pick_device(models, rng) or sorted(models)[int(rng.integers(len(models)))]
        tilt, azimuth = models[device_id].current()
        state = DeviceState(device_id, ZONE, tilt, azimuth, datetime.now(UTC))
        try:
            client.upload(
                photograph(state, rng, size=plan.photo_size), device_id=device_id, taken_at=state.at
            )
        except (httpx.HTTPError, ApiError) as exc:
            failed += 1
            log.warning("upload failed: %s", exc)
            on_photo(False)
        else:
            uploaded += 1
            on_photo(True)
    return uploaded, failed


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


def measure_live(
    engine: Any, project: Path, since: Any, version: str
) -> tuple[float | None, float | None, int]:
    """(accuracy, macro-F1, scored) of ``version``'s predictions since ``since``, after refreshing the sensor labels
    (the snapshot stage did it already when the round trained; this covers a failed or skipped one)."""
    from sqlalchemy.orm import Session

    from pzone.accuracy import live_accuracy
    from pzone.labels import LabelParams, refresh_labels
    from pzone.retrain import project_params

    with Session(engine) as session:
        refresh_labels(session, LabelParams.from_mapping(project_params(project).get("labels") or {}))
        session.commit()
        report = live_accuracy(session, since=since, model_version=version)
    for item in report["versions"]:
        if item["model_version"] == version:
            return item["accuracy"], item["macro_f1"], int(item["scored"])
    return None, None, 0


def snapshot_labeled(project: Path) -> int | None:
    from pzone.retrain import MANIFEST, read_json

    manifest = read_json(project / MANIFEST)
    if not manifest:
        return None
    return sum(len(item.get("photo_ids", [])) for item in manifest.get("images", []))


# --- the run ----------------------------------------------------------------------------------------------------


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


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """The demo's settings for this process too (every Settings() in its threads reads them); restored after."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
    from datetime import UTC, datetime

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pzone.db.engine import make_engine
    from pzone.photosim.client import ApiClient
    from pzone.retrain import exclusive, retrain_once, served_version, wait_for_version

    platform, project = data_dir / "demo", data_dir / "demo-project"
    for folder in (platform, project):  # the demo's own folders: every run starts from nothing
        shutil.rmtree(folder, ignore_errors=True)
    (platform / "logs").mkdir(parents=True)
    env = demo_env(platform, ports)
    console.print(f"demo platform: {platform}; project copy: {project}")
    make_project(repo, project, demo_params(plan))
    results: list[RoundResult] = []
    with _environment(env):
        stack = start_stack(plan, broker_port=ports.broker, api_port=ports.api, seed=seed, stop=stop)
        tier = ModelTier(ports.model, env, platform / "logs" / "model-tier.log")
        engine = make_engine(f"sqlite:///{platform / 'pzone.db'}")
        client = ApiClient(f"http://127.0.0.1:{ports.api}")
        try:
            client.signup_random()
            known = lambda: {d["id"] for d in client.devices()}.issuperset(stack.tilt_models)  # noqa: E731
            if not wait_until(known, 60, stop):
                raise RuntimeError("the fleet's devices did not reach the API (ingest)")
            # The fleet starts upright: round 1 waits (briefly) until something fell and something leans.
            every_class = lambda: set(fleet_classes(stack.tilt_models)) == set(CLASSES)  # noqa: E731
            with console.status("waiting for the fleet to lean and fall…"):
                wait_until(every_class, 60, stop)
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
                    result = RoundResult(number)
                    results.append(result)
                    started = time.monotonic()
                    since = datetime.now(UTC)
                    result.live_version = served_version(tier.url) if stack.tier else None
                    count = plan.first_round_photos if number == 1 else plan.photos_per_round
                    task = progress.add_task(f"round {number}: photos", total=count, info="")

                    def on_photo(ok: bool, task: Any = task) -> None:
                        progress.advance(task)

                    result.photos, result.failed_uploads = photograph_round(
                        client, stack.tilt_models, count, plan, rng, stop, on_photo
                    )
                    stop.wait(4.0)  # the readings around the last photos reach the database
                    progress.update(task, description=f"round {number}: dvc repro", info="")
                    log_path = platform / "logs" / f"round-{number}.log"
                    with log_path.open("w", encoding="utf-8") as out, exclusive(platform, env_url(platform)):

                        def on_line(line: str, task: Any = task, out: Any = out) -> None:
                            out.write(line + "\n")
                            out.flush()
                            if "Running stage" in line:
                                progress.update(task, info=line.split("'")[1] if "'" in line else line)

                        outcome = retrain_once(project, env=env, on_line=on_line, should_stop=stop.is_set)
                    if not outcome.pipeline.ok:
                        stage = outcome.pipeline.failed_stage or "?"
                        result.outcome = f"failed: {stage}"
                        console.print(
                            f"[red]round {number}: dvc repro failed in {stage}[/red]; see {log_path}"
                        )
                    else:
                        result.outcome = (
                            "promoted" if outcome.promoted else "kept" if outcome.trained else "no change"
                        )
                        result.test_macro_f1 = outcome.test_macro_f1 if outcome.trained else None
                    result.labeled = snapshot_labeled(project)
                    if result.live_version:
                        result.live_accuracy, result.live_macro_f1, result.live_scored = measure_live(
                            engine, project, since, result.live_version
                        )
                    champion = outcome.champion_version if outcome.pipeline.ok else None
                    if champion and stack.tier is None:
                        progress.update(task, description=f"round {number}: model tier", info="starting")
                        tier.start()
                        stack.tier = tier
                    if champion and stack.tier is not None:
                        progress.update(task, description=f"round {number}: rollout", info=champion)
                        seen = wait_for_version(tier.url, champion, 180, should_stop=stop.is_set)
                        if seen != champion and not stop.is_set():
                            console.print(
                                f"[yellow]the model tier serves {seen or 'nothing'}, not {champion}[/yellow]; "
                                f"see {tier.log_path}"
                            )
                        # photos still pending (round 1's, taken before any model) get their verdict now
                        progress.update(task, info="verdicts for pending photos")
                        wait_until(lambda: pending_verdicts(engine) == 0, 60, stop)
                    result.serving = served_version(tier.url) if stack.tier else None
                    result.seconds = time.monotonic() - started
                    progress.update(task, description=f"round {number}: done", info=result.outcome)
            console.print(results_table(results))
            print_urls(console, ports, platform, project)
            if keep_running and not stop.is_set():
                console.print("serving until Ctrl-C (the fleet keeps publishing)")
                stop.wait()
        finally:
            client.close()
            engine.dispose()
            with console.status("stopping…"):
                stack.stop()
    return results


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


# --- the command ------------------------------------------------------------------------------------------------


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
