"""The API's HTTP client of the model tier: photos sent as model inputs, answers read as verdicts.

The contract (path, field, answer) is :mod:`pzone.tier_contract`. The front never fails an upload because of the
model tier: a photo without an answer stays ``pending`` (:mod:`pzone_api.photo_verdicts` records answers and
retries the pending ones).

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
import logging
from collections.abc import Callable, Sequence

import httpx

from pzone.preprocess import model_input_bmp
from pzone.storage import ObjectStore
from pzone.tier_contract import Verdict, answer_results, classify_url, image_files, parse_result
from pzone_api.settings import Settings

logger = logging.getLogger("pzone.api.model_tier_client")
# The side sent before a tier has answered: params.yaml's default prepare.image_size (an answer corrects it).
FIRST_GUESS_SIZE = 96

# A photo's model input at a given side (the square is made on demand: the side comes from the tier's answers).
ModelInput = Callable[[int], bytes]

# The input side of the model each tier URL answered with last (one process-wide cache: the tier's, not a user's).
_input_sizes: dict[str, int] = {}


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
    try:
        response = httpx.post(
            classify_url(settings.model_tier_url),
            files=image_files(images),
            timeout=settings.model_tier_timeout_s,
        )
        response.raise_for_status()
        return [parse_result(item) for item in answer_results(response.json(), len(images))]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.info("model tier unavailable (%s): verdicts stay pending", type(exc).__name__)
        return None
