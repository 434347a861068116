"""The model tier's HTTP contract: the one definition its server and its clients read.

``POST /classify``, multipart/form-data with one or more files in the field ``images`` → ``{"results": [item, ...]}``
with one item per file, in their order: ``{"label", "probs": {class: p}, "model_version", "image_size"}`` (the
answering model's input side: a client sends squares of it), or ``{"error": {"code", "reason"}}`` for a file that
could not be classified. A whole-request failure (an empty batch, too many images, a body that is not multipart) is
a 4xx with that ``error`` object alone. ``GET /metrics`` carries the ``pzone_model_serving`` gauge: per
``model_version``, how many worker processes answer with it.

The server is ``pzone_model.service``; the clients are the API (``pzone_api.model_tier_client``) and retrain's
rollout wait (``pzone_pipelines.retrain.rollout``). Standard library and :mod:`pzone.tilt` only: the model tier's
image holds this file beside ``pzone_model``, without httpx, bentoml or the rest of pzone-core.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pzone.tilt import TILT_CLASSES

CLASSIFY_PATH = "/classify"
METRICS_PATH = "/metrics"
IMAGES_FIELD = "images"  # the multipart field holding the files

# The answer's keys.
RESULTS = "results"
LABEL = "label"
PROBS = "probs"
MODEL_VERSION = "model_version"
IMAGE_SIZE = "image_size"
ERROR = "error"
ERROR_CODE = "code"
ERROR_REASON = "reason"

# The input sides a client believes; anything else in an answer is taken as "not said".
IMAGE_SIZE_MIN = 8
IMAGE_SIZE_MAX = 4096

SERVING_METRIC = "pzone_model_serving"
SERVING_LABEL = MODEL_VERSION
_SERVING_SAMPLE = re.compile(
    rf'^{SERVING_METRIC}{{(?:[^}}]*,)?{SERVING_LABEL}="((?:[^"\\]|\\.)*)"[^}}]*}} (\S+)$'
)

# The encodings a client sends, by signature (model inputs are BMP); anything else goes as JPEG.
SIGNATURES = ((b"BM", "bmp"), (b"\x89PNG\r\n\x1a\n", "png"), (b"RIFF", "webp"))

# One multipart file as httpx (and requests) take it: (field, (file name, bytes, content type)).
ImageFile = tuple[str, tuple[str, bytes, str]]


@dataclass(frozen=True)
class Verdict:
    """One classified image of an answer."""

    label: str
    probs: dict[str, float]
    model_version: str
    image_size: int | None = None  # the answering model's input side; None from a tier that does not say


# --- the request ----------------------------------------------------------------------------------------------


def classify_url(tier_url: str) -> str:
    return tier_url.rstrip("/") + CLASSIFY_PATH


def metrics_url(tier_url: str) -> str:
    return tier_url.rstrip("/") + METRICS_PATH


def image_kind(data: bytes) -> str:
    """The encoding's name by its signature (``bmp``, ``png``, ``webp``), else ``jpeg``."""
    return next((name for signature, name in SIGNATURES if data.startswith(signature)), "jpeg")


def image_files(images: Sequence[bytes]) -> list[ImageFile]:
    """The multipart files of one request, named by position and typed by signature."""
    files = []
    for i, data in enumerate(images):
        kind = image_kind(data)
        files.append((IMAGES_FIELD, (f"{i}.{kind}", data, f"image/{kind}")))
    return files


# --- the answer -----------------------------------------------------------------------------------------------


def result_item(
    label: str, probs: dict[str, float], model_version: str, image_size: int | None = None
) -> dict[str, Any]:
    """An answer's item for a classified image (``image_size`` left out when None)."""
    item: dict[str, Any] = {LABEL: label, PROBS: probs, MODEL_VERSION: model_version}
    if image_size is not None:
        item[IMAGE_SIZE] = image_size
    return item


def error_item(code: str, reason: str) -> dict[str, Any]:
    """An answer's item for a refused image, and the body of a whole-request failure: ``code`` is
    machine-readable, ``reason`` is for people."""
    return {ERROR: {ERROR_CODE: code, ERROR_REASON: reason}}


def answer(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {RESULTS: results}


def answer_results(body: object, count: int) -> list[Any]:
    """The items of a decoded answer to ``count`` images; ValueError when it is not one."""
    results = body.get(RESULTS) if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise ValueError("the answer holds no result per image sent")
    return results


def item_version(item: object) -> str | None:
    """The model version an item was answered with, None when it does not say."""
    version = item.get(MODEL_VERSION) if isinstance(item, dict) else None
    return str(version) if version else None


def parse_result(item: object) -> Verdict | None:
    """An item as a verdict; None for a refused image or an item that is not a verdict of the tilt classes."""
    if not isinstance(item, dict) or item.get(LABEL) not in TILT_CLASSES:
        return None
    probs = item.get(PROBS) or {}
    image_size = item.get(IMAGE_SIZE)
    return Verdict(
        label=str(item[LABEL]),
        probs={k: float(v) for k, v in probs.items() if k in TILT_CLASSES},
        model_version=item_version(item) or "unknown",
        image_size=image_size
        if isinstance(image_size, int) and IMAGE_SIZE_MIN <= image_size <= IMAGE_SIZE_MAX
        else None,
    )


# --- the serving gauge ----------------------------------------------------------------------------------------


def serving_counts(exposition: str) -> dict[str, float]:
    """Worker processes per model version from the ``/metrics`` text (Prometheus exposition format); empty when
    it has no sample of the gauge."""
    counts: dict[str, float] = {}
    for line in exposition.splitlines():
        match = _SERVING_SAMPLE.match(line)
        if match:
            version = match[1].replace('\\"', '"').replace("\\\\", "\\")
            try:
                counts[version] = counts.get(version, 0.0) + float(match[2])
            except ValueError:
                continue
    return counts
