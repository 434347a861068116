"""The ``pzone lineage`` group: ``model REF`` and ``photo PHOTO_ID`` (see :mod:`pzone_pipelines.lineage`).

Exit codes: 0 told; 2 what was named cannot be told about (a malformed reference or photo id; an unknown model,
alias, version, run or photo; a run without lineage); 1 the records could not be read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer

from pzone_pipelines.lineage.describe import (
    Hit,
    find_photo,
    manifest_photo_ids,
    model_lines,
    model_report,
    photo_lines,
    photo_report,
    taken_at_report,
)
from pzone_pipelines.lineage.platform import answers, open_platform, photo_row, taken_at_range
from pzone_pipelines.lineage.record import REF_FORMS, LineageError, Records, Version, open_client, parse_ref

lineage_app = typer.Typer(
    help="Lineage both ways: what a model was trained on; which models trained on a photo and answered it.",
    no_args_is_help=True,
)


def parse_photo_id(text: str) -> str:
    """The platform's spelling of a photo id (a UUID, lower case); a sentence for anything else."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise LineageError(
            f"{text!r} is not a photo id", "a photo id is a UUID, as the API and the web front show it"
        ) from None


def model_lineage(ref_text: str, tracking_uri: str, database_url: str) -> dict[str, Any]:
    """The report of ``pzone lineage model`` (see :func:`pzone_pipelines.lineage.describe.model_report`)."""
    ref = parse_ref(ref_text)
    records = Records(open_client(tracking_uri))
    run_id, versions = records.resolve(ref)
    lineage = records.lineage(run_id)
    if lineage is None:
        what = f"run {run_id}" if ref.run_id else f"{versions[0].label} (run {run_id})"
        raise LineageError(
            f"{what} recorded no lineage",
            "the train stage records it in every training run since lineage was added; this run is older, or "
            f"not a training run: name another with {REF_FORMS}",
        )
    if lineage.manifest is None:
        taken = taken_at_report(None)
    else:
        with open_platform(database_url) as platform:
            if platform.engine is None:
                taken = taken_at_report(None, platform.unknown)
            else:
                ids = manifest_photo_ids(lineage.manifest)
                taken = taken_at_report(taken_at_range(platform.engine, ids))
    return model_report(ref.text, lineage, versions, taken)


def photo_lineage(photo_text: str, model: str, tracking_uri: str, database_url: str) -> dict[str, Any]:
    """The report of ``pzone lineage photo``: every registered version of ``model`` is looked at (each run's
    manifest downloaded once: O(versions) for now)."""
    photo_id = parse_photo_id(photo_text)
    with open_platform(database_url) as platform:
        row = photo_row(platform.engine, photo_id) if platform.engine else None
        answered = answers(platform.engine, photo_id) if platform.engine else None
    records = Records(open_client(tracking_uri))
    versions = records.versions(model)
    hits: list[Hit] = []
    without: list[Version] = []
    for version in versions:
        lineage = records.lineage(version.run_id) if version.run_id else None
        if lineage is None or lineage.manifest is None:
            without.append(version)
            continue
        found = find_photo(lineage, photo_id, row.sha256 if row else None)
        if found is not None:
            hits.append(Hit(version, *found))
    if platform.unknown is None and row is None and not hits and not answered:
        raise LineageError(
            f"there is no photo {photo_id} on the platform, and no registered version of {model} trained on it"
        )
    return photo_report(photo_id, model, row, platform.unknown, hits, without, len(versions), answered)


def _told(report: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from rich.markup import escape

    from pzone.cli.common import console, fail

    try:
        return report()
    except LineageError as exc:
        exit_ = fail(escape(str(exc)))
        if exc.hint:
            console.print(f"hint: {escape(exc.hint)}", soft_wrap=True, highlight=False)
        raise exit_ from None


def _show(report: Mapping[str, Any], lines: Callable[[Mapping[str, Any]], list[str]], as_json: bool) -> None:
    from rich.markup import escape

    from pzone.cli.common import console

    if as_json:
        typer.echo(json.dumps(report, indent=1, sort_keys=True))
        return
    for line in lines(report):
        console.print(escape(line), soft_wrap=True, highlight=False)


JSON_HELP = "Print one JSON object (for machines) instead of lines."


@lineage_app.command("model")
def model_command(
    ref: Annotated[
        str,
        typer.Argument(
            help="pzone-tilt@champion (an alias), pzone-tilt/3 (a version, as predictions name it) or an MLflow "
            "run id.",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """What a model was trained on: the dataset (digest, photos, class counts, label sources, when the photos were
    taken), the label params, the code commit and the prepare/train params, with its aliases and test macro-F1."""
    from pzone.cli.common import settings_or_fail
    from pzone_pipelines.settings import Settings

    settings = settings_or_fail(Settings)
    report = _told(lambda: model_lineage(ref, settings.tracking_uri, settings.sqlalchemy_url))
    _show(report, model_lines, as_json)


@lineage_app.command("photo")
def photo_command(
    photo_id: Annotated[str, typer.Argument(help="The photo's id (a UUID).", show_default=False)],
    model: Annotated[
        str | None, typer.Option(help="The registered model to look in; default: PZONE_MLFLOW_MODEL_NAME's.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Which registered versions trained on a photo (its split in each version's dataset: train, val or test) and
    which versions answered it on the platform."""
    from pzone.cli.common import settings_or_fail
    from pzone_pipelines.settings import Settings

    settings = settings_or_fail(Settings)
    name = model or settings.mlflow_model_name
    report = _told(lambda: photo_lineage(photo_id, name, settings.tracking_uri, settings.sqlalchemy_url))
    _show(report, photo_lines, as_json)
