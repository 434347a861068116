"""``pzone promote``: the one promotion path from a trained model to the model tier.

A candidate (an MLflow training run, the project's ``models/run.json`` by default, or a registered version) and the
registry's champion are evaluated again on the project's frozen test split (``data/prepared/test``, the evaluate
stage's code, so the numbers are the stage's) and judged by the gate of the `propose` stage
(:func:`pzone_pipelines.register.decide`, params.yaml's ``register:``). The candidate becomes a version with alias
``challenger``; only when it passes does it take ``champion`` (the one it replaces: ``previous-champion``) and get
packaged (:func:`pzone_training.package.package_champion`: ONNX, parity, the BentoML store the tier follows, the
Bento). Writes ``reports/decision.json`` and, after a promotion, ``reports/package.json`` (what `pzone retrain`
reads; it runs this command).

Exit codes: 0 promoted; 3 refused by the gate (the champion alias and the store do not move); 2 bad input (nothing
moved); 1 packaging failed (the champion alias is put back).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pzone.errors import UserError
from pzone_training.records import read_record, write_record

if TYPE_CHECKING:
    from pzone_pipelines.register import Decision, GateParams
    from pzone_pipelines.settings import Settings

RUN_RECORD = Path("models/run.json")
CHECKPOINT = Path("models/model.pt")
TEST_SPLIT = Path("data/prepared/test")
DECISION = Path("reports/decision.json")
PACKAGE = Path("reports/package.json")


class PromoteError(UserError):
    """The candidate or the project cannot be promoted from (an unknown run or version, no prepared test split, a
    model the tier cannot serve); nothing was moved."""


@dataclass(frozen=True)
class Candidate:
    run_id: str
    model_uri: str  # the logged model that a new version registers
    version: str | None  # already registered: a --version, or a run promoted or refused before
    dataset_hash: str


def resolve_candidate(
    client: Any, model_name: str, root: Path, run_id: str | None, version: str | None
) -> Candidate:
    """The model to promote: a registered ``version``, the run ``run_id``, or the run in ``models/run.json``."""
    from mlflow.exceptions import MlflowException

    if version is not None:
        try:
            found = client.get_model_version(model_name, version)
        except MlflowException:
            raise PromoteError(f"{model_name} has no version {version}") from None
        tags = dict(found.tags or {})
        uri = f"models:/{model_name}/{found.version}"
        return Candidate(str(found.run_id or ""), uri, str(found.version), tags.get("dataset_hash", ""))
    record = read_record(root / RUN_RECORD)
    if run_id is None:
        run_id = str(record.get("run_id") or "")
        if not run_id:
            raise PromoteError(
                f"{root / RUN_RECORD} names no training run: run `dvc repro` first, or name one with --run or "
                "--version"
            )
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PromoteError(f"there is no MLflow run {run_id!r} in this project's tracking store") from None
    if record.get("run_id") == run_id and record.get("model_uri"):
        uri = str(record["model_uri"])
    else:
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            raise PromoteError(f"the MLflow run {run_id} logged no model: it is not a training run")
        uri = f"models:/{outputs[-1].model_id}"
    registered = client.search_model_versions(f"name='{model_name}' and run_id='{run.info.run_id}'")
    known = max((str(v.version) for v in registered), key=int, default=None)
    return Candidate(run.info.run_id, uri, known, str(run.data.tags.get("dataset_hash", "")))


def check_servable(meta: Mapping[str, Any], what: str) -> None:
    """The model tier serves the tilt classes, at an input side its contract allows."""
    from pzone.tier_contract import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN
    from pzone.tilt import TILT_CLASSES

    classes = list(meta.get("classes") or [])
    if classes != list(TILT_CLASSES):
        raise PromoteError(f"{what} answers the classes {classes}, not the model tier's {list(TILT_CLASSES)}")
    size = meta.get("image_size")
    if not isinstance(size, int) or not IMAGE_SIZE_MIN <= size <= IMAGE_SIZE_MAX:
        raise PromoteError(
            f"{what} takes {size!r}-pixel squares; the model tier takes {IMAGE_SIZE_MIN} to {IMAGE_SIZE_MAX}"
        )


def judge(
    candidate: Candidate, scored: dict[str, Any], champion: dict[str, Any], gate: GateParams
) -> Decision:
    """The gate on both models' fresh numbers; the champion is never promoted over itself."""
    from pzone_pipelines.register import decide

    decision = decide(scored, champion, gate)
    if is_champion(candidate, champion):
        return replace(decision, promote=False, reason=f"v{candidate.version} is the champion already")
    return decision


def is_champion(candidate: Candidate, champion: Mapping[str, Any]) -> bool:
    return bool(champion.get("exists")) and candidate.version == str(champion.get("version"))


def promote(root: Path, settings: Settings, run_id: str | None, version: str | None) -> dict[str, Any]:
    """The whole promotion (see the module); returns ``reports/decision.json``'s record, with ``package`` (the
    package record) after a promotion. Raises PromoteError before anything moves."""
    from mlflow import MlflowClient

    from pzone_pipelines.dvc_remote import push_candidate_dataset
    from pzone_pipelines.params import load_params
    from pzone_pipelines.register import GateParams, current_champion, restore_aliases
    from pzone_pipelines.tracking import CHAMPION_ALIAS, PREVIOUS_CHAMPION_ALIAS, configure_mlflow
    from pzone_training.champion import load_torch_model
    from pzone_training.data import load_split
    from pzone_training.evaluate import champion_report, model_report
    from pzone_training.package import package_champion

    params = load_params(root / "params.yaml")
    gate = GateParams.from_params(params)  # checked before any work
    try:
        test = load_split(root / TEST_SPLIT)
    except FileNotFoundError:
        test = None
    if test is None or len(test.labels) == 0:
        raise PromoteError(
            f"no prepared test split at {root / TEST_SPLIT}: run `dvc repro` in the project first (its prepare "
            "stage freezes the split both models are measured on)"
        )
    configure_mlflow(settings)
    client, name = MlflowClient(), settings.mlflow_model_name
    candidate = resolve_candidate(client, name, root, run_id, version)
    what = f"run {candidate.run_id}" if candidate.version is None else f"{name} v{candidate.version}"
    model, meta, _ = load_torch_model(
        candidate.run_id, candidate.model_uri, read_record(root / RUN_RECORD), root / CHECKPOINT, client
    )
    check_servable(meta, what)
    batch_size = int((params.get("evaluate") or {}).get("batch_size", 128))
    scored = model_report(model, meta, test.images, test.labels, batch_size)
    champion = champion_report(test.images, test.labels, batch_size, name)
    decision = judge(candidate, scored, champion, gate)
    evaluated = str(champion["version"]) if champion.get("exists") else None
    if current_champion(client, name) != evaluated:
        raise PromoteError("the champion moved while this promotion measured it: run `pzone promote` again")
    if candidate.run_id:  # a registered version's dataset is on the DVC remote before the version exists
        push_candidate_dataset(client, candidate.run_id, root, settings)

    version, before = enter_registry(client, name, candidate, decision, champion)
    record: dict[str, Any] = {
        **asdict(decision),
        "model_name": name,
        "version": version,
        "run_id": candidate.run_id,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if decision.promote:
        client.set_model_version_tag(name, version, "test_macro_f1", f"{decision.challenger_macro_f1:.6f}")
        try:
            record["package"] = package_champion(client, name, root)
        except BaseException:
            restore_aliases(client, name, {a: before[a] for a in (CHAMPION_ALIAS, PREVIOUS_CHAMPION_ALIAS)})
            raise
    if candidate.run_id:
        client.set_tag(candidate.run_id, "pzone.promoted", str(decision.promote).lower())
        client.set_tag(candidate.run_id, "pzone.decision", decision.reason)
        client.log_dict(
            candidate.run_id, {k: v for k, v in record.items() if k != "package"}, "decision.json"
        )
    return record


def enter_registry(
    client: Any, name: str, candidate: Candidate, decision: Decision, champion: Mapping[str, Any]
) -> tuple[str, dict[str, str | None]]:
    """The candidate's version (registered now when it is a run never registered) with its aliases moved (none for
    the champion itself), and where the aliases pointed before."""
    import mlflow

    from pzone_pipelines.register import alias_targets, move_aliases, register

    if is_champion(candidate, champion):
        return str(candidate.version), alias_targets(client, name)
    if candidate.version is not None:
        return candidate.version, move_aliases(client, name, candidate.version, decision)
    run = {
        "run_id": candidate.run_id,
        "model_uri": candidate.model_uri,
        "dataset_hash": candidate.dataset_hash,
    }
    registered = register(run, decision, model_name=name, client=client, register_model=mlflow.register_model)
    return str(registered["version"]), registered["aliases_before"]


def command(
    run: Annotated[
        str | None,
        typer.Option("--run", help="The MLflow run to promote; default: the one in models/run.json."),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A registered version of the model to promote instead.")
    ] = None,
    project: Annotated[
        Path, typer.Option(help="Project root (params.yaml, data/prepared/test, reports/); default: here.")
    ] = Path("."),
) -> None:
    """Re-evaluate a trained model beside the champion on the frozen test split and promote it only through the
    gate: registered as challenger; champion, ONNX and the BentoML store the model tier serves when it passes.

    Exit codes: 0 promoted, 3 refused by the gate (nothing the tier reads moved), 2 bad input (nothing moved),
    1 packaging failed (the champion alias put back).
    """
    from rich.markup import escape

    from pzone.cli.common import console, fail, settings_or_fail
    from pzone_pipelines.dvc_remote import DvcRemoteError
    from pzone_pipelines.params import ParamsError
    from pzone_pipelines.register import REFUSED_EXIT_CODE, RegisterError
    from pzone_pipelines.settings import Settings
    from pzone_training.package import describe

    if run is not None and version is not None:
        raise fail("name one candidate: --run or --version, not both")
    if version is not None and not re.fullmatch(r"[1-9][0-9]*", version):
        raise fail(f"--version takes a version number, not {escape(version)!r}")
    # The ONNX exporter logs every rewrite pass at INFO: that would bury the decision.
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
    root = project.resolve()
    if not (root / "params.yaml").is_file():
        raise fail(
            f"no params.yaml in {escape(str(root))}: run from the project root or name it with --project"
        )
    settings = settings_or_fail(Settings).in_project(root)
    try:
        record = promote(root, settings, run, version)
    except (PromoteError, RegisterError, ParamsError) as exc:
        raise fail(escape(f"{exc}; nothing was promoted")) from None
    except DvcRemoteError as exc:  # the remote, not the input: exit 1, as a packaging failure
        console.print(f"[red]error:[/red] {escape(str(exc))}; nothing was promoted")
        raise typer.Exit(1) from None
    package = record.pop("package", None)
    write_record(root / DECISION, record)
    scores = f"macro-F1 {record['challenger_macro_f1']:.4f} vs champion {record['champion_macro_f1']}"
    label = f"{record['model_name']} v{record['version']}"
    if package is None:
        console.print(f"[yellow]{label} refused[/yellow]: {escape(record['reason'])} ({scores})")
        raise typer.Exit(REFUSED_EXIT_CODE)
    write_record(root / PACKAGE, package)
    console.print(f"[green]{label} promoted to champion[/green]: {escape(record['reason'])} ({scores})")
    console.print(escape(describe(package)))
