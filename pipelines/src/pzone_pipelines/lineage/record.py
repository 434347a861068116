"""The MLflow side of lineage: which run a model reference names, the registry's versions with their aliases, and a
run's lineage record (:mod:`pzone_pipelines.dataset_record`), downloaded once per run and kept in memory."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pzone.errors import UserError, one_line
from pzone_pipelines import dataset_record as record

RUN_ID = re.compile(r"[0-9a-f]{32}")
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
ALIAS_REF = re.compile(rf"(?P<name>{_NAME})@(?P<alias>[A-Za-z0-9_-]+)")
VERSION_REF = re.compile(rf"(?P<name>{_NAME})/(?P<version>[1-9][0-9]*)")
REF_FORMS = "pzone-tilt@champion (an alias), pzone-tilt/3 (a version) or an MLflow run id (32 hex digits)"


class LineageError(UserError):
    """What the user named cannot be told about: a malformed reference or photo id, an unknown model, alias, version
    or run, a run that recorded no lineage, a photo nobody knows."""


class LineageUnreadable(UserError):
    """The record exists but cannot be read (the artifact store is unreachable, an artifact is damaged)."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed REF: exactly one of ``alias``, ``version`` (both with ``name``) or ``run_id`` is set."""

    text: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class Version:
    """A registered version, with the aliases that point at it and its tags (``test_macro_f1`` at promotion)."""

    model: str
    version: str
    run_id: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The spelling of :data:`VERSION_REF`, which is also what the model tier writes as ``model_version``."""
        return f"{self.model}/{self.version}"


@dataclass(frozen=True)
class RunLineage:
    """A training run's tags, metrics and lineage artifacts (``None``/empty: that artifact was not recorded)."""

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    manifest: dict[str, Any] | None
    prepared_ids: dict[str, list[str]]
    params: dict[str, Any] | None


def parse_ref(text: str) -> ModelRef:
    """``name@alias``, ``name/version`` or a run id; a sentence for anything else."""
    text = text.strip()
    if RUN_ID.fullmatch(text):
        return ModelRef(text, run_id=text)
    if match := VERSION_REF.fullmatch(text):
        return ModelRef(text, name=match["name"], version=match["version"])
    if match := ALIAS_REF.fullmatch(text):
        if match["alias"].isdigit():  # MLflow aliases are words; a number after @ is a version misspelled
            raise LineageError(
                f"{text!r} names an alias, and {match['alias']} is a number",
                f"for version {match['alias']} write {match['name']}/{match['alias']}",
            )
        return ModelRef(text, name=match["name"], alias=match["alias"])
    raise LineageError(f"{text!r} is not a model reference", f"write {REF_FORMS}")


def open_client(tracking_uri: str) -> Any:
    """An MLflow client on the tracking store; a SQLite store that is not there is a sentence (opening it would
    create an empty one)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # the platform runs offline: no usage telemetry
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # A download progress bar per run would bury the answer.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise LineageError(
                f"there is no MLflow tracking store at {path}",
                "point PZONE_DATA_DIR (or PZONE_MLFLOW_TRACKING_URI) at the platform's",
            )
    return MlflowClient(tracking_uri=tracking_uri)


class Records:
    """The registry and the runs' lineage through one client; each run's artifacts are downloaded at most once."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._lineage: dict[str, RunLineage | None] = {}

    def resolve(self, ref: ModelRef) -> tuple[str, list[Version]]:
        """The run ``ref`` names and the registered versions made from it (one for an alias or a version)."""
        from mlflow.exceptions import MlflowException

        if ref.run_id is not None:
            try:
                self.client.get_run(ref.run_id)
            except MlflowException:
                raise LineageError(f"there is no MLflow run {ref.run_id} in the tracking store") from None
            models = sorted({v.model for v in self._search(f"run_id='{ref.run_id}'")})
            # The search leaves the aliases out: take the versions again with them.
            return ref.run_id, [v for name in models for v in self.versions(name) if v.run_id == ref.run_id]
        name = str(ref.name)
        versions = {v.version: v for v in self.versions(name, must_exist=True)}
        if ref.alias is not None:
            chosen = next((v for v in versions.values() if ref.alias in v.aliases), None)
            if chosen is None:
                known = sorted(a for v in versions.values() for a in v.aliases)
                raise LineageError(
                    f"{name} has no alias {ref.alias!r}", f"its aliases: {', '.join(known) or 'none yet'}"
                )
        else:
            chosen = versions.get(str(ref.version))
            if chosen is None:
                listed = ", ".join(sorted(versions, key=int)) or "none yet"
                raise LineageError(f"{name} has no version {ref.version}", f"its versions: {listed}")
        if not chosen.run_id:
            raise LineageError(f"{chosen.label} was registered from no training run: it has no lineage")
        return chosen.run_id, [chosen]

    def versions(self, name: str, *, must_exist: bool = False) -> list[Version]:
        """Every registered version of ``name`` with its aliases, oldest first (none for an unknown model, or a
        sentence with ``must_exist``)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException:
            if not must_exist:
                return []
            names = sorted(m.name for m in self.client.search_registered_models())
            raise LineageError(
                f"there is no registered model {name!r}", f"registered: {', '.join(names) or 'none yet'}"
            ) from None
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():  # search results leave the aliases out
            aliases.setdefault(str(version), []).append(alias)
        found = self._search(f"name='{name}'")
        return sorted(
            (
                Version(v.model, v.version, v.run_id, tuple(sorted(aliases.get(v.version, []))), v.tags)
                for v in found
            ),
            key=lambda v: int(v.version),
        )

    def _search(self, filter_string: str) -> list[Version]:
        found: list[Version] = []
        token = None
        while True:
            page = self.client.search_model_versions(filter_string, page_token=token)
            found += [
                Version(str(v.name), str(v.version), str(v.run_id or ""), (), dict(v.tags or {}))
                for v in page
            ]
            token = page.token
            if not token:
                return found

    def lineage(self, run_id: str) -> RunLineage | None:
        """The run's record, or None when it recorded no lineage (a run from before lineage, not a training run)."""
        if run_id not in self._lineage:
            self._lineage[run_id] = self._download(run_id)
        return self._lineage[run_id]

    def _download(self, run_id: str) -> RunLineage | None:
        from mlflow.exceptions import MlflowException

        from pzone_pipelines.params import ParamsError, load_params, read_mapping

        try:
            run = self.client.get_run(run_id)
            listed = {Path(f.path).name for f in self.client.list_artifacts(run_id, record.LINEAGE_ARTIFACT)}
            if not listed:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(self.client.download_artifacts(run_id, record.LINEAGE_ARTIFACT, tmp))
                manifest = folder / record.MANIFEST_FILE
                ids = folder / record.PREPARED_IDS_FILE
                params = folder / record.PARAMS_FILE
                return RunLineage(
                    run_id=run_id,
                    tags=dict(run.data.tags),
                    metrics=dict(run.data.metrics),
                    manifest=record.read_manifest(manifest) if manifest.is_file() else None,
                    prepared_ids=read_mapping(ids, f"run {run_id}'s {ids.name}", "", LineageUnreadable)
                    if ids.is_file()
                    else {},
                    params=load_params(params) if params.is_file() else None,
                )
        except (MlflowException, OSError, ValueError, ParamsError) as exc:
            raise LineageUnreadable(f"cannot read the lineage of run {run_id}: {one_line(exc)}") from None
