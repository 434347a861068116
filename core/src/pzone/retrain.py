"""`pzone retrain`: run the training circle (`dvc repro`) once, exclusively, and roll the model tier.

Pure parts: :func:`should_retrain` (the ``--auto`` decision), :func:`failed_stage`, :func:`expected_version`.
The rest is thin I/O: the lock (:func:`exclusive`), the pipeline subprocess (:func:`run_pipeline`), the counts
(:func:`new_labeled_photos`, :func:`champion_live_accuracy`) and the wait for the model tier
(:func:`wait_for_version`). Heavy imports (dvc, httpx, Pillow) stay inside the functions: the core base install
(the ingest Lambda's) imports nothing of this module.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import Field
from rich.console import Console
from rich.markup import escape

from pzone.settings import CoreSettings

# Exit codes of `pzone retrain` (0: done, promoted or kept, or nothing to do).
EXIT_PIPELINE_FAILED = 1
EXIT_ROLLOUT_TIMEOUT = 4
EXIT_BUSY = 75  # EX_TEMPFAIL: another retrain is running, try again later

LOCK_FILE = "retrain.lock"
# pg_try_advisory_lock key (a bigint every replica derives the same way): sha256("pzone-retrain")[:8].
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"pzone-retrain").digest()[:8], "big", signed=True)

DECISION = Path("reports/decision.json")
PACKAGE = Path("reports/package.json")
MANIFEST = Path("data/snapshot/manifest.json")
SKIPPED = Path("data/snapshot/skipped.json")


_console = Console()


class Settings(CoreSettings):
    """Settings of `pzone retrain` (and of the demo's retrain loop)."""

    retrain_min_new_labeled: int = Field(
        200,
        ge=1,
        description="--auto retrains once this many labeled photos arrived since the last training.",
    )
    retrain_min_live_accuracy: float = Field(
        0.8,
        ge=0,
        le=1,
        description="--auto retrains when the champion's live accuracy falls below this (and new photos exist).",
    )
    retrain_min_scored: int = Field(
        30, ge=1, description="Scored predictions the live accuracy needs before it can trigger a retrain."
    )
    retrain_rollout_timeout_s: float = Field(
        120.0, ge=0, description="How long retrain waits for the model tier to serve a promoted model."
    )
    model_tier_url: str | None = Field(
        None, description="Base URL of the model tier; unset: retrain does not wait for the rollout."
    )
    mlflow_model_name: str = Field("pzone-tilt", description="Registered model (the tier's version prefix).")


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock (this machine's lock file, or the database's advisory lock)."""


# --- the decision (pure) ----------------------------------------------------------------------------------------


def should_retrain(
    new_labeled_photos: int, live_accuracy: float | None, settings: Settings
) -> tuple[bool, str]:
    """Whether ``--auto`` retrains, and why. ``live_accuracy`` is the champion's (None: no model, or too few scored
    predictions to trust). Low accuracy alone does not retrain: without a new labeled photo the pipeline would have
    nothing new to learn from (and `dvc repro` would skip every stage)."""
    need = settings.retrain_min_new_labeled
    bar = settings.retrain_min_live_accuracy
    if new_labeled_photos >= need:
        return True, f"{new_labeled_photos} new labeled photos since the last training (threshold {need})"
    if live_accuracy is not None and live_accuracy < bar:
        if new_labeled_photos > 0:
            return True, (
                f"live accuracy {live_accuracy:.3f} below {bar:.3f}, {new_labeled_photos} new labeled photos"
            )
        return (
            False,
            f"live accuracy {live_accuracy:.3f} below {bar:.3f}, but no new labeled photo to learn from",
        )
    accuracy = "not measured yet" if live_accuracy is None else f"{live_accuracy:.3f} (bar {bar:.3f})"
    return False, f"{new_labeled_photos} new labeled photos (threshold {need}); live accuracy {accuracy}"


# --- the lock ---------------------------------------------------------------------------------------------------


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres"))


@contextmanager
def exclusive(data_dir: Path, database_url: str) -> Iterator[None]:
    """Hold the retrain lock: an flock on ``data_dir/retrain.lock`` and, on PostgreSQL, a session advisory lock, so
    that retrains on two machines (or pods) sharing one database exclude each other too. Raises :class:`RetrainBusy`
    at once, never waits. Both go with the process if it dies."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
            raise RetrainBusy(f"another retrain is running on this machine ({path}, {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        if is_postgres(database_url):
            with _advisory_lock(database_url):
                yield
        else:
            yield
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from pzone.db.engine import make_engine

    # Its own connection, kept open for the whole retrain: a session-level advisory lock lives as long as it.
    engine = make_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar():
                raise RetrainBusy(
                    "another retrain is running against this database (PostgreSQL advisory lock)"
                )
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
    finally:
        engine.dispose()


# --- the pipeline -----------------------------------------------------------------------------------------------

_RUNNING = re.compile(r"Running stage '([^']+)'")
_FAILED = re.compile(r"failed to reproduce '([^']+)'")


def failed_stage(lines: Iterator[str] | list[str]) -> str | None:
    """The stage DVC names in its failure line, else the last stage it started."""
    started = None
    for line in lines:
        if found := _FAILED.search(line):
            return found.group(1)
        if found := _RUNNING.search(line):
            started = found.group(1)
    return started


@dataclass
class PipelineRun:
    returncode: int
    stages_run: list[str]
    tail: list[str]  # the last lines of the output, for the failure message
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def failed_stage(self) -> str | None:
        return None if self.ok else failed_stage(self.tail)


def pipeline_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `dvc repro`: this interpreter's scripts first on PATH (the stages run ``python -m``)."""
    env = dict(os.environ if base is None else base)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    return env


def run_pipeline(
    project: Path,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
    tail_lines: int = 60,
) -> PipelineRun:
    """`dvc repro` in ``project``, its output (stdout and stderr) streamed line by line to ``on_line``."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=project,
        env=pipeline_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )
    tail: deque[str] = deque(maxlen=tail_lines)
    stages: list[str] = []
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            if found := _RUNNING.search(line):
                stages.append(found.group(1))
            on_line(line)
            if should_stop():
                process.terminate()
                break
        returncode = process.wait()
    except BaseException:  # Ctrl-C, or the caller's callback failed: the child must not outlive us
        process.terminate()
        process.wait(timeout=30)
        raise
    finally:
        process.stdout.close()
    return PipelineRun(returncode, stages, list(tail), time.monotonic() - started)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def expected_version(package: Mapping[str, Any]) -> str | None:
    """The ``model_version`` the tier answers with once it serves what ``reports/package.json`` imported."""
    tag = str(package.get("model_tag") or "")
    version = (package.get("labels") or {}).get("mlflow_version")
    if not tag or not version:
        return None
    return f"{tag.split(':', 1)[0]}/{version}"


@dataclass
class Outcome:
    """What one retrain did. ``trained`` is false when DVC found nothing new (every stage skipped)."""

    pipeline: PipelineRun
    trained: bool = False
    promoted: bool = False
    decision: dict[str, Any] = field(default_factory=dict)
    package: dict[str, Any] = field(default_factory=dict)

    @property
    def champion_version(self) -> str | None:
        return expected_version(self.package)

    @property
    def test_macro_f1(self) -> float | None:
        value = self.decision.get("challenger_macro_f1")
        return float(value) if isinstance(value, int | float) else None


def retrain_once(
    project: Path,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Run the pipeline and read what it decided; the caller holds :func:`exclusive`."""
    before = read_json(project / DECISION)
    run = run_pipeline(project, env=env, on_line=on_line, should_stop=should_stop)
    outcome = Outcome(run)
    if not run.ok:
        return outcome
    decision = read_json(project / DECISION)
    outcome.decision = decision
    outcome.package = read_json(project / PACKAGE)
    # `register` rewrites decision.json with a new time whenever it runs; unchanged: nothing was trained.
    outcome.trained = "register" in run.stages_run and decision != before
    outcome.promoted = outcome.trained and decision.get("promote") is True
    return outcome


# --- the model tier ---------------------------------------------------------------------------------------------


def probe_image() -> bytes:
    """A tiny JPEG for asking the model tier which model answers."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def served_version(tier_url: str, timeout_s: float = 5.0) -> str | None:
    """The model version the tier answers /classify with (it has no version route); None when it is not up."""
    import httpx

    try:
        response = httpx.post(
            tier_url.rstrip("/") + "/classify",
            files=[("images", ("probe.jpg", probe_image(), "image/jpeg"))],
            timeout=timeout_s,
        )
        response.raise_for_status()
        version = response.json()["results"][0].get("model_version")
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return str(version) if version else None


SERVING_METRIC = "pzone_model_serving"
_SERVING_SAMPLE = re.compile(
    rf'^{SERVING_METRIC}{{(?:[^}}]*,)?model_version="((?:[^"\\]|\\.)*)"[^}}]*}} (\S+)$'
)


def serving_workers(tier_url: str, timeout_s: float = 5.0) -> dict[str, float] | None:
    """How many of the tier's worker processes answer with each model version (its ``pzone_model_serving`` gauge,
    summed over live workers by BentoML's multiprocess metrics); None when the tier is not up or has no such gauge.

    One /classify probe reaches one worker; with several workers, only this says whether all of them swapped."""
    import httpx

    try:
        response = httpx.get(tier_url.rstrip("/") + "/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    counts: dict[str, float] = {}
    for line in response.text.splitlines():
        match = _SERVING_SAMPLE.match(line)
        if match:
            version = match[1].replace('\\"', '"').replace("\\\\", "\\")
            try:
                counts[version] = counts.get(version, 0.0) + float(match[2])
            except ValueError:
                continue
    return counts or None


def _rolled_out(counts: dict[str, float], version: str) -> str | None:
    """``version`` when every live worker answers with it, else a version some worker still answers with."""
    others = [v for v, n in sorted(counts.items(), key=lambda item: -item[1]) if n > 0 and v != version]
    if counts.get(version, 0) > 0 and not others:
        return version
    return others[0] if others else None


def wait_for_version(
    tier_url: str,
    version: str,
    timeout_s: float,
    *,
    interval_s: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> str | None:
    """Poll the tier until every worker answers with ``version`` (their watchers swap the model in); returns the
    version it served last (``version`` on success). A tier without the ``pzone_model_serving`` gauge is asked
    with a /classify probe."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        counts = serving_workers(tier_url)
        seen = _rolled_out(counts, version) if counts is not None else served_version(tier_url)
        if seen == version or time.monotonic() >= deadline or should_stop():
            return seen
        time.sleep(interval_s)


# --- what --auto looks at ---------------------------------------------------------------------------------------


def snapshot_photo_ids(project: Path) -> set[str]:
    """Photo ids the last snapshot took in (images and recorded skips)."""
    ids: set[str] = set()
    manifest = read_json(project / MANIFEST)
    for item in manifest.get("images", []):
        ids.update(item.get("photo_ids", []))
    try:
        skipped = json.loads((project / SKIPPED).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        skipped = []
    for item in skipped if isinstance(skipped, list) else []:
        ids.update(item.get("photo_ids", []))
    return ids


def project_params(project: Path) -> dict[str, Any]:
    import yaml  # dvc's dependency: present wherever `dvc repro` can run

    try:
        data = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    except OSError:
        return {}
    return data if isinstance(data, dict) else {}


def new_labeled_photos(session: Any, project: Path) -> int:
    """Labeled photos in the database that the last snapshot did not take in. Refreshes the sensor labels first with
    the project's ``labels`` params (the same rows the snapshot stage writes); the caller commits."""
    from pzone.labels import LabelParams, labeled_photos, refresh_labels

    params = project_params(project)
    refresh_labels(session, LabelParams.from_mapping(params.get("labels") or {}))
    min_quality = float((params.get("snapshot") or {}).get("min_quality", 0.0))
    known = snapshot_photo_ids(project)
    return sum(photo.photo_id not in known for photo in labeled_photos(session, min_quality=min_quality))


def champion_live_accuracy(session: Any, project: Path, min_scored: int) -> tuple[str | None, float | None]:
    """The serving champion's version (from the last package record) and its live accuracy (None below
    ``min_scored`` scored predictions)."""
    from pzone.accuracy import live_accuracy

    version = expected_version(read_json(project / PACKAGE))
    if version is None:
        return None, None
    report = live_accuracy(session, model_version=version)
    for item in report["versions"]:
        if item["model_version"] == version and item["scored"] >= min_scored:
            return version, item["accuracy"]
    return version, None


# --- the command ------------------------------------------------------------------------------------------------


def command(
    project: Annotated[
        Path, typer.Option(help="Project root holding dvc.yaml and params.yaml; default: the current folder.")
    ] = Path("."),
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Retrain only when enough new labeled photos arrived (PZONE_RETRAIN_MIN_NEW_LABELED) or the "
            "champion's live accuracy fell below PZONE_RETRAIN_MIN_LIVE_ACCURACY.",
        ),
    ] = False,
    every: Annotated[
        float, typer.Option(min=0.0, help="With --auto: check again every this many seconds (0: once).")
    ] = 0.0,
    wait: Annotated[
        bool,
        typer.Option(help="After a promotion, wait until the model tier (PZONE_MODEL_TIER_URL) serves it."),
    ] = True,
) -> None:
    """Run `dvc repro` (snapshot → … → package) once, never two at a time, and wait for the model tier to roll.

    Exit codes: 0 done (promoted, kept, nothing new or nothing to do), 1 a stage failed, 2 bad settings or project,
    4 promoted but the model tier did not serve it in time, 75 another retrain is running.
    """
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        _console.print(f"[red]error:[/red] invalid settings:\n{escape(str(exc))}")
        raise typer.Exit(2) from None
    root = project.resolve()
    if not (root / "dvc.yaml").is_file():
        _console.print(f"[red]error:[/red] no dvc.yaml in {escape(str(root))}: run from the repository root")
        raise typer.Exit(2)
    if every and not auto:
        _console.print("[red]error:[/red] --every needs --auto")
        raise typer.Exit(2)
    # The stages run in the project: a relative data dir means the project's, for them and for us alike.
    if not settings.data_dir.is_absolute():
        settings = settings.model_copy(update={"data_dir": root / settings.data_dir})
    env = {**os.environ, "PZONE_DATA_DIR": str(settings.data_dir)}
    while True:
        code = _retrain_step(root, settings, env, auto=auto, wait=wait)
        if not every or code == EXIT_PIPELINE_FAILED:
            raise typer.Exit(code)
        time.sleep(every)


def _retrain_step(root: Path, settings: Settings, env: dict[str, str], *, auto: bool, wait: bool) -> int:
    try:
        with exclusive(settings.data_dir, settings.sqlalchemy_url):
            if auto:
                go, reason = _auto_decision(root, settings)
                _console.print(f"{'retraining' if go else 'not retraining'}: {escape(reason)}")
                if not go:
                    return 0
            outcome = retrain_once(root, env=env, on_line=lambda line: print(line, flush=True))
    except RetrainBusy as exc:
        _console.print(f"[yellow]retrain refused:[/yellow] {escape(str(exc))}")
        return EXIT_BUSY
    return _report(outcome, settings, wait)


def _auto_decision(root: Path, settings: Settings) -> tuple[bool, str]:
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine

    engine = make_engine(settings.sqlalchemy_url)
    try:
        with Session(engine) as session:
            new = new_labeled_photos(session, root)
            session.commit()  # the refreshed sensor labels
            version, accuracy = champion_live_accuracy(session, root, settings.retrain_min_scored)
    finally:
        engine.dispose()
    go, reason = should_retrain(new, accuracy, settings)
    return go, f"{reason}; champion {version or 'none yet'}"


def _report(outcome: Outcome, settings: Settings, wait: bool) -> int:
    run = outcome.pipeline
    if not run.ok:
        errors = [line for line in run.tail if "ERROR" in line or "error" in line.lower()]
        detail = errors[-1] if errors else (run.tail[-1] if run.tail else "no output")
        _console.print(
            f"[red]retrain failed[/red] in stage {escape(run.failed_stage or '?')} (dvc exit {run.returncode}): "
            f"{escape(detail.strip())}"
        )
        return EXIT_PIPELINE_FAILED
    version = outcome.champion_version
    if not outcome.trained:
        _console.print(f"nothing new: every stage skipped; the champion stays {version or 'none'}")
        return 0
    f1 = outcome.test_macro_f1
    scores = f"test macro-F1 {f1:.3f}" if f1 is not None else "no test score"
    if not outcome.promoted:
        _console.print(
            f"kept: {escape(str(outcome.decision.get('reason', '')))} ({scores}, champion "
            f"{outcome.decision.get('champion_macro_f1')}); the champion stays {version or 'none'}"
        )
        return 0
    _console.print(f"[green]promoted[/green] {version} ({scores}) in {run.seconds:.0f}s")
    if not wait or version is None:
        return 0
    if not settings.model_tier_url:
        _console.print(
            "no PZONE_MODEL_TIER_URL: not waiting for a model tier (on Kubernetes the CronJob sets it to the "
            "model tier's Service)"
        )
        return 0
    with _console.status(f"waiting for {settings.model_tier_url} to serve {version}…"):
        seen = wait_for_version(settings.model_tier_url, version, settings.retrain_rollout_timeout_s)
    if seen != version:
        _console.print(
            f"[yellow]the model tier at {settings.model_tier_url} still answers with {seen or 'nothing'} after "
            f"{settings.retrain_rollout_timeout_s:g}s[/yellow] (is its watcher on? PZONE_MODEL_WATCH_INTERVAL_S)"
        )
        return EXIT_ROLLOUT_TIMEOUT
    _console.print(f"the model tier at {settings.model_tier_url} now serves {version}")
    return 0
