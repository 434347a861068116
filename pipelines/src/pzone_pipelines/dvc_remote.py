"""The DVC remote that keeps every promoted model's dataset: which remote (settings), and pushing a run's data.

The remote is ``PZONE_DVC_REMOTE_URL`` (``s3://<photos bucket>/dvc`` in a deployment, with ``PZONE_S3_ENDPOINT_URL``
as its ``endpointurl``), else the project's own default remote (``.dvc/config``: the local folder
``.pzone/dvc-remote``). :func:`configure_remote` writes the setting into the project's ``.dvc/config.local`` as the
default remote ``platform``: per machine and git-ignored, so after `pzone dataset pull` the data scientist's own
``dvc pull`` / ``dvc push`` / ``dvc status -c`` reach the same remote with no flags, and the committed config keeps
its local default.

:func:`push_run_dataset` pushes the data outs of a run's recorded ``dvc.lock`` (stages :data:`DATA_STAGES`) from
the project's cache. It works in a throwaway DVC project that holds one ``.dvc`` file per out (the recorded hashes),
shares the project's cache directory and names the remote: so it pushes the objects of any run still in the cache —
the workspace's last ``dvc repro`` or an earlier ``dvc exp run`` — whatever the workspace holds now.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from pzone.errors import UserError

if TYPE_CHECKING:
    from pzone_pipelines.settings import Settings

DATA_STAGES = ("snapshot", "prepare")  # the stages whose outs are the dataset a run trained on
REMOTE_NAME = "platform"
DVC_TIMEOUT_S = 3600.0


class DvcRemoteError(UserError):
    """The dataset cannot be pushed to (or found on) the DVC remote: the sentence says which data and why."""


@dataclass(frozen=True)
class DataOut:
    """One cached out of a data stage, as a ``dvc.lock`` records it."""

    stage: str
    path: str
    md5: str
    fields: Mapping[str, object]  # the lock's entry (md5, size, nfiles, hash): what a .dvc file of it holds

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


@dataclass(frozen=True)
class PushResult:
    remote: str
    outs: tuple[str, ...]
    output: str


def data_outs(lock_text: str, stages: Sequence[str] = DATA_STAGES) -> list[DataOut]:
    """The outs of ``stages`` in a ``dvc.lock``'s text; every one of ``stages`` must be there."""
    try:
        lock = yaml.safe_load(lock_text) or {}
    except yaml.YAMLError as exc:
        raise DvcRemoteError(f"the recorded dvc.lock is not YAML: {exc}") from None
    recorded = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(recorded, dict):
        raise DvcRemoteError("the recorded dvc.lock has no stages")
    found: list[DataOut] = []
    for stage in stages:
        entry = recorded.get(stage)
        if not isinstance(entry, dict):
            raise DvcRemoteError(f"the recorded dvc.lock has no {stage!r} stage: it records no dataset")
        for out in entry.get("outs") or []:
            if isinstance(out, dict) and out.get("path") and out.get("md5"):
                fields = {k: v for k, v in out.items() if k in ("md5", "size", "nfiles", "hash")}
                found.append(DataOut(stage, str(out["path"]), str(out["md5"]), fields))
    return found


def data_lock(lock_text: str, stages: Sequence[str] = DATA_STAGES) -> str:
    """The recorded ``dvc.lock`` cut to ``stages`` (the later stages' entries are a previous run's)."""
    lock = yaml.safe_load(lock_text) or {}
    kept = {name: entry for name, entry in (lock.get("stages") or {}).items() if name in stages}
    return yaml.safe_dump({"schema": lock.get("schema", "2.0"), "stages": kept}, sort_keys=False)


def object_path(cache: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object ``md5`` in a cache or a local remote."""
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def dir_entries(cache: Path, out: DataOut) -> list[tuple[str, str]] | None:
    """``(relpath, md5)`` of a directory out's files from its listing in ``cache``; None if the listing is not there."""
    listing = object_path(cache, out.md5)
    if not listing.is_file():
        return None
    return [(str(entry["relpath"]), str(entry["md5"])) for entry in json.loads(listing.read_text("utf-8"))]


def missing_objects(cache: Path, outs: Sequence[DataOut]) -> list[str]:
    """The paths (``data/snapshot/images/…``) whose objects ``cache`` lacks; a directory whose listing is missing is
    named as the directory."""
    missing: list[str] = []
    for out in outs:
        if not object_path(cache, out.md5).is_file():
            missing.append(f"{out.path}/" if out.is_dir else out.path)
            continue
        if out.is_dir:
            entries = dir_entries(cache, out) or []
            missing += [f"{out.path}/{rel}" for rel, md5 in entries if not object_path(cache, md5).is_file()]
    return missing


def name_paths(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``cwd`` (this interpreter's DVC); a failure is a :class:`DvcRemoteError` naming the command."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=cwd,
            env=dvc_env(),
            capture_output=True,
            text=True,
            timeout=DVC_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DvcRemoteError(f"`dvc {' '.join(args)}` took longer than {DVC_TIMEOUT_S:.0f} s") from None
    if check and done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[-600:]
        raise DvcRemoteError(f"`dvc {' '.join(args)}` failed in {cwd}: {said}")
    return done


def settings_remote(project: Path, settings: Settings) -> dict[str, str] | None:
    """The remote's options that the settings name (None: they name none, the project's default applies)."""
    url = settings.dvc_remote_url
    if not url:
        return None
    if "://" not in url and not Path(url).is_absolute():
        url = str((project / url).resolve())  # a relative folder means the project's, as for the stages
    options = {"url": url}
    if url.startswith("s3://") and settings.s3_endpoint_url:
        options["endpointurl"] = settings.s3_endpoint_url
    return options


def project_config(project: Path) -> dict[str, str]:
    """The project's DVC config as DVC resolves it (every level merged, local paths absolute)."""
    listed = dvc(project, "config", "--list").stdout.splitlines()
    return dict(line.split("=", 1) for line in listed if "=" in line)


def project_remote(config: Mapping[str, str], project: Path) -> dict[str, str]:
    """The options of the project's default remote; a project without one (the demo's copy) keeps datasets in its
    own :data:`~pzone_pipelines.dataset_record.LOCAL_REMOTE` folder, as the repository's config does."""
    from pzone_pipelines.dataset_record import LOCAL_REMOTE

    name = config.get("core.remote")
    if not name:
        return {"url": str((project / LOCAL_REMOTE).resolve())}
    prefix = f"remote.{name}."
    return {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}


def project_cache(config: Mapping[str, str], project: Path) -> Path:
    configured = config.get("cache.dir")
    if not configured:
        return project / ".dvc" / "cache"
    return (project / ".dvc" / configured).resolve()  # relative to the config file, as DVC reads it


def configure_remote(project: Path, settings: Settings) -> str:
    """Make the settings' remote the project's default in ``.dvc/config.local`` (a project without a default
    remote gets the local folder); returns the default remote's URL."""
    options = settings_remote(project, settings)
    if options is None:
        config = project_config(project)
        options = project_remote(config, project)
        if not config.get("core.remote"):
            dvc(project, "remote", "add", "--local", "--force", "--default", REMOTE_NAME, options["url"])
        return options.get("url", "")
    dvc(project, "remote", "add", "--local", "--force", "--default", REMOTE_NAME, options["url"])
    if "endpointurl" in options:
        dvc(project, "remote", "modify", "--local", REMOTE_NAME, "endpointurl", options["endpointurl"])
    return options["url"]


def quote(value: str) -> str:
    """A value in DVC's config file (configobj): quoted, so that commas and ``#`` stay part of it."""
    if "\n" in value or ('"' in value and "'" in value):
        raise DvcRemoteError(f"a DVC remote option cannot be written to a config file: {value!r}")
    return f"'{value}'" if '"' in value else f'"{value}"'


def config_text(cache: Path, options: Mapping[str, str]) -> str:
    lines = ["[core]", "    no_scm = true", "    analytics = false", f"    remote = {REMOTE_NAME}"]
    lines += ["[cache]", f"    dir = {quote(str(cache))}", f"['remote \"{REMOTE_NAME}\"']"]
    lines += [f"    {key} = {quote(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def push_outs(cache: Path, outs: Sequence[DataOut], options: Mapping[str, str]) -> str:
    """Push ``outs`` from ``cache`` to the remote ``options`` through a throwaway DVC project; returns dvc's
    output."""
    with tempfile.TemporaryDirectory(prefix="pzone-dvc-push-") as tmp:
        work = Path(tmp)
        (work / ".dvc").mkdir()
        (work / ".dvc" / "config").write_text(config_text(cache, options), encoding="utf-8")
        for i, out in enumerate(outs):
            entry = {**out.fields, "path": out.path}
            (work / f"out-{i}.dvc").write_text(yaml.safe_dump({"outs": [entry]}), encoding="utf-8")
        done = dvc(work, "push")
    said = done.stdout + done.stderr
    if "Missing cache files" in said:  # dvc warns and exits 0 when an object is in neither place
        raise DvcRemoteError(f"dvc push left objects behind: {' '.join(said.split())[-600:]}")
    return said


def push_run_dataset(project: Path, lock_text: str, settings: Settings) -> PushResult:
    """Push the dataset a run's recorded ``dvc.lock`` names (its :data:`DATA_STAGES` outs) from ``project``'s DVC
    cache to the platform's remote. Raises :class:`DvcRemoteError` when the cache lacks an object (named) or the
    push fails."""
    outs = data_outs(lock_text)
    config = project_config(project)
    cache = project_cache(config, project)
    missing = missing_objects(cache, outs)
    if missing:
        raise DvcRemoteError(
            f"the DVC cache {cache} lacks {len(missing)} file(s) of the run's dataset ({name_paths(missing)}): "
            "run `dvc repro` (or the experiment) again in this project, or `dvc fetch` them"
        )
    options = settings_remote(project, settings) or project_remote(config, project)
    output = push_outs(cache, outs, options)
    return PushResult(options.get("url", ""), tuple(out.path for out in outs), output)


def recorded_lock(client: object, run_id: str, dst: Path) -> str:
    """The run's recorded ``dvc.lock`` (:mod:`pzone_pipelines.dataset_record`), downloaded through ``client``."""
    from mlflow.exceptions import MlflowException

    from pzone_pipelines import dataset_record as record

    artifact = f"{record.LINEAGE_ARTIFACT}/{record.LOCK_FILE}"
    try:
        local = client.download_artifacts(run_id, artifact, str(dst))  # type: ignore[attr-defined]
    except (MlflowException, OSError):
        local = None
    if local is None or not Path(local).is_file():
        raise DvcRemoteError(
            f"the MLflow run {run_id} recorded no dataset ({artifact} is not among its artifacts): it was "
            "trained before datasets were recorded, or not by the train stage"
        )
    return Path(local).read_text(encoding="utf-8")


def push_candidate_dataset(client: object, run_id: str, project: Path, settings: Settings) -> PushResult:
    """What a promotion does before the registry moves: the run's dataset onto the platform's remote."""
    with tempfile.TemporaryDirectory(prefix="pzone-lineage-") as tmp:
        lock_text = recorded_lock(client, run_id, Path(tmp))
    return push_run_dataset(project, lock_text, settings)
