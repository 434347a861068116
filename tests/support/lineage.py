"""A platform and an MLflow store with lineage records, written directly (no training): the world `pzone lineage` tells
about, in a ``.pzone`` data dir of its own.

Runs ``v1`` and ``v2`` recorded lineage (``dataset_record.write_lineage``) and are registered (``v2`` is the champion,
with its test macro-F1 tag); ``v3`` is registered from a run that recorded none; ``loose`` recorded lineage and is
registered nowhere. Photos (by role): ``shared`` is in both datasets (train split of v1, test split of v2) and both
versions answered it; ``reupload`` holds the same bytes as ``shared`` under its own id; ``operator`` carries the
operator's label (v2 only); ``unseen`` is in no dataset, answered by v2; ``gone`` is in v2's dataset, no longer on the
platform. Taken-at times are :data:`T` plus the hours of :data:`TAKEN_HOURS`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pzone.tilt import TILT_CLASSES
from pzone_pipelines import dataset_record as record
from pzone_pipelines.params import load_params
from pzone_pipelines.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS
from tests.support.paths import REPO

MODEL = "pzone-tilt"
T = datetime(2026, 2, 1, 8, 0, 0, tzinfo=UTC)
TAKEN_HOURS = {"shared": 0, "second": 1, "third": 2, "operator": 5, "reupload": 7, "unseen": 9}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHAMPION_F1 = "0.912345"


@dataclass(frozen=True)
class LineageWorld:
    data_dir: Path  # PZONE_DATA_DIR: the platform's pzone.db and the MLflow store mlflow.db
    database_url: str
    tracking_uri: str
    photos: dict[str, str]  # role → photo id
    runs: dict[str, str]  # v1, v2, v3, loose → run id

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PZONE_DATA_DIR": str(self.data_dir)}


def photo_id(role: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pzone-lineage-test/{role}"))


def sha_of(role: str) -> str:
    content = "shared" if role == "reupload" else role  # the same bytes uploaded twice
    return hashlib.sha256(content.encode()).hexdigest()


def image(role: str, label: str, source: str = "sensor") -> dict[str, Any]:
    sha = sha_of(role)
    return {
        "sha256": sha,
        "file": f"images/{sha[:2]}/{sha}.jpg",
        "label": label,
        "source": source,
        "quality": None if source == "manual" else 0.9,
        "photo_ids": [photo_id(role)],
        "object_key": f"originals/{photo_id(role)}.jpg",
    }


def write_record(folder: Path, images: list[dict[str, Any]], splits: dict[str, list[str]], lr: float) -> Path:
    """The lineage artifacts of one run, as the train stage writes them, into ``folder/lineage``."""
    project = folder / "project"
    (project / "data" / "snapshot").mkdir(parents=True)
    params = load_params(REPO / "params.yaml")
    params["train"]["lr"] = lr
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    manifest = project / "data" / "snapshot" / "manifest.json"
    manifest.write_text(json.dumps({"classes": list(TILT_CLASSES), "images": images}), encoding="utf-8")
    for split, roles in splits.items():
        (project / "data" / "prepared" / split).mkdir(parents=True)
        ids = [sha_of(role) for role in roles]
        (project / "data" / "prepared" / split / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
    out = folder / record.LINEAGE_ARTIFACT
    record.write_lineage(out, project, manifest, project / "data" / "prepared")
    return out


def build_mlflow(root: Path, tracking_uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment(MODEL, artifact_location=(root / "mlartifacts").as_uri())
    upright, tilted, fallen = TILT_CLASSES
    datasets = {
        "v1": (
            [image("shared", upright), image("second", tilted), image("third", fallen)],
            {"train": ["shared", "second"], "val": [], "test": ["third"]},
        ),
        "v2": (
            [
                image("shared", upright),
                image("second", tilted),
                image("third", fallen),
                image("operator", fallen, "manual"),
                image("gone", upright),
            ],
            {"train": ["second", "third", "operator", "gone"], "val": [], "test": ["shared"]},
        ),
        "loose": ([image("second", tilted)], {"train": ["second"]}),
    }
    runs: dict[str, str] = {}
    for index, name in enumerate(("v1", "v2", "v3", "loose")):
        run = client.create_run(experiment, run_name=name)
        run_id = run.info.run_id
        runs[name] = run_id
        if name in datasets:
            images, splits = datasets[name]
            folder = write_record(root / "records" / name, images, splits, lr=0.001 * (index + 1))
            client.log_artifacts(run_id, str(folder), artifact_path=record.LINEAGE_ARTIFACT)
            client.set_tag(run_id, record.DATASET_DIGEST_TAG, f"{index:x}" * 32 + ".dir")
            client.set_tag(run_id, record.CODE_COMMIT_TAG, COMMIT)
            client.set_tag(run_id, record.CODE_DIRTY_TAG, "false")
        client.log_metric(run_id, "test_macro_f1", 0.5 + index / 10)
        client.set_terminated(run_id)
    client.create_registered_model(MODEL)
    for name in ("v1", "v2", "v3"):
        tags = {"test_macro_f1": CHAMPION_F1} if name == "v2" else {}
        client.create_model_version(MODEL, f"runs:/{runs[name]}/model", run_id=runs[name], tags=tags)
    client.set_registered_model_alias(MODEL, CHAMPION_ALIAS, "2")
    client.set_registered_model_alias(MODEL, CHALLENGER_ALIAS, "3")
    return runs


def build_platform(database_url: str) -> dict[str, str]:
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone.db.models import Photo, Prediction, User, table_of
    from pzone.migrations import upgrade

    upgrade(database_url)
    user = str(uuid.uuid4())
    photos = {role: photo_id(role) for role in (*TAKEN_HOURS, "gone")}
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(table_of(User)), [{"id": user, "email": "lin@example.com", "password_hash": "x"}]
            )
            rows = [
                {
                    "id": photos[role],
                    "user_id": user,
                    "status": "stored",
                    "sha256": sha_of(role),
                    "original_key": f"originals/{photos[role]}.jpg",
                    "content_type": "image/jpeg",
                    "taken_at": T + timedelta(hours=hours),
                }
                for role, hours in TAKEN_HOURS.items()
            ]
            connection.execute(insert(table_of(Photo)), rows)
        answered = [("shared", "1", 24), ("shared", "2", 48), ("unseen", "2", 50)]  # role, version, hours
        with Session(engine) as session:
            session.add_all(
                Prediction(
                    photo_id=photos[role],
                    model_version=f"{MODEL}/{version}",
                    label=TILT_CLASSES[0],
                    predicted_at=T + timedelta(hours=hours),
                )
                for role, version, hours in answered
            )
            session.commit()
    finally:
        engine.dispose()
    return photos


def build_world(data_dir: Path) -> LineageWorld:
    data_dir.mkdir(parents=True)
    database_url = f"sqlite:///{data_dir / 'pzone.db'}"
    tracking_uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    photos = build_platform(database_url)
    runs = build_mlflow(data_dir, tracking_uri)
    return LineageWorld(data_dir, database_url, tracking_uri, photos, runs)
