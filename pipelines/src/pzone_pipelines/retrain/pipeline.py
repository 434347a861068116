"""One run of the training circle: the platform's labels refreshed, `dvc repro` in a project (it ends in a
proposal), then the promotion path (`pzone promote`, a child process) for a new proposal, both streamed, and what
was decided."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DECISION = Path("reports/decision.json")
PACKAGE = Path("reports/package.json")
PROPOSE_STAGE = (
    "propose"  # the pipeline's last stage: it ran, so there is a new model to take through the gate
)
PROMOTE_STEP = "promote"

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
    step: str | None = None  # what failed when it is not one of DVC's stages (the promotion)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def failed_stage(self) -> str | None:
        return None if self.ok else (self.step or failed_stage(self.tail))


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
    return stream(
        [sys.executable, "-m", "dvc", "repro"],
        project,
        env=env,
        on_line=on_line,
        should_stop=should_stop,
        tail_lines=tail_lines,
    )


def run_promotion(
    project: Path,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PipelineRun:
    """`pzone promote` for the run in the project's models/run.json: the promotion path, in the package that
    holds it (the trainer's image installs it), as a child process of the `pzone` command."""
    argv = [sys.executable, "-m", "pzone.cli", PROMOTE_STEP, "--project", str(project)]
    run = stream(argv, project, env=env, on_line=on_line, should_stop=should_stop)
    run.step = PROMOTE_STEP
    return run


def stream(
    argv: list[str],
    project: Path,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
    tail_lines: int = 60,
) -> PipelineRun:
    """``argv`` in ``project``, its output (stdout and stderr) streamed line by line to ``on_line``."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
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
    """What one retrain did. ``trained`` is false when DVC found nothing new (the pipeline proposed nothing)."""

    pipeline: PipelineRun  # `dvc repro`, or the promotion when that failed
    trained: bool = False
    promoted: bool = False
    decision: dict[str, Any] = field(default_factory=dict)
    package: dict[str, Any] = field(default_factory=dict)
    promotion: PipelineRun | None = None

    @property
    def champion_version(self) -> str | None:
        return expected_version(self.package)

    @property
    def test_macro_f1(self) -> float | None:
        value = self.decision.get("challenger_macro_f1")
        return float(value) if isinstance(value, int | float) else None

    @property
    def seconds(self) -> float:
        promotion = self.promotion.seconds if self.promotion and self.promotion is not self.pipeline else 0.0
        return self.pipeline.seconds + promotion


def retrain_once(
    project: Path,
    *,
    database_url: str,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Refresh the platform's sensor labels (the project's ``labels`` params; the snapshot stage only reads), run
    the pipeline, and when it proposed a new model, the promotion path; read what was decided. The caller holds
    :func:`exclusive`."""
    from pzone_pipelines.register import REFUSED_EXIT_CODE
    from pzone_pipelines.retrain.refresh import describe, project_label_params, refresh_platform_labels

    on_line(describe(refresh_platform_labels(database_url, project_label_params(project))))
    run = run_pipeline(project, env=env, on_line=on_line, should_stop=should_stop)
    outcome = Outcome(run)
    if run.ok and PROPOSE_STAGE in run.stages_run:
        promotion = run_promotion(project, env=env, on_line=on_line, should_stop=should_stop)
        outcome.promotion = promotion
        if promotion.returncode not in (0, REFUSED_EXIT_CODE):
            promotion.stages_run = [*run.stages_run, PROMOTE_STEP]
            outcome.pipeline = promotion
            return outcome
        outcome.trained = True
    if not run.ok:
        return outcome
    outcome.decision = read_json(project / DECISION)
    outcome.package = read_json(project / PACKAGE)
    promoted = outcome.promotion is not None and outcome.promotion.ok
    outcome.promoted = promoted and outcome.decision.get("promote") is True
    return outcome
