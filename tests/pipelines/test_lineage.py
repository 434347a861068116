"""`pzone lineage`, both ways, on a real MLflow store (runs with lineage records, registered versions and aliases) and
a real platform database (migrated SQLite with photos and predictions): what a model trained on, and which models
trained on and answered a photo. Bad references and unknown photos are sentences with exit code 2."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pzone_pipelines.lineage.command import lineage_app, model_lineage, photo_lineage
from pzone_pipelines.lineage.describe import model_lines, photo_lines
from pzone_pipelines.lineage.record import LineageError, parse_ref
from tests.support.cli import pzone
from tests.support.lineage import CHAMPION_F1, COMMIT, MODEL, LineageWorld


def user_env(world: LineageWorld, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "MLFLOW_", "BENTOML_"))}
    return world.env({**base, "COLUMNS": "200", **extra})


def nowhere(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'no-platform' / 'pzone.db'}"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("pzone-tilt@champion", {"name": "pzone-tilt", "alias": "champion"}),
        ("pzone-tilt/3", {"name": "pzone-tilt", "version": "3"}),
        ("0123456789abcdef0123456789abcdef", {"run_id": "0123456789abcdef0123456789abcdef"}),
    ],
)
def test_a_reference_names_an_alias_a_version_or_a_run(text: str, fields: dict[str, str]) -> None:
    ref = parse_ref(text)
    assert {k: v for k, v in vars(ref).items() if v is not None and k != "text"} == fields


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pzone-tilt", "is not a model reference"),
        ("pzone-tilt/v3", "is not a model reference"),
        ("pzone-tilt/0", "is not a model reference"),
        ("pzone-tilt@3", "names an alias, and 3 is a number"),
        ("0123456789abcdef", "is not a model reference"),
    ],
)
def test_a_malformed_reference_is_a_sentence(text: str, says: str) -> None:
    with pytest.raises(LineageError, match=says) as raised:
        parse_ref(text)
    assert raised.value.hint


@pytest.mark.integration
def test_the_champion_tells_its_dataset_code_and_params(lineage_world: LineageWorld) -> None:
    report = model_lineage(f"{MODEL}@champion", lineage_world.tracking_uri, lineage_world.database_url)

    assert report["run_id"] == lineage_world.runs["v2"]
    assert report["versions"] == [
        {"model": MODEL, "version": "2", "aliases": ["champion"], "test_macro_f1": float(CHAMPION_F1)}
    ]
    data = report["dataset"]
    assert data["digest"] == "1" * 32 + ".dir"
    assert (data["images"], data["photos"]) == (5, 5)
    assert data["class_counts"] == {"fallen": 2, "tilted": 1, "upright": 2}
    assert data["label_sources"] == {"operator": 1, "sensor": 4}
    assert data["splits"] == {"train": 4, "val": 0, "test": 1}
    # From the platform: four of the five photos are still there (hours 0, 1, 2 and 5 after 08:00).
    assert data["taken_at"] == {
        "first": "2026-02-01T08:00:00+00:00",
        "last": "2026-02-01T13:00:00+00:00",
        "photos_found": 4,
        "without_taken_at": 0,
    }
    assert report["labels"]["window_s"] == 30
    assert report["code"] == {"commit": COMMIT, "dirty": False}
    assert report["params"]["train"]["lr"] == pytest.approx(0.002)
    assert report["params"]["base"] == {"seed": 42}
    assert report["evaluate_test_macro_f1"] == pytest.approx(0.6)
    text = "\n".join(model_lines(report))
    assert "(1 of them no longer on the platform)" in text
    assert "label sources: operator 1, sensor 4" in text


@pytest.mark.integration
def test_a_version_and_a_run_id_name_the_same_record(lineage_world: LineageWorld) -> None:
    by_version = model_lineage(f"{MODEL}/1", lineage_world.tracking_uri, lineage_world.database_url)
    by_run = model_lineage(lineage_world.runs["v1"], lineage_world.tracking_uri, lineage_world.database_url)
    assert by_version["run_id"] == by_run["run_id"] == lineage_world.runs["v1"]
    assert by_version["dataset"] == by_run["dataset"]
    assert (
        by_run["versions"]
        == by_version["versions"]
        == [{"model": MODEL, "version": "1", "aliases": [], "test_macro_f1": None}]
    )
    loose = model_lineage(lineage_world.runs["loose"], lineage_world.tracking_uri, lineage_world.database_url)
    assert loose["versions"] == []
    assert "none: this run is not registered" in "\n".join(model_lines(loose))


@pytest.mark.integration
def test_without_a_platform_the_time_range_is_unknown(lineage_world: LineageWorld, tmp_path: Path) -> None:
    report = model_lineage(f"{MODEL}@champion", lineage_world.tracking_uri, nowhere(tmp_path))
    assert report["dataset"]["taken_at"]["unknown"].startswith("unknown: the platform is not reachable")
    assert report["dataset"]["images"] == 5  # the rest comes from MLflow alone
    assert not (tmp_path / "no-platform").exists()  # read only: not even the folder is made


@pytest.mark.integration
@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("other-model@champion", "there is no registered model 'other-model'"),
        (f"{MODEL}@nope", f"{MODEL} has no alias 'nope'"),
        (f"{MODEL}/9", f"{MODEL} has no version 9"),
        (f"{MODEL}/3", f"{MODEL}/3 (run "),  # registered from a run that recorded no lineage
        ("f" * 32, f"there is no MLflow run {'f' * 32}"),
        (f"{MODEL}@3", f"hint: for version 3 write {MODEL}/3"),
    ],
)
def test_what_cannot_be_told_about_is_a_sentence(lineage_world: LineageWorld, ref: str, says: str) -> None:
    result = CliRunner().invoke(
        lineage_app, ["model", ref], env=user_env(lineage_world), catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output


def lineage_of(world: LineageWorld, role: str, database_url: str | None = None) -> dict[str, Any]:
    return photo_lineage(world.photos[role], MODEL, world.tracking_uri, database_url or world.database_url)


@pytest.mark.integration
def test_a_photo_tells_which_versions_trained_on_it_and_which_answered(lineage_world: LineageWorld) -> None:
    report = lineage_of(lineage_world, "shared")
    assert report["trained_on"] == [f"{MODEL}/1"]  # v2 only measured it: its test split
    assert [(d["version"], d["split"], d["matched_by"]) for d in report["datasets"]] == [
        (f"{MODEL}/1", "train", "photo id"),
        (f"{MODEL}/2", "test", "photo id"),
    ]
    assert report["versions_scanned"] == 3
    assert report["versions_without_lineage"] == [f"{MODEL}/3"]
    assert [(a["version"], a["at"]) for a in report["answered"]] == [
        (f"{MODEL}/1", "2026-02-02T08:00:00+00:00"),
        (f"{MODEL}/2", "2026-02-03T08:00:00+00:00"),
    ]
    assert report["platform"]["taken_at"] == "2026-02-01T08:00:00+00:00"

    same_bytes = lineage_of(lineage_world, "reupload")
    assert [(d["version"], d["matched_by"]) for d in same_bytes["datasets"]] == [
        (f"{MODEL}/1", "same content"),
        (f"{MODEL}/2", "same content"),
    ]
    unseen = lineage_of(lineage_world, "unseen")
    assert (unseen["datasets"], unseen["trained_on"]) == ([], [])
    assert [a["version"] for a in unseen["answered"]] == [f"{MODEL}/2"]
    assert "no registered version trained on it" in "\n".join(photo_lines(unseen))
    gone = lineage_of(lineage_world, "gone")  # deleted from the platform, still in v2's dataset
    assert gone["platform"] == {"found": False} and gone["trained_on"] == [f"{MODEL}/2"]


@pytest.mark.integration
def test_without_a_platform_a_photo_is_told_from_the_datasets(
    lineage_world: LineageWorld, tmp_path: Path
) -> None:
    report = lineage_of(lineage_world, "operator", nowhere(tmp_path))
    assert report["trained_on"] == [f"{MODEL}/2"]
    assert report["answered"] is None
    assert report["platform"]["unknown"].startswith("unknown: the platform is not reachable")
    assert "answered  unknown: the platform is not reachable" in "\n".join(photo_lines(report))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("photo", "says"),
    [
        ("not-a-photo", "'not-a-photo' is not a photo id"),
        (str(uuid.UUID(int=7)), f"there is no photo {uuid.UUID(int=7)} on the platform"),
    ],
)
def test_an_unknown_or_malformed_photo_id_is_a_sentence(
    lineage_world: LineageWorld, photo: str, says: str
) -> None:
    result = CliRunner().invoke(
        lineage_app, ["photo", photo], env=user_env(lineage_world), catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert says in result.output


@pytest.mark.integration
@pytest.mark.slow
def test_the_commands_as_a_user_runs_them(lineage_world: LineageWorld) -> None:
    env = user_env(lineage_world)
    model = pzone("lineage", "model", f"{MODEL}@champion", env=env)
    assert model.returncode == 0, model.stdout + model.stderr
    assert "Downloading artifacts" not in model.stderr  # no progress bars around the answer
    assert f"version   {MODEL}/2 (champion), test macro-F1 0.9123 at promotion" in model.stdout
    assert "taken: 2026-02-01T08:00:00+00:00 → 2026-02-01T13:00:00+00:00" in model.stdout
    assert f"code      commit {COMMIT}" in model.stdout

    photo = pzone("lineage", "photo", lineage_world.photos["shared"], "--json", env=env)
    assert photo.returncode == 0, photo.stdout + photo.stderr
    assert json.loads(photo.stdout)["trained_on"] == [f"{MODEL}/1"]
