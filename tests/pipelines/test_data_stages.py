"""The data stages of `dvc repro`: snapshot (platform → manifest + files), prepare (splits), register (the gate)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pytest
from PIL import Image

from pzone.storage import LocalObjectStore, content_addressed_key
from pzone.tilt import TILT_CLASSES
from pzone_pipelines import prepare as prep
from pzone_pipelines import register as reg
from pzone_pipelines import snapshot as snap


@dataclass(frozen=True)
class Row:
    photo_id: str
    sha256: str
    original_key: str
    content_type: str
    label: str
    source: str = "sensor"
    quality: float | None = 0.9


def jpeg(
    color: tuple[int, int, int], size: tuple[int, int] = (64, 48), orientation: int | None = None
) -> bytes:
    image = Image.new("RGB", size, color)
    image.paste((255, 255, 255), (0, 0, size[0] // 4, size[1] // 4))  # a marker in the top-left corner
    out = io.BytesIO()
    if orientation is None:
        image.save(out, "JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", b"k" * 32)


def put_photo(store: LocalObjectStore, data: bytes, photo_id: str, label: str, **kw: Any) -> Row:
    sha = hashlib.sha256(data).hexdigest()
    key = content_addressed_key("originals", sha, "jpg")
    store.put_bytes(key, data, "image/jpeg")
    return Row(photo_id, sha, key, "image/jpeg", label, **kw)


def many_photos(store: LocalObjectStore, n: int, start: int = 0) -> list[Row]:
    rows = []
    for i in range(start, start + n):
        label = TILT_CLASSES[i % 3]
        rows.append(put_photo(store, jpeg((i % 256, (i * 7) % 256, (i * 13) % 256 // 2)), f"p{i:04d}", label))
    return rows


# --- snapshot -----------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_plan_groups_same_bytes_and_skips_contradictions_and_low_quality() -> None:
    a, b, c, d = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
    rows = [
        Row("p2", b, "k/b", "image/jpeg", "tilted"),
        Row("p1", a, "k/a", "image/jpeg", "upright"),
        Row("p3", a, "k/a", "image/jpeg", "upright"),  # same bytes, same label: one image, two photos
        Row("p4", c, "k/c", "image/jpeg", "fallen"),
        Row("p5", c, "k/c", "image/jpeg", "upright"),  # same bytes, other label: contradiction
        Row("p6", d, "k/d", "image/jpeg", "fallen", quality=0.1),
        Row("p7", "e" * 64, "k/e", "image/jpeg", "fallen", source="manual", quality=None),
        Row("p8", "f" * 64, "k/f", "image/gif", "fallen"),
    ]
    entries, skipped = snap.plan_entries(rows, classes=TILT_CLASSES, min_quality=0.5)
    assert [e.sha256[0] for e in entries] == ["a", "b", "e"]
    assert entries[0].photo_ids == ("p1", "p3")
    assert entries[2].source == "manual"
    assert {s.sha256[0]: s.reason for s in skipped} == {
        "c": "conflicting_labels",
        "d": "low_quality",
        "f": "unsupported_type:image/gif",
    }


@pytest.mark.unit
def test_manual_label_settles_a_contradiction() -> None:
    c = "c" * 64
    rows = [
        Row("p4", c, "k/c", "image/jpeg", "fallen"),
        Row("p5", c, "k/c", "image/jpeg", "upright", source="manual"),
    ]
    entries, skipped = snap.plan_entries(rows, classes=TILT_CLASSES, min_quality=0.0)
    assert [(e.label, e.source) for e in entries] == [("upright", "manual")] and not skipped


@pytest.mark.unit
def test_snapshot_is_incremental_deterministic_and_prunes(store: LocalObjectStore, tmp_path: Path) -> None:
    rows = many_photos(store, 12)
    out = tmp_path / "snap"
    first = snap.take_snapshot(rows, store, out, classes=TILT_CLASSES, min_quality=0.0)
    assert (first.fetched, first.reused, first.removed) == (12, 0, 0)
    manifest = (out / snap.MANIFEST).read_bytes()
    for entry in first.entries:  # content-addressed and verified
        assert hashlib.sha256((out / entry.file).read_bytes()).hexdigest() == entry.sha256

    again = snap.take_snapshot(list(reversed(rows)), store, out, classes=TILT_CLASSES, min_quality=0.0)
    assert (again.fetched, again.reused) == (0, 12)  # nothing new: nothing fetched
    assert (out / snap.MANIFEST).read_bytes() == manifest  # same state, same bytes, in any row order

    more = many_photos(store, 3, start=100)
    grown = snap.take_snapshot(rows[2:] + more, store, out, classes=TILT_CLASSES, min_quality=0.0)
    assert (grown.fetched, grown.reused, grown.removed) == (3, 10, 2)
    files = sorted(p.relative_to(out).as_posix() for p in (out / snap.IMAGES).rglob("*") if p.is_file())
    assert files == sorted(e.file for e in grown.entries)
    assert [e.sha256 for e in snap.read_manifest(out)] == [e.sha256 for e in grown.entries]


@pytest.mark.unit
def test_missing_and_corrupt_objects_are_recorded_skips(store: LocalObjectStore, tmp_path: Path) -> None:
    rows = many_photos(store, 4)
    store.delete(rows[0].original_key)  # the manifest would point at a missing object
    store.put_bytes(rows[1].original_key, b"not the recorded bytes", "image/jpeg")
    result = snap.take_snapshot(rows, store, tmp_path / "snap", classes=TILT_CLASSES, min_quality=0.0)
    assert len(result.entries) == 2
    reasons = {s.sha256: s.reason for s in result.skipped}
    assert reasons == {rows[0].sha256: "missing_object", rows[1].sha256: "corrupt_object"}
    recorded = json.loads((tmp_path / "snap" / snap.SKIPPED).read_text())
    assert {r["reason"] for r in recorded} == {"missing_object", "corrupt_object"}
    assert not list((tmp_path / "snap").rglob(".fetch-*"))  # no half-written files


@pytest.mark.unit
def test_empty_dataset_is_a_clear_error(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(snap.EmptyDataset, match="no labeled photos"):
        snap.take_snapshot([], store, tmp_path / "snap", classes=TILT_CLASSES, min_quality=0.0)
    rows = many_photos(store, 2)
    for row in rows:
        store.delete(row.original_key)
    with pytest.raises(snap.EmptyDataset, match="missing_object"):
        snap.take_snapshot(rows, store, tmp_path / "snap", classes=TILT_CLASSES, min_quality=0.0)


# --- prepare ------------------------------------------------------------------------------------------------

PARAMS = prep.PrepareParams(image_size=32, val_fraction=0.2, test_fraction=0.2)


def snapshot_of(store: LocalObjectStore, tmp_path: Path, n: int) -> tuple[Path, list[snap.Entry]]:
    out = tmp_path / "snap"
    result = snap.take_snapshot(many_photos(store, n), store, out, classes=TILT_CLASSES, min_quality=0.0)
    return out, result.entries


@pytest.mark.unit
def test_prepare_makes_square_arrays_and_stable_splits(store: LocalObjectStore, tmp_path: Path) -> None:
    folder, entries = snapshot_of(store, tmp_path, 60)
    prepared = prep.prepare_dataset(folder, entries, PARAMS, set())
    images, labels, ids = prepared.splits["train"]
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert sum(len(s[2]) for s in prepared.splits.values()) == 60
    split_of = {sha: split for split, (_, _, ids) in prepared.splits.items() for sha in ids}
    # a photo's split depends only on its own hash: a subset keeps every photo where it was
    subset = prep.prepare_dataset(folder, entries[::2], PARAMS, set())
    for split, (_, _, ids) in subset.splits.items():
        assert all(split_of[sha] == split for sha in ids)
    assert set(prepared.splits["test"][2]) == prepared.test_members


@pytest.mark.unit
def test_test_membership_is_frozen_when_fractions_change(store: LocalObjectStore, tmp_path: Path) -> None:
    folder, entries = snapshot_of(store, tmp_path, 60)
    before = prep.prepare_dataset(folder, entries, prep.PrepareParams(32, 0.2, 0.3), set())
    smaller = prep.PrepareParams(image_size=32, val_fraction=0.2, test_fraction=0.1)
    after = prep.prepare_dataset(folder, entries, smaller, before.test_members)
    assert set(before.splits["test"][2]) <= set(after.splits["test"][2])
    without_memory = prep.prepare_dataset(folder, entries, smaller, set())
    assert len(without_memory.splits["test"][2]) < len(
        before.splits["test"][2]
    )  # the memory is what keeps them


@pytest.mark.unit
def test_prepare_applies_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg((0, 0, 200), size=(64, 32), orientation=6))  # stored landscape, shown portrait
    array = prep.load_square(path, 32)
    # portrait after orientation: letterbox bars left and right, the picture fills the height
    assert array[:, 0].max() == 0 and array[:, 15].mean() > 50
    assert array[0, 16].mean() > 50


@pytest.mark.unit
def test_unreadable_images_are_skipped_and_bad_datasets_refused(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    folder, entries = snapshot_of(store, tmp_path, 60)
    (folder / entries[0].file).write_bytes(b"\xff\xd8\xff garbage")
    (folder / entries[1].file).unlink()
    prepared = prep.prepare_dataset(folder, entries, PARAMS, set())
    reasons = {s["sha256"]: s["reason"] for s in prepared.skipped}
    assert reasons[entries[1].sha256] == "file_missing"
    assert reasons[entries[0].sha256].startswith("unreadable")

    no_fallen = [e for e in entries[2:] if e.label != "fallen"]
    with pytest.raises(prep.PrepareError, match="fallen"):
        prep.prepare_dataset(folder, no_fallen, PARAMS, set())
    with pytest.raises(prep.PrepareError, match="test split is empty"):
        prep.prepare_dataset(folder, entries[2:4], prep.PrepareParams(32, 0.0, 0.01), set())


@pytest.mark.unit
@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"image_size": "big", "val_fraction": 0.1, "test_fraction": 0.1},
        {"image_size": 8, "val_fraction": 0.1, "test_fraction": 0.1},
        {"image_size": 4097, "val_fraction": 0.1, "test_fraction": 0.1},
        {"image_size": 64, "val_fraction": 0.5, "test_fraction": 0.5},
        {"image_size": 64, "val_fraction": 0.1, "test_fraction": 0},
    ],
)
def test_bad_prepare_params_are_refused(raw: dict[str, Any]) -> None:
    from pzone.errors import UserError

    with pytest.raises(prep.PrepareError) as refused:
        prep.PrepareParams.from_mapping(raw)
    assert isinstance(refused.value, UserError)  # the stage stops with the sentence, not a stack


# --- register -----------------------------------------------------------------------------------------------

GATE = reg.GateParams(margin=0.02, min_macro_f1=0.6)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        (0.70, None, True),
        (0.50, None, False),
        (0.90, 0.87, True),
        (0.88, 0.87, False),  # better, but not by the margin
        (0.33, 0.87, False),  # shuffled labels
        (0.55, 0.40, False),  # beats a weak champion but not the bar
    ],
)
def test_gate(challenger: float, champion: float | None, promote: bool) -> None:
    champ = {"exists": False} if champion is None else {"exists": True, "macro_f1": champion, "version": "3"}
    decision = reg.decide({"macro_f1": challenger, "n_test": 100}, champ, GATE)
    assert decision.promote is promote and decision.reason


@pytest.mark.unit
@pytest.mark.parametrize("bad", [None, "x", float("nan"), 1.5, -0.1])
def test_gate_refuses_bad_metrics(bad: Any) -> None:
    with pytest.raises(reg.RegisterError):
        reg.decide({"macro_f1": bad}, {"exists": False}, GATE)
    with pytest.raises(reg.RegisterError):
        reg.decide({"macro_f1": 0.9}, {"exists": True, "macro_f1": bad}, GATE)


class Constant(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """The smallest real MLflow model: the registry only needs something logged."""

    def predict(self, context: Any, model_input: Any) -> Any:
        return model_input


class FailingAliases:
    """A real MLflow client whose first champion alias move fails, as a crash between two registry calls would;
    ``always``: every champion move fails (the registry stays away while the aliases are put back)."""

    def __init__(self, client: Any, *, always: bool = False) -> None:
        self.client, self.always, self.failed = client, always, False

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        if alias == reg.CHAMPION_ALIAS and (self.always or not self.failed):
            self.failed = True
            raise RuntimeError("registry went away")
        self.client.set_registered_model_alias(name, alias, version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.mark.integration
def test_register_moves_aliases_and_undoes_a_half_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PZONE_DATA_DIR", str(tmp_path / "pz"))
    import mlflow
    from mlflow import MlflowClient

    from pzone_pipelines.settings import Settings
    from pzone_pipelines.tracking import configure_mlflow

    configure_mlflow(Settings())
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    model_uri = info.model_uri
    client = MlflowClient()
    record = {"run_id": run.info.run_id, "model_uri": model_uri, "dataset_hash": "abc"}

    first = reg.decide({"macro_f1": 0.8, "n_test": 10}, {"exists": False}, GATE)
    v1 = reg.register(
        record, first, model_name="t-model", client=client, register_model=mlflow.register_model
    )
    assert str(client.get_model_version_by_alias("t-model", reg.CHAMPION_ALIAS).version) == v1["version"]
    assert client.get_model_version("t-model", v1["version"]).tags["dataset_hash"] == "abc"

    weak = reg.decide(
        {"macro_f1": 0.33, "n_test": 10}, {"exists": True, "macro_f1": 0.8, "version": "1"}, GATE
    )
    v2 = reg.register(record, weak, model_name="t-model", client=client, register_model=mlflow.register_model)
    assert str(client.get_model_version_by_alias("t-model", reg.CHALLENGER_ALIAS).version) == v2["version"]
    assert str(client.get_model_version_by_alias("t-model", reg.CHAMPION_ALIAS).version) == v1["version"]

    strong = reg.decide(
        {"macro_f1": 0.95, "n_test": 10}, {"exists": True, "macro_f1": 0.8, "version": "1"}, GATE
    )
    with pytest.raises(RuntimeError, match="registry went away"):
        reg.register(
            record,
            strong,
            model_name="t-model",
            client=FailingAliases(client),
            register_model=mlflow.register_model,
        )
    versions = sorted(int(v.version) for v in client.search_model_versions("name='t-model'"))
    assert versions == [1, 2]  # the half-registered version 3 was removed again
    # every alias is back where it was: challenger v2, champion v1, no previous-champion
    assert reg.alias_targets(client, "t-model") == {
        reg.CHALLENGER_ALIAS: v2["version"],
        reg.CHAMPION_ALIAS: v1["version"],
        reg.PREVIOUS_CHAMPION_ALIAS: None,
    }
    # The registry still away while the aliases are put back: the first error propagates, the others are put back.
    with pytest.raises(RuntimeError, match="registry went away"):
        reg.register(
            record,
            strong,
            model_name="t-model",
            client=FailingAliases(client, always=True),
            register_model=mlflow.register_model,
        )
    assert reg.alias_targets(client, "t-model")[reg.PREVIOUS_CHAMPION_ALIAS] is None
    assert sorted(int(v.version) for v in client.search_model_versions("name='t-model'")) == [1, 2]
    with pytest.raises(reg.RegisterError, match="model_uri"):
        reg.register(
            {"run_id": "x"}, strong, model_name="t-model", client=client, register_model=mlflow.register_model
        )


@pytest.mark.unit
def test_a_stale_champion_comparison_never_promotes() -> None:
    no_champion_then = reg.decide({"macro_f1": 0.9, "n_test": 10}, {"exists": False}, GATE)
    assert no_champion_then.promote
    # a champion appeared after evaluate ran: not compared, not promoted
    stale = reg.guard_stale(no_champion_then, {"exists": False}, "1")
    assert not stale.promote and "changed since evaluate" in stale.reason
    beat_v1 = reg.decide(
        {"macro_f1": 0.9, "n_test": 10}, {"exists": True, "macro_f1": 0.5, "version": "1"}, GATE
    )
    assert not reg.guard_stale(
        beat_v1, {"exists": True, "version": "1"}, "2"
    ).promote  # the champion moved on
    assert (
        reg.guard_stale(beat_v1, {"exists": True, "version": "1"}, "1") is beat_v1
    )  # same champion: as decided
