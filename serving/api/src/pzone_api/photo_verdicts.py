"""A photo's verdict: the model tier's answer recorded on the photo and as a ``predictions`` row, and the retry of
photos still ``pending``.

Every answer is kept as a ``predictions`` row (scored later by ``pzone.accuracy``); the photo shows the latest. The
answers come from :mod:`pzone_api.model_tier_client`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, Prediction
from pzone.storage import ObjectStore
from pzone.tier_contract import Verdict
from pzone_api.model_tier_client import classify_photos, model_input_of_object
from pzone_api.settings import Settings


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


def retry_pending(settings: Settings, engine: Engine, store: ObjectStore, limit: int = 32) -> int:
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
        # From the stored preview (oriented, sRGB: what the worker makes its input from), read when it is made.
        verdicts = classify_photos(
            settings, [model_input_of_object(store, str(photo.preview_key)) for photo in photos]
        )
        if verdicts is None:
            return 0
        for photo, verdict in zip(photos, verdicts, strict=True):
            apply_verdict(session, photo, verdict)
        session.commit()
        return sum(v is not None for v in verdicts)
