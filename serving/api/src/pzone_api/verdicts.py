"""The model tier client: ``POST {PZONE_MODEL_TIER_URL}/classify`` and the retry of pending verdicts.

Contract (the model tier issue implements the server): a multipart form with one or more ``images`` files →
``{"results": [{"label": "upright|tilted|fallen", "probs": {"upright": p, ...}, "model_version": "...",
"image_size": S}, ...]}`` in the order of the files; an item that could not be classified has ``{"error": "..."}``
instead. The front never fails an upload because of the model tier: a photo without an answer stays ``pending``.
Every answer is also kept as a ``predictions`` row (scored later by ``pzone.accuracy``).

A photo goes to the tier as its *model input*: the letterboxed S×S square of training's preprocessing, as an
uncompressed BMP, which the tier takes as it is (no JPEG decode, no letterbox). The photo worker makes it from the
image it has decoded for the derivatives (:func:`pzone.preprocess.model_input_of_image`, ~1 ms; a fraction of a
grey level on average from training's square of the original, which would cost a second decode of the original:
~38 ms for 12 MP); the retry makes it from the stored preview. S is the answering model's ``image_size``: the client
remembers it per tier URL (a first guess before any answer), and sends an image again at the answered size when a
model of another size answered (a first call, or a rollout to a model with another input size).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, Prediction
from pzone.preprocess import model_input_bmp
from pzone.storage import ObjectStore
from pzone.tilt import TILT_CLASSES
from pzone_api.settings import Settings

logger = logging.getLogger("pzone.api.verdicts")
# The side sent before a tier has answered: params.yaml's default prepare.image_size (an answer corrects it).
FIRST_GUESS_SIZE = 96
# What the client sends, by signature (model inputs are BMP; JPEG is the contract's plain case).
SIGNATURES = ((b"BM", "bmp"), (b"\x89PNG\r\n\x1a\n", "png"), (b"RIFF", "webp"))

# A photo's model input at a given side (the square is made on demand: the side comes from the tier's answers).
ModelInput = Callable[[int], bytes]

# The input side of the model each tier URL answered with last (one process-wide cache: the tier's, not a user's).
_input_sizes: dict[str, int] = {}


@dataclass(frozen=True)
class Verdict:
    label: str
    probs: dict[str, float]
    model_version: str
    image_size: int | None = None  # the answering model's input side; None from a tier that does not say


def input_size(settings: Settings) -> int | None:
    """The side to make model inputs at for this tier (the last answer's, else the first guess); None: no tier."""
    if not settings.model_tier_url:
        return None
    return _input_sizes.get(settings.model_tier_url, FIRST_GUESS_SIZE)


def model_input_made(made: bytes, size: int, fallback: bytes) -> ModelInput:
    """An input already made at ``size`` (the photo worker's, from its decoded photo); any other side is made
    from ``fallback`` (the encoded preview)."""
    return lambda side: made if side == size else model_input_bmp(io.BytesIO(fallback), side)


def model_input_of_object(store: ObjectStore, key: str) -> ModelInput:
    return lambda size: model_input_bmp(io.BytesIO(store.get_bytes(key)), size)


def classify_photos(settings: Settings, inputs: Sequence[ModelInput]) -> list[Verdict | None] | None:
    """Ask the model tier about photos, each sent as its model input at the side the tier's model takes.

    ``None`` as :func:`classify`; a photo whose input cannot be made (its object is gone, say) gets ``None``."""
    if not settings.model_tier_url or not inputs:
        return None
    url = settings.model_tier_url
    size = input_size(settings) or FIRST_GUESS_SIZE
    made = [(i, image) for i, make in enumerate(inputs) if (image := _model_input(make, size)) is not None]
    if not made:
        return [None] * len(inputs)
    sent = [i for i, _ in made]
    answers = classify(settings, [image for _, image in made])
    if answers is None:
        return None
    verdicts: list[Verdict | None] = [None] * len(inputs)
    for i, verdict in zip(sent, answers, strict=True):
        verdicts[i] = verdict
        if verdict is not None and verdict.image_size:
            _input_sizes[url] = verdict.image_size
    # A model of another size answered: its verdict came from a resized square. Ask again at its own size (the
    # first verdict stays if the second ask fails).
    again: dict[int, list[int]] = {}
    for i in sent:
        verdict = verdicts[i]
        if verdict is not None and verdict.image_size is not None and verdict.image_size != size:
            again.setdefault(verdict.image_size, []).append(i)
    for other, group in sorted(again.items()):
        redo = [(i, image) for i in group if (image := _model_input(inputs[i], other)) is not None]
        second = classify(settings, [image for _, image in redo]) if redo else None
        for (i, _), verdict in zip(redo, second or [], strict=False):
            if verdict is not None:
                verdicts[i] = verdict
    return verdicts


def _model_input(make: ModelInput, size: int) -> bytes | None:
    try:
        return make(size)
    except Exception:  # a stored photo passed intake's checks: this is a storage or environment problem
        logger.warning("could not make a photo's model input; its verdict stays pending", exc_info=True)
        return None


def classify(settings: Settings, images: list[bytes]) -> list[Verdict | None] | None:
    """Ask the model tier about encoded images; ``None`` when it is not configured, down, slow or answers
    nonsense."""
    if not settings.model_tier_url or not images:
        return None
    files = []
    for i, data in enumerate(images):
        kind = next((name for signature, name in SIGNATURES if data.startswith(signature)), "jpeg")
        files.append(("images", (f"{i}.{kind}", data, f"image/{kind}")))
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
    if not isinstance(item, dict) or item.get("label") not in TILT_CLASSES:
        return None
    probs = item.get("probs") or {}
    image_size = item.get("image_size")
    return Verdict(
        label=str(item["label"]),
        probs={k: float(v) for k, v in probs.items() if k in TILT_CLASSES},
        model_version=str(item.get("model_version") or "unknown"),
        image_size=image_size if isinstance(image_size, int) and 8 <= image_size <= 4096 else None,
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
