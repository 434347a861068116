"""``pzone dataset pull``: the dataset a model trained on, from the DVC remote into a clone, ready to `dvc repro`.

The model (``--model NAME@ALIAS``, ``--version N`` or ``--run ID``) leads to its MLflow training run; the run's
recorded lineage (:mod:`pzone_pipelines.dataset_record`) gives the ``dvc.lock`` entries of the data stages and the
``params.yaml`` it trained with. Those are written into the project, ``dvc pull`` fetches the snapshot and the
prepared splits from the platform's remote (:mod:`pzone_pipelines.dvc_remote`), and ``dvc freeze snapshot`` keeps
the snapshot stage from reading a platform: ``dvc repro`` at the run's code commit then retrains from exactly that
data with no platform (``dvc unfreeze snapshot`` to snapshot a platform again).

Exit codes: 0 restored; 2 bad input (an unknown model, alias, version or run, a run without lineage); 1 the remote
lacks objects (the paths are named) or DVC failed.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pzone.errors import UserError
from pzone_pipelines import dataset_record as record
from pzone_pipelines.dvc_remote import (
    DATA_STAGES,
    DvcRemoteError,
    configure_remote,
    data_lock,
    data_outs,
    dvc,
    missing_objects,
    name_paths,
    object_path,
    project_cache,
    project_config,
)
from pzone_pipelines.lineage.record import REF_FORMS, LineageError, ModelRef, Records, parse_ref

if TYPE_CHECKING:
    from pzone_pipelines.settings import Settings

VERSION = re.compile(r"^[1-9][0-9]*$")
LINEAGE_FILES = (record.LOCK_FILE, record.PARAMS_FILE)
NAME_THE_MODEL = f"name the model: --model REF ({REF_FORMS}), --version N or --run RUN_ID"


class PullInputError(UserError):
    """What names the model does not exist (model, alias, version, run), or its run recorded no dataset."""


class MissingData(UserError):
    """The remote lacks objects of the recorded dataset."""


@dataclass(frozen=True)
class Source:
    """The training run a model reference leads to, and how to say it."""

    run_id: str
    label: str  # "pzone-tilt/3 (@champion)", "run 0a1b…"


def model_ref(default_name: str, model: str | None, version: str | None, run: str | None) -> ModelRef:
    """The one model the options name (``pzone lineage``'s references): ``--model REF``, ``[--model NAME]
    --version N`` or ``--run ID``."""
    if run is not None:
        if model is not None or version is not None:
            raise PullInputError(f"name one model, not several: {NAME_THE_MODEL}")
        return ModelRef(run, run_id=run.strip())
    if version is not None:
        if not VERSION.fullmatch(version):
            raise PullInputError(f"--version takes a version number, not {version!r}")
        name = default_name if model is None else model.strip()
        if "@" in name or "/" in name:
            raise PullInputError(f"with --version, --model takes a model name, not {name!r}")
        return ModelRef(f"{name}/{version}", name=name, version=version)
    if model is None:
        raise PullInputError(NAME_THE_MODEL)
    return parse_ref(model)


def resolve_source(client: Any, ref: ModelRef) -> Source:
    """The training run ``ref`` names (an unknown model, alias, version or run is a :class:`LineageError`)."""
    run_id, versions = Records(client).resolve(ref)
    if ref.run_id is not None or not versions:
        return Source(run_id, f"run {run_id}")
    chosen = versions[0]
    aliases = f" (@{', @'.join(chosen.aliases)})" if chosen.aliases else ""
    return Source(run_id, f"{chosen.label}{aliases}")


def download_lineage(client: Any, source: Source, dst: Path) -> Path:
    """The run's lineage folder (at least ``dvc.lock`` and ``params.yaml``) downloaded into ``dst``."""
    from mlflow.exceptions import MlflowException

    try:
        local = Path(client.download_artifacts(source.run_id, record.LINEAGE_ARTIFACT, str(dst)))
    except (MlflowException, OSError):
        local = dst / record.LINEAGE_ARTIFACT
    absent = [name for name in LINEAGE_FILES if not (local / name).is_file()]
    if absent:
        raise PullInputError(
            f"{source.label} recorded no dataset (no {', '.join(f'{record.LINEAGE_ARTIFACT}/{n}' for n in absent)} "
            "among its run's artifacts): it was trained before datasets were recorded, or not by the train stage"
        )
    return local


def write_recorded(project: Path, lineage: Path) -> list[str]:
    """The recorded data stages' ``dvc.lock`` and the recorded ``params.yaml`` into ``project``; returns the paths
    the lock names (the outs to pull)."""
    lock_text = (lineage / record.LOCK_FILE).read_text(encoding="utf-8")
    try:
        outs = data_outs(lock_text)
    except DvcRemoteError as exc:
        raise PullInputError(str(exc)) from None
    (project / record.LOCK_FILE).write_text(data_lock(lock_text), encoding="utf-8")
    params = (lineage / record.PARAMS_FILE).read_text(encoding="utf-8")
    (project / record.PARAMS_FILE).write_text(params, encoding="utf-8")
    return [out.path for out in outs]


def pull_data(project: Path, lock_text: str) -> None:
    """``dvc pull`` of the data stages; when it fails, the files the remote lacks are named."""
    done = dvc(project, "pull", *DATA_STAGES, check=False)
    if done.returncode == 0:
        return
    outs = data_outs(lock_text)
    cache = project_cache(project_config(project), project)
    if any(out.is_dir and not object_path(cache, out.md5).is_file() for out in outs):
        # A failed fetch keeps no directory listing; `dvc status -c` fetches the listings (it reports the rest as
        # present when a listing is), so that the files the pull could not get are named, not only their folder.
        dvc(project, "status", "--cloud", "--json", *DATA_STAGES, check=False)
    missing = missing_objects(cache, outs)
    if missing:
        raise MissingData(
            f"the DVC remote lacks {len(missing)} file(s) of the recorded dataset: {name_paths(missing)}"
        )
    said = " ".join((done.stderr or done.stdout).split())[-600:]
    raise DvcRemoteError(f"`dvc pull {' '.join(DATA_STAGES)}` failed: {said}")


def pull(
    project: Path, settings: Settings, client: Any, source: Source, say: Callable[[str], None]
) -> list[str]:
    """The whole restore (see the module); returns the paths pulled."""
    with tempfile.TemporaryDirectory(prefix="pzone-lineage-") as tmp:
        lineage = download_lineage(client, source, Path(tmp))
        lock_text = (lineage / record.LOCK_FILE).read_text(encoding="utf-8")
        paths = write_recorded(project, lineage)
    say(f"wrote the recorded {record.LOCK_FILE} (stages {', '.join(DATA_STAGES)}) and {record.PARAMS_FILE}")
    url = configure_remote(project, settings)
    say(f"pulling {', '.join(paths)} from the DVC remote {url}")
    pull_data(project, lock_text)
    dvc(project, "freeze", DATA_STAGES[0])
    say(f"froze the {DATA_STAGES[0]} stage: `dvc repro` retrains from this data without a platform")
    return paths


def summary(source: Source, paths: Sequence[str], commit: str | None) -> str:
    at = f" at the code commit {commit}" if commit else ""
    return f"restored the dataset of {source.label}: {', '.join(paths)}; `dvc repro`{at} retrains from it"


def command(
    model: Annotated[
        str | None,
        typer.Option("--model", help=f"The model: {REF_FORMS}; with --version, a model name."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="A registered version instead (of --model NAME, default the platform's)."
        ),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="An MLflow training run instead.")] = None,
    project: Annotated[
        Path, typer.Option(help="The DVC project to restore into (dvc.yaml, .dvc/); default: here.")
    ] = Path("."),
) -> None:
    """Restore the dataset a model trained on from the DVC remote: its recorded dvc.lock and params.yaml, `dvc pull`
    of the snapshot and the prepared splits, the snapshot stage frozen, so that `dvc repro` retrains from exactly
    that data with no platform.

    Exit codes: 0 restored, 2 bad input (unknown model, alias, version or run; a run without a recorded dataset),
    1 the remote lacks files (named) or DVC failed.
    """
    from rich.markup import escape

    from pzone.cli.common import console, fail, settings_or_fail
    from pzone_pipelines.lineage.record import open_client
    from pzone_pipelines.settings import Settings

    root = project.resolve()
    if not (root / "dvc.yaml").is_file():
        raise fail(f"no dvc.yaml in {escape(str(root))}: run from the project root or name it with --project")
    settings = settings_or_fail(Settings).in_project(root)

    def say(line: str) -> None:
        console.print(escape(line), soft_wrap=True, highlight=False)

    try:
        ref = model_ref(settings.mlflow_model_name, model, version, run)
        client = open_client(settings.tracking_uri)
        source = resolve_source(client, ref)
        say(f"{source.label}: MLflow run {source.run_id}")
        paths = pull(root, settings, client, source, say)
    except (PullInputError, LineageError) as exc:
        raise fail(escape(sentence(exc))) from None
    commit = client.get_run(source.run_id).data.tags.get(record.CODE_COMMIT_TAG)
    say(summary(source, paths, commit if commit and commit != record.UNKNOWN_COMMIT else None))


def sentence(error: UserError) -> str:
    return f"{error} ({error.hint})" if error.hint else str(error)
