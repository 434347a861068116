"""`pzone dataset import`: a folder of photos and its labels CSV go through the upload path's checks into the
platform (rows, objects, operator labels, operator taken-at times, sensor labels from the readings); every refused
file is reported with its reason and leaves nothing; a dry run writes nothing; a CSV or a folder that cannot be
read, or a wrong operator, is a sentence and exit 2."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pzone.cli import load_plugins
from pzone.db.engine import make_engine
from pzone.db.models import Photo, PhotoLabel
from pzone.labels import SOURCE_MANUAL, SOURCE_SENSOR, as_utc, labeled_photos
from pzone.storage import LocalObjectStore
from pzone_api.dataset_import import importer
from pzone_api.dataset_import.manifest import ManifestError, Refusal, match_folder, parse_manifest
from tests.support.api import create_user_in_db
from tests.support.images import (
    HTML_PAYLOAD,
    bad_uploads,
    exif_photo_jpeg,
    photo_jpeg,
    photo_png,
)
from tests.support.labels import add_readings, reading_row
from tests.support.photos import add_device, object_keys

pytestmark = pytest.mark.integration

OPERATOR = "olga@example.com"
MAX_BYTES = 300_000  # PZONE_UPLOAD_MAX_BYTES of these tests: big.png is over it, the good photos well under
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=10)  # dev-1 lies fallen around T0
FAR = NOW - timedelta(hours=2)  # no reading of dev-1 near this
WHEN = NOW - timedelta(hours=1)  # the operator's taken-at of p.png


def _bad(name: str) -> bytes:
    return next(upload.data for upload in bad_uploads() if upload.name == name)


def write_folder(folder: Path) -> dict[str, bytes]:
    """The photos and the CSV of a team's folder: good ones of every form, and one of every kind of refusal."""
    a = photo_jpeg(320, 240, seed=1)
    files = {
        "a.jpg": a,
        "shots/exif.jpg": exif_photo_jpeg(),
        "p.png": photo_png(120, 90, seed=2),
        "dev.jpg": photo_jpeg(200, 150, seed=3),
        "far.jpg": photo_jpeg(200, 150, seed=4),
        "ghost.jpg": photo_jpeg(200, 150, seed=5),
        "notes.jpg": b"This is not a photo, just some notes about scooter 42.\n" * 20,
        "page.jpg": HTML_PAYLOAD,
        "half.jpg": _bad("truncated.jpg"),
        "crc.png": _bad("bad-crc.png"),
        "big.png": photo_png(700, 700, seed=6),
        "copy.jpg": a,
        "unlisted.jpg": photo_jpeg(64, 48, seed=7),
        "badlabel.jpg": photo_jpeg(64, 48, seed=8),
        "badtime.jpg": photo_jpeg(64, 48, seed=9),
        "naive.jpg": photo_jpeg(64, 48, seed=10),
        "short.jpg": photo_jpeg(64, 48, seed=11),
        ".DS_Store": b"finder",
    }
    assert (
        len(files["big.png"]) > MAX_BYTES > max(len(files[n]) for n in ("a.jpg", "shots/exif.jpg", "p.png"))
    )
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    rows = [
        ["file", "label", "device_id", "taken_at"],
        ["a.jpg", "upright", "", ""],
        ["./shots/exif.jpg", "Tilted", "", ""],
        ["p.png", "fallen", "", WHEN.astimezone(timezone(timedelta(hours=2))).isoformat()],
        ["dev.jpg", "", "dev-1", T0.isoformat().replace("+00:00", "Z")],
        ["far.jpg", "", "dev-1", FAR.isoformat()],
        ["ghost.jpg", "", "ghost", T0.isoformat()],
        ["notes.jpg", "upright", "", ""],
        ["page.jpg", "upright", "", ""],
        ["half.jpg", "upright", "", ""],
        ["crc.png", "upright", "", ""],
        ["big.png", "upright", "", ""],
        ["copy.jpg", "upright", "", ""],
        ["missing.jpg", "upright", "", ""],
        ["badlabel.jpg", "upside-down", "", ""],
        ["badtime.jpg", "", "dev-1", "yesterday"],
        ["naive.jpg", "", "dev-1", "2026-01-01T10:00:00"],
        ["short.jpg", "upright"],
    ]
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    (folder / "labels.csv").write_text(text.getvalue())
    return files


EXPECTED_REFUSALS = {
    "ghost.jpg": "unknown_device",
    "notes.jpg": "not_an_image",
    "page.jpg": "active_content",
    "half.jpg": "truncated",
    "crc.png": "corrupt",
    "big.png": "too_large",
    "copy.jpg": "duplicate",
    "missing.jpg": "missing_file",
    "unlisted.jpg": "no_row",
    "badlabel.jpg": "bad_label",
    "badtime.jpg": "bad_time",
    "naive.jpg": "bad_time",
    "short.jpg": "bad_row",
}
IMPORTED = {"a.jpg", "shots/exif.jpg", "p.png", "dev.jpg", "far.jpg"}


@pytest.fixture
def platform(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """A migrated platform (``db_url``, objects in a local folder) with an operator and device dev-1 in zone-1,
    which lay fallen around T0; and the team's folder."""
    operator_id = create_user_in_db(db_url, OPERATOR, "correct horse battery", "operator")
    create_user_in_db(db_url, "carl@example.com", "correct horse battery", "client")
    add_device(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        add_readings(
            session,
            [
                reading_row("dev-1", 100 + i, 80.0, T0 + timedelta(seconds=s), T0 + timedelta(seconds=s))
                for i, s in enumerate((-6, 0, 5))
            ],
        )
        session.commit()
    engine.dispose()
    folder = tmp_path / "team"
    folder.mkdir()
    data_dir = tmp_path / "data"
    env = {
        "PZONE_DATABASE_URL": db_url,
        "PZONE_DATA_DIR": str(data_dir),
        "PZONE_UPLOAD_MAX_BYTES": str(MAX_BYTES),
        "PZONE_S3_BUCKET": None,
        "PZONE_REDIS_URL": None,
        "PZONE_MODEL_TIER_URL": None,
        "PZONE_DEBUG": None,
        "COLUMNS": "200",
    }
    return {"db": db_url, "folder": folder, "data": data_dir, "env": env, "operator": operator_id}


def run_import(platform: Mapping[str, Any], *args: str) -> Any:
    return CliRunner().invoke(load_plugins(), ["dataset", "import", *args], env=platform["env"])


def refusals(output: str) -> dict[str, str]:
    """file → code of every ``refused FILE: CODE: reason`` line."""
    found = {}
    for line in output.splitlines():
        if line.startswith("refused ") and line.count(": ") >= 2:
            name, code, _ = line.removeprefix("refused ").split(": ", 2)
            found[name] = code
    return found


def rows(db_url: str, model: type[Photo] | type[PhotoLabel]) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(model)))
    finally:
        engine.dispose()


def stored(db_url: str) -> dict[str, Photo]:
    return {photo.id: photo for photo in rows(db_url, Photo)}


def labels(db_url: str) -> dict[str, PhotoLabel]:
    return {label.photo_id: label for label in rows(db_url, PhotoLabel)}


def store_keys(data_dir: Path) -> set[str]:
    root = data_dir / "objects"
    return object_keys(LocalObjectStore(root, b"k" * 32)) if root.exists() else set()


def test_import_stores_the_good_refuses_the_bad_with_reasons(platform: dict[str, Any]) -> None:
    files = write_folder(platform["folder"])
    result = run_import(platform, str(platform["folder"]), "--operator", OPERATOR.upper(), "--zone", "zone-1")
    assert result.exit_code == 0, result.output
    assert refusals(result.output) == EXPECTED_REFUSALS
    summary = " ".join(result.output.split())
    assert "imported 5 file(s) (3 labeled by the operator, 2 waiting for readings)" in summary
    assert "labeled by their device's readings now: 1 of 2; not yet: 1 no_reading_in_window" in summary
    assert "refused 13 file(s)" in summary

    photos = stored(platform["db"])
    assert {p.status for p in photos.values()} == {"stored"} and len(photos) == 5
    assert {p.user_id for p in photos.values()} == {platform["operator"]}
    by_sha = {p.sha256: p for p in photos.values()}
    by_file = {name: by_sha[hashlib.sha256(files[name]).hexdigest()] for name in IMPORTED}
    # Every object of a stored photo, and nothing else: no refused file left an object, no staging object is left.
    expected_keys = {k for p in photos.values() for k in (p.original_key, p.thumb_key, p.preview_key)}
    assert store_keys(platform["data"]) == expected_keys
    assert by_file["shots/exif.jpg"].width == 300 and by_file["shots/exif.jpg"].height == 400  # as displayed
    assert by_file["p.png"].content_type == "image/png"
    assert {name: (by_file[name].device_id, by_file[name].zone_id) for name in ("a.jpg", "dev.jpg")} == {
        "a.jpg": (None, "zone-1"),
        "dev.jpg": ("dev-1", "zone-1"),
    }
    taken = {name: (by_file[name].taken_at_source, as_utc(by_file[name].taken_at)) for name in IMPORTED}
    assert taken["p.png"] == ("operator", WHEN) and taken["dev.jpg"] == ("operator", T0)
    assert taken["far.jpg"] == ("operator", FAR)
    assert taken["shots/exif.jpg"][0] == "exif"  # no taken_at in its row: the camera's, as uploads have it

    label_of = {name: labels(platform["db"]).get(by_file[name].id) for name in IMPORTED}
    operator = platform["operator"]
    assert {
        name: (row.manual_label, row.manual_by)
        for name, row in label_of.items()
        if row is not None and row.source == SOURCE_MANUAL
    } == {
        "a.jpg": ("upright", operator),
        "shots/exif.jpg": ("tilted", operator),
        "p.png": ("fallen", operator),
    }
    dev, far = label_of["dev.jpg"], label_of["far.jpg"]
    assert dev is not None and (dev.source, dev.label, dev.manual_label) == (SOURCE_SENSOR, "fallen", None)
    assert far is not None and (far.label, far.reason) == (None, "no_reading_in_window")

    engine = make_engine(platform["db"])
    try:
        with Session(engine) as session:
            training = {item.photo_id: (item.label, item.source) for item in labeled_photos(session)}
    finally:
        engine.dispose()
    assert training == {
        by_file["a.jpg"].id: ("upright", SOURCE_MANUAL),
        by_file["shots/exif.jpg"].id: ("tilted", SOURCE_MANUAL),
        by_file["p.png"].id: ("fallen", SOURCE_MANUAL),
        by_file["dev.jpg"].id: ("fallen", SOURCE_SENSOR),
    }

    again = run_import(platform, str(platform["folder"]), "--operator", OPERATOR, "--zone", "zone-1")
    assert again.exit_code == 1, again.output
    assert {name: refusals(again.output)[name] for name in IMPORTED} == dict.fromkeys(
        IMPORTED, "already_stored"
    )
    assert len(stored(platform["db"])) == 5


def test_a_dry_run_checks_the_same_and_writes_nothing(platform: dict[str, Any], tmp_path: Path) -> None:
    write_folder(platform["folder"])
    database = tmp_path / "pzone.db"
    before = database.read_bytes() if database.exists() else None
    result = run_import(
        platform, str(platform["folder"]), "--operator", OPERATOR, "--zone", "zone-1", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    assert refusals(result.output) == EXPECTED_REFUSALS
    summary = " ".join(result.output.split())
    assert (
        "dry run: 5 file(s) would be imported (3 labeled by the operator, 2 waiting for readings)" in summary
    )
    assert stored(platform["db"]) == {} and labels(platform["db"]) == {}
    assert not platform["data"].exists()  # no object, not even the local store's folder or signing key
    if before is not None:
        assert database.read_bytes() == before


def test_a_labeled_row_needs_a_device_or_a_zone(platform: dict[str, Any]) -> None:
    folder = platform["folder"]
    (folder / "a.jpg").write_bytes(photo_jpeg(64, 48, seed=1))
    (folder / "labels.csv").write_text("file,label\na.jpg,upright\n")
    result = run_import(platform, str(folder), "--operator", OPERATOR)
    assert result.exit_code == 1, result.output
    assert refusals(result.output) == {"a.jpg": "no_target"}
    assert "imported 0 file(s)" in result.output and stored(platform["db"]) == {}


DEFAULT_ARGS = ("{folder}", "--operator", OPERATOR)
# case → (arguments, files of the folder replaced (None: removed), the database file, what the error says)
SETUP_ERRORS: dict[str, tuple[tuple[str, ...], dict[str, bytes | None], str, str]] = {
    "no folder": (("{tmp}/nowhere", "--operator", OPERATOR), {}, "pzone.db", "there is no folder"),
    "no csv": (DEFAULT_ARGS, {"labels.csv": None}, "pzone.db", "there is no labels CSV"),
    "empty csv": (DEFAULT_ARGS, {"labels.csv": b""}, "pzone.db", "the CSV is empty"),
    "unknown column": (
        DEFAULT_ARGS,
        {"labels.csv": b"file,lable\na.jpg,upright\n"},
        "pzone.db",
        "unknown column(s) 'lable'",
    ),
    "semicolons": (
        DEFAULT_ARGS,
        {"labels.csv": b"file;label\na.jpg;upright\n"},
        "pzone.db",
        "separated by commas",
    ),
    "not utf-8": (
        DEFAULT_ARGS,
        {"labels.csv": b"file,label\n\xff\xfe.jpg,upright\n"},
        "pzone.db",
        "is not UTF-8",
    ),
    "broken quoting": (
        DEFAULT_ARGS,
        {"labels.csv": b'file,label\na.jpg,"upr"ight\n'},
        "pzone.db",
        "cannot be read: line 2",
    ),
    "other csv missing": (
        (*DEFAULT_ARGS, "--labels", "{tmp}/other.csv"),
        {},
        "pzone.db",
        "there is no labels CSV at",
    ),
    "unknown operator": (
        ("{folder}", "--operator", "nobody@example.com"),
        {},
        "pzone.db",
        "there is no account nobody@example.com",
    ),
    "client as operator": (
        ("{folder}", "--operator", "carl@example.com"),
        {},
        "pzone.db",
        "carl@example.com is a client account",
    ),
    "unknown zone": ((*DEFAULT_ARGS, "--zone", "atlantis"), {}, "pzone.db", "there is no zone 'atlantis'"),
    "no database": (DEFAULT_ARGS, {}, "absent.db", "there is no platform database"),
    "no operator": (("{folder}",), {}, "pzone.db", "Missing option '--operator'"),
}


@pytest.mark.parametrize("case", list(SETUP_ERRORS))
def test_an_import_that_cannot_start_says_why_and_imports_nothing(
    sqlite_url: str, tmp_path: Path, case: str
) -> None:
    args, files, database, message = SETUP_ERRORS[case]
    create_user_in_db(sqlite_url, OPERATOR, "correct horse battery", "operator")
    create_user_in_db(sqlite_url, "carl@example.com", "correct horse battery", "client")
    add_device(sqlite_url)
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo_jpeg(64, 48, seed=1))
    (folder / "labels.csv").write_text("file,label\na.jpg,upright\n")
    for name, data in files.items():
        if data is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(data)
    env: dict[str, str | None] = {
        "PZONE_DATABASE_URL": f"sqlite:///{tmp_path / database}",
        "PZONE_DATA_DIR": str(tmp_path / "data"),
        "PZONE_S3_BUCKET": None,
        "PZONE_MODEL_TIER_URL": None,
        "COLUMNS": "200",
    }
    argv = [arg.format(folder=folder, tmp=tmp_path) for arg in args]
    result = CliRunner().invoke(load_plugins(), ["dataset", "import", *argv], env=env)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert stored(sqlite_url) == {} and not (tmp_path / "data").exists()
    assert not (tmp_path / "absent.db").exists()


def test_a_failure_after_the_photo_is_stored_removes_it_and_stops(
    platform: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = platform["folder"]
    (folder / "a.jpg").write_bytes(photo_jpeg(64, 48, seed=1))
    (folder / "b.jpg").write_bytes(photo_jpeg(64, 48, seed=2))
    (folder / "labels.csv").write_text("file,label\na.jpg,upright\nb.jpg,fallen\n")

    def database_gone(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(importer, "set_manual_label", database_gone)
    result = run_import(platform, str(folder), "--operator", OPERATOR, "--zone", "zone-1")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError), result.output
    assert "imported 0 file(s)" in result.output
    assert stored(platform["db"]) == {} and labels(platform["db"]) == {}
    assert store_keys(platform["data"]) == set()


NOW_FOR_PARSING = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_the_manifest_reads_both_forms_and_refuses_bad_rows() -> None:
    text = (
        "\ufeffFile,Label,Device_ID,Taken_At\n"
        "./a.jpg,Upright,,\n"
        "\n"
        "sub//b.jpg,,dev-1,2026-05-01T13:30:00+02:00\n"
        "c.jpg,fallen,dev-1,2026-05-01T11:00:00Z\n"
        "d.jpg,,dev-1,\n"
        "e.jpg,,,2026-05-01T11:00:00Z\n"
        "f.jpg,,,\n"
        "g.jpg,,dev-1,2026-05-01T13:00:00Z\n"
        "../h.jpg,upright,,\n"
        "/etc/i.jpg,upright,,\n"
        ",upright,,\n"
        "j.jpg,upright,,\n"
        "./j.jpg,tilted,,\n"
    )
    manifest = parse_manifest(text, now=NOW_FOR_PARSING)
    assert [(r.file, r.label, r.device_id, r.taken_at) for r in manifest.rows] == [
        ("a.jpg", "upright", None, None),
        ("sub/b.jpg", None, "dev-1", datetime(2026, 5, 1, 11, 30, tzinfo=UTC)),
        ("c.jpg", "fallen", "dev-1", datetime(2026, 5, 1, 11, 0, tzinfo=UTC)),
    ]
    assert manifest.rows[1].taken_at is not None and manifest.rows[1].taken_at.tzinfo is UTC
    assert [r.waits_for_readings for r in manifest.rows] == [False, True, False]
    assert {(r.file, r.code) for r in manifest.refused} == {
        ("d.jpg", "incomplete_row"),
        ("e.jpg", "incomplete_row"),
        ("f.jpg", "incomplete_row"),
        ("g.jpg", "bad_time"),  # an hour ahead of now
        ("../h.jpg", "outside_folder"),
        ("/etc/i.jpg", "outside_folder"),
        ("line 12", "bad_row"),
        ("j.jpg", "listed_twice"),
    }
    assert "lines 13, 14" in next(r.reason for r in manifest.refused if r.code == "listed_twice")

    found, refused = match_folder(
        manifest, ["a.jpg", "c.jpg", "d.jpg", "j.jpg", "z.jpg"], lambda name: name != "sub/b.jpg"
    )
    assert [r.file for r in found] == ["a.jpg", "c.jpg"]
    # Files whose rows were refused are not "no row" too: each file has one reason.
    assert refused == [
        Refusal("sub/b.jpg", "missing_file", "line 4 names a file the folder lacks"),
        Refusal("z.jpg", "no_row", "no row of the CSV names this file"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the CSV is empty"),
        ("\n\n", "the CSV is empty"),
        ("label\nupright\n", "no 'file' column"),
        ("file,device_id\na.jpg,dev-1\n", "needs a 'label' column, or 'device_id' and 'taken_at'"),
        ("file,label,label\n", "label appear more than once"),
        ("file,lable\n", "unknown column(s) 'lable'"),
        ('file,label\na.jpg,"upr"ight\n', "line 2"),
    ],
)
def test_a_manifest_that_cannot_be_read_is_one_error(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        parse_manifest(text, now=NOW_FOR_PARSING)
