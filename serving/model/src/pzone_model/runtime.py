"""The model tier's pure parts: the stored model's layout, ONNX Runtime sizing and loading, image decoding.

A model in the BentoML store is a folder with ``model.onnx`` (input ``images``: uint8 (N, S, S, 3) letterboxed RGB;
output ``probs``: float32 (N, C), normalization and flip averaging inside the graph) and ``pzone_meta.json``
(classes, image_size, mean, std, ...). The package stage writes it; nothing here needs torch.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ONNX_FILE = "model.onnx"
META_FILE = "pzone_meta.json"
INPUT_NAME = "images"
OUTPUT_NAME = "probs"
MLFLOW_VERSION_LABEL = "mlflow_version"
CGROUP_ROOT = Path("/sys/fs/cgroup")
EXIF_ORIENTATION = 0x0112


class BadImage(ValueError):
    """One item of a request cannot be classified; ``code`` is machine-readable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ModelMeta:
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelMeta:
        try:
            meta = cls(
                classes=tuple(str(c) for c in raw["classes"]),
                image_size=int(raw["image_size"]),
                mean=tuple(float(v) for v in raw["mean"]),
                std=tuple(float(v) for v in raw["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"model metadata is incomplete: {exc!r}") from None
        if not meta.classes or meta.image_size < 1:
            raise ValueError("model metadata needs classes and a positive image_size")
        return meta


# --- CPU sizing -------------------------------------------------------------------------------------------------


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in cores (cgroup v2 ``cpu.max``, else v1 CFS quota), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _cores(int(quota), int(period))
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us < 0 else _cores(quota_us, period_us)
    return None


def _cores(quota: int, period: int) -> float | None:
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may run on (affinity: taskset, cpuset), falling back to the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Past this many worker processes, more cores go to each worker's ONNX Runtime threads instead: every worker holds
# its own interpreter, runtime and model (~300 MB), and four already keep the Python side (HTTP, forms, decoding)
# off the critical path.
MAX_DEFAULT_WORKERS = 4


def cpu_budget(limit: float | None, cpus: int) -> int:
    """Whole cores this container may use: the CPU quota rounded up (the half core is still usable), capped by
    affinity; the affinity alone when unlimited; at least 1."""
    cpus = max(1, cpus)
    if limit is None:
        return cpus
    return max(1, min(cpus, math.ceil(limit - 1e-9)))


def serving_workers(limit: float | None, cpus: int, configured: int = 0) -> int:
    """Worker processes of the tier: the setting if given, else one per core of the budget, at most
    :data:`MAX_DEFAULT_WORKERS`.

    One process per core beats one process with a thread per core: the per-request Python work (HTTP, the form,
    the JSON answer) runs under one GIL per process, so with a single worker it queues behind itself while ONNX
    Runtime waits (measured on 2 cores: +28 % images/s with 2 workers × 1 thread over 1 worker × 2 threads).
    """
    if configured > 0:
        return configured
    return min(MAX_DEFAULT_WORKERS, cpu_budget(limit, cpus))


def ort_threads(limit: float | None, cpus: int, configured: int = 0, workers: int = 1) -> int:
    """Intra-op threads of each worker: the setting if given, else its share of the CPU budget, at least 1.

    ONNX Runtime otherwise sizes its pool to the host's cores: 64 threads fighting over a 2-core quota get
    throttled by the CFS and answer slower than 2 would.
    """
    if configured > 0:
        return configured
    return max(1, cpu_budget(limit, cpus) // max(1, workers))


# --- loading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """One servable model; replaced as a whole (never mutated) when the champion changes."""

    tag: str
    version: str
    meta: ModelMeta
    session: Any  # onnxruntime.InferenceSession: run() is thread-safe

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) for uint8 (N, S, S, 3) letterboxed images."""
        if len(images) == 0:
            return np.zeros((0, len(self.meta.classes)), dtype=np.float32)
        probs = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]
        return np.asarray(probs, dtype=np.float32)


def model_version(name: str, version: str | None, labels: Mapping[str, str]) -> str:
    """What answers carry as ``model_version``: the registry's ``name/version`` when known, else the store tag."""
    registered = labels.get(MLFLOW_VERSION_LABEL)
    return f"{name}/{registered}" if registered else f"{name}:{version}"


def read_meta(folder: Path) -> ModelMeta:
    return ModelMeta.from_dict(json.loads((folder / META_FILE).read_text(encoding="utf-8")))


def open_session(onnx_path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one sequential graph: a second pool would only compete for the quota
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn a shared CPU quota while idle between requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def load_model(folder: Path, tag: str, version: str, threads: int) -> LoadedModel:
    """Open a stored model and check that its graph matches its metadata (one dummy image through it)."""
    meta = read_meta(folder)
    session = open_session(folder / ONNX_FILE, threads)
    model = LoadedModel(tag=tag, version=version, meta=meta, session=session)
    probe = model.predict(np.zeros((1, meta.image_size, meta.image_size, 3), dtype=np.uint8))
    if probe.shape != (1, len(meta.classes)):
        raise ValueError(
            f"{tag}: the graph answers {probe.shape}, its metadata says {len(meta.classes)} classes"
        )
    return model


# --- images -----------------------------------------------------------------------------------------------------


def decode_image(data: bytes, size: int, max_pixels: int) -> np.ndarray:
    """Bytes → uint8 (size, size, 3): the training preprocessing (``pzone.preprocess``: EXIF orientation,
    letterbox), after a header-only pixel check on the same opened file, so that a bomb is refused before it is
    decoded. An RGB size×size square with no EXIF turn (the web front's ``model_input_bmp``) is taken as it is:
    the letterbox would only copy it."""
    square = _decode(data, size, max_pixels, squares_only=False)
    assert square is not None  # only squares_only leaves an image undecoded
    return square


def decode_square(data: bytes, size: int, max_pixels: int) -> np.ndarray | None:
    """:func:`decode_image` for the cheap cases only, the tier's event loop may run it: an image refused from its
    header raises, an RGB size×size square is decoded (at most size² pixels), anything else is left: ``None``."""
    return _decode(data, size, max_pixels, squares_only=True)


def _decode(data: bytes, size: int, max_pixels: int, *, squares_only: bool) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    from pzone.preprocess import square_from_image

    if not data:
        raise BadImage("empty", "the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise BadImage("too_many_pixels", f"over the limit of {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadImage("not_an_image", "not a readable image (JPEG, PNG, WebP, ...)") from None
    with image:
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise BadImage("too_many_pixels", f"{pixels} pixels is over the limit of {max_pixels}")
        # A square in other colours (a colour profile, a transparent colour) goes the full path, which converts.
        is_square = (
            image.size == (size, size)
            and image.mode == "RGB"
            and not image.info.get("icc_profile")
            and "transparency" not in image.info
        )
        if squares_only and not is_square:
            return None
        try:
            if is_square:
                square = np.asarray(image, dtype=np.uint8)
                if image.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
                    return square
                if squares_only:
                    return None  # a turn to apply: the full path, off the event loop
            return square_from_image(image, size)
        except Image.DecompressionBombError:
            raise BadImage("too_many_pixels", f"over the limit of {max_pixels} pixels") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise BadImage("not_an_image", "the image is truncated or corrupt") from None


def fit_batch(images: list[np.ndarray], size: int) -> np.ndarray:
    """Stack letterboxed squares, resizing any made for another image size (a request in flight over a swap)."""
    from PIL import Image

    fitted = [
        img
        if img.shape[:2] == (size, size)
        else np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
        for img in images
    ]
    if not fitted:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack(fitted).astype(np.uint8, copy=False)
