"""The model tier: a BentoML service answering ``POST /classify`` with the champion tilt classifier (ONNX Runtime).

The contract is :mod:`pzone.tier_contract`: multipart files in one field → one answer item per file, in their
order. A bad item gets its own error and the rest are answered; only an empty batch (400), too many images (413) or
a body that is not multipart (415/400) fail the whole request.

Each request's images are decoded and letterboxed in a worker thread, then go through ``predict_batch`` (also a
batchable BentoML API of its own, ``POST /predict_batch``) by way of a greedy in-process batcher, so the images of
concurrent requests share one ONNX Runtime call.
A watcher thread polls the model store; when ``PZONE_MODEL_TAG`` (default ``pzone-tilt:latest``) resolves to
another model, it loads that one off to the side and swaps one reference, so calls in flight finish on the model
they started with and no request fails during a rollout.

Worker processes: one per core of the CPU limit (at most 4, ``PZONE_MODEL_WORKERS``), each with its share of ONNX
Runtime threads; each worker's watcher swaps on its own, and the serving gauge counts the workers per model version,
so a caller can tell when all of them serve a new champion.

Run: ``uv run bentoml serve`` at the repository root (bentofile.yaml's entry point, the root ``service.py``, is this
class), ``bentoml serve`` of :data:`pzone_model.SERVICE` where pzone-model is installed, or a built Bento
(``bentoml serve pzone-tilt-service:latest``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pzone.tier_contract import (
    CLASSIFY_PATH,
    IMAGES_FIELD,
    SERVING_LABEL,
    SERVING_METRIC,
    answer,
    error_item,
    result_item,
)
from pzone_model.runtime import (
    BadImage,
    LoadedModel,
    available_cpus,
    cgroup_cpu_limit,
    decode_image,
    decode_square,
    fit_batch,
    load_model,
    model_version,
    ort_threads,
    serving_workers,
)
from pzone_model.settings import DEFAULT_MODEL_TAG, Settings

logger = logging.getLogger("pzone.model")

# The batcher's knobs are fixed at class definition (BentoML reads them from the decorator).
MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 500
REQUEST_TIMEOUT_S = 30


@dataclass(frozen=True)
class Metrics:
    predictions: Any
    rejected: Any
    swaps: Any
    serving: Any


@functools.cache
def metrics() -> Metrics:
    """Created on first use inside the server (BentoML has set up Prometheus' multiprocess folder by then)."""
    from prometheus_client import Counter, Gauge

    return Metrics(
        predictions=Counter(
            "pzone_model_predictions",
            "Images classified, by label and model version",
            ["label", "model_version"],
        ),
        rejected=Counter(
            "pzone_model_rejected_images", "Images refused before the model, by error code", ["code"]
        ),
        swaps=Counter("pzone_model_swaps", "Hot swaps to a new model version", ["model_version"]),
        # Each worker holds 1 for the version it answers with; /metrics sums the live workers, so a rollout is
        # complete when the new version's count is the worker count and every other version's is 0.
        serving=Gauge(
            SERVING_METRIC,
            "Worker processes answering with each model version",
            [SERVING_LABEL],
            multiprocess_mode="livesum",
        ),
    )


def forget_dead_workers() -> None:
    """Remove the live-gauge files of worker processes that are gone: a worker that crashed never marked itself dead,
    and its last serving-gauge value would otherwise count (as a worker on an old model) forever."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    from prometheus_client import multiprocess

    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), folder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tracing_config() -> dict[str, Any]:
    """BentoML's tracing settings: ``/classify`` is left out of OpenTelemetry unless ``PZONE_MODEL_TRACE_CLASSIFY``.

    Its ASGI middleware costs more than half a millisecond of CPU per request even when nothing is sampled
    (BentoML's default sample rate is 0), about half of a single-image request's own cost; the rest of the
    endpoints (health, metrics, predict_batch) keep it. Read when the class below is defined, as ``workers``.
    """
    return {} if Settings().model_trace_classify else {"excluded_urls": CLASSIFY_PATH.lstrip("/")}


def configured_workers() -> int:
    """How many worker processes BentoML starts: ``PZONE_MODEL_WORKERS``, else one per core of the CPU limit (at
    most 4). Read when the class below is defined, because BentoML takes ``workers`` from its decorator."""
    return serving_workers(cgroup_cpu_limit(), available_cpus(), Settings().model_workers)


class Batcher:
    """Greedy batching for /classify: while one ORT call runs, the images of the requests that arrive queue up and
    go together in the next call (at most ``max_size`` images, a request's images never split). No added latency
    when idle.

    Not BentoML's own path: calling the batchable API from inside the service goes through its in-process HTTP
    self-proxy (aiohttp-asgi-connector), which fails under concurrent requests ("pop from empty list").
    ``predict_batch`` stays a batchable API for direct callers, batched by BentoML's dispatcher.
    """

    def __init__(self, run: Callable[[list[np.ndarray]], list[dict[str, Any]]], max_size: int) -> None:
        self._run, self._max_size = run, max_size
        self._queue: list[tuple[list[np.ndarray], asyncio.Future[list[dict[str, Any]]]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._queue.append((images, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.pop(0)]
            size = len(batch[0][0])
            while self._queue and size + len(self._queue[0][0]) <= self._max_size:
                size += len(self._queue[0][0])
                batch.append(self._queue.pop(0))
            images = [img for imgs, _ in batch for img in imgs]
            try:
                results = await anyio.to_thread.run_sync(self._run, images)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for imgs, future in batch:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(results[start : start + len(imgs)])
                start += len(imgs)


def error_response(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse(error_item(code, reason), status_code=status)


async def _classify_route(request: Request) -> JSONResponse:
    service: PZoneTilt = bentoml.get_current_service()
    return await service.classify(request)


classify_app = Starlette(routes=[Route(CLASSIFY_PATH, _classify_route, methods=["POST"])])


@bentoml.asgi_app(classify_app, path="/")
@bentoml.service(
    name="pzone-model",
    resources={"cpu": "2"},
    # No max_concurrency: /classify calls predict_batch through the server itself and would take two slots.
    traffic={"timeout": REQUEST_TIMEOUT_S},
    workers=configured_workers(),
    tracing=tracing_config(),
)
class PZoneTilt:
    # The model a Bento build packs (the store's newest pzone-tilt: the package stage keeps it the champion).
    model_ref = bentoml.models.BentoModel(DEFAULT_MODEL_TAG)

    def __init__(self) -> None:
        from PIL import Image

        self.settings = Settings()
        # Pillow's own bomb guard as well as ours: never decode past the platform's pixel limit.
        Image.MAX_IMAGE_PIXELS = self.settings.image_max_pixels
        limit, cpus = cgroup_cpu_limit(), available_cpus()
        self.workers = serving_workers(limit, cpus, self.settings.model_workers)
        self.threads = ort_threads(limit, cpus, self.settings.ort_threads, self.workers)
        self._swap_lock = threading.Lock()
        self._model: LoadedModel = self._load(self.settings.model_tag)
        forget_dead_workers()
        metrics().serving.labels(model_version=self._model.version).set(1)
        logger.info(
            "serving %s (%s), %d ORT threads in each of %d workers",
            self._model.version,
            self._model.tag,
            self.threads,
            self.workers,
        )
        self._batcher: Batcher | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if self.settings.model_watch_interval_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="pzone-model-watcher", daemon=True)
            self._watcher.start()
        # Everything imported and loaded so far lives as long as the process: keep it out of the collector's way.
        # A full collection walks every tracked object (~50 ms with bentoml and onnxruntime loaded), and the ones
        # that requests trigger showed up as 50-100 ms stalls in the p99 latency.
        gc.collect()
        gc.freeze()

    # --- model lifecycle ----------------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        return self._model

    def _load(self, tag: str) -> LoadedModel:
        stored = bentoml.models.get(tag)
        version = model_version(stored.tag.name, stored.tag.version, stored.info.labels)
        return load_model(Path(stored.path), str(stored.tag), version, self.threads)

    def refresh(self) -> bool:
        """One watcher step: swap to the model the tag now resolves to, if it is another one. True if swapped."""
        with self._swap_lock:
            stored = bentoml.models.get(self.settings.model_tag)
            if str(stored.tag) == self._model.tag:
                return False
            new = self._load(str(stored.tag))  # built off to the side; the old one keeps answering meanwhile
            old, self._model = self._model, new  # one reference assignment: atomic for every reader
        metrics().swaps.labels(model_version=new.version).inc()
        if old.version != new.version:
            metrics().serving.labels(model_version=old.version).set(0)
        metrics().serving.labels(model_version=new.version).set(1)
        logger.info("swapped %s → %s", old.version, new.version)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.model_watch_interval_s):
            try:
                self.refresh()
            except Exception:  # a half-written or broken import must not kill the watcher or the model in use
                logger.exception("model refresh failed; still serving %s", self._model.version)

    @bentoml.on_shutdown
    def stop_watcher(self) -> None:
        self._stop.set()

    def __is_ready__(self) -> bool:
        return self._model is not None

    # --- inference ----------------------------------------------------------------------------------------------

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict_batch(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """Letterboxed uint8 (S, S, 3) images → per image label, probs and model version (one ORT call)."""
        model = self._model  # one read: the whole batch is answered by one model even during a swap
        probs = model.predict(fit_batch(list(images), model.meta.image_size))
        classes = model.meta.classes
        results = []
        counts: dict[str, int] = {}
        for row in probs:
            label = classes[int(np.argmax(row))]
            counts[label] = counts.get(label, 0) + 1
            probs_of = {c: float(p) for c, p in zip(classes, row, strict=True)}
            # Its input side goes with every verdict: a client sends squares of it.
            results.append(result_item(label, probs_of, model.version, model.meta.image_size))
        for label, count in counts.items():  # one metric update per label and batch, not per image
            metrics().predictions.labels(label=label, model_version=model.version).inc(count)
        return results

    async def _predict(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        if self._batcher is None:  # made on first use: it belongs to the server's event loop
            self._batcher = Batcher(self.predict_batch.local, self.settings.model_batch_images)
        return await self._batcher.submit(images)

    def _decode_all(
        self, items: list[bytes | BadImage | np.ndarray], size: int
    ) -> list[np.ndarray | BadImage]:
        out: list[np.ndarray | BadImage] = []
        for item in items:
            if not isinstance(item, bytes):
                out.append(item)
                continue
            try:
                out.append(decode_image(item, size, self.settings.image_max_pixels))
            except BadImage as exc:
                out.append(exc)
        return out

    def _decode_squares(
        self, items: list[bytes | BadImage], size: int
    ) -> list[bytes | BadImage | np.ndarray]:
        """On the event loop: the front's model inputs and header refusals (cheap); the rest stays bytes."""
        out: list[bytes | BadImage | np.ndarray] = []
        for item in items:
            if isinstance(item, BadImage):
                out.append(item)
                continue
            try:
                square = decode_square(item, size, self.settings.image_max_pixels)
            except BadImage as exc:
                out.append(exc)
                continue
            out.append(item if square is None else square)
        return out

    async def classify(self, request: Request) -> JSONResponse:
        limit, max_bytes = self.settings.max_batch_images, self.settings.max_image_bytes
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return error_response(
                415, "unsupported_media_type", f"send multipart/form-data with files in `{IMAGES_FIELD}`"
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit * (max_bytes + 4096):
            return error_response(413, "too_large", "the request body is over the batch's size limit")
        try:
            form = await request.form(max_files=limit + 1, max_fields=limit + 16)
        except Exception as exc:  # Starlette raises its own HTTP/multipart errors for a malformed body
            return error_response(400, "bad_form", f"the multipart body could not be parsed: {exc}")
        try:
            fields = form.getlist(IMAGES_FIELD)
            if not fields:
                return error_response(400, "empty_batch", f"no file in the `{IMAGES_FIELD}` field")
            if len(fields) > limit:
                return error_response(413, "too_many_images", f"at most {limit} images per request")
            raw: list[bytes | BadImage] = []
            for field in fields:
                if not isinstance(field, UploadFile):
                    raw.append(BadImage("not_a_file", f"`{IMAGES_FIELD}` items must be files"))
                elif field.size is not None and field.size > max_bytes:
                    raw.append(BadImage("too_large", f"over the limit of {max_bytes} bytes"))
                else:
                    raw.append(await field.read())
        finally:
            await form.close()

        size = self._model.meta.image_size
        # A thread hop costs about as much as decoding a model input: only photos to letterbox take one.
        some = self._decode_squares(raw, size)
        if any(isinstance(item, bytes) for item in some):
            decoded = await anyio.to_thread.run_sync(self._decode_all, some, size)
        else:
            decoded = self._decode_all(some, size)
        good = [img for img in decoded if not isinstance(img, BadImage)]
        predictions = iter(await self._predict(good) if good else [])
        results: list[dict[str, Any]] = []
        for img in decoded:
            if isinstance(img, BadImage):
                metrics().rejected.labels(code=img.code).inc()
                results.append(error_item(img.code, img.reason))
            else:
                results.append(next(predictions))
        return JSONResponse(answer(results))
