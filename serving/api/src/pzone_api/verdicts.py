"""The model tier client: ``POST {PZONE_MODEL_TIER_URL}/classify`` and the retry of pending verdicts.

Contract (the model tier issue implements the server): a multipart form with one or more ``images`` files →
``{"results": [{"label": "upright|tilted|fallen", "probs": {"upright": p, ...}, "model_version": "..."}, ...]}``
in the order of the files; an item that could not be classified has ``{"error": "..."}`` instead.
The front never fails an upload because of the model tier: a photo without an answer stays ``pending``.
Every answer is also kept as a ``predictions`` row (scored later by ``pzone.accuracy``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, Prediction
from pzone.storage import LocalObjectStore, S3ObjectStore
from pzone_api.settings import Settings

logger = logging.getLogger("pzone.api.verdicts")
LABELS = ("upright", "tilted", "fallen")


@dataclass(frozen=True)
class Verdict:
    label: str
    probs: dict[str, float]
    model_version: str


def classify(settings: Settings, images: list[bytes]) -> list[Verdict | None] | None:
    """Ask the model tier; ``None`` when it is not configured, down, slow or answers nonsense."""
    if not settings.model_tier_url or not images:
        return None
    files = [("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    try:
        response = httpx.post(
            settings.model_tier_url.rstrip("/") + "/classify",
            files=files,
            timeout=settings.model_tier_timeout_s,
        )
        response.raise_for_status()
        results = response.json()["results"]
        if not isinstance(results, list) or len(results) != len(images):
            raise ValueError("result count does not match the images sent")
        return [_verdict(item) for item in results]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.info("model tier unavailable (%s): verdicts stay pending", type(exc).__name__)
        return None


def _verdict(item: object) -> Verdict | None:
    if not isinstance(item, dict) or item.get("label") not in LABELS:
        return None
    probs = item.get("probs") or {}
    return Verdict(
        label=str(item["label"]),
        probs={k: float(v) for k, v in probs.items() if k in LABELS},
        model_version=str(item.get("model_version") or "unknown"),
    )


def apply_verdict(session: Session, photo: Photo, verdict: Verdict | None) -> None:
    """Count the attempt; with a verdict, put it on the photo and add its ``predictions`` row (the caller commits
    both in one transaction). A later verdict, e.g. by a new model version, adds a row and replaces the photo's."""
    photo.verdict_attempts += 1
    if verdict is None:
        return
    now = datetime.now(UTC)
    probs = json.dumps(verdict.probs)
    photo.verdict = verdict.label
    photo.verdict_probs = probs
    photo.model_version = verdict.model_version
    photo.verdict_at = now
    session.add(
        Prediction(
            photo_id=photo.id,
            model_version=verdict.model_version,
            label=verdict.label,
            probs=probs,
            predicted_at=now,
        )
    )


def retry_pending(
    settings: Settings, engine: Engine, store: LocalObjectStore | S3ObjectStore, limit: int = 32
) -> int:
    """One pass of the background retry: classify stored photos still pending; returns how many got a verdict."""
    if not settings.model_tier_url:
        return 0
    with Session(engine, expire_on_commit=False) as session:
        photos = session.scalars(
            select(Photo)
            .where(Photo.status == "stored", Photo.verdict == "pending", Photo.preview_key.is_not(None))
            .order_by(Photo.completed_at)
            .limit(limit)
        ).all()
        if not photos:
            return 0
        images = [store.get_bytes(photo.preview_key) for photo in photos if photo.preview_key]
        verdicts = classify(settings, images)
        if verdicts is None:
            return 0
        for photo, verdict in zip(photos, verdicts, strict=True):
            apply_verdict(session, photo, verdict)
        session.commit()
        return sum(v is not None for v in verdicts)
