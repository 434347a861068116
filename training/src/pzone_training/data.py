"""Prepared splits on disk (``images.npy``, ``labels.npy``, ``ids.json``), letterboxing, class weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from pzone import preprocess
from pzone.tilt import TILT_CLASSES

# The letterbox border; augmentation fills rotated-in corners with the same colour.
PAD_VALUE = preprocess.PAD_VALUE


class Split(NamedTuple):
    images: np.ndarray  # uint8 (N, S, S, 3) RGB
    labels: np.ndarray  # int64 (N,)
    ids: list[str]


def load_split(directory: Path | str) -> Split:
    """Read one prepared split; an empty split (N = 0) is valid here, the caller decides if it may be."""
    directory = Path(directory)
    images = np.load(directory / "images.npy")
    labels = np.load(directory / "labels.npy").astype(np.int64, copy=False)
    ids_path = directory / "ids.json"
    ids = [str(i) for i in json.loads(ids_path.read_text(encoding="utf-8"))] if ids_path.exists() else []
    if (
        images.dtype != np.uint8
        or (images.ndim != 4 and images.size)
        or (images.size and images.shape[-1] != 3)
    ):
        raise ValueError(
            f"{directory}/images.npy: expected uint8 (N, S, S, 3), got {images.dtype} {images.shape}"
        )
    if images.size == 0:
        images = images.reshape(0, *(images.shape[1:] if images.ndim == 4 else (0, 0, 3)))
    if len(images) != len(labels) or (ids and len(ids) != len(labels)):
        raise ValueError(f"{directory}: {len(images)} images, {len(labels)} labels, {len(ids)} ids")
    if labels.size and (labels.min() < 0 or labels.max() >= len(TILT_CLASSES)):
        raise ValueError(f"{directory}/labels.npy: label ids must be in [0, {len(TILT_CLASSES)})")
    return Split(images, labels, ids)


def letterbox(image: Image.Image, size: int, fill: int = PAD_VALUE) -> np.ndarray:
    """Fit the whole photo into size×size keeping its aspect ratio (angles must not be distorted), pad the rest."""
    return preprocess.letterbox(image, size, fill)


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Resize already-square images (e.g. the test split for a champion trained at another image size)."""
    if len(images) == 0 or images.shape[1] == size:
        return images
    return np.stack(
        [np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)) for img in images]
    )


def class_weights(labels: np.ndarray, num_classes: int = len(TILT_CLASSES), power: float = 1.0) -> np.ndarray:
    """Inverse-frequency weights raised to ``power`` (1: plain inverse frequency, 0.5: its square root, 0: none),
    scaled to mean 1; a class with no example cannot be learnt."""
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)[:num_classes]
    missing = [TILT_CLASSES[i] if i < len(TILT_CLASSES) else str(i) for i in np.flatnonzero(counts == 0)]
    if missing:
        raise ValueError(f"no training example of class(es): {', '.join(missing)}")
    weights = (counts.sum() / (num_classes * counts.astype(np.float64))) ** power
    return (weights / weights.mean()).astype(np.float32)
