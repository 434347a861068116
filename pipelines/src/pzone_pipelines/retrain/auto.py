"""What `pzone retrain --auto` decides on: new labeled photos since the last snapshot, the champion's live accuracy.

:func:`should_retrain` is the pure decision; the rest reads the project's last snapshot and the platform.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pzone_pipelines.params import PARAMS_FILE, load_params
from pzone_pipelines.retrain.pipeline import PACKAGE, expected_version, read_json
from pzone_pipelines.retrain.settings import RetrainSettings

MANIFEST = Path("data/snapshot/manifest.json")
SKIPPED = Path("data/snapshot/skipped.json")


def should_retrain(
    new_labeled_photos: int, live_accuracy: float | None, settings: RetrainSettings
) -> tuple[bool, str]:
    """Whether ``--auto`` retrains, and why. ``live_accuracy`` is the champion's (None: no model, or too few scored
    predictions to trust). Low accuracy alone does not retrain: without a new labeled photo the pipeline would have
    nothing new to learn from (and `dvc repro` would skip every stage)."""
    need = settings.retrain_min_new_labeled
    bar = settings.retrain_min_live_accuracy
    if new_labeled_photos >= need:
        return True, f"{new_labeled_photos} new labeled photos since the last training (threshold {need})"
    if live_accuracy is not None and live_accuracy < bar:
        if new_labeled_photos > 0:
            return True, (
                f"live accuracy {live_accuracy:.3f} below {bar:.3f}, {new_labeled_photos} new labeled photos"
            )
        return (
            False,
            f"live accuracy {live_accuracy:.3f} below {bar:.3f}, but no new labeled photo to learn from",
        )
    accuracy = "not measured yet" if live_accuracy is None else f"{live_accuracy:.3f} (bar {bar:.3f})"
    return False, f"{new_labeled_photos} new labeled photos (threshold {need}); live accuracy {accuracy}"


def snapshot_photo_ids(project: Path) -> set[str]:
    """Photo ids the last snapshot took in (images and recorded skips)."""
    ids: set[str] = set()
    manifest = read_json(project / MANIFEST)
    for item in manifest.get("images", []):
        ids.update(item.get("photo_ids", []))
    try:
        skipped = json.loads((project / SKIPPED).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        skipped = []
    for item in skipped if isinstance(skipped, list) else []:
        ids.update(item.get("photo_ids", []))
    return ids


def new_labeled_photos(session: Any, project: Path) -> int:
    """Labeled photos in the database that the last snapshot did not take in. Refreshes the sensor labels first with
    the project's ``labels`` params (the labels the snapshot stage computes); the caller commits."""
    from pzone.labels import labeled_photos, refresh_labels
    from pzone_pipelines.retrain.refresh import project_label_params

    params = load_params(project / PARAMS_FILE)
    refresh_labels(session, project_label_params(project))
    min_quality = float((params.get("snapshot") or {}).get("min_quality", 0.0))
    known = snapshot_photo_ids(project)
    return sum(photo.photo_id not in known for photo in labeled_photos(session, min_quality=min_quality))


def champion_live_accuracy(session: Any, project: Path, min_scored: int) -> tuple[str | None, float | None]:
    """The serving champion's version (from the last package record) and its live accuracy (None below
    ``min_scored`` scored predictions)."""
    from pzone.accuracy import live_accuracy

    version = expected_version(read_json(project / PACKAGE))
    if version is None:
        return None, None
    report = live_accuracy(session, model_version=version)
    for item in report["versions"]:
        if item["model_version"] == version and item["scored"] >= min_scored:
            return version, item["accuracy"]
    return version, None
