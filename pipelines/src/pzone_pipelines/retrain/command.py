"""``pzone retrain``: run the training circle and the promotion path once, exclusively, and wait for the model tier
to serve a promotion."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pzone.cli.common import console, fail, settings_or_fail
from pzone_pipelines.params import ParamsError
from pzone_pipelines.retrain.auto import champion_live_accuracy, new_labeled_photos, should_retrain
from pzone_pipelines.retrain.lock import RetrainBusy, exclusive
from pzone_pipelines.retrain.pipeline import Outcome, retrain_once
from pzone_pipelines.retrain.rollout import wait_for_version
from pzone_pipelines.retrain.settings import RetrainSettings

EXIT_PIPELINE_FAILED = 1
EXIT_ROLLOUT_TIMEOUT = 4
EXIT_BUSY = 75  # EX_TEMPFAIL: another retrain is running, try again later


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
    """Refresh the platform's labels, run `dvc repro` (snapshot → … → propose) and, for a new model, `pzone promote`
    (the gate, then the BentoML store) once, never two at a time, and wait for the model tier to roll.

    Exit codes: 0 done (promoted, kept, nothing new or nothing to do), 1 a stage failed or the platform's
    database cannot be read, 2 bad settings or project,
    4 promoted but the model tier did not serve it in time, 75 another retrain is running.
    """
    settings = settings_or_fail(RetrainSettings)
    root = project.resolve()
    if not (root / "dvc.yaml").is_file():
        raise fail(f"no dvc.yaml in {escape(str(root))}: run from the repository root")
    if every and not auto:
        raise fail("--every needs --auto")
    settings = settings.in_project(root)
    env = {**os.environ, "PZONE_DATA_DIR": str(settings.data_dir)}
    while True:
        code = _retrain_step(root, settings, env, auto=auto, wait=wait)
        if not every or code == EXIT_PIPELINE_FAILED:
            raise typer.Exit(code)
        time.sleep(every)


def _retrain_step(
    root: Path, settings: RetrainSettings, env: dict[str, str], *, auto: bool, wait: bool
) -> int:
    try:
        with exclusive(settings.data_dir, settings.sqlalchemy_url):
            if auto:
                go, reason = _auto_decision(root, settings)
                console.print(f"{'retraining' if go else 'not retraining'}: {escape(reason)}")
                if not go:
                    return 0
            outcome = retrain_once(
                root,
                database_url=settings.sqlalchemy_url,
                env=env,
                on_line=lambda line: print(line, flush=True),
            )
    except RetrainBusy as exc:
        console.print(f"[yellow]retrain refused:[/yellow] {escape(str(exc))}")
        return EXIT_BUSY
    except ParamsError as exc:
        raise fail(escape(str(exc))) from None
    return _report(outcome, settings, wait)


def _auto_decision(root: Path, settings: RetrainSettings) -> tuple[bool, str]:
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


def _report(outcome: Outcome, settings: RetrainSettings, wait: bool) -> int:
    run = outcome.pipeline
    if not run.ok:
        errors = [line for line in run.tail if "ERROR" in line or "error" in line.lower()]
        detail = errors[-1] if errors else (run.tail[-1] if run.tail else "no output")
        console.print(
            f"[red]retrain failed[/red] in stage {escape(run.failed_stage or '?')} (exit {run.returncode}): "
            f"{escape(detail.strip())}"
        )
        return EXIT_PIPELINE_FAILED
    version = outcome.champion_version
    if not outcome.trained:
        console.print(f"nothing new: every stage skipped; the champion stays {version or 'none'}")
        return 0
    f1 = outcome.test_macro_f1
    scores = f"test macro-F1 {f1:.3f}" if f1 is not None else "no test score"
    if not outcome.promoted:
        console.print(
            f"kept: {escape(str(outcome.decision.get('reason', '')))} ({scores}, champion "
            f"{outcome.decision.get('champion_macro_f1')}); the champion stays {version or 'none'}"
        )
        return 0
    console.print(f"[green]promoted[/green] {version} ({scores}) in {outcome.seconds:.0f}s")
    if not wait or version is None:
        return 0
    if not settings.model_tier_url:
        console.print(
            "no PZONE_MODEL_TIER_URL: not waiting for a model tier (on Kubernetes the CronJob sets it to the "
            "model tier's Service)"
        )
        return 0
    with console.status(f"waiting for {settings.model_tier_url} to serve {version}…"):
        seen = wait_for_version(settings.model_tier_url, version, settings.retrain_rollout_timeout_s)
    if seen != version:
        console.print(
            f"[yellow]the model tier at {settings.model_tier_url} still answers with {seen or 'nothing'} after "
            f"{settings.retrain_rollout_timeout_s:g}s[/yellow] (is its watcher on? PZONE_MODEL_WATCH_INTERVAL_S)"
        )
        return EXIT_ROLLOUT_TIMEOUT
    console.print(f"the model tier at {settings.model_tier_url} now serves {version}")
    return 0
