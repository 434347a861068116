"""One run of the training circle: the platform's labels refreshed, `dvc repro` in a project, its output streamed,
and what it decided."""

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
    database_url: str,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Refresh the platform's sensor labels (the project's ``labels`` params; the snapshot stage only reads), run
    the pipeline and read what it decided; the caller holds :func:`exclusive`."""
    from pzone_pipelines.retrain.refresh import describe, project_label_params, refresh_platform_labels

    on_line(describe(refresh_platform_labels(database_url, project_label_params(project))))
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
